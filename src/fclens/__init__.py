"""fclens: what the final fully-connected layer of an image classifier has learned, and where it looks.

Implements Siddhartha, "An interpretation of the final fully connected layer" (arXiv 2205.11908)::

    import fclens
    model = fclens.load_model()                       # EfficientNet-Lite0, ImageNet, offline
    fit = fclens.fit_ald(model.head.weight)           # does each class follow an ALD?
    tree = fclens.split_tree(model.head.weight[285])  # the recursive split of one class
    (exp,) = fclens.explain(model, fclens.sample_image("chelsea"))
    exp.discriminative.map, exp.confusing.score, exp.save("out/")
"""

from fclens.ald import ALDFit, MLEFit, PartFit, RegressionFit, fit_ald, regression_fit
from fclens.errors import FclensError
from fclens.explain import Explanation, NodeExplanation, Prediction, explain
from fclens.head import Head, find_head
from fclens.images import ImageError, Preprocessing, load_image, sample_image
from fclens.maps import MAP_KINDS, register_map
from fclens.models import Classifier, ModelError, load_model
from fclens.tree import Node, SplitTree, split_tree

__version__ = "0.1.0"

__all__ = [
    "MAP_KINDS",
    "ALDFit",
    "Classifier",
    "Explanation",
    "FclensError",
    "Head",
    "ImageError",
    "MLEFit",
    "ModelError",
    "Node",
    "NodeExplanation",
    "PartFit",
    "Prediction",
    "Preprocessing",
    "RegressionFit",
    "SplitTree",
    "explain",
    "find_head",
    "fit_ald",
    "load_image",
    "load_model",
    "register_map",
    "regression_fit",
    "sample_image",
    "split_tree",
]

# The public face of fclens, written once: type checkers read this stub, and fclens/__init__.py reads the
# same lines at import time to load each name from its module on first use (as SPEC 1's lazy_loader does).
# `from MODULE import NAME as NAME` is the stub's way of saying that NAME is public here.

from fclens.ald import ALDFit as ALDFit
from fclens.ald import fit_ald as fit_ald
from fclens.atlasing import Atlas as Atlas
from fclens.atlasing import atlas as atlas
from fclens.edits.causal import CausalTable as CausalTable
from fclens.edits.causal import causal_test as causal_test
from fclens.edits.evaluate import Evaluation as Evaluation
from fclens.edits.evaluate import evaluate as evaluate
from fclens.edits.pair import pair_edit as pair_edit
from fclens.edits.prior import PriorLoss as PriorLoss
from fclens.edits.prior import adjust_layer as adjust_layer
from fclens.edits.prior import fit_layer as fit_layer
from fclens.edits.rebalance import Rebalance as Rebalance
from fclens.edits.rebalance import rebalance as rebalance
from fclens.errors import FclensError as FclensError
from fclens.explaining import Explanation as Explanation
from fclens.explaining import explain as explain
from fclens.images import load_image as load_image
from fclens.integrations.fiftyone import to_fiftyone as to_fiftyone
from fclens.layer import FinalLayer as FinalLayer
from fclens.models import Classifier as Classifier
from fclens.models import load_model as load_model
from fclens.options import Options as Options
from fclens.preprocessing import Preprocessing as Preprocessing
from fclens.pruning import PruneCurve as PruneCurve
from fclens.pruning import prune as prune
from fclens.pruning import prune_curve as prune_curve
from fclens.samples import sample_folder as sample_folder
from fclens.samples import sample_image as sample_image
from fclens.scanning import scan as scan
from fclens.scanning.reader import Scan as Scan
from fclens.scanning.reader import read_scan as read_scan
from fclens.tree import SplitTree as SplitTree
from fclens.tree import split_tree as split_tree

__version__: str

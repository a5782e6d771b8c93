"""Everything fclens shows a person: overlays, figures, saved explanation folders, HTML pages.

Results come in (``Explanation`` from :mod:`fclens.explaining`, ``ALDFit`` from :mod:`fclens.ald`,
``SplitTree`` from :mod:`fclens.tree`); pictures, files and self-contained pages go out. Nothing here
computes a statistic or a map of its own, and nothing upstream imports this package: to write an
explanation, ``save_explanation(exp, folder)`` (``load_explanation(folder, model)`` reads it back); to
show it, ``explanations_page([exp])``.
"""

from fclens.report.figures import (
    chain_figure,
    figure_png,
    fit_plot,
    image_bytes,
    overlay,
    r2_histogram,
    save_figure,
    slope_intercept,
)
from fclens.report.files import (
    CHAIN_FILE,
    DONE_MARKER,
    IMAGE_FILE,
    MAPS_FILE,
    load_explanation,
    node_filename,
    remove_stale,
    save_explanation,
)
from fclens.report.folders import explain_to_folder
from fclens.report.html import default_classes, explanations_page, weights_page
from fclens.report.weights import weights_to_folder

__all__ = [
    "CHAIN_FILE",
    "DONE_MARKER",
    "IMAGE_FILE",
    "MAPS_FILE",
    "chain_figure",
    "default_classes",
    "explain_to_folder",
    "explanations_page",
    "figure_png",
    "fit_plot",
    "image_bytes",
    "load_explanation",
    "node_filename",
    "overlay",
    "r2_histogram",
    "remove_stale",
    "save_explanation",
    "save_figure",
    "slope_intercept",
    "weights_page",
    "weights_to_folder",
]

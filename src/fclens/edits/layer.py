"""Deprecated: :class:`FinalLayer` and :class:`FitReport` moved to :mod:`fclens.layer`, writing a model to
:mod:`fclens.edits.write`. The names still import from here, with a DeprecationWarning, for one release."""

from fclens import deprecation

__getattr__ = deprecation.moved(
    __name__,
    {
        "FinalLayer": "fclens.layer",
        "FitReport": "fclens.layer",
        "as_final_layer": "fclens.layer:FinalLayer.of",
        "model_source": "fclens.edits.write",
        "write_model": "fclens.edits.write",
        "open_scan": "fclens.scanning.reader:as_scan",
    },
)

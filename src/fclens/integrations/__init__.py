"""Optional bridges to the tools where people already look at their data: FiftyOne (:mod:`.fiftyone`).

Each bridge imports its tool only when called, so that ``import fclens`` and the ``fclens`` command never
pay for it, and each tool is an optional extra (``pip install 'fclens[fiftyone]'``). cleanlab needs no
bridge: it takes :meth:`fclens.Scan.pred_probs` as it is.
"""

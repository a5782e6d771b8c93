"""Edits of the final layer and their one evaluator (DESIGN.md, "The head floor").

Every edit — a re-fit on a scan's stored features, a post-hoc adjustment, a pruning mask — yields a
:class:`FinalLayer` (weight, bias), and :func:`evaluate_head` judges any of them the same way, on the
pooled features a scan stored: no backbone, one matrix product per batch of rows.

- :mod:`.layer`: :class:`FinalLayer`, what it can be made from, and writing a model with a new one;
- :mod:`.evaluate`: the features and labels of a scan, read in bounded batches, and :func:`evaluate_head`;
- :mod:`.prior`: the imbalanced-data application (PAPER.md §6): :class:`PriorLoss`, :func:`fit_head`,
  :func:`adjust_head`.
"""

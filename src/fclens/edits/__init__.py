"""Edits of the final layer and their one evaluator (DESIGN.md, "The head floor").

Every edit — a re-fit on a scan's stored features, a post-hoc adjustment, a pruning mask, a pair edit —
yields a :class:`fclens.FinalLayer` (weight, bias), and :func:`fclens.evaluate` judges any of them the
same way, on the pooled features a scan stored: no backbone, one matrix product per batch of rows.

- :mod:`.evaluate`: :func:`fclens.evaluate` (one layer or many, one read of the features), which pruning
  uses too, and its count of one pair's figures for an edit of one row (:class:`.evaluate.PairCount`);
- :mod:`.prior`: the imbalanced-data application (PAPER.md §6): :class:`PriorLoss`, :func:`fit_layer`,
  :func:`adjust_layer`; :mod:`.rebalance`: every method of it against plain CE, on a training and an
  evaluation scan (``fclens rebalance``);
- :mod:`.pair`: the edit for one confusion pair on chosen neurons; :mod:`.causal`: the causal test of
  the atlas's pairs, judged on held-out rows;
- :mod:`.write`: the scanned model written with an edited final layer.

The method names are kept here, with the standard library only, so that the command's help needs no torch.
"""

REFITS = {
    "ce": "ce",
    "pg-prior": "pg-prior",
    "balanced-softmax": "balanced-softmax",
    "logit-adjust-loss": "logit-adjust",
    "crt": "crt",
}
"""The re-fits of ``fclens rebalance``, each the :func:`~fclens.edits.prior.fit_layer` loss it runs."""
POST_HOC = ("logit-adjust", "tau-norm")
"""The post-hoc adjustments (:func:`~fclens.edits.prior.adjust_layer`): no training."""
REBALANCE_METHODS = (*REFITS, *POST_HOC)
REBALANCE_DEFAULTS = ("ce", "pg-prior", "balanced-softmax", "logit-adjust", "tau-norm", "crt")
"""The default methods: ``logit-adjust-loss`` at τ = 1 is ``balanced-softmax``, so it is left out."""
PRIOR_TAU = 1.0
"""The strength τ of the prior in the losses and adjustments that take one, unless asked otherwise."""
TOP_PAIRS = 20
"""The pairs :func:`~fclens.edits.causal.causal_test` (and ``fclens atlas --causal``) takes by default."""
REBALANCE_MEANINGS = {
    "ce": "plain cross-entropy re-fit: the control",
    "pg-prior": "CE weighted by (π_target/π_train)^τ: the paper's application",
    "balanced-softmax": "CE on logits + log π_train (Ren et al., NeurIPS 2020)",
    "logit-adjust-loss": "CE on logits + τ log π_train (Menon et al., ICLR 2021); at τ = 1 it is `balanced-softmax`",
    "crt": "classifier re-training with class-balanced sampling (Kang et al., ICLR 2020): from a random "
    "layer (`--seed`), the CE weighted by 1/π_train, its full-batch expectation",
    "logit-adjust": "logits − τ log π_train (Menon et al.)",
    "tau-norm": "each class's row (and bias) divided by ‖w_k‖^τ (Kang et al.)",
}
"""What each method does, in one sentence: the one place the README's table and the rebalance page
take it from (backticks mark code)."""

"""Do the neurons the atlas names for a confusion pair cause it? Edit the final layer on them and judge
the edit on held-out images.

A confusion pair (k → j) is class k's images pulled toward the rival j. The atlas names the neurons that
argue for j: the − side of k's split tree and the + side of j's (PAPER.md §3, :func:`pair_neurons`).
That is a causal claim. :func:`pair_edit` makes it testable and offers the lever: on m chosen neurons it
sets the rival's weights to the target's, w_jc := w_kc (``equalise``: those neurons no longer move the
gap logit_j − logit_k, and no other class's row changes), or moves them part of the way
(``partial``, its strength chosen on the rows that selected). :func:`causal_test` runs every selection
rule at every m on the top confusion pairs (or the atlas's) and judges each edit on a seeded held-out
half of the scan (:func:`split_rows`): never on the rows that chose the neurons.

Only row j changes, so only column j of the logits does: the test computes the base logits of the
held-out rows once and evaluates each edit as a rank-m update of that column
(``logit_j += z_S · (w_kS − w_jS)``), reading the pair's figures in O(rows) from each row's best other
class and its log-sum-exp without column j. ``exact=True`` sends every edit through the evaluator's
counting core instead (:func:`fclens.edits.evaluate.evaluate_logits`); the tests check both against
:func:`~fclens.edits.evaluate.evaluate_head` on the edited layer.

Example::

    from fclens.edits.pair import causal_test, pair_edit, split_rows

    table = causal_test("scan/")                      # the top 20 pairs, every rule, m = 1 … 32
    print(table.to_text()); table.to_dict()           # JSON-ready
    select, held = split_rows("scan/")                # the same seeded halves
    layer = pair_edit("scan/", "scan/", target=281, rival=285, neurons=8, rows=select)  # a FinalLayer
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fclens.edits import TOP_PAIRS
from fclens.edits.evaluate import Features, HeadEvaluation, evaluate_logits, read_features
from fclens.edits.layer import FinalLayer, as_final_layer, open_scan
from fclens.errors import FclensError
from fclens.options import SEED
from fclens.tree import class_trees, pair_indices

if TYPE_CHECKING:
    from fclens.scanning.store import Scan

__all__ = [
    "EDITS",
    "MS",
    "OBJECTIVES",
    "RULES",
    "CausalTable",
    "Outcome",
    "PairLayer",
    "PairTest",
    "Trial",
    "causal_test",
    "pair_edit",
    "pair_neurons",
    "select_neurons",
    "split_rows",
]

RULES = ("tree", "contrast", "weight", "random")
"""The selection rules (:func:`select_neurons`): the paper's, and three controls."""
EDITS = ("equalise", "partial")
"""The edits (:func:`pair_edit`)."""
MS = (1, 2, 4, 8, 16, 32)
"""The numbers of neurons :func:`causal_test` edits, per rule."""
STRENGTHS = np.linspace(0.0, 1.0, 21)
"""The strengths the ``partial`` edit chooses from on the selection rows (0: no edit, 1: ``equalise``)."""
OBJECTIVES = ("accuracy", "pair")
"""What the ``partial`` edit's strength minimises on the selection rows: their errors, all classes
(``accuracy``, the default), or the pair's errors k→j + j→k alone (``pair``)."""

# --- the rows that select and the rows that judge ---------------------------------------------------


def split_rows(
    source: Scan | str | os.PathLike[str] | Features, seed: int = 0, fraction: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """(selection rows, held-out rows): the source indices of a scan's ``ok`` rows (or of
    :class:`Features`), cut in two, seeded and stratified by label.

    Each label (−1, no label, is one more stratum) puts ``fraction`` of its rows, rounded half up, in
    the selection half, chosen at random by ``seed``; the two halves are disjoint, cover the rows, and
    come sorted. Choose on the first, judge on the second: a figure measured on the rows that chose the
    neurons would flatter the rule that chose them.
    """
    if not 0 < fraction < 1:
        raise FclensError(f"the selection fraction must be between 0 and 1, got {fraction}")
    features = _read(source)
    rng = np.random.default_rng(seed)
    label = features.label.numpy()
    chosen = []
    for value in np.unique(label):
        rows = features.index[label == value]
        chosen.append(rng.permutation(rows)[: int(np.floor(fraction * len(rows) + 0.5))])
    select = np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, np.int64)
    return select, np.setdiff1d(features.index, select)


# --- the selection rules ----------------------------------------------------------------------------


def pair_neurons(head: Any, target: int, rival: int, min_size: int = 20, mode: str = "chains") -> np.ndarray:
    """The neurons the atlas names for the pair (target k → rival j): the "−" child of k's tree root ∩
    the "+" child of j's (each row split at its own mean; an unsplit tree has one side, all its neurons),
    sorted. Fixed by the weights alone: the same for every image of the pair."""
    layer = as_final_layer(head)
    _check_pair(layer, target, rival)
    trees = class_trees(layer.weight[[target, rival]].numpy(), [target, rival], min_size, mode)
    return pair_indices(trees[0], trees[1])


def select_neurons(
    head: Any,
    target: int,
    rival: int,
    m: int,
    select: str = "tree",
    features: Scan | str | os.PathLike[str] | Features | None = None,
    seed: int = 0,
    *,
    rows: Sequence[int] | np.ndarray | None = None,
    min_size: int | None = None,
    mode: str | None = None,
) -> np.ndarray:
    """The (at most) ``m`` neurons, columns of the final layer, that rule ``select`` picks for the pair
    target k → rival j, best first.

    The share of neuron c in the gap logit_j − logit_k on an image is (w_jc − w_kc)·z_c; the rules:

    - ``tree`` (the paper's): the pair's named neurons (:func:`pair_neurons`) ranked by their mean share
      over the selection rows' images of k. Fewer than m named neurons give fewer: the length says how
      many were used.
    - ``contrast``: every neuron ranked by that mean share: the same data, no tree; the strongest control.
    - ``weight``: largest w_jc − w_kc: the weights alone, no data.
    - ``random``: a seeded random set (the same ``seed`` gives nested sets as m grows); the floor.

    ``features``: a scan (or its directory) with stored features, or :class:`Features`; needed by
    ``tree`` and ``contrast``. ``rows``: the source indices that may select (all rows when None).
    ``min_size``/``mode`` shape the trees: the scan's own by default (20 and "chains" for Features).
    """
    layer = as_final_layer(head)
    _check_pair(layer, target, rival)
    _check_m(m)
    rule = _check_rule(select)
    mean_z = None
    if rule in ("tree", "contrast"):
        if features is None:
            raise FclensError(f"the {rule!r} rule ranks neurons on images: give the scan (features=...)")
        data = _read(features)
        if rows is not None:
            data = data.select(np.asarray(rows, np.int64))
        mean_z = _class_mean(data, target)
    min_size, mode = _tree_shape(features, min_size, mode)
    return _ranking(layer, target, rival, rule, mean_z, seed, min_size, mode)[:m]


def _ranking(
    layer: FinalLayer,
    k: int,
    j: int,
    rule: str,
    mean_z: torch.Tensor | None,
    seed: int,
    min_size: int,
    mode: str,
) -> np.ndarray:
    """Every neuron a rule would pick, best first (``tree``: the named ones only); its prefixes are the
    selections for each m."""
    diff = (layer.weight[j] - layer.weight[k]).double()
    if rule == "random":
        return np.random.default_rng([seed, k, j]).permutation(layer.num_features)
    if rule == "weight":
        return np.argsort(-diff.numpy(), kind="stable")
    share = (diff * mean_z.double()).numpy()
    if rule == "contrast":
        return np.argsort(-share, kind="stable")
    named = pair_neurons(layer, k, j, min_size, mode)
    return named[np.argsort(-share[named], kind="stable")]


# --- the edit ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PairLayer(FinalLayer):
    """A final layer edited for one pair: row ``rival`` moved toward row ``target`` on ``neurons``.

    ``strength`` s: w_jc := w_jc − s·(w_jc − w_kc) on those columns (1 for ``equalise``); ``requested``
    the m asked for (``tree`` may find fewer named neurons: ``len(neurons)`` were used).
    """

    target: int = -1
    rival: int = -1
    select: str = ""
    edit: str = ""
    strength: float = 1.0
    neurons: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    requested: int = 0


def pair_edit(
    head: Any,
    scan: Scan | str | os.PathLike[str] | Features | None,
    target: int,
    rival: int,
    neurons: int = 8,
    select: str = "tree",
    edit: str = "equalise",
    strength: float | None = None,
    rows: Sequence[int] | np.ndarray | None = None,
    split: bool = False,
    seed: int = SEED,
    *,
    objective: str = "accuracy",
    min_size: int | None = None,
    mode: str | None = None,
) -> PairLayer:
    """``head`` with the rival's weights moved to the target's on ``neurons`` neurons chosen by
    ``select`` (:func:`select_neurons`) on the rows of ``scan``: a :class:`PairLayer` (a FinalLayer).

    ``edit``: ``equalise`` sets w_jc := w_kc on the chosen columns: they no longer move the k-vs-j gap,
    and only row j, on those columns, changes. Those neurons are mostly j's own evidence, so equalising
    trades k→j errors for j→k ones; ``partial`` moves them part of the way, w_jc := w_jc − s·(w_jc −
    w_kc), with s in 0, 0.05, …, 1 chosen on the selection rows, unless ``strength`` is given, to
    minimise ``objective``: ``accuracy`` (default), the selection rows' errors over every class;
    ``pair``, the pair's errors k→j + j→k alone, which a strength can lower by sending j's images to
    third classes (on MNIST it did: benchmarks/bench_causal.py). Ties: the lower summed soft confusion
    of the pair (mean p(j) on k's images + mean p(k) on j's), then the smaller s; s = 0 says that no
    strength helps. ``rows``: the source indices that select (and choose s); ``split=True``
    selects on the first half of :func:`split_rows` (``scan``, ``seed``) instead, so that the second
    half is left to judge. ``head``: a FinalLayer, a loaded model, a scan or (weight, bias).
    """
    layer = as_final_layer(head if head is not None else _scan_of(scan))
    _check_pair(layer, target, rival)
    _check_m(neurons)
    rule = _check_rule(select)
    if edit not in EDITS:
        raise FclensError(f"unknown edit {edit!r}; use one of {', '.join(EDITS)}")
    if strength is not None and ((edit == "equalise" and strength != 1) or not 0 <= strength <= 1):
        raise FclensError(f"strength must be in [0, 1] for 'partial' (and 1 for 'equalise'), got {strength}")
    _check_objective(objective)
    choose = edit == "partial" and strength is None
    data = None
    if rule in ("tree", "contrast") or choose:
        if scan is None:
            raise FclensError(f"select={rule!r} and a chosen strength rank on images: give the scan")
        data = _read(scan)
        if rows is None and split:
            rows = split_rows(data, seed)[0]
        if rows is not None:
            data = data.select(np.asarray(rows, np.int64))
    mean_z = _class_mean(data, target) if rule in ("tree", "contrast") else None
    min_size, mode = _tree_shape(scan, min_size, mode)
    chosen = _ranking(layer, target, rival, rule, mean_z, seed, min_size, mode)[:neurons]
    if edit == "equalise":
        strength = 1.0
    elif choose:
        logits = layer.logits(data.z)
        columns = torch.as_tensor(np.asarray(chosen, np.int64))
        delta = data.z[:, columns] @ _step(layer, target, rival, chosen)
        judge = _Judge(logits, data.label, target, rival)
        strength = _best_strength(judge, logits[:, rival], delta, objective)
    weight = _edited_weight(layer, target, rival, chosen, strength)
    return PairLayer(
        weight,
        layer.bias.clone(),
        method=f"pair-{edit} {target}->{rival} {rule} m={len(chosen)}",
        target=target,
        rival=rival,
        select=rule,
        edit=edit,
        strength=float(strength),
        neurons=np.asarray(chosen, np.int64),
        requested=neurons,
    )


def _edited_weight(layer: FinalLayer, k: int, j: int, columns: np.ndarray, strength: float) -> torch.Tensor:
    weight = layer.weight.clone()
    cols = torch.as_tensor(np.asarray(columns, np.int64))
    if strength == 1:  # assigned, not computed: the gap is then the bias difference exactly
        weight[j, cols] = weight[k, cols]
    else:
        weight[j, cols] += strength * (weight[k, cols] - weight[j, cols])
    return weight


def _step(layer: FinalLayer, k: int, j: int, columns: np.ndarray) -> torch.Tensor:
    """The change of row j that ``equalise`` makes, on ``columns``: w_kS − w_jS (float32, (len,))."""
    cols = torch.as_tensor(np.asarray(columns, np.int64))
    return layer.weight[k, cols] - layer.weight[j, cols]


# --- the figures ------------------------------------------------------------------------------------


@dataclass
class Outcome:
    """A layer's figures for one pair (k → j) on the held-out rows: the errors both ways, the soft
    confusion both ways (mean p(j) over k's images, mean p(k) over j's), and the accuracy of k, of j, of
    the images of every other class together, and of all; NaN where a class has no images."""

    errors_kj: int
    errors_jk: int
    soft_kj: float
    soft_jk: float
    accuracy_k: float
    accuracy_j: float
    accuracy_other: float
    accuracy: float

    @property
    def pair_errors(self) -> int:
        return self.errors_kj + self.errors_jk

    @classmethod
    def of(cls, evaluation: HeadEvaluation, k: int, j: int) -> Outcome:
        """The pair's figures read from a full evaluation (what the fast path must reproduce)."""
        confusion = evaluation.confusion
        others = np.setdiff1d(np.arange(len(confusion)), [k, j])
        counted = confusion[others].sum()
        return cls(
            errors_kj=int(confusion[k, j]),
            errors_jk=int(confusion[j, k]),
            soft_kj=float(evaluation.soft_confusion[k, j]),
            soft_jk=float(evaluation.soft_confusion[j, k]),
            accuracy_k=float(evaluation.per_class_accuracy[k]),
            accuracy_j=float(evaluation.per_class_accuracy[j]),
            accuracy_other=float(confusion[others, others].sum() / counted) if counted else float("nan"),
            accuracy=float(evaluation.accuracy),
        )

    def to_dict(self) -> dict[str, Any]:
        return {key: _number(value) for key, value in vars(self).items()}


class _Judge:
    """The pair's figures for any new column j of fixed logits, in O(rows) per new column.

    Once per pair: each row's best class other than j (value, index: torch's argmax takes the first of
    equal maxima) and, on the rows of k and j, the log-sum-exp of the logits without column j. A new
    logit_j then decides each row's top-1 (j, or that best other) and p(j) = σ(logit_j − lse_other).
    """

    def __init__(
        self,
        logits: torch.Tensor,
        label: torch.Tensor,
        k: int,
        j: int,
        top: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> None:
        self.k, self.j = k, j
        self.label = label
        values, indices = torch.topk(logits, 2, dim=1) if top is None else top
        first = indices[:, 0] == j
        self.best = torch.where(first, values[:, 1], values[:, 0])
        self.best_index = torch.where(first, indices[:, 1], indices[:, 0])
        self.of_k, self.of_j = label == k, label == j
        self.pair = torch.nonzero(self.of_k | self.of_j).squeeze(1)
        without = logits[self.pair].clone()
        without[:, j] = -torch.inf
        self.lse = torch.logsumexp(without, dim=1)
        self.logit_k = logits[self.pair, k]
        self.pair_is_k = self.of_k[self.pair]
        known = label >= 0
        self.other = known & ~self.of_k & ~self.of_j
        self.n_k, self.n_j = int(self.of_k.sum()), int(self.of_j.sum())
        self.n_other, self.n = int(self.other.sum()), int(known.sum())

    def _wins(self, column: torch.Tensor, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Where logit_j is the top-1: above the best other, or equal to it with j the lower index
        (``rows``: the rows ``column`` holds, all by default)."""
        best, index = (
            (self.best, self.best_index) if rows is None else (self.best[rows], self.best_index[rows])
        )
        if column.ndim == 2:
            best, index = best[:, None], index[:, None]
        return (column > best) | ((column == best) & (index > self.j))

    def outcome(self, column: torch.Tensor) -> Outcome:
        wins = self._wins(column)
        kept = ~wins
        correct_other = kept & (self.best_index == self.label)
        log_total = torch.logaddexp(column[self.pair], self.lse)
        p_j = torch.exp(column[self.pair] - log_total)
        p_k = torch.exp(self.logit_k - log_total)
        k_right = int((kept & self.of_k & (self.best_index == self.k)).sum())
        j_right = int((wins & self.of_j).sum())
        other_right = int((correct_other & self.other).sum())
        return Outcome(
            errors_kj=int((wins & self.of_k).sum()),
            errors_jk=int((kept & self.of_j & (self.best_index == self.k)).sum()),
            soft_kj=_ratio(float(p_j[self.pair_is_k].double().sum()), self.n_k),
            soft_jk=_ratio(float(p_k[~self.pair_is_k].double().sum()), self.n_j),
            accuracy_k=_ratio(k_right, self.n_k),
            accuracy_j=_ratio(j_right, self.n_j),
            accuracy_other=_ratio(other_right, self.n_other),
            accuracy=_ratio(k_right + j_right + other_right, self.n),
        )

    def errors(
        self, column: torch.Tensor, delta: torch.Tensor, objective: str
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """For logit_j = ``column`` + s·``delta`` at each s of :data:`STRENGTHS`: the errors
        ``objective`` counts (``pair``: k→j + j→k; ``accuracy``: every labelled row's), up to a constant,
        and the pair's summed soft confusion (mean p(j) over k's rows + mean p(k) over j's).

        logit_j moves linearly in s, so a row's top-1 can change only where it differs at s = 0 and
        s = 1: the errors are counted on those rows alone (the others add the same to every s)."""
        grid = torch.as_tensor(STRENGTHS, dtype=column.dtype)
        moving = torch.nonzero(self._wins(column) != self._wins(column + delta)).squeeze(1)
        wins = self._wins(column[moving, None] + delta[moving, None] * grid, moving)
        label, best = self.label[moving, None], self.best_index[moving, None]
        if objective == "pair":
            errors = (wins & (label == self.k)).sum(0) + (~wins & (label == self.j) & (best == self.k)).sum(0)
        else:
            errors = (torch.where(wins, label != self.j, best != label) & (label >= 0)).sum(0)
        pair = column[self.pair, None] + delta[self.pair, None] * grid
        log_total = torch.logaddexp(pair, self.lse[:, None])
        p_j = torch.exp(pair - log_total)[self.pair_is_k].sum(0) / max(self.n_k, 1)
        p_k = torch.exp(self.logit_k[:, None] - log_total)[~self.pair_is_k].sum(0) / max(self.n_j, 1)
        return errors, p_j + p_k


def headline_m(ms: Sequence[int]) -> int:
    """The m a sentence and a summary tell: 8, as the issue asks, else the middle one tested."""
    return 8 if 8 in ms else sorted(ms)[len(ms) // 2]


# --- the test ---------------------------------------------------------------------------------------


@dataclass
class Trial:
    """One rule at one m on one pair: the neurons it chose (``len(neurons)`` may be below m for
    ``tree``), the held-out figures after ``equalise`` and after ``partial`` at the ``strength`` chosen
    on the selection rows."""

    select: str
    m: int
    neurons: np.ndarray
    equalise: Outcome
    partial: Outcome
    strength: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "select": self.select,
            "m": self.m,
            "used": len(self.neurons),
            "neurons": [int(c) for c in self.neurons],
            "equalise": self.equalise.to_dict(),
            "partial": self.partial.to_dict(),
            "strength": self.strength,
        }


@dataclass
class PairTest:
    """The causal test of one pair, target k → rival j, on the held-out rows: the figures ``before``
    any edit and one :class:`Trial` per rule and m. ``named`` is how many neurons the atlas names for
    the pair (``tree`` can use no more); ``n_target``/``n_rival`` their held-out images."""

    target: int
    rival: int
    target_name: str
    rival_name: str
    n_target: int
    n_rival: int
    named: int
    before: Outcome
    trials: list[Trial]

    def trial(self, select: str, m: int) -> Trial:
        for trial in self.trials:
            if trial.select == select and trial.m == m:
                return trial
        raise FclensError(f"no trial of {select!r} at m = {m} for the pair {self.target} → {self.rival}")

    def sentence(self, m: int = 8) -> str:
        """What equalising the rival's weights on the top-m named neurons does, beside random and contrast."""
        k, j = self.target_name, self.rival_name
        before = self.before
        tree = self.trial("tree", m)
        used = len(tree.neurons)
        named = f"top {m} named neurons" if used == m else f"{used} named neurons (of {m} asked)"
        after = tree.equalise
        own = f"{j}'s accuracy"
        text = (
            f"{k} → {j}: equalising {j}'s weights on the {named} changes {k}→{j} errors from "
            f"{before.errors_kj} to {after.errors_kj} on {self.n_target} held-out images of {k} (soft "
            f"confusion {before.soft_kj:.3f} → {after.soft_kj:.3f}), {j}→{k} errors from "
            f"{before.errors_jk} to {after.errors_jk}, {_cost(before.accuracy_j, after.accuracy_j, own)} "
            f"and {_cost(before.accuracy_other, after.accuracy_other, 'accuracy elsewhere')}"
        )
        controls = [
            f"{rule} {m}: {t.equalise.errors_kj} errors, soft {t.equalise.soft_kj:.3f}, "
            f"{_cost(before.accuracy_j, t.equalise.accuracy_j, own)}"
            for rule in ("random", "contrast")
            if (t := self._maybe(rule, m)) is not None
        ]
        partial = (
            f"the partial edit (s = {tree.strength:.2f}, chosen on the selection rows) leaves "
            f"{tree.partial.pair_errors} errors both ways (of {before.pair_errors})"
        )
        return text + (f"; the same with {'; '.join(controls)}" if controls else "") + f"; {partial}."

    def _maybe(self, select: str, m: int) -> Trial | None:
        return next((t for t in self.trials if t.select == select and t.m == m), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready; what ``pairs[].causal`` of the atlas holds."""
        default = headline_m(tuple(t.m for t in self.trials)) if self.trials else None
        return {
            "target": self.target,
            "rival": self.rival,
            "target_name": self.target_name,
            "rival_name": self.rival_name,
            "n_target": self.n_target,
            "n_rival": self.n_rival,
            "named": self.named,
            "before": self.before.to_dict(),
            "trials": [t.to_dict() for t in self.trials],
            "sentence": self.sentence(default)
            if default is not None and self._maybe("tree", default)
            else None,
        }


@dataclass
class CausalTable:
    """:func:`causal_test`'s result: one :class:`PairTest` per pair, and how it was made."""

    pairs: list[PairTest]
    rules: tuple[str, ...]
    ms: tuple[int, ...]
    seed: int
    fraction: float
    objective: str
    n_select: int
    n_held_out: int
    method: str
    seconds: float

    def pair(self, target: int, rival: int) -> PairTest:
        for test in self.pairs:
            if (test.target, test.rival) == (target, rival):
                return test
        raise FclensError(f"the pair {target} → {rival} was not tested")

    def summary(self) -> dict[str, dict[int, dict[str, float]]]:
        """Per rule and m, over the pairs: the share of their summed held-out soft confusion k→j that
        ``equalise`` removes (pooled, so that a pair with almost none cannot dominate), the mean change of the pair's errors both ways under
        ``equalise`` and ``partial``, and the mean change, in points, of j's accuracy, of the others' and of
        all (``partial_…``: the same after the partial edit)."""
        result: dict[str, dict[int, dict[str, float]]] = {}
        for rule in self.rules:
            result[rule] = {}
            for m in self.ms:
                rows = [(p.before, p.trial(rule, m)) for p in self.pairs]
                before = sum(b.soft_kj for b, _ in rows if not np.isnan(b.soft_kj))
                after = sum(t.equalise.soft_kj for _, t in rows if not np.isnan(t.equalise.soft_kj))
                result[rule][m] = {
                    "soft_cut": 1 - after / before if before > 0 else float("nan"),
                    "errors_kj": _mean([t.equalise.errors_kj - b.errors_kj for b, t in rows]),
                    "pair_errors": _mean([t.equalise.pair_errors - b.pair_errors for b, t in rows]),
                    "partial_pair_errors": _mean([t.partial.pair_errors - b.pair_errors for b, t in rows]),
                    "accuracy_j": _mean([100 * (t.equalise.accuracy_j - b.accuracy_j) for b, t in rows]),
                    "accuracy_other": _mean(
                        [100 * (t.equalise.accuracy_other - b.accuracy_other) for b, t in rows]
                    ),
                    "accuracy": _mean([100 * (t.equalise.accuracy - b.accuracy) for b, t in rows]),
                    "partial_accuracy_j": _mean(
                        [100 * (t.partial.accuracy_j - b.accuracy_j) for b, t in rows]
                    ),
                    "partial_accuracy": _mean([100 * (t.partial.accuracy - b.accuracy) for b, t in rows]),
                }
        return result

    def to_dict(self) -> dict[str, Any]:
        return {
            "rules": list(self.rules),
            "ms": list(self.ms),
            "seed": self.seed,
            "fraction": self.fraction,
            "objective": self.objective,
            "n_select": self.n_select,
            "n_held_out": self.n_held_out,
            "method": self.method,
            "seconds": self.seconds,
            "summary": {
                rule: {
                    str(m): {key: _number(v) for key, v in figures.items()} for m, figures in per_m.items()
                }
                for rule, per_m in self.summary().items()
            },
            "pairs": [p.to_dict() for p in self.pairs],
        }

    def to_text(self, m: int | None = None) -> str:
        """The summary over the pairs, then per pair its sentence at ``m`` (8 when tested) and its table."""
        m = m if m is not None else headline_m(self.ms)
        lines = [
            f"Causal test of {len(self.pairs)} pairs: selected on {self.n_select} rows, judged on "
            f"{self.n_held_out} held-out rows (seed {self.seed}); the partial edit's strength minimises "
            f"the selection rows' {'pair errors' if self.objective == 'pair' else 'errors'}; {self.seconds:.1f} s",
            "",
            "Mean over the pairs (equalise): soft k→j removed | Δ errors k→j | Δ errors both ways "
            "(partial) | Δ accuracy of j, of the others (points)",
        ]
        for rule, per_m in self.summary().items():
            for size, f in per_m.items():
                lines.append(
                    f"  {rule:8} m={size:<3} {_percent(f['soft_cut']):>7} | {_signed(f['errors_kj']):>7} | "
                    f"{_signed(f['pair_errors']):>7} ({_signed(f['partial_pair_errors']):>7}) | "
                    f"{_signed(f['accuracy_j']):>7}, {_signed(f['accuracy_other']):>6}"
                )
        for test in self.pairs:
            b = test.before
            lines += [
                "",
                test.sentence(m) if test._maybe("tree", m) else f"{test.target_name} → {test.rival_name}",
                f"  before: errors {b.errors_kj}/{b.errors_jk}, soft {b.soft_kj:.3f}, accuracy k "
                f"{_percent(b.accuracy_k)}, j {_percent(b.accuracy_j)}, other {_percent(b.accuracy_other)}",
                "  rule     m    used  k→j  j→k  soft k→j  acc k   acc j   other  | partial s  k→j  j→k",
            ]
            for t in test.trials:
                e, p = t.equalise, t.partial
                lines.append(
                    f"  {t.select:8} {t.m:<4} {len(t.neurons):<4} {e.errors_kj:>4} {e.errors_jk:>4} "
                    f"{e.soft_kj:9.3f}  {_percent(e.accuracy_k):>6} {_percent(e.accuracy_j):>6} "
                    f"{_percent(e.accuracy_other):>6}  | {t.strength:9.2f} {p.errors_kj:>4} {p.errors_jk:>4}"
                )
        return "\n".join(lines) + "\n"


def causal_test(
    scan: Scan | str | os.PathLike[str] | Features,
    pairs: Iterable[Any] | None = None,
    ms: Sequence[int] = MS,
    rules: Sequence[str] = RULES,
    seed: int = SEED,
    head: Any = None,
    *,
    fraction: float = 0.5,
    top: int = TOP_PAIRS,
    exact: bool = False,
    objective: str = "accuracy",
    min_size: int | None = None,
    mode: str | None = None,
    class_names: Sequence[str] | None = None,
) -> CausalTable:
    """Edit each pair's rival row on the neurons each rule picks, at each m, and judge it on held-out rows.

    The scan's rows are split by :func:`split_rows` (``seed``, ``fraction``): neurons, the ``partial``
    strength (minimising ``objective``, see :func:`pair_edit`) and the default pairs are chosen on the
    first part, every figure is read on the second.
    ``pairs``: (target, rival) tuples or the atlas's :class:`~fclens.atlasing.Pair` (``.a`` → ``.b``);
    by default the ``top`` pairs by soft confusion on the selection rows (the atlas's ranking, on the
    rows that may choose; ties by errors, then class indices). ``head``: the layer to edit (the scan's
    by default). ``exact=True`` evaluates every edit through :func:`evaluate_logits` instead of the
    rank-m fast path (equal up to float32 rounding, and much slower on many classes).
    """
    started = time.perf_counter()
    for m in ms:
        _check_m(m)
    rules = tuple(_check_rule(rule) for rule in rules)
    _check_objective(objective)
    features = _read(scan)
    layer = as_final_layer(head if head is not None else _scan_of(scan))
    if layer.num_features != features.z.shape[1]:
        raise FclensError(
            f"the final layer takes {layer.num_features} features; the scan stored {features.z.shape[1]}"
        )
    names = list(class_names) if class_names is not None else _names(scan, layer.num_classes)
    min_size, mode = _tree_shape(scan, min_size, mode)
    select_rows, held_rows = split_rows(features, seed, fraction)
    chosen, held = features.select(select_rows), features.select(held_rows)
    chosen_logits = layer.logits(chosen.z)
    if pairs is None:
        pairs = _top_pairs(evaluate_logits(chosen_logits, chosen.label), top)
    pairs = [_as_pair(p, layer.num_classes) for p in pairs]
    logits = layer.logits(held.z)
    base = evaluate_logits(logits, held.label, method=layer.method) if exact else None
    top2 = torch.topk(logits, 2, dim=1)  # each row's best two: its best other than j, for every j
    chosen_top2 = torch.topk(chosen_logits, 2, dim=1)
    # neuron-major copies: a rule's neurons are then whole rows, gathered 2× faster than strided columns
    held_by_neuron, chosen_by_neuron = held.z.T.contiguous(), chosen.z.T.contiguous()
    tests = []
    for k, j in pairs:
        judge = _Judge(logits, held.label, k, j, (top2.values, top2.indices))
        before = Outcome.of(base, k, j) if base is not None else judge.outcome(logits[:, j])
        mean_z = _class_mean(chosen, k)
        chosen_judge = _Judge(chosen_logits, chosen.label, k, j, (chosen_top2.values, chosen_top2.indices))
        trials = []
        for rule in rules:
            ranking = _ranking(layer, k, j, rule, mean_z, seed, min_size, mode)[: max(ms)]
            # The rules' selections are prefixes of one ranking: the change of logit_j for every m at once
            # is the running sum of the ranked neurons' changes z_c (w_kc − w_jc).
            columns = torch.as_tensor(ranking.astype(np.int64))
            step = _step(layer, k, j, ranking)
            held_deltas = _running(held_by_neuron[columns] * step[:, None])
            chosen_deltas = _running(chosen_by_neuron[columns] * step[:, None])
            for m in ms:
                used = min(m, len(ranking))
                held_delta = held_deltas[used]
                strength = _best_strength(chosen_judge, chosen_logits[:, j], chosen_deltas[used], objective)
                outcomes = []
                for s in (1.0, strength):
                    column = logits[:, j] + s * held_delta
                    outcomes.append(_exactly(logits, column, held, k, j) if exact else judge.outcome(column))
                trials.append(Trial(rule, m, ranking[:m].copy(), outcomes[0], outcomes[1], strength))
        tests.append(
            PairTest(
                target=k,
                rival=j,
                target_name=names[k],
                rival_name=names[j],
                n_target=judge.n_k,
                n_rival=judge.n_j,
                named=len(pair_neurons(layer, k, j, min_size, mode)),
                before=before,
                trials=trials,
            )
        )
    return CausalTable(
        pairs=tests,
        rules=rules,
        ms=tuple(int(m) for m in ms),
        seed=seed,
        fraction=fraction,
        objective=objective,
        n_select=len(chosen),
        n_held_out=len(held),
        method=layer.method,
        seconds=time.perf_counter() - started,
    )


def _running(changes: torch.Tensor) -> torch.Tensor:
    """(m + 1, rows) from each neuron's change of logit_j (m, rows): row i the change by the first i
    neurons (row 0: none)."""
    return torch.cat([torch.zeros(1, changes.shape[1]), torch.cumsum(changes, dim=0)])


def _best_strength(judge: _Judge, column: torch.Tensor, delta: torch.Tensor, objective: str) -> float:
    """The strength in :data:`STRENGTHS` with the fewest ``objective`` errors on the judge's rows (the
    selection rows), ``column`` their logit_j and ``delta`` its change at strength 1."""
    if judge.pair.numel() == 0 or not bool(delta.any()):
        return 0.0
    errors, soft = judge.errors(column, delta, objective)
    return float(STRENGTHS[np.lexsort((STRENGTHS, soft.numpy(), errors.numpy()))[0]])


def _exactly(logits: torch.Tensor, column: torch.Tensor, held: Features, k: int, j: int) -> Outcome:
    """The figures through the evaluator's counting core: column j replaced, evaluated, restored."""
    saved = logits[:, j].clone()
    logits[:, j] = column
    try:
        return Outcome.of(evaluate_logits(logits, held.label, index=held.index), k, j)
    finally:
        logits[:, j] = saved


def _top_pairs(evaluation: HeadEvaluation, count: int) -> list[tuple[int, int]]:
    """The ``count`` (k, j), k ≠ j, with the most soft confusion, then errors, then the lower indices."""
    soft = np.nan_to_num(evaluation.soft_confusion, nan=0.0)
    np.fill_diagonal(soft, -1.0)
    k, j = np.divmod(np.arange(soft.size), soft.shape[1])
    order = np.lexsort((j, k, -evaluation.confusion.reshape(-1), -soft.reshape(-1)))
    return [(int(k[i]), int(j[i])) for i in order[:count] if soft.flat[i] > 0]


# --- small helpers ----------------------------------------------------------------------------------


def _read(source: Scan | str | os.PathLike[str] | Features) -> Features:
    """The rows as :class:`Features`: given, or read once from a scan (all ``ok`` rows)."""
    if isinstance(source, Features):
        return source
    return read_features(open_scan(source))


def _scan_of(source: Any) -> Any:
    if isinstance(source, Features):
        raise FclensError("features alone hold no final layer: give head=... (a FinalLayer, a model, a scan)")
    return open_scan(source)


def _names(source: Any, classes: int) -> list[str]:
    if isinstance(source, Features):
        return [str(k) for k in range(classes)]
    return list(open_scan(source).class_names)


def _tree_shape(source: Any, min_size: int | None, mode: str | None) -> tuple[int, str]:
    """The trees' ``min_size`` and ``mode``: as given, else the scan's, else 20 and "chains"."""
    if (min_size is None or mode is None) and source is not None and not isinstance(source, Features):
        options = open_scan(source).manifest.options
        min_size = options.min_size if min_size is None else min_size
        mode = options.mode if mode is None else mode
    return (20 if min_size is None else int(min_size)), ("chains" if mode is None else mode)


def _class_mean(features: Features, k: int) -> torch.Tensor:
    """The mean pooled features of class k's rows: the mean share of neuron c is (w_jc − w_kc) times it."""
    rows = features.label == k
    if not bool(rows.any()):
        raise FclensError(f"no labelled image of class {k} among the rows that select; the rules need some")
    return features.z[rows].double().mean(dim=0)


def _as_pair(pair: Any, classes: int) -> tuple[int, int]:
    k, j = (pair.a, pair.b) if hasattr(pair, "a") else pair
    k, j = int(k), int(j)
    _check_classes(k, j, classes)
    return k, j


def _check_pair(layer: FinalLayer, target: int, rival: int) -> None:
    _check_classes(target, rival, layer.num_classes)


def _check_classes(target: int, rival: int, classes: int) -> None:
    for name, value in (("target", target), ("rival", rival)):
        if not 0 <= int(value) < classes:
            raise FclensError(
                f"{name} class {value} is out of range: the layer has classes 0 … {classes - 1}"
            )
    if int(target) == int(rival):
        raise FclensError(f"the target and the rival are the same class ({target}); a pair needs two")


def _check_m(m: Any) -> None:
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise FclensError(f"the number of neurons m must be an integer >= 1, got {m!r}")


def _check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise FclensError(f"unknown objective {objective!r}; use one of {', '.join(OBJECTIVES)}")


def _check_rule(rule: str) -> str:
    if rule not in RULES:
        raise FclensError(f"unknown selection rule {rule!r}; use one of {', '.join(RULES)}")
    return rule


def _ratio(count: float, total: int) -> float:
    return count / total if total else float("nan")


def _mean(values: list[float]) -> float:
    values = [v for v in values if not np.isnan(v)]
    return float(np.mean(values)) if values else float("nan")


def _number(value: Any) -> Any:
    if isinstance(value, (float, np.floating)):
        return None if np.isnan(value) else float(value)
    return int(value) if isinstance(value, (np.integer,)) else value


def _cost(before: float, after: float, what: str) -> str:
    """ "costs 3.0 points of ``what``", "gains 2.0 points of …", or that there were no images to judge."""
    if np.isnan(before) or np.isnan(after):
        return f"leaves {what} unmeasured (no held-out images)"
    points = 100 * (before - after)
    return f"gains {-points:.1f} points of {what}" if points < 0 else f"costs {points:.1f} points of {what}"


def _signed(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{value:+.2f}"


def _percent(value: float) -> str:
    return "n/a" if np.isnan(value) else f"{100 * value:.1f}%"

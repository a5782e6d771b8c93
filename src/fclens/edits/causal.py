"""Do the neurons the atlas names for a confusion pair cause it? Edit the final layer on them, and on the
neurons three control rules pick, and judge every edit on held-out images.

A confusion pair (k → j) is class k's images pulled toward the rival j; the atlas names the neurons that
argue for j (:func:`fclens.edits.pair.pair_neurons`). :func:`causal_test` runs every selection rule at
every m on the top confusion pairs (or the atlas's) and judges each :func:`~fclens.pair_edit` on a seeded
held-out half of the scan (:meth:`~fclens.scanning.features.Features.split`): never on the rows that
chose the neurons. :func:`save_pair_edit` writes one tested edit as a model (``fclens atlas --write``).

Only row j changes, so only column j of the logits does: the test computes the base logits of the
held-out rows once and evaluates each edit as a rank-m update of that column
(``logit_j += z_S · (w_kS − w_jS)``), read by the evaluator's :class:`~fclens.edits.evaluate.PairCount`
in O(rows). ``exact=True`` sends every edit through :func:`~fclens.edits.evaluate.evaluate_logits`
instead; the tests check both against :func:`fclens.evaluate` on the edited layer.

Example::

    table = fclens.causal_test("scan/")               # the top 20 pairs, every rule, m = 1 … 32
    print(table.to_text()); table.to_dict()           # JSON-ready
    table.pair(281, 285).trial("tree", 8).equalise.errors_kj
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from fclens import deprecation
from fclens.edits import TOP_PAIRS
from fclens.edits.evaluate import Evaluation, PairCount, PairOutcome, evaluate_logits
from fclens.edits.pair import (
    RULES,
    PairLayer,
    _check_m,
    _check_rule,
    _layer,
    _old_layer,
    best_strength,
    check_objective,
    class_mean,
    pair_classes,
    pair_edit,
    pair_neurons,
    ranking,
    step,
    tree_shape,
)
from fclens.errors import FclensError
from fclens.formatting import json_number, nan_mean, percent, signed
from fclens.options import SEED
from fclens.scanning.features import Features
from fclens.scanning.reader import Scan, as_features, as_scan

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "MS",
    "TOP_PAIRS",
    "CausalTable",
    "PairTest",
    "SavedEdit",
    "Trial",
    "causal_test",
    "save_pair_edit",
]

MS = (1, 2, 4, 8, 16, 32)
"""The numbers of neurons :func:`causal_test` edits, per rule."""


def headline_m(ms: Sequence[int]) -> int:
    """The m a sentence and a summary tell: 8, as the issue asks, else the middle one tested."""
    return 8 if 8 in ms else sorted(ms)[len(ms) // 2]


# --- the test ---------------------------------------------------------------------------------------


@dataclass
class Trial:
    """One rule at one m on one pair: the neurons it chose (``len(neurons)`` may be below m for
    ``tree``), the held-out figures after ``equalise`` and after ``partial`` at the ``strength`` chosen
    on the selection rows."""

    rule: str
    m: int
    neurons: np.ndarray
    equalise: PairOutcome
    partial: PairOutcome
    strength: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "select": self.rule,
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
    before: PairOutcome
    trials: list[Trial]

    def __repr__(self) -> str:
        return f"PairTest({self.target_name} → {self.rival_name}: {len(self.trials)} trials)"

    def trial(self, rule: str, m: int) -> Trial:
        for trial in self.trials:
            if trial.rule == rule and trial.m == m:
                return trial
        raise FclensError(f"no trial of {rule!r} at m = {m} for the pair {self.target} → {self.rival}")

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

    def _maybe(self, rule: str, m: int) -> Trial | None:
        return next((t for t in self.trials if t.rule == rule and t.m == m), None)

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

    def __repr__(self) -> str:
        return (
            f"CausalTable({len(self.pairs)} pairs, rules {', '.join(self.rules)}, m = "
            f"{', '.join(map(str, self.ms))}; chosen on {self.n_select} rows, judged on {self.n_held_out})"
        )

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
                    "errors_kj": nan_mean([t.equalise.errors_kj - b.errors_kj for b, t in rows]),
                    "pair_errors": nan_mean([t.equalise.pair_errors - b.pair_errors for b, t in rows]),
                    "partial_pair_errors": nan_mean([t.partial.pair_errors - b.pair_errors for b, t in rows]),
                    "accuracy_j": nan_mean([100 * (t.equalise.accuracy_j - b.accuracy_j) for b, t in rows]),
                    "accuracy_other": nan_mean(
                        [100 * (t.equalise.accuracy_other - b.accuracy_other) for b, t in rows]
                    ),
                    "accuracy": nan_mean([100 * (t.equalise.accuracy - b.accuracy) for b, t in rows]),
                    "partial_accuracy_j": nan_mean(
                        [100 * (t.partial.accuracy_j - b.accuracy_j) for b, t in rows]
                    ),
                    "partial_accuracy": nan_mean([100 * (t.partial.accuracy - b.accuracy) for b, t in rows]),
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
                    str(m): {key: json_number(v) for key, v in figures.items()}
                    for m, figures in per_m.items()
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
                    f"  {rule:8} m={size:<3} {percent(f['soft_cut']):>7} | {signed(f['errors_kj']):>7} | "
                    f"{signed(f['pair_errors']):>7} ({signed(f['partial_pair_errors']):>7}) | "
                    f"{signed(f['accuracy_j']):>7}, {signed(f['accuracy_other']):>6}"
                )
        for test in self.pairs:
            b = test.before
            lines += [
                "",
                test.sentence(m) if test._maybe("tree", m) else f"{test.target_name} → {test.rival_name}",
                f"  before: errors {b.errors_kj}/{b.errors_jk}, soft {b.soft_kj:.3f}, accuracy k "
                f"{percent(b.accuracy_k)}, j {percent(b.accuracy_j)}, other {percent(b.accuracy_other)}",
                "  rule     m    used  k→j  j→k  soft k→j  acc k   acc j   other  | partial s  k→j  j→k",
            ]
            for t in test.trials:
                e, p = t.equalise, t.partial
                lines.append(
                    f"  {t.rule:8} {t.m:<4} {len(t.neurons):<4} {e.errors_kj:>4} {e.errors_jk:>4} "
                    f"{e.soft_kj:9.3f}  {percent(e.accuracy_k):>6} {percent(e.accuracy_j):>6} "
                    f"{percent(e.accuracy_other):>6}  | {t.strength:9.2f} {p.errors_kj:>4} {p.errors_jk:>4}"
                )
        return "\n".join(lines) + "\n"

    def _repr_html_(self) -> str:
        """In a notebook: the mean over the pairs per rule, and each pair's held-out errors by rule."""
        from fclens.report.notebook import causal_html

        return causal_html(self)

    def plot(self) -> Figure:
        """Per rule against m: the held-out soft confusion equalising removes, and its cost in accuracy."""
        from fclens.report.notebook import causal_figure

        return causal_figure(self)


def causal_test(
    scan: Scan | Features | str | os.PathLike[str],
    pairs: Iterable[Any] | None = None,
    ms: Sequence[int] = MS,
    rules: Sequence[str] = RULES,
    seed: int = SEED,
    layer: Any = None,
    *,
    fraction: float = 0.5,
    top: int = TOP_PAIRS,
    exact: bool = False,
    objective: str = "accuracy",
    min_size: int | None = None,
    mode: str | None = None,
    **old: Any,
) -> CausalTable:
    """Edit each pair's rival row on the neurons each rule picks, at each m, and judge it on held-out rows.

    The scan's rows are split by ``Features.split(seed, fraction)``: neurons, the ``partial``
    strength (minimising ``objective``, see :func:`pair_edit`) and the default pairs are chosen on the
    first part, every figure is read on the second.
    ``pairs``: (target, rival) tuples or the atlas's :class:`~fclens.atlasing.Pair` (``.a`` → ``.b``);
    by default the ``top`` pairs by soft confusion on the selection rows (the atlas's ranking, on the
    rows that may choose; ties by errors, then class indices). ``layer``: the layer to edit (the scan's
    by default). ``exact=True`` evaluates every edit through :func:`evaluate_logits` instead of the
    rank-m fast path (equal up to float32 rounding, and much slower on many classes).
    """
    started = time.perf_counter()
    deprecation.keyword(old, "head", "layer", _old_layer)
    layer = old.pop("layer", layer)
    names = old.pop("class_names", None)
    if names is not None:
        deprecation.warn("causal_test(class_names=…)", "Features that carry their class names")
    if old:
        raise FclensError(f"causal_test() got unknown keywords {', '.join(sorted(old))}")
    for m in ms:
        _check_m(m)
    rules = tuple(_check_rule(rule) for rule in rules)
    check_objective(objective)
    features = as_features(scan)
    layer = _layer(layer, features)
    names = list(names or features.class_names or [str(k) for k in range(layer.num_classes)])
    min_size, mode = tree_shape(features, min_size, mode)
    select_rows, held_rows = features.split(seed, fraction)
    chosen, held = features.select(select_rows), features.select(held_rows)
    chosen_logits = layer.logits(chosen.z)
    if pairs is None:
        pairs = _top_pairs(evaluate_logits(chosen_logits, chosen.label), top)
    if not isinstance(pairs, (list, tuple)):
        raise FclensError(f"pairs must be a list of (target, rival), got {type(pairs).__name__} {pairs!r}")
    pairs = [_as_pair(pair, names) for pair in pairs]
    logits = layer.logits(held.z)
    base = evaluate_logits(logits, held.label, method=layer.method) if exact else None
    top2 = torch.topk(logits, 2, dim=1)  # each row's best two: its best other than j, for every j
    chosen_top2 = torch.topk(chosen_logits, 2, dim=1)
    # neuron-major copies: a rule's neurons are then whole rows, gathered 2× faster than strided columns
    held_by_neuron, chosen_by_neuron = held.z.T.contiguous(), chosen.z.T.contiguous()
    tests = []
    for k, j in pairs:
        count = PairCount(logits, held.label, k, j, (top2.values, top2.indices))
        before = PairOutcome.of(base, k, j) if base is not None else count.outcome(logits[:, j])
        mean_z = class_mean(chosen, k)
        chosen_count = PairCount(chosen_logits, chosen.label, k, j, (chosen_top2.values, chosen_top2.indices))
        trials = []
        for rule in rules:
            ranked = ranking(layer, k, j, rule, mean_z, seed, min_size, mode)[: max(ms)]
            # The rules' selections are prefixes of one ranking: the change of logit_j for every m at once
            # is the running sum of the ranked neurons' changes z_c (w_kc − w_jc).
            columns = torch.as_tensor(ranked.astype(np.int64))
            change = step(layer, k, j, ranked)
            held_deltas = _running(held_by_neuron[columns] * change[:, None])
            chosen_deltas = _running(chosen_by_neuron[columns] * change[:, None])
            for m in ms:
                used = min(m, len(ranked))
                held_delta = held_deltas[used]
                strength = best_strength(chosen_count, chosen_logits[:, j], chosen_deltas[used], objective)
                outcomes = []
                for s in (1.0, strength):
                    column = logits[:, j] + s * held_delta
                    outcomes.append(_exactly(logits, column, held, k, j) if exact else count.outcome(column))
                trials.append(Trial(rule, m, ranked[:m].copy(), outcomes[0], outcomes[1], strength))
        tests.append(
            PairTest(
                target=k,
                rival=j,
                target_name=names[k],
                rival_name=names[j],
                n_target=count.n_k,
                n_rival=count.n_j,
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


def _exactly(logits: torch.Tensor, column: torch.Tensor, held: Features, k: int, j: int) -> PairOutcome:
    """The figures through the evaluator's counting core: column j replaced, evaluated, restored."""
    saved = logits[:, j].clone()
    logits[:, j] = column
    try:
        return PairOutcome.of(evaluate_logits(logits, held.label, index=held.index), k, j)
    finally:
        logits[:, j] = saved


def _top_pairs(evaluation: Evaluation, count: int) -> list[tuple[int, int]]:
    """The ``count`` (k, j), k ≠ j, with the most soft confusion, then errors, then the lower indices."""
    soft = np.nan_to_num(evaluation.soft_confusion, nan=0.0)
    np.fill_diagonal(soft, -1.0)
    k, j = np.divmod(np.arange(soft.size), soft.shape[1])
    order = np.lexsort((j, k, -evaluation.confusion.reshape(-1), -soft.reshape(-1)))
    return [(int(k[i]), int(j[i])) for i in order[:count] if soft.flat[i] > 0]


def _as_pair(pair: Any, names: Sequence[str]) -> tuple[int, int]:
    """(target, rival) from a tuple (of indices or names) or the atlas's :class:`~fclens.atlasing.Pair`."""
    if hasattr(pair, "a"):
        return pair_classes(pair.a, pair.b, names)
    if not isinstance(pair, (list, tuple)) or len(pair) != 2:
        raise FclensError(f"a pair is (target, rival), got {pair!r}")
    return pair_classes(pair[0], pair[1], names)


def _cost(before: float, after: float, what: str) -> str:
    """ "costs 3.0 points of ``what``", "gains 2.0 points of …", or that there were no images to judge."""
    if np.isnan(before) or np.isnan(after):
        return f"leaves {what} unmeasured (no held-out images)"
    points = 100 * (before - after)
    return f"gains {-points:.1f} points of {what}" if points < 0 else f"costs {points:.1f} points of {what}"


@dataclass(frozen=True)
class SavedEdit:
    """A pair edit written as a model: where (``path``), the edit (``layer``: its neurons, rule, …), and
    its own held-out test at its m (``test``, whose :meth:`PairTest.sentence` says what it does)."""

    path: Path
    layer: PairLayer
    test: PairTest
    seed: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "target": self.layer.target,
            "rival": self.layer.rival,
            "m": self.layer.m,
            "neurons": [int(c) for c in self.layer.neurons],
            "method": self.layer.method,
            "seed": self.seed,
            "sentence": self.test.sentence(self.layer.m),
        }


def save_pair_edit(
    scan: Scan | str | os.PathLike[str],
    target: int,
    rival: int,
    m: int,
    path: str | os.PathLike[str],
    seed: int = SEED,
) -> SavedEdit:
    """Write the scanned model with the ``tree``-selected ``equalise`` edit of target → rival (indices or
    names) on ``m`` neurons, chosen on the first half of the seeded split, and test that edit on the
    second half.

    ``fclens.load_model(source, weights=path)`` and ``fclens explain --weights`` read the file back; its
    metadata names the pair, the neurons and the split's seed.
    """
    from fclens.edits.write import write_model

    scan = as_scan(scan)
    features = scan.read_features()
    target, rival = pair_classes(target, rival, features.class_names, owner=f"the scan {scan.directory}")
    test = causal_test(features, [(target, rival)], ms=(m,), seed=seed).pair(target, rival)
    layer = pair_edit(features, target, rival, m, split=True, seed=seed)
    written = write_model(scan, layer, path, metadata={"fclens_split_seed": str(seed)})
    return SavedEdit(written, layer, test, seed)

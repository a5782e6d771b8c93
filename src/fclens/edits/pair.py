"""Edit the final layer for one confusion pair, on the neurons the atlas names for it (or a control's).

A confusion pair (k → j) is class k's images pulled toward the rival j. The atlas names the neurons that
argue for j: the − side of k's split tree and the + side of j's (PAPER.md §3, :func:`pair_neurons`).
:func:`pair_edit` is the lever that makes that claim testable: on m chosen neurons it sets the rival's
weights to the target's, w_jc := w_kc (``equalise``: those neurons no longer move the gap logit_j −
logit_k, and no other class's row changes), or moves them part of the way (``partial``, its strength
chosen on the rows that selected). :func:`select_neurons` picks the neurons by the paper's rule or a
control's; :mod:`fclens.edits.causal` runs every rule at every m and judges each edit on held-out rows.

Example::

    scan = fclens.read_scan("scan/")
    layer = fclens.pair_edit(scan, 281, 285, m=8, split=True)   # a PairLayer (a FinalLayer)
    layer.neurons, layer.strength                                 # which columns of row j changed, how far
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fclens import deprecation
from fclens.classes import ClassNames
from fclens.edits.evaluate import PairCount
from fclens.errors import FclensError
from fclens.layer import FinalLayer
from fclens.options import SEED
from fclens.scanning.features import Features
from fclens.scanning.reader import Scan, as_features, as_scan
from fclens.tree import class_trees, pair_indices

__all__ = [
    "EDITS",
    "OBJECTIVES",
    "RULES",
    "STRENGTHS",
    "PairLayer",
    "best_strength",
    "pair_classes",
    "pair_edit",
    "pair_neurons",
    "ranking",
    "select_neurons",
]

RULES = ("tree", "contrast", "weight", "random")
"""The selection rules (:func:`select_neurons`): the paper's, and three controls."""
EDITS = ("equalise", "partial")
"""The edits (:func:`pair_edit`)."""
STRENGTHS = np.linspace(0.0, 1.0, 21)
"""The strengths the ``partial`` edit chooses from on the selection rows (0: no edit, 1: ``equalise``)."""
OBJECTIVES = ("accuracy", "pair")
"""What the ``partial`` edit's strength minimises on the selection rows: their errors, all classes
(``accuracy``, the default), or the pair's errors k→j + j→k alone (``pair``)."""

ScanLike = Scan | Features | str | os.PathLike[str]


# --- the selection rules ----------------------------------------------------------------------------


def pair_neurons(
    layer: Any, target: int, rival: int, min_size: int | None = None, mode: str | None = None
) -> np.ndarray:
    """The neurons the atlas names for the pair (target k → rival j): the "−" child of k's tree root ∩
    the "+" child of j's (each row split at its own mean; an unsplit tree has one side, all its neurons),
    sorted. Fixed by the weights alone: the same for every image of the pair. ``layer``: a FinalLayer or
    anything :meth:`FinalLayer.of` reads (a scan gives its trees' shape too)."""
    final = FinalLayer.of(layer)
    names = getattr(layer, "class_names", None) or [str(k) for k in range(final.num_classes)]
    target, rival = pair_classes(target, rival, names)
    min_size, mode = tree_shape(layer, min_size, mode)
    trees = class_trees(final.weight[[target, rival]].numpy(), [target, rival], min_size, mode)
    return pair_indices(trees[0], trees[1])


def select_neurons(
    scan: ScanLike,
    target: int,
    rival: int,
    m: int,
    *,
    rule: str = "tree",
    layer: Any = None,
    rows: Sequence[int] | np.ndarray | None = None,
    seed: int = SEED,
    min_size: int | None = None,
    mode: str | None = None,
    **old: Any,
) -> np.ndarray:
    """The (at most) ``m`` neurons, columns of the final layer, that ``rule`` picks for the pair target
    k → rival j on ``scan``'s rows, best first.

    The share of neuron c in the gap logit_j − logit_k on an image is (w_jc − w_kc)·z_c; the rules:

    - ``tree`` (the paper's): the pair's named neurons (:func:`pair_neurons`) ranked by their mean share
      over the selection rows' images of k. Fewer than m named neurons give fewer: the length says how
      many were used.
    - ``contrast``: every neuron ranked by that mean share: the same data, no tree; the strongest control.
    - ``weight``: largest w_jc − w_kc: the weights alone, no data.
    - ``random``: a seeded random set (the same ``seed`` gives nested sets as m grows); the floor.

    ``scan``: a scan (or its directory) with stored features, or :class:`Features` read from one.
    ``layer``: the layer whose neurons are chosen (the scan's by default). ``rows``: the source indices
    that may select (all rows by default). ``min_size``/``mode`` shape the trees (the scan's by default).
    """
    if not _scan_like(scan) or "features" in old:  # 0.1's: select_neurons(head, k, j, m, select=, features=)
        deprecation.warn("select_neurons(head, …, features=scan)", "select_neurons(scan, …, layer=head)")
        layer, scan = _old_layer(scan), old.pop("features", None)
        if scan is None:  # the weight and random rules need no images
            scan = Features.of(np.zeros((0, FinalLayer.of(layer).num_features)), layer=layer)
    deprecation.keyword(old, "select", "rule")
    rule = old.pop("rule", rule)
    if old:
        raise FclensError(f"select_neurons() got unknown keywords {', '.join(sorted(old))}")
    features = as_features(scan)
    final = _layer(layer, features)
    target, rival = pair_classes(target, rival, _names(features, final))
    _check_m(m)
    rule = _check_rule(rule)
    data = features if rows is None else features.select(np.asarray(rows, np.int64))
    mean_z = class_mean(data, target) if rule in ("tree", "contrast") else None
    return ranking(final, target, rival, rule, mean_z, seed, *tree_shape(features, min_size, mode))[:m]


def ranking(
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
    selections for each m. ``mean_z``: the selection rows' mean features of class k (``tree`` and
    ``contrast``)."""
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

    ``strength`` s: w_jc := w_jc − s·(w_jc − w_kc) on those columns (1 for ``equalise``); ``m`` the number
    asked for (``tree`` may find fewer named neurons: ``len(neurons)`` were used); ``rule`` chose them.
    """

    target: int = -1
    rival: int = -1
    rule: str = ""
    edit: str = ""
    strength: float = 1.0
    neurons: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    m: int = 0

    @property
    def select(self) -> str:
        """Deprecated: :attr:`rule`."""
        deprecation.warn("PairLayer.select", "PairLayer.rule")
        return self.rule

    @property
    def requested(self) -> int:
        """Deprecated: :attr:`m`."""
        deprecation.warn("PairLayer.requested", "PairLayer.m")
        return self.m


def pair_edit(
    scan: ScanLike,
    target: int,
    rival: int,
    m: int = 8,
    *,
    rule: str = "tree",
    edit: str = "equalise",
    strength: float | None = None,
    rows: Sequence[int] | np.ndarray | None = None,
    split: bool = False,
    seed: int = SEED,
    objective: str = "accuracy",
    layer: Any = None,
    min_size: int | None = None,
    mode: str | None = None,
    **old: Any,
) -> PairLayer:
    """The scan's final layer (or ``layer``) with the rival's weights moved to the target's on ``m``
    neurons chosen by ``rule`` (:func:`select_neurons`) on ``scan``'s rows: a :class:`PairLayer`.

    ``edit``: ``equalise`` sets w_jc := w_kc on the chosen columns: they no longer move the k-vs-j gap,
    and only row j, on those columns, changes. Those neurons are mostly j's own evidence, so equalising
    trades k→j errors for j→k ones; ``partial`` moves them part of the way, w_jc := w_jc − s·(w_jc −
    w_kc), with s in 0, 0.05, …, 1 chosen on the selection rows, unless ``strength`` is given, to
    minimise ``objective``: ``accuracy`` (default), the selection rows' errors over every class;
    ``pair``, the pair's errors k→j + j→k alone, which a strength can lower by sending j's images to
    third classes (on MNIST it did: benchmarks/bench_causal.py). Ties: the lower summed soft confusion
    of the pair (mean p(j) on k's images + mean p(k) on j's), then the smaller s; s = 0 says that no
    strength helps. ``rows``: the source indices that select (and choose s); ``split=True`` selects on
    the first half of ``Features.split(seed)`` instead, so that the second half is left to judge.
    ``layer``: the layer to edit (the scan's by default): a FinalLayer or anything
    :meth:`FinalLayer.of` reads.
    """
    if _scan_like(target):  # 0.1's order: pair_edit(head, scan, target, rival, neurons=…, select=…)
        deprecation.warn(
            "pair_edit(head, scan, target, rival)", "pair_edit(scan, target, rival, m, layer=head)"
        )
        layer, scan, target, rival, m = _old_layer(scan), target, rival, m, old.pop("neurons", 8)
    for before, now in (("neurons", "m"), ("select", "rule"), ("head", "layer")):
        deprecation.keyword(old, before, now)
    m, rule, layer = old.pop("m", m), old.pop("rule", rule), old.pop("layer", layer)
    if old:
        raise FclensError(f"pair_edit() got unknown keywords {', '.join(sorted(old))}")
    features = as_features(scan)
    final = _layer(layer, features)
    target, rival = pair_classes(target, rival, _names(features, final))
    if edit not in EDITS:
        raise FclensError(f"unknown edit {edit!r}; use one of {', '.join(EDITS)}")
    if strength is not None and ((edit == "equalise" and strength != 1) or not 0 <= strength <= 1):
        raise FclensError(f"strength must be in [0, 1] for 'partial' (and 1 for 'equalise'), got {strength}")
    check_objective(objective)
    if rows is None and split:
        rows = features.split(seed)[0]
    shape = {"min_size": min_size, "mode": mode}
    chosen = select_neurons(features, target, rival, m, rule=rule, layer=final, rows=rows, seed=seed, **shape)
    if edit == "equalise":
        strength = 1.0
    elif strength is None:
        data = features if rows is None else features.select(np.asarray(rows, np.int64))
        logits = final.logits(data.z)
        columns = torch.as_tensor(np.asarray(chosen, np.int64))
        delta = data.z[:, columns] @ step(final, target, rival, chosen)
        count = PairCount(logits, data.label, target, rival)
        strength = best_strength(count, logits[:, rival], delta, objective)
    return PairLayer(
        edited_weight(final, target, rival, chosen, strength),
        final.bias.clone(),
        method=f"pair-{edit} {target}->{rival} {rule} m={len(chosen)}",
        tags={
            "fclens_pair": f"{target}->{rival}",
            "fclens_neurons": ",".join(str(int(c)) for c in chosen),
            "fclens_rule": rule,
            "fclens_edit": edit,
            "fclens_strength": repr(float(strength)),
        },
        target=target,
        rival=rival,
        rule=rule,
        edit=edit,
        strength=float(strength),
        neurons=np.asarray(chosen, np.int64),
        m=m,
    )


def edited_weight(layer: FinalLayer, k: int, j: int, columns: np.ndarray, strength: float) -> torch.Tensor:
    """Row j moved toward row k by ``strength`` on ``columns``; the other rows as they are."""
    weight = layer.weight.clone()
    cols = torch.as_tensor(np.asarray(columns, np.int64))
    if strength == 1:  # assigned, not computed: the gap is then the bias difference exactly
        weight[j, cols] = weight[k, cols]
    else:
        weight[j, cols] += strength * (weight[k, cols] - weight[j, cols])
    return weight


def step(layer: FinalLayer, k: int, j: int, columns: np.ndarray) -> torch.Tensor:
    """The change of row j that ``equalise`` makes, on ``columns``: w_kS − w_jS (float32, (len,))."""
    cols = torch.as_tensor(np.asarray(columns, np.int64))
    return layer.weight[k, cols] - layer.weight[j, cols]


def best_strength(count: PairCount, column: torch.Tensor, delta: torch.Tensor, objective: str) -> float:
    """The strength in :data:`STRENGTHS` with the fewest ``objective`` errors on the counted rows (the
    selection rows), ``column`` their logit_j and ``delta`` its change at strength 1."""
    if count.pair.numel() == 0 or not bool(delta.any()):
        return 0.0
    errors, soft = count.errors(column, delta, objective, STRENGTHS)
    return float(STRENGTHS[np.lexsort((STRENGTHS, soft.numpy(), errors.numpy()))[0]])


# --- shared checks ------------------------------------------------------------------------------------


def tree_shape(source: Any, min_size: int | None, mode: str | None) -> tuple[int, str]:
    """The trees' ``min_size`` and ``mode``: as given, else the scan's (or its features'), else the
    author's defaults."""
    from fclens.options import EXPLAIN_DEFAULTS

    if isinstance(source, Scan):
        default_size, default_mode = source.manifest.options.min_size, source.manifest.options.mode
    elif isinstance(source, Features):
        default_size, default_mode = source.min_size, source.mode
    else:
        default_size, default_mode = EXPLAIN_DEFAULTS.min_size, EXPLAIN_DEFAULTS.mode
    return (default_size if min_size is None else int(min_size)), (default_mode if mode is None else mode)


def class_mean(features: Features, k: int) -> torch.Tensor:
    """The mean pooled features of class k's rows: the mean share of neuron c is (w_jc − w_kc) times it."""
    rows = features.label == k
    if not bool(rows.any()):
        raise FclensError(f"no labelled image of class {k} among the rows that select; the rules need some")
    return features.z[rows].double().mean(dim=0)


def _layer(layer: Any, features: Features) -> FinalLayer:
    """The layer to edit: the one given, else the scan's; its inputs must be the features'."""
    if layer is None:
        if features.layer is None:
            raise FclensError("these features hold no final layer: give layer=... (a FinalLayer, a model)")
        return features.layer
    final = FinalLayer.of(layer)
    if final.num_features != features.z.shape[1]:
        raise FclensError(
            f"the final layer takes {final.num_features} features; the scan stored {features.z.shape[1]}"
        )
    return final


def _old_layer(head: Any) -> Any:
    """0.1's ``head`` argument as a layer: a scan or its directory meant the layer it scanned."""
    return as_scan(head).layer if isinstance(head, (str, os.PathLike)) else head


def _scan_like(value: Any) -> bool:
    """What 0.1's second argument was (a scan, its directory, features or None), not a class."""
    if isinstance(value, str):
        return Path(value).is_dir()
    return isinstance(value, (Scan, Features, os.PathLike)) or value is None


def pair_classes(target: Any, rival: Any, names: Sequence[str], owner: str = "the layer") -> tuple[int, int]:
    """(k, j) from two classes given by index or name (:mod:`fclens.classes`'s rule), two distinct ones."""
    classes = ClassNames(names, owner=owner)
    k, j = classes.index(target, "target class"), classes.index(rival, "rival class")
    if k == j:
        raise FclensError(f"the target and the rival are the same class ({k}); a pair needs two")
    return k, j


def _names(features: Features, layer: FinalLayer) -> list[str]:
    """The class names to look classes up in: the scan's, else the layer's indices."""
    return features.class_names or [str(k) for k in range(layer.num_classes)]


def _check_m(m: Any) -> None:
    if isinstance(m, bool) or not isinstance(m, (int, np.integer)) or m < 1:
        raise FclensError(f"the number of neurons m must be an integer >= 1, got {m!r}")


def check_objective(objective: str) -> None:
    if objective not in OBJECTIVES:
        raise FclensError(f"unknown objective {objective!r}; use one of {', '.join(OBJECTIVES)}")


def _check_rule(rule: str) -> str:
    if rule not in RULES:
        raise FclensError(f"unknown selection rule {rule!r}; use one of {', '.join(RULES)}")
    return rule


def split_rows(scan: ScanLike, seed: int = SEED, fraction: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Deprecated: ``scan.read_features().split(seed, fraction)``."""
    deprecation.warn("fclens.split_rows(scan)", "fclens.read_scan(path).read_features().split(seed)")
    return as_features(scan).split(seed, fraction)


__getattr__ = deprecation.moved(
    __name__,
    {
        name: "fclens.edits.causal"
        for name in ("MS", "TOP_PAIRS", "CausalTable", "PairTest", "Trial", "causal_test", "headline_m")
    }
    | {"Outcome": "fclens.edits.evaluate:PairOutcome"},
)

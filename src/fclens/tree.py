"""The recursive split of one class's weights into a tree of neuron groups (PAPER.md §3).

A node holds input-neuron indices and their weights. A node with at least ``min_size`` weights is
split at its own mean: weights ≥ the mean go to the positive child ("+"), the others to the negative
child ("-"). The author follows two chains only — root → (+, −), then + → ++ → +++ …, − → −− → −−− … —
(``mode="chains"``); ``mode="full"`` grows the full binary tree drawn in the paper's figure. The
terminal node of the all-+ chain holds the class's most discriminative neurons (always on the side
that raises the class score), the terminal node of the all-− chain its most confusing ones.

Weights only, never images. Example::

    tree = fclens.split_tree(model.head.weight[285], class_index=285)
    tree.discriminative.indices, tree.confusing.indices
    print(tree.to_text("Egyptian cat"))
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from fclens.ald import as_numpy, regression_fit
from fclens.errors import FclensError, described
from fclens.options import MIN_SIZE, TREE_MODES

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["Node", "SplitTree", "class_trees", "split_tree"]

MODE = TREE_MODES[0]


@dataclass(eq=False)
class Node:
    """A group of input neurons of one class and their weights.

    ``path``: "" for the root, then one "+" or "-" per split ("+", "-", "++", "+-", …). ``indices``:
    sorted int64 positions in the class's weight row; ``values``: the weights there (float64, same
    order). ``r2``: the paper's regression-fit R² (PAPER.md §2) of the node's weights measured from its
    parent's mean — y − parent mean for a positive child (exact zeros left out), parent mean − y for a
    negative child; NaN for the root (its two parts are the class's own ALD fit, see
    :func:`fclens.fit_ald`) and for nodes too small or too flat to fit. ``children``: the "+" child
    before the "-" child, only those that were grown.
    """

    path: str
    indices: np.ndarray
    values: np.ndarray
    r2: float
    children: list[Node] = field(default_factory=list)

    @property
    def label(self) -> str:
        """``path``, or "root" for the root."""
        return self.path or "root"

    @property
    def size(self) -> int:
        return int(self.indices.size)

    @property
    def mean(self) -> float:
        return float(self.values.mean())

    @property
    def min(self) -> float:
        return float(self.values.min())

    @property
    def max(self) -> float:
        return float(self.values.max())

    @property
    def depth(self) -> int:
        return len(self.path)

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def to_dict(self) -> dict[str, Any]:
        """The node and its subtree as JSON-safe nested dicts (NaN → None)."""
        return {
            "path": self.path,
            "size": self.size,
            "mean": self.mean,
            "min": self.min,
            "max": self.max,
            "r2": None if math.isnan(self.r2) else self.r2,
            "indices": self.indices.tolist(),
            "values": self.values.tolist(),
            "children": [child.to_dict() for child in self.children],
        }


@dataclass(eq=False)
class SplitTree:
    """The split tree of one weight row; built by :func:`split_tree`.

    ``class_index`` is the caller's label for the row (None if not given); ``nodes`` lists every node
    in pre-order (root, then each "+" subtree before the "-" one).
    """

    class_index: int | None
    min_size: int
    mode: str
    root: Node
    nodes: list[Node]

    def __repr__(self) -> str:
        who = "" if self.class_index is None else f"class {self.class_index}, "
        return f"SplitTree({who}{len(self.nodes)} nodes, min_size {self.min_size}, {self.mode})"

    def node(self, path: str) -> Node:
        """The node at ``path`` ("" or "root" for the root); KeyError if the tree has no such node."""
        wanted = "" if path == "root" else path
        for candidate in self.nodes:
            if candidate.path == wanted:
                return candidate
        raise KeyError(f"no node {path!r} in this tree (paths: {', '.join(n.label for n in self.nodes)})")

    def chain(self, sign: str) -> list[Node]:
        """The nodes "+", "++", … (``sign`` "+") or "-", "--", … ("-") in order, root excluded."""
        if sign not in ("+", "-"):
            raise FclensError(f"sign must be '+' or '-', got {sign!r}")
        out: list[Node] = []
        node = self.root
        while True:
            node = next((c for c in node.children if c.path == sign * (len(out) + 1)), None)
            if node is None:
                return out
            out.append(node)

    def side(self, sign: str) -> np.ndarray:
        """The neurons of the root's ``sign`` child ("+" or "-"); an unsplit tree has one side, all its neurons."""
        if sign not in ("+", "-"):
            raise FclensError(f"sign must be '+' or '-', got {sign!r}")
        return self.root.indices if self.root.is_leaf else self.node(sign).indices

    @property
    def discriminative(self) -> Node | None:
        """Terminal node of the all-+ chain: the most discriminative neurons (None if the root is a leaf)."""
        chain = self.chain("+")
        return chain[-1] if chain else None

    @property
    def confusing(self) -> Node | None:
        """Terminal node of the all-− chain: the most confusing neurons (None if the root is a leaf)."""
        chain = self.chain("-")
        return chain[-1] if chain else None

    def to_dict(self) -> dict[str, Any]:
        """The tree as JSON-safe nested dicts: settings, the terminal paths, and ``root`` with its subtree."""
        terminals = {name: getattr(self, name) for name in ("discriminative", "confusing")}
        return {
            "class_index": self.class_index,
            "min_size": self.min_size,
            "mode": self.mode,
            **{name: node.path if node is not None else None for name, node in terminals.items()},
            "root": self.root.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), allow_nan=False)

    def to_text(self, class_name: str | None = None) -> str:
        """A readable indented tree: path, size, mean, min..max and R² per node; terminals marked."""
        who = "" if self.class_index is None else f" of class {self.class_index}"
        if class_name is not None:
            who += f' "{class_name}"'
        lines = [
            f"Split tree{who}: {self.root.size} weights, mode={self.mode}, min_size={self.min_size}",
        ]
        marks = {id(self.discriminative): "◀ most discriminative", id(self.confusing): "◀ most confusing"}

        def walk(node: Node, prefix: str, branch: str) -> None:
            r2 = "" if math.isnan(node.r2) else f"  R²={node.r2:.3f}"
            mark = f"  {marks[id(node)]}" if id(node) in marks else ""
            lines.append(
                f"{prefix}{branch}{node.label}  n={node.size}  mean={node.mean:+.4g}  "
                f"[{node.min:+.4g} .. {node.max:+.4g}]{r2}{mark}"
            )
            inner = prefix + ("" if not branch else "   " if branch.startswith("└") else "│  ")
            for i, child in enumerate(node.children):
                walk(child, inner, "└─ " if i == len(node.children) - 1 else "├─ ")

        walk(self.root, "", "")
        return "\n".join(lines) + "\n"

    def _repr_html_(self) -> str:
        """In a notebook: the tree, each node's size and R², the terminal nodes marked."""
        from fclens.report.notebook import tree_html

        return tree_html(self)

    def plot(self, class_name: str | None = None) -> Figure:
        """The row's weights as a histogram, with the means each chain splits at and the terminal nodes."""
        from fclens.report.notebook import tree_figure

        return tree_figure(self, class_name)


def pair_indices(target: SplitTree, rival: SplitTree) -> np.ndarray:
    """The neurons that argue for the rival j over the target k by both trees: the "−" side of k's root
    and the "+" side of j's, sorted. Fixed by the weights alone, so every image of the pair is read with
    the same set; a row's mean is close to zero, so w_jc > w_kc for (nearly) all of them."""
    return np.intersect1d(target.side("-"), rival.side("+"))


def split_tree(
    weights_row: Any,
    min_size: int = MIN_SIZE,
    mode: str = MODE,
    class_index: int | None = None,
) -> SplitTree:
    """Split one class's weight row recursively at each node's mean (PAPER.md §3).

    ``weights_row``: the D weights of one class (1-D torch tensor or array; a D×1×1 row of a 1×1-conv
    classifier is squeezed). A node with fewer than ``min_size`` weights (20 in the author's code), or
    whose split would leave a child empty (all its weights equal), is a leaf. ``mode``: "chains" (the
    author's: + nodes only grow their + child, − nodes their − child) or "full" (both children
    everywhere). ``class_index`` only labels the result.
    """
    if mode not in TREE_MODES:
        raise FclensError(f"mode must be one of {', '.join(map(repr, TREE_MODES))}; got {mode!r}")
    if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 2:
        raise FclensError(f"min_size must be an integer >= 2, got {min_size!r}")
    if class_index is not None and (
        isinstance(class_index, bool) or not isinstance(class_index, (int, np.integer))
    ):
        raise FclensError(f"class_index must be a class number or None, got {described(class_index)}")
    row = as_numpy(weights_row, "weights_row").astype(np.float64)
    if row.ndim != 1:
        row = row.squeeze()
    if row.ndim != 1 or row.size == 0:
        raise FclensError(f"weights_row must be one non-empty row of weights, got shape {tuple(row.shape)}")
    if not np.isfinite(row).all():
        raise FclensError("weights_row contains NaN or Inf")

    root = Node(path="", indices=np.arange(row.size, dtype=np.int64), values=row, r2=math.nan)
    nodes: list[
        Node
    ] = []  # pre-order: the stack pops a node's children, first child first, before its siblings
    pending = [root]
    while pending:  # nodes still to split
        node = pending.pop()
        nodes.append(node)
        if node.size < min_size:
            continue
        centred = node.values - node.mean
        up = centred >= 0
        if up.all() or not up.any():
            continue
        grow = "+-" if mode == "full" or not node.path else node.path[-1]
        for sign in grow:
            take = up if sign == "+" else ~up
            # Distance from the parent's mean, positive on both sides: the sample the paper's fit expects.
            sample = centred[take] if sign == "+" else -centred[take]
            node.children.append(
                Node(
                    path=node.path + sign,
                    indices=node.indices[take],
                    values=node.values[take],
                    r2=regression_fit(sample).r2,
                )
            )
        pending.extend(reversed(node.children))
    return SplitTree(class_index=class_index, min_size=int(min_size), mode=mode, root=root, nodes=nodes)


def class_trees(
    rows: np.ndarray, classes: Sequence[int], min_size: int = MIN_SIZE, mode: str = MODE
) -> list[SplitTree]:
    """The split trees of several classes, from their weight rows (K, D) float32; shared, not to be modified.

    Memoised on the weights themselves, so that batch after batch of a data set reuses its classes' trees.
    """
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    return [_cached_tree(row.tobytes(), int(k), min_size, mode) for row, k in zip(rows, classes, strict=True)]


@functools.lru_cache(maxsize=2048)
def _cached_tree(row: bytes, index: int, min_size: int, mode: str) -> SplitTree:
    return split_tree(np.frombuffer(row, dtype=np.float32), min_size, mode, class_index=index)

"""How far to trust a map, as the pages show it: each node's curves beside the class map's and a random map's.

An explanation with curves gets a small table (:func:`explanation_faithfulness`): the deletion AUC (most
relevant pixels removed first) and the insertion AUC (least relevant first, read backwards) of the root,
the terminal nodes and the image's random map, and for each node whether it beats the class map and the
random map. An atlas class page gets the same verdicts as shares of the class's images
(:func:`atlas_faithfulness`). Both are drawn by the macros of ``faithfulness.html.j2``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fclens.report._common import fmt, percent

if TYPE_CHECKING:
    from fclens.atlasing import BaselineShares
    from fclens.explaining import Explanation, Verdict

__all__ = ["FaithfulnessView", "atlas_faithfulness", "explanation_faithfulness"]

FILL_WORDS = {
    "rise": "deleted pixels take the data set's mean colour, insertion starts from a blurred copy (Petsiuk et al.)",
    "blur": "removed pixels take a blurred copy's",
    "mean": "removed pixels take the image's mean colour",
    "road": "removed pixels are imputed from their neighbours, plus noise (ROAD, Rong et al. 2022)",
}
"""What each fill does, in the words a page prints beside the curves."""


@dataclass
class FaithfulnessView:
    """Rows of (map, deletion AUC, its two verdicts, insertion AUC, its two verdicts), formatted; ``kind`` is
    the scored map kind, ``fill`` names how pixels were removed, ``fill_words`` says it."""

    kind: str
    fill: str
    fill_words: str
    rows: list[tuple[str, str, str, str, str, str, str]]


def explanation_faithfulness(explanation: Explanation) -> FaithfulnessView | None:
    """The table of an explanation drawn with curves (None without): the root, the terminal nodes, random."""
    baselines = explanation.baselines
    if baselines is None:
        return None
    tree = explanation.tree
    ends = {
        end.path: words
        for end, words in ((tree.discriminative, "most discriminative"), (tree.confusing, "most confusing"))
        if end is not None
    }
    rows = []
    for node in explanation.nodes:
        if node.deletion_auc is None:
            continue
        name = "class map (root)" if not node.path else f"{ends.get(node.path, 'node')} ({node.path})"
        rows.append(
            (
                name,
                fmt(node.deletion_auc),
                *_deletion(node.verdict),
                fmt(node.insertion_auc),
                *_insertion(node.verdict),
            )
        )
    rows.append(
        (
            "random map",
            fmt(baselines.random_deletion_auc),
            "",
            "",
            fmt(baselines.random_insertion_auc),
            "",
            "",
        )
    )
    return FaithfulnessView(explanation.primary, baselines.fill, FILL_WORDS.get(baselines.fill, ""), rows)


def atlas_faithfulness(shares: BaselineShares | None, kind: str, fill: str) -> FaithfulnessView | None:
    """A class page's one row: the discriminative node's mean AUCs, and the share of the class's images
    where it beats each baseline."""
    if shares is None:
        return None
    row = (
        f"most discriminative ({shares.path}), {shares.n} image{'' if shares.n == 1 else 's'}",
        f"{fmt(shares.deletion_auc)} (mean)",
        percent(shares.deletes_faster_than_class),
        percent(shares.deletes_faster_than_random),
        f"{fmt(shares.insertion_auc)} (mean)",
        percent(shares.keeps_longer_than_class),
        percent(shares.keeps_longer_than_random),
    )
    return FaithfulnessView(kind, fill, FILL_WORDS.get(fill, ""), [row])


def _deletion(verdict: Verdict | None) -> tuple[str, str]:
    if verdict is None:
        return "", ""
    return _yes(verdict.deletes_faster_than_class), _yes(verdict.deletes_faster_than_random)


def _insertion(verdict: Verdict | None) -> tuple[str, str]:
    if verdict is None:
        return "", ""
    return _yes(verdict.keeps_longer_than_class), _yes(verdict.keeps_longer_than_random)


def _yes(value: bool | None) -> str:
    return "—" if value is None else ("yes" if value else "no")

"""What the pages say, read from their HTML: one accuracy format, and the rebalance page and figure.

The scans here are written directly (tests/feature_scan.py: Gaussian features whose best layer is known;
tests/synthetic_scan.py: a scan whose rows' paths are chosen), so no model runs; the browser checks of
every page are in test_browser_pages.py.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

import feature_scan
import synthetic_scan
from fclens.cli import main
from fclens.edits import REBALANCE_MEANINGS
from fclens.edits.rebalance import rebalance, shared_images
from fclens.formatting import percent
from fclens.report.rebalance import rebalance_figure
from fclens.scanning import read_scan
from fclens.scanning.manifest import MANIFEST

CLASSES, DIM = 6, 8
MEANS = feature_scan.class_means(CLASSES, DIM, spread=0.7)
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.parametrize(
    ("share", "text"),
    [(0.88, "88.0%"), (0.4400, "44.0%"), (1.0, "100.0%"), (0.0, "0.0%"), (0.12345, "12.3%"),
     (None, "n/a"), (math.nan, "n/a"), (np.float32(0.5), "50.0%")],
)  # fmt: skip
def test_an_accuracy_reads_as_a_percent_with_one_decimal(share: float | None, text: str) -> None:
    assert percent(share) == text


def scan_pair(root: Path, train_counts: np.ndarray, eval_counts: np.ndarray) -> tuple[Path, Path]:
    """A training and an evaluation scan of the same Gaussian classes, scanned by the training prior's layer."""
    layer = feature_scan.bayes_layer(MEANS, train_counts / train_counts.sum())
    feature_scan.write(root / "train", MEANS, train_counts, layer, seed=1)
    feature_scan.write(root / "eval", MEANS, eval_counts, layer, seed=2)
    return root / "train", root / "eval"


def test_the_per_class_figure_ranks_classes_by_training_images_even_when_counts_are_equal(
    tmp_path: Path,
) -> None:
    """Equal training counts once drew every method on one vertical line (x was the count)."""
    train, evaluation = scan_pair(tmp_path, np.full(CLASSES, 60), np.full(CLASSES, 40))
    result = rebalance(train, evaluation, methods=["ce", "logit-adjust"])
    names = [f"class <{k}>" for k in range(CLASSES)]
    figure = rebalance_figure(result, class_names=names)
    counts, accuracy = figure.axes
    for line in accuracy.get_lines():  # one point per class, at its rank: a line across, not up
        assert list(line.get_xdata()) == list(range(CLASSES))
    assert [t.get_text() for t in accuracy.get_xticklabels()] == names  # ranked (ties by index)
    assert accuracy.get_yticklabels()[-1].get_text().endswith("%")
    assert [t.get_text() for t in accuracy.texts] == [f"medium (20–100): {CLASSES}"]
    assert counts.get_yscale() == "linear" and len(counts.containers[0]) == CLASSES  # one bar a class


def test_the_per_class_figure_of_a_long_tail_marks_many_medium_and_few(tmp_path: Path) -> None:
    tail = feature_scan.long_tail(CLASSES, largest=300, imbalance=100)  # 300 … 3 images per class
    train, evaluation = scan_pair(tmp_path, tail, np.full(CLASSES, 30))
    result = rebalance(train, evaluation, methods=["logit-adjust"])
    counts, accuracy = rebalance_figure(result).axes
    assert counts.get_yscale() == "log"
    heights = [bar.get_height() for bar in counts.containers[0]]
    assert heights == sorted(tail.tolist(), reverse=True)  # most training images first
    bands = [t.get_text() for t in accuracy.texts]
    many, medium, few = (tail > 100).sum(), ((tail >= 20) & (tail <= 100)).sum(), (tail < 20).sum()
    assert bands == [f"many (> 100): {many}", f"medium (20–100): {medium}", f"few (< 20): {few}"]


def test_rebalance_html_writes_the_page_and_a_rerun_without_it_removes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tail = feature_scan.long_tail(CLASSES, largest=300, imbalance=100)
    train, evaluation = scan_pair(tmp_path, tail, np.full(CLASSES, 30))
    out = tmp_path / "out"
    args = [
        "rebalance",
        str(train),
        "--eval",
        str(evaluation),
        "--out",
        str(out),
        "--methods",
        "ce,logit-adjust",
    ]
    assert main([*args, "--html"]) == 0
    captured = capsys.readouterr()
    assert "warning" not in captured.err and "rebalance.html" in captured.out
    page = (out / "rebalance.html").read_text("utf-8")
    for method in ("scanned", "ce", "logit-adjust"):
        assert f"<tr><td><code>{method}</code></td>" in page
    assert (
        "plain cross-entropy re-fit: the control" in page and "logits − τ log π_train (Menon et al.)" in page
    )
    assert "data:image/png;base64," in page and "http://" not in page and 'class="warning"' not in page
    figures = json.loads((out / "rebalance.json").read_text("utf-8"))["methods"]
    accuracy = {row["method"]: percent(row["accuracy"]) for row in figures}
    row = page[page.index("<tr><td><code>logit-adjust</code>") :].split("</tr>")[0]
    assert (
        f'<td class="num">{accuracy["logit-adjust"]}</td>' in row
    )  # the one format, from the JSON's fraction
    assert main(args) == 0 and not (out / "rebalance.html").exists()  # a rerun without --html


def test_an_evaluation_scan_that_is_the_training_scan_is_warned_on_stderr_and_on_the_page(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, _ = scan_pair(tmp_path, np.full(CLASSES, 60), np.full(CLASSES, 40))
    out = tmp_path / "out"
    assert main(["rebalance", str(train), "--eval", str(train), "--out", str(out), "--html",
                 "--methods", "ce"]) == 0  # fmt: skip
    err = capsys.readouterr().err
    assert (
        err.startswith("fclens: warning: the evaluation scan is the training scan") and err.count("\n") == 1
    )
    page = (out / "rebalance.html").read_text("utf-8")
    warning = re.search(r'<p class="warning" role="alert">(.*?)</p>', page).group(1)
    assert "the evaluation scan is the training scan" in warning and "near 100%" in warning
    assert json.loads((out / "rebalance.json").read_text("utf-8"))["shared_images"].startswith(
        "the evaluation"
    )


def test_shared_images_finds_the_same_scan_shared_files_and_one_dataset(tmp_path: Path) -> None:
    photos = [str(tmp_path / f"photo-{i}.jpg") for i in range(40)]
    synthetic_scan.write(tmp_path / "a", 30, classes=4, paths=photos[:30])
    synthetic_scan.write(tmp_path / "b", 20, classes=4, paths=photos[20:40])  # 10 files shared
    synthetic_scan.write(
        tmp_path / "c", 10, classes=4, paths=[str(tmp_path / f"other-{i}.jpg") for i in range(10)]
    )
    synthetic_scan.write(tmp_path / "d", 10, classes=4)  # Dataset items: "<dataset 0>" …
    a, b, c, d = (read_scan(tmp_path / name) for name in "abcd")
    assert shared_images(a, a).startswith("the evaluation scan is the training scan")
    assert shared_images(a, b).startswith(
        "10 of the evaluation scan's 20 images are in the training scan too"
    )
    assert shared_images(a, c) is None
    assert shared_images(d, read_scan(tmp_path / "d")) is not None  # the same directory
    # Two scans of Dataset items: their "<dataset i>" names say nothing, the sources do.
    synthetic_scan.write(tmp_path / "e", 10, classes=4)
    for name, source in (("d", "dataset:Pairs:10"), ("e", "dataset:Pairs:10")):
        path = tmp_path / name / MANIFEST
        manifest = json.loads(path.read_text())
        manifest["source"] = source
        path.write_text(json.dumps(manifest))
    assert "one dataset (dataset:Pairs:10)" in shared_images(
        read_scan(tmp_path / "d"), read_scan(tmp_path / "e")
    )


def test_the_readme_table_says_what_each_method_does_in_the_librarys_words() -> None:
    """One sentence per method, kept in fclens.edits.REBALANCE_MEANINGS; the README's table shows them."""
    text = README.read_text("utf-8")
    for method, meaning in REBALANCE_MEANINGS.items():
        row = re.search(rf"^\| `{re.escape(method)}` \| (.*) \| (re-fit|none) \|$", text, re.MULTILINE)
        assert row is not None and row.group(1) == meaning, method

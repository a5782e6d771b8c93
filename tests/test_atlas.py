"""fclens.atlas on scan tables written directly in the documented format (tests/synthetic_scan.py)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import synthetic_scan as synthetic
from fclens.atlas import atlas, read_maps
from fclens.cli import main
from fclens.errors import FclensError

CLASSES = 6


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    """1,200 images in shards of 256 rows, so that every pass merges across shards."""
    directory = tmp_path_factory.mktemp("atlas") / "scan"
    return directory, synthetic.write(directory, 1200, classes=CLASSES, shard_rows=256)


def test_rivals_soft_confusion_and_errors(written: tuple[Path, dict[str, np.ndarray]]) -> None:
    directory, columns = written
    found = atlas(directory, top_k=3)
    assert [c.index for c in found.classes] == list(range(CLASSES))
    for c in found.classes:
        mine = columns["label"] == c.index
        assert c.n == mine.sum() and c.name == f"class <{c.index}>"
        assert c.accuracy == pytest.approx((columns["pred"][mine] == c.index).mean())
        top = c.rivals[0]
        assert top.index == c.index ^ 1
        assert top.soft_confusion == pytest.approx(columns["soft_partner"][mine].mean(), rel=1e-5)
        assert top.errors == int((columns["pred"][mine] == top.index).sum()) > 0
        assert [r.soft_confusion for r in c.rivals] == sorted(
            (r.soft_confusion for r in c.rivals), reverse=True
        )
        assert all(r.index != c.index for r in c.rivals)


def test_node_means_in_pre_order(written: tuple[Path, dict[str, np.ndarray]]) -> None:
    directory, columns = written
    c = atlas(directory).classes[2]
    assert [n.path for n in c.nodes] == synthetic.PATHS and [n.size for n in c.nodes] == synthetic.SIZES
    mine = columns["label"] == 2
    expected = columns["contribution"][mine].mean(axis=0)
    assert [n.mean_contribution for n in c.nodes] == pytest.approx(expected.tolist(), rel=1e-5)
    assert c.confusing == "--"


def test_top_images_are_the_strongest(written: tuple[Path, dict[str, np.ndarray]]) -> None:
    directory, columns = written
    found = atlas(directory, top_k=4)
    for c in found.classes:
        mine = np.flatnonzero(columns["label"] == c.index)
        pull = -columns["contribution"][mine, synthetic.PATHS.index("--")]
        assert [i.index for i in c.confusing_images] == mine[np.argsort(-pull, kind="stable")[:4]].tolist()
        assert c.confusing_images[0].strength == pytest.approx(pull.max(), rel=1e-5)
        of_pair = mine[columns["rival"][mine] == c.index ^ 1]
        gap = columns["logit_gap"][of_pair]
        assert [i.index for i in c.rival_images] == of_pair[np.argsort(-gap, kind="stable")[:4]].tolist()
        assert all(i.rival == c.index ^ 1 for i in c.rival_images)
        assert c.rival_images[0].path == f"<dataset {c.rival_images[0].index}>"


def test_pairs_both_directions_and_lowest_accuracy(written: tuple[Path, dict[str, np.ndarray]]) -> None:
    found = atlas(written[0])
    top = {(p.a, p.b) for p in found.pairs[:CLASSES]}
    assert top == {(k, k ^ 1) for k in range(CLASSES)}  # each pair, in each direction
    assert [p.soft_confusion for p in found.pairs] == sorted(
        (p.soft_confusion for p in found.pairs), reverse=True
    )
    lowest = found.lowest_accuracy(3)
    assert [c.accuracy for c in lowest] == sorted(c.accuracy for c in found.classes)[:3]


def test_json_has_the_documented_keys(written: tuple[Path, dict[str, np.ndarray]]) -> None:
    data = json.loads(json.dumps(atlas(written[0], top_k=2).to_dict(), allow_nan=False))
    (first, *_) = data["classes"]
    assert {"class", "name", "n", "accuracy", "rivals", "nodes", "confusing_images", "rival_images"} <= set(
        first
    )
    assert set(first["rivals"][0]) >= {"class", "name", "soft_confusion", "errors"}
    assert set(first["nodes"][0]) == {"path", "size", "mean_contribution"}
    assert set(first["confusing_images"][0]) >= {"path", "strength"} and len(first["confusing_images"]) == 2
    assert set(first["rival_images"][0]) >= {"path", "rival", "strength"}
    assert set(data["pairs"][0]) >= {"a", "b", "soft_confusion"}


def test_without_labels_the_predictions_group_and_accuracy_is_null(tmp_path: Path) -> None:
    synthetic.write(tmp_path / "scan", 300, classes=4, labels=False)
    found = atlas(tmp_path / "scan")
    assert all(c.accuracy is None for c in found.classes)
    assert all(r.errors is None for c in found.classes for r in c.rivals)
    assert found.lowest_accuracy() == [] and not found.labelled


def test_read_maps_returns_the_rows_asked_for(written: tuple[Path, dict[str, np.ndarray]]) -> None:
    maps = read_maps(written[0], {3, 700, 1199})
    assert sorted(maps) == [3, 700, 1199]
    assert maps[700]["node_map"].shape == (5, 49) and maps[700]["contrast_map"].shape == (49,)
    assert maps[700]["node_path"] == synthetic.PATHS


def test_bad_input(tmp_path: Path, written: tuple[Path, dict[str, np.ndarray]]) -> None:
    with pytest.raises(FclensError, match="not a scan"):
        atlas(tmp_path)
    with pytest.raises(FclensError, match="top_k"):
        atlas(written[0], top_k=0)


def test_cli_writes_json_and_pages(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, written: tuple[Path, dict[str, np.ndarray]]
) -> None:
    code = main(["atlas", str(written[0]), "--out", str(tmp_path), "--json", "--top-k", "2"])
    data = json.loads(capsys.readouterr().out)
    assert code == 0 and data == json.loads((tmp_path / "atlas.json").read_text("utf-8"))
    assert data["top_k"] == 2 and len(data["classes"]) == CLASSES
    code = main(["atlas", str(written[0]), "--out", str(tmp_path), "--html"])
    out = capsys.readouterr().out
    assert code == 0 and "top rival" in out and (tmp_path / "index.html").is_file()
    assert sorted(p.name for p in tmp_path.glob("class-*.html")) == [
        f"class-{k}.html" for k in range(CLASSES)
    ]
    assert main(["atlas", str(tmp_path / "nothing"), "--out", str(tmp_path)]) == 2
    assert "not a scan" in capsys.readouterr().err

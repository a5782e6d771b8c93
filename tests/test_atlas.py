"""fclens.atlas on scan tables written directly in the documented format (tests/synthetic_scan.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import feature_scan
import synthetic_scan as synthetic
from fclens.atlasing import atlas
from fclens.cli import main
from fclens.errors import FclensError
from fclens.scanning import read_scan

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


def test_the_map_reader_returns_the_rows_asked_for(written: tuple[Path, dict[str, np.ndarray]]) -> None:
    maps = read_scan(written[0]).maps({3, 700, 1199})
    assert sorted(maps) == [3, 700, 1199]
    assert maps[700].node_map.shape == (5, 7, 7) and maps[700].contrast_map.shape == (7, 7)
    assert maps[700].node_path == synthetic.PATHS


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
    assert "nothing does not exist; give a directory written by fclens scan" in capsys.readouterr().err


# --- a version-1 scan (tests/fixtures/scan-v1, written by fclens 067169c) and an incomplete one ---------

FIXTURES = Path(__file__).parent / "fixtures"


def version_1_scan(root: Path) -> Path:
    """The version-1 fixture under ``root``, its photos beside it as when it was made (its paths are relative
    to the folder the scan ran in), its recorded source pointing at them."""
    shutil.copytree(FIXTURES / "scan-v1", root / "scan-v1")
    shutil.copytree(FIXTURES / "photos", root / "run" / "photos")
    manifest = json.loads((root / "scan-v1" / "manifest.json").read_text())
    manifest["source"] = str(root / "run" / "photos")
    (root / "scan-v1" / "manifest.json").write_text(json.dumps(manifest))
    return root / "scan-v1"


def drawn_pages(folder: Path) -> str:
    return "".join(page.read_text() for page in folder.glob("class-*.html"))


def test_a_version_1_scan_still_reads_atlases_and_prunes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    directory = version_1_scan(tmp_path)
    scan = read_scan(directory)
    options = scan.manifest.options
    assert (options.maps, options.min_size, options.scores, options.contrast) == (
        ("activation",),
        4,
        "terminal",
        "runner-up",
    )
    assert scan.manifest.schema_version == 1 and scan.class_names == ["tabby", "espresso", "other"]
    assert scan.read_features().z.shape == (6, 16) and scan.grid == (8, 8)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # not where the scan ran: its relative paths are found from the source
    assert main(["atlas", str(directory), "--out", "atlas", "--html", "--top-k", "2"]) == 0
    pages = drawn_pages(elsewhere / "atlas")
    assert "not shown:" not in pages and pages.count("data:image/") >= 4
    assert main(["prune", str(directory), "--out", "prune", "--sparsity", "0.5", "--methods", "tree"]) == 0
    assert "6 images (6 labelled)" in capsys.readouterr().out


def test_an_incomplete_scan_is_read_with_a_one_line_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    directory = version_1_scan(tmp_path)
    (directory / "part-00001.parquet").unlink()  # killed before the last shard: no grid recorded yet
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest.update(complete=False, feature_grid=None, shards=["part-00000.parquet"])
    (directory / "manifest.json").write_text(json.dumps(manifest))
    monkeypatch.chdir(tmp_path)
    for command in (
        ["atlas", str(directory), "--out", "a"],
        ["atlas", str(directory), "--out", "b", "--html"],
    ):
        assert main(command) == 0
        warning = capsys.readouterr().err
        assert (
            "incomplete scan (6 of 7 images)" in warning and "Rerun the same `fclens scan` command" in warning
        )
        assert len(warning.strip().splitlines()) == 1
    assert "not shown:" not in drawn_pages(tmp_path / "b")
    assert main(["prune", str(directory), "--out", "p", "--sparsity", "0.5", "--methods", "tree"]) == 0
    assert "incomplete scan (6 of 7 images)" in capsys.readouterr().err


def test_atlas_of_a_folder_of_images_says_to_scan_it_first(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    shutil.copytree(FIXTURES / "photos", tmp_path / "photos")
    assert main(["atlas", str(tmp_path / "photos"), "--out", str(tmp_path / "atlas")]) == 2
    message = capsys.readouterr().err
    assert (
        "is a folder of images, not a scan" in message and "--out SCAN`, then `fclens atlas SCAN`" in message
    )
    assert f"--out {tmp_path / 'photos'}" not in message


def test_a_scan_without_targets_is_one_line_naming_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A table that another writer made (here the tests' feature-only scan: its target column empty) is refused in
    one line, in Python's words and in the command's, never an internal error."""
    means = feature_scan.class_means(3, 4, spread=1.0)
    counts = np.array([5, 5, 5])
    feature_scan.write(
        tmp_path / "scan", means, counts, feature_scan.bayes_layer(means, counts / counts.sum())
    )
    with pytest.raises(FclensError, match=r"no target class.*rescan the images with fclens\.scan$"):
        atlas(tmp_path / "scan")
    assert main(["atlas", str(tmp_path / "scan"), "--out", str(tmp_path / "out")]) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert "no target class" in line and "fclens scan" in line

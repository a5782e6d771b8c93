"""The data-set scan: sources and labels, the rows against explain(), resume, bad input, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

import fclens
from crops import make_photo_folder
from fclens.cli import main
from fclens.errors import FclensError
from fclens.options import SCAN_DEFAULTS
from fclens.scanning import LocalEngine, ScanError, read_scan, scan
from fclens.scanning.manifest import MANIFEST

IN_PROCESS = LocalEngine(workers=0)
"""Decoding in the test's own process: no worker start-up for a dozen images."""


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_photo_folder(tmp_path_factory.mktemp("photos"))


@pytest.fixture(scope="module")
def scanned(
    classifier: fclens.Classifier, folder: Path, tmp_path_factory: pytest.TempPathFactory
) -> fclens.Scan:
    out = tmp_path_factory.mktemp("scan") / "scan"
    engine = LocalEngine(workers=2)
    return scan(
        classifier, folder, out, batch_size=4, engine=engine, features=True, scores="terminal", progress=False
    )


def test_a_folder_gives_one_row_per_image_with_labels_from_its_subfolders(scanned: fclens.Scan) -> None:
    table = scanned.table
    assert table.num_rows == 10
    assert table.column("index").to_pylist() == list(range(10))
    rows = {Path(row["path"]).name: row for row in table.to_pylist()}
    assert rows["chelsea-0.jpg"]["label"] == 282  # "Tiger_Cat" matched to "tiger cat" ignoring case and "_"
    assert rows["coffee-1.jpg"]["label"] == 967
    assert rows["coffee-1.jpg"]["pred"] == 967 and rows["coffee-1.jpg"]["target"] == 967
    assert rows["chelsea-2.jpg"]["target"] == 282  # the label, not the prediction
    assert rows["broken.jpg"]["status"] == "skipped" and "truncated" in rows["broken.jpg"]["reason"]
    assert rows["notes.png"]["status"] == "skipped" and rows["notes.png"]["pred"] is None
    assert scanned.manifest.counts == {"images": 10, "ok": 8, "skipped": 2}
    assert scanned.manifest.complete is True
    assert scanned.class_names[282] == "tiger cat"


def test_rival_is_the_most_probable_other_class(scanned: fclens.Scan) -> None:
    for row in scanned.ok().to_pylist():
        others = [(p, k) for k, p in zip(row["top5"], row["top5_prob"], strict=True) if k != row["target"]]
        assert row["rival"] == max(others)[1]
        assert row["prob_rival"] == pytest.approx(max(others)[0])
        assert row["top5"][0] == row["pred"]


def test_contributions_and_contrast_add_up_to_the_logits(scanned: fclens.Scan) -> None:
    bias = scanned.bias
    maps = scanned.maps(scanned.rows(["index"], ok_only=True).column("index").to_pylist())
    for row in scanned.ok().to_pylist():
        share = dict(zip(row["node_path"], row["node_contribution"], strict=True))
        assert share["+"] + share["-"] + bias[row["target"]] == pytest.approx(row["logit_target"], abs=1e-3)
        assert share[""] == pytest.approx(share["+"] + share["-"], abs=1e-3)
        contrast = maps[row["index"]].contrast_map.mean() + bias[row["rival"]] - bias[row["target"]]
        assert contrast == pytest.approx(row["logit_rival"] - row["logit_target"], abs=0.02)


def test_rows_match_explain_on_the_same_images(scanned: fclens.Scan, classifier: fclens.Classifier) -> None:
    ok = scanned.ok().to_pylist()
    targets = [row["target"] for row in ok]
    explanations = fclens.explain(classifier, [row["path"] for row in ok], target=targets, scores="all")
    maps = scanned.maps([row["index"] for row in ok])
    for row, exp in zip(ok, explanations, strict=True):
        assert row["node_path"] == [node.path for node in exp.nodes]
        assert row["node_size"] == [node.size for node in exp.nodes]
        expected = torch.stack([node.maps["activation"] for node in exp.nodes]).numpy()
        np.testing.assert_allclose(maps[row["index"]].node_map, expected, rtol=2e-3, atol=2e-3)
        scored = {path: score for path, score in zip(row["node_path"], row["node_score"], strict=True)}
        for node in exp.nodes:
            if exp.tree.node(node.path).is_leaf or not node.path:
                assert scored[node.path] == pytest.approx(node.score, abs=1e-4)
            else:
                assert scored[node.path] is None
        assert row["prob_target"] == pytest.approx(exp.target.probability, abs=1e-5)


def test_features_are_the_final_layers_input(scanned: fclens.Scan) -> None:
    features = scanned.read_features().z.numpy()
    assert features.shape == (8, 1280)
    logits = features @ scanned.weight.T + scanned.bias
    ok = scanned.rows(["target", "logit_target", "pred"], ok_only=True)
    target, stored = ok.column("target").to_numpy(), ok.column("logit_target").to_numpy()
    np.testing.assert_allclose(logits[np.arange(len(target)), target], stored, atol=0.05)  # float16 z
    # The top-1 agrees wherever the two best logits are apart by more than the float16 rounding of z can
    # move them (chelsea's crops sit near the tiger cat / Egyptian cat tie).
    best = np.sort(logits, axis=1)
    clear = best[:, -1] - best[:, -2] > 0.05
    assert clear.sum() >= 4
    assert (logits.argmax(axis=1)[clear] == ok.column("pred").to_numpy()[clear]).all()


def test_the_table_reads_without_fclens(scanned: fclens.Scan) -> None:
    shards = str(scanned.directory / "*.parquet")
    assert duckdb.sql(f"select count(*) from '{shards}' where status = 'ok'").fetchall()[0][0] == 8
    frame = pl.read_parquet(shards)
    assert frame.height == 10 and frame["node_map"].dtype == pl.List(pl.List(pl.Float16))
    manifest = json.loads((scanned.directory / MANIFEST).read_text())
    assert manifest["schema_version"] == 3 and len(manifest["class_names"]) == 1000
    assert manifest["feature_grid"] == [7, 7] and manifest["model"]["head_sha256"]


class Interrupting(torch.utils.data.Dataset):
    """Preprocessed photos with labels; stops the scan like Ctrl-C at item ``stop_at``."""

    def __init__(self, images: torch.Tensor, stop_at: int | None = None) -> None:
        self.images, self.stop_at = images, stop_at

    def __len__(self) -> int:
        return 12

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if i == self.stop_at:
            raise KeyboardInterrupt
        return self.images[i % 2].cpu(), (282, 967)[i % 2]


def test_an_interrupted_scan_resumes_without_losing_or_repeating_an_image(
    classifier: fclens.Classifier, photos: torch.Tensor, tmp_path: Path
) -> None:
    out = tmp_path / "scan"
    options = {"batch_size": 2, "engine": IN_PROCESS, "shard_rows": 4, "progress": False}
    with pytest.raises(KeyboardInterrupt):
        scan(classifier, Interrupting(photos, stop_at=9), out, **options)
    first = {path.name: path.read_bytes() for path in out.glob("part-*.parquet")}
    assert len(first) == 2 and not read_scan(out).manifest.complete
    done = scan(classifier, Interrupting(photos), out, **options)
    assert done.table.column("index").to_pylist() == list(range(12))
    assert done.manifest.complete and done.manifest.counts["ok"] == 12
    assert all((out / name).read_bytes() == data for name, data in first.items())  # finished shards kept
    again = scan(classifier, Interrupting(photos), out, **options)  # nothing left to do
    assert again.table.num_rows == 12


def test_another_model_or_options_into_the_same_directory_is_refused(
    classifier: fclens.Classifier, photos: torch.Tensor, tmp_path: Path
) -> None:
    out = tmp_path / "scan"
    scan(classifier, Interrupting(photos), out, engine=IN_PROCESS, progress=False)
    with pytest.raises(ScanError, match=r"min_size: 20 then, 10 now.*force=True"):
        scan(classifier, Interrupting(photos), out, engine=IN_PROCESS, min_size=10, progress=False)
    redone = scan(
        classifier, Interrupting(photos), out, engine=IN_PROCESS, min_size=10, force=True, progress=False
    )
    assert redone.manifest.options.min_size == 10 and redone.table.num_rows == 12


def test_a_list_gives_paths_relative_to_itself_and_labels_by_name_or_index(
    classifier: fclens.Classifier, folder: Path, tmp_path: Path
) -> None:
    listing = folder / "list.csv"
    listing.write_text(
        "path,label\nTiger_Cat/chelsea-0.jpg,tiger cat\nespresso/coffee-0.jpg,967\nmissing.jpg,\n"
    )
    result = scan(classifier, listing, tmp_path / "scan", engine=IN_PROCESS, progress=False)
    rows = result.table.to_pylist()
    assert [row["label"] for row in rows] == [282, 967, None]
    assert rows[2]["status"] == "skipped" and "no such file" in rows[2]["reason"]
    table = pq.read_table(next((tmp_path / "scan").glob("part-*.parquet")))
    assert table.num_rows == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,label\na.jpg,1\n", r"no 'path' column \(columns: file, label\)"),
        ("path,label\na.jpg,tiger kat\n", r"label 'tiger kat' matches no class.*'tiger cat'.*labels='none'"),
        ("path,label\na.jpg,1000\n", r"label 1000 is out of range"),
    ],
)
def test_a_bad_list_is_one_clear_error(
    classifier: fclens.Classifier, tmp_path: Path, text: str, message: str
) -> None:
    listing = tmp_path / "list.csv"
    listing.write_text(text)
    with pytest.raises(FclensError, match=message):
        scan(classifier, listing, tmp_path / "scan", progress=False)


def test_a_subfolder_that_names_no_class_is_refused_unless_labels_none(
    classifier: fclens.Classifier, tmp_path: Path
) -> None:
    make_photo_folder(tmp_path / "photos", copies=1)
    (tmp_path / "photos" / "Tiger_Cat").rename(tmp_path / "photos" / "tiger_kats")
    with pytest.raises(FclensError, match=r"subfolder 'tiger_kats' matches no class.*'tiger cat'"):
        scan(classifier, tmp_path / "photos", tmp_path / "scan", progress=False)
    result = scan(
        classifier, tmp_path / "photos", tmp_path / "scan", labels="none", engine=IN_PROCESS, progress=False
    )
    assert result.table.column("label").null_count == result.table.num_rows


def test_a_non_affine_head_is_scanned_with_gradient_maps(tmp_path: Path) -> None:
    timm = pytest.importorskip("timm")
    module = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=6, depth=2)
    model = fclens.load_model(module, class_names=[f"c{i}" for i in range(6)])
    images = torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    data = [(image, i % 6) for i, image in enumerate(images)]
    result = scan(model, data, tmp_path / "scan", engine=IN_PROCESS, min_size=8, progress=False)
    assert result.manifest.model["pooling"] == "token" and result.grid == (14, 14)
    row = result.ok().to_pylist()[0]
    share = dict(zip(row["node_path"], row["node_contribution"], strict=True))
    assert share["+"] + share["-"] + result.bias[row["target"]] == pytest.approx(
        row["logit_target"], abs=1e-3
    )
    assert np.abs(result.maps([row["index"]])[row["index"]].node_map).sum() > 0


def test_cli_scan_reports_skipped_images_and_exit_3(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert (
        main(["scan", str(folder), "--out", str(tmp_path / "scan"), "--batch-size", "4", "--workers", "0"])
        == 3
    )
    printed = capsys.readouterr().out
    assert "broken.jpg: skipped: truncated" in printed and "scanned 8 of 10 images (2 skipped)" in printed
    assert main(["scan", str(folder), "--out", str(tmp_path / "scan"), "--min-size", "10"]) == 2
    assert "min_size: 20 then, 10 now" in capsys.readouterr().err


def test_cli_scan_bad_input_is_exit_2_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (tmp_path / "list.parquet").write_bytes(b"not parquet")
    assert main(["scan", str(tmp_path / "list.parquet"), "--out", str(tmp_path / "scan")]) == 2
    error = capsys.readouterr().err
    assert error.startswith("fclens: error:") and "cannot read the list" in error and error.count("\n") == 1
    (tmp_path / "file").write_text("")
    (tmp_path / "ok.csv").write_text("path\na.jpg\n")
    assert main(["scan", str(tmp_path / "ok.csv"), "--out", str(tmp_path / "file" / "scan")]) == 2
    assert "cannot write to" in capsys.readouterr().err


def test_a_datasets_labels_are_matched_or_ignored(
    classifier: fclens.Classifier, photos: torch.Tensor, tmp_path: Path
) -> None:
    labelled = scan(
        classifier, Interrupting(photos), tmp_path / "labelled", engine=IN_PROCESS, progress=False
    )
    assert labelled.table.column("label").to_pylist() == [282, 967] * 6
    assert labelled.table.column("path").to_pylist()[:2] == ["<dataset 0>", "<dataset 1>"]
    unlabelled = scan(
        classifier, Interrupting(photos), tmp_path / "none", labels="none", engine=IN_PROCESS, progress=False
    )
    assert unlabelled.table.column("label").null_count == 12
    assert unlabelled.table.column("target").to_pylist() == unlabelled.table.column("pred").to_pylist()


def test_an_interrupted_scan_keeps_its_queued_rows_and_the_rerun_says_what_it_found(
    classifier: fclens.Classifier, photos: torch.Tensor, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "scan"
    options = {"batch_size": 2, "engine": IN_PROCESS, "shard_rows": 100}  # no shard is full before the stop
    with pytest.raises(KeyboardInterrupt) as interrupt:
        scan(classifier, Interrupting(photos, stop_at=9), out, **options)
    assert str(interrupt.value) == f"interrupted: 8 of 12 images kept in {out}; rerun to continue"
    partial = read_scan(out)
    assert partial.table.column("index").to_pylist() == list(range(8))
    assert not partial.manifest.complete and partial.manifest.feature_grid == (7, 7)  # known from the start
    capsys.readouterr()
    done = scan(classifier, Interrupting(photos), out, **options)
    assert "resuming: 8 of 12 images already scanned" in capsys.readouterr().err
    assert done.table.column("index").to_pylist() == list(range(12))
    scan(classifier, Interrupting(photos), out, **options)
    assert capsys.readouterr().err.strip() == "scan is complete: 12 images (12 ok, 0 skipped); nothing to do"


def test_scan_options_come_from_options_or_keywords_and_what_a_scan_cannot_store_is_one_line(
    classifier: fclens.Classifier, photos: torch.Tensor, tmp_path: Path
) -> None:
    options = SCAN_DEFAULTS.but(min_size=10, maps="contribution")
    result = scan(classifier, Interrupting(photos), tmp_path / "scan", options=options, features=True,
                  engine=IN_PROCESS, progress=False)  # fmt: skip
    assert result.manifest.options.primary == "contribution" and result.manifest.options.min_size == 10
    assert result.manifest.options.features and result.has_features
    for wrong, message in (
        ({"address": "auto"}, r"unknown keywords address; options are .*engine=LocalEngine\(workers=…\)"),
        ({"maps": ("activation", "contribution")}, "a scan stores one map kind"),
        ({"contrast": 3}, "a scan always contrasts with the runner-up"),
    ):
        with pytest.raises(FclensError, match=message):
            scan(classifier, Interrupting(photos), tmp_path / "other", **wrong)


def test_cli_rerun_of_a_finished_scan_says_it_is_complete_and_prints_no_totals(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    make_photo_folder(tmp_path / "photos", copies=1)
    command = ["scan", str(tmp_path / "photos"), "--out", str(tmp_path / "scan"), "--workers", "0"]
    assert main(command) == 3
    assert "scanned 2 of 4 images (2 skipped)" in capsys.readouterr().out
    assert main(command) == 3
    printed = capsys.readouterr()
    assert printed.err == "scan is complete: 4 images (2 ok, 2 skipped); nothing to do\n"
    assert printed.out == ""


@pytest.mark.slow
def test_sigterm_keeps_the_finished_images_as_ctrl_c_does(tmp_path: Path, capsys: pytest.CaptureFixture):
    import re
    import shutil
    import signal
    import subprocess
    import sys
    import time

    folder = make_photo_folder(tmp_path / "photos", copies=10)
    for photo in [path for path in folder.glob("*/*.jpg") if path.name != "broken.jpg"]:
        for copy in range(3):  # 82 files, 80 of them images
            shutil.copyfile(photo, photo.with_name(f"{photo.stem}-copy{copy}.jpg"))
    out = tmp_path / "scan"
    command = ["scan", str(folder), "--out", str(out), "--workers", "0", "--batch-size", "1"]
    child = subprocess.Popen(
        [sys.executable, "-m", "fclens", *command], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120

        def started() -> bool:  # the directory appears once the scan has begun, its SIGTERM handler in place
            return out.is_dir() and any(out.iterdir())

        while not started() and child.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # poll: the directory appears once the scan has started, its handler in place
        child.send_signal(signal.SIGTERM)  # whatever number of images is done by now, the test holds it
        _, err = child.communicate(timeout=120)
    finally:
        child.kill()
    assert child.returncode == 130, err
    last = err.strip().splitlines()[-1]
    found = re.fullmatch(r"fclens: interrupted: (\d+) of 82 images kept in \S+; rerun to continue", last)
    assert found, err
    kept = int(found.group(1))
    assert read_scan(out).table.num_rows == kept
    assert main([*command, "--batch-size", "32"]) == 3  # the batch size is not part of what was scanned
    printed = capsys.readouterr()
    assert (f"resuming: {kept} of 82 images already scanned" in printed.err) == (kept > 0)
    assert "scanned 80 of 82 images (2 skipped)" in printed.out
    assert sorted(read_scan(out).table.column("index").to_pylist()) == list(range(82))


def test_the_directory_reads_as_the_readme_shows_with_integers_kept(scanned: fclens.Scan) -> None:
    import pandas as pd
    import pyarrow.dataset

    directory = str(scanned.directory)
    frame = pd.read_parquet(f"{directory}/", dtype_backend="numpy_nullable")
    assert len(frame) == 10 and frame["pred"].dtype == "Int32" and frame["pred"].isna().sum() == 2
    rows = duckdb.sql(f"select target, avg(prob) from '{directory}/*.parquet' group by target").fetchall()
    assert {target for target, _ in rows} - {None} == {282, 967}
    assert pl.read_parquet(f"{directory}/*.parquet").height == 10
    table = pyarrow.dataset.dataset(f"{directory}/", format="parquet").to_table(columns=["index", "pred"])
    assert table.num_rows == 10
    ours = scanned.to_pandas()
    assert [str(ours[name].dtype) for name in ("pred", "target", "rival", "label")] == ["Int32"] * 4
    assert ours["pred"].isna().sum() == 2 and all(Path(path).is_absolute() for path in ours["path"])


@pytest.mark.slow
def test_images_of_a_relative_list_are_found_from_another_directory(
    folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    (tmp_path / "lists").mkdir()
    photos = Path("..") / "photos"
    (tmp_path / "photos").symlink_to(folder)
    (tmp_path / "lists" / "list.csv").write_text(
        f"path,label\n{photos}/Tiger_Cat/chelsea-0.jpg,tiger cat\n{photos}/espresso/coffee-1.jpg,espresso\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["scan", "lists/list.csv", "--out", "S", "--workers", "0"]) == 0
    paths = read_scan("S").rows(["index", "path"]).column("path").to_pylist()
    where = tmp_path / "photos"
    assert paths == [str(where / "Tiger_Cat" / "chelsea-0.jpg"), str(where / "espresso" / "coffee-1.jpg")]
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert main(["atlas", "../S", "--out", "A", "--html", "--top-k", "1"]) == 0
    pages = "".join(page.read_text() for page in Path("A").glob("class-*.html"))
    assert "not shown:" not in pages and "data:image/" in pages


def test_a_label_folder_with_no_close_class_says_how_to_list_the_classes(
    classifier: fclens.Classifier, tmp_path: Path
) -> None:
    (tmp_path / "photos" / "kitty_cats").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(tmp_path / "photos" / "kitty_cats" / "a.jpg")
    with pytest.raises(FclensError) as refused:
        scan(classifier, tmp_path / "photos", tmp_path / "scan", progress=False)
    message, command = str(refused.value), refused.value.cli  # Python's words, and the command's
    assert "no class name is close" in message and "model.class_names" in message
    assert "fclens.load_model().class_names" in command and "--labels none" in command
    assert "closest" not in message + command


def test_classifier_to_moves_the_module_and_the_heads_cached_weight() -> None:
    """What a Ray actor on a GPU relies on (here the "meta" device stands in for a GPU on a CPU machine)."""
    module = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 4)
    )
    model = fclens.load_model(module, class_names=list("abcd"), input_size=32)
    assert model.head.weight.device.type == "cpu"  # found, and cached, on the CPU
    assert model.to("meta") is model and model.device.type == "meta"
    assert {p.device.type for p in model.module.parameters()} == {"meta"}
    assert model.head.weight.device.type == model.head.bias.device.type == "meta"

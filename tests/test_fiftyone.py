"""fclens.to_fiftyone: every field of every sample against the scan (in memory), then a real database.

The round trip needs a MongoDB: FIFTYONE_DATABASE_URI's, or a ``mongod`` started here (FiftyOne's own
from fiftyone-db, or one on PATH; .ci/run sets one up). Where none starts, it is skipped, loudly.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import fclens
from fclens.errors import FclensError
from fclens.integrations.fiftyone import (
    LABEL_FIELD,
    RUN_KEY,
    fiftyone_samples,
    heatmap,
    node_field,
    to_fiftyone,
)
from fclens.scanning import LocalEngine

NODES = ["discriminative", "confusing", "", "+", "--"]


@pytest.fixture(scope="module")
def fo() -> Any:
    try:
        import fiftyone
    except ImportError as error:
        pytest.skip(
            f"FIFTYONE TESTS SKIPPED: cannot import fiftyone ({error}); pip install 'fclens[fiftyone]'"
        )
    return fiftyone


@pytest.fixture(scope="module")
def samples(fo: Any, photo_scan: fclens.Scan) -> dict[int, Any]:
    """The photo scan's samples by scan index."""
    return {sample["fclens_index"]: sample for sample in fiftyone_samples(photo_scan, NODES)}


def _terminal(paths: list[str], sign: str) -> int:
    chain = [path for path in paths if path and set(path) == {sign}]
    return paths.index(max(chain, key=len))


def test_every_field_of_every_sample_is_its_scan_row(
    photo_scan: fclens.Scan, samples: dict[int, Any]
) -> None:
    rows = photo_scan.rows(ok_only=True).to_pylist()
    assert sorted(samples) == [row["index"] for row in rows] and len(rows) == 6
    z = photo_scan.read_features().z.numpy()
    logits = z @ photo_scan.weight.T + photo_scan.bias
    probabilities = photo_scan.pred_probs()
    names = photo_scan.class_names
    for position, row in enumerate(rows):
        sample = samples[row["index"]]
        assert sample.filepath == row["path"] and Path(sample.filepath).is_file()
        assert sample[LABEL_FIELD].label == names[row["label"]] in ("tabby", "espresso")
        pred = sample["fclens_pred"]
        assert (pred.label, pred.confidence) == (names[row["pred"]], pytest.approx(row["prob"]))
        assert pred.logits.dtype == np.float32 and pred.logits.shape == (1000,)
        np.testing.assert_allclose(pred.logits, logits[position], rtol=1e-5, atol=1e-4)
        np.testing.assert_allclose(
            torch.softmax(torch.from_numpy(pred.logits), 0), probabilities[position], atol=1e-6
        )
        for role in ("target", "rival"):
            label = sample[f"fclens_{role}"]
            assert label.label == names[row[role]] == row[f"{role}_name"]
            assert label.confidence == pytest.approx(row[f"prob_{role}"])
            assert label["logit"] == pytest.approx(row[f"logit_{role}"])
        assert sample["fclens_gap"] == pytest.approx(row["logit_rival"] - row["logit_target"])
        contrast = sample["fclens_contrast"]
        assert contrast.map.dtype == np.float32  # the App cannot decode float16
        np.testing.assert_array_equal(
            contrast.map, photo_scan.contrast_map(photo_scan.table["index"].to_pylist().index(row["index"]))
        )
        assert contrast.range == [-np.abs(contrast.map).max(), np.abs(contrast.map).max()]
        assert sample["fclens_node_path"] == row["node_path"]
        assert sample["fclens_node_contribution"] == pytest.approx(row["node_contribution"])
        np.testing.assert_array_equal(sample["fclens_features"], z[position])
        maps = photo_scan.node_maps(photo_scan.table["index"].to_pylist().index(row["index"]))
        paths = row["node_path"]
        expected = {
            "discriminative": maps[_terminal(paths, "+")],
            "confusing": maps[_terminal(paths, "-")],
            "": maps[paths.index("")],
            "+": maps[paths.index("+")],
            "--": maps[paths.index("--")] if "--" in paths else None,
        }
        for node, values in expected.items():
            field = sample[node_field(node)]
            if values is None:
                assert field is None
            else:
                np.testing.assert_array_equal(field.map, values)
                assert field.map.dtype == np.float32 and field.range[1] == np.abs(values).max()


def test_heatmap_ranges_are_symmetric_for_signed_maps(fo: Any) -> None:
    signed = heatmap(np.array([[-0.5, 2.0], [0.0, 1.0]], np.float16))
    assert signed.map.dtype == np.float32 and signed.range == [-2.0, 2.0]
    assert heatmap(np.array([[0.0, 3.0]])).range == [0.0, 3.0]
    assert heatmap(np.zeros((2, 2))).range == [0.0, 1.0]


def test_node_fields_and_bad_nodes(fo: Any, photo_scan: fclens.Scan) -> None:
    assert [node_field(node) for node in ("", "+-", "discriminative")] == [
        "fclens_node_root",
        "fclens_node_plus_minus",
        "fclens_discriminative",
    ]
    for nodes in (["++x"], [3], 3):
        with pytest.raises(FclensError) as raised:
            next(fiftyone_samples(photo_scan, nodes))
        assert "\n" not in str(raised.value)
    samples = list(fiftyone_samples(photo_scan, "confusing"))  # one node as a string
    assert all(sample.has_field("fclens_confusing") for sample in samples)
    assert not any(sample.has_field("fclens_discriminative") for sample in samples)


def test_a_scan_of_a_python_dataset_has_no_files_to_show(
    fo: Any, classifier: fclens.Classifier, photos: torch.Tensor, tmp_path: Path
) -> None:
    data = [(image.cpu(), None) for image in photos]
    found = fclens.scan(classifier, data, tmp_path / "scan", engine=LocalEngine(workers=0), progress=False)
    with pytest.raises(FclensError, match="scanned from a Python Dataset"):
        next(fiftyone_samples(found))
    with pytest.raises(FclensError, match=r"dataset must be a fiftyone\.Dataset or None, got str"):
        to_fiftyone(fclens.read_scan(Path(__file__).parent / "fixtures" / "scan-v1"), "name")


def test_without_fiftyone_it_says_how_to_install_it(
    photo_scan: fclens.Scan, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "fiftyone", None)
    with pytest.raises(FclensError, match=r"pip install 'fclens\[fiftyone\]'"):
        fclens.to_fiftyone(photo_scan)


def test_fclens_and_its_command_import_neither_fiftyone_nor_cleanlab() -> None:
    check = (
        "import sys, fclens; fclens.to_fiftyone; from fclens.cli import main\n"
        "try: main(['--help'])\nexcept SystemExit: pass\n"
        "assert not {'fiftyone', 'cleanlab'} & set(sys.modules), sorted({'fiftyone', 'cleanlab'} & set(sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, env=os.environ)
    assert done.returncode == 0, done.stderr


# ---------------------------------------------------------------------------------------------------------
# A real database
# ---------------------------------------------------------------------------------------------------------
def _mongod() -> str | None:
    """FiftyOne's own mongod (fiftyone-db), else one on PATH."""
    try:
        from fiftyone.core.service import DatabaseService

        return DatabaseService.find_mongod()
    except Exception:
        return shutil.which("mongod")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def database(fo: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """FiftyOne on FIFTYONE_DATABASE_URI's MongoDB, or on a mongod started here in a temporary folder."""
    import pymongo

    uri, process = os.environ.get("FIFTYONE_DATABASE_URI"), None
    if not uri:
        mongod = _mongod()
        if mongod is None:
            pytest.skip(
                "FIFTYONE DATABASE ROUND TRIP SKIPPED: no mongod (fiftyone-db has none here); see .ci/run"
            )
        folder = tmp_path_factory.mktemp("mongo")
        port = _free_port()
        log = open(folder / "mongod.log", "w")  # noqa: SIM115 (open while mongod runs)
        command = [mongod, "--dbpath", str(folder), "--port", str(port), "--bind_ip", "127.0.0.1"]
        process = subprocess.Popen([*command, "--nounixsocket"], stdout=log, stderr=subprocess.STDOUT)
        uri = f"mongodb://127.0.0.1:{port}"
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=1000)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.admin.command("ping")
            break
        except pymongo.errors.ConnectionFailure as error:
            if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
                said = (
                    (folder / "mongod.log").read_text().strip().splitlines()[-1:] if process else [str(error)]
                )
                if process is not None:
                    process.kill()
                pytest.skip(f"FIFTYONE DATABASE ROUND TRIP SKIPPED: MongoDB at {uri} did not start: {said}")
    client.close()
    fo.config.database_uri = uri
    made = set(fo.list_datasets())
    yield fo
    for name in set(fo.list_datasets()) - made:
        fo.delete_dataset(name)
    if process is not None:
        process.terminate()
        process.wait(30)


@pytest.mark.slow
def test_a_new_dataset_holds_the_scan_and_fiftyone_brain_works_on_its_fields(
    database: Any, photo_scan: fclens.Scan
) -> None:
    import fiftyone.brain as fob

    dataset = fclens.to_fiftyone(photo_scan, nodes=["discriminative", "confusing"], pairs=3)
    ok = photo_scan.rows(["index", "path", "label", "pred"], ok_only=True).to_pylist()
    assert len(dataset) == 6 and set(dataset.values("filepath")) == {row["path"] for row in ok}
    heatmaps = dataset.values("fclens_contrast")
    assert all(h.map.dtype == np.float32 and h.range[0] == -h.range[1] for h in heatmaps)  # stored as written
    assert dataset.get_field("fclens_features") is not None
    config = dataset.get_run_info(RUN_KEY).config
    assert config.scan == str(photo_scan.directory.resolve()) and "fclens_discriminative" in config.fields
    assert len(config.views) == 3 and set(config.views) == set(dataset.list_saved_views())
    pair = fclens.atlas(photo_scan).pairs[0]
    names = photo_scan.class_names
    view = dataset.load_saved_view(config.views[0])
    assert set(view.values("fclens_target.label")) == {names[pair.a]}
    assert set(view.values("fclens_rival.label")) == {names[pair.b]}
    gaps = view.values("fclens_gap")
    assert gaps == sorted(gaps, reverse=True) and len(view) >= 1

    results = dataset.evaluate_classifications("fclens_pred", gt_field=LABEL_FIELD, eval_key="fclens_eval")
    expected = np.mean([row["pred"] == row["label"] for row in ok])
    assert results.metrics()["accuracy"] == pytest.approx(expected)
    fob.compute_mistakenness(dataset, "fclens_pred", label_field=LABEL_FIELD, use_logits=True)
    mistakenness = dataset.values("mistakenness")
    assert len(mistakenness) == 6 and all(0 <= m <= 1 for m in mistakenness)
    visual = fob.compute_visualization(
        dataset, embeddings="fclens_features", method="pca", brain_key="fclens_pca"
    )
    assert visual.points.shape == (6, 2)


@pytest.mark.slow
def test_an_existing_dataset_keeps_its_fields_and_a_rerun_replaces_fclens_s(
    database: Any, photo_scan: fclens.Scan
) -> None:
    fo = database
    dataset = fo.Dataset()
    ok = photo_scan.rows(["path"], ok_only=True).column("path").to_pylist()
    theirs = [
        fo.Sample(filepath=path, notes="mine", ground_truth=fo.Classification(label="cat")) for path in ok[:4]
    ]
    dataset.add_samples(theirs)
    to_fiftyone(photo_scan, dataset, nodes=["+", "--"], pairs=2)
    assert len(dataset) == 6  # the two images the dataset lacked are added
    assert dataset.values("notes").count("mine") == 4
    assert dataset.values(f"{LABEL_FIELD}.label")[:4] == ["cat"] * 4  # their labels, not the scan's
    assert dataset.has_sample_field("fclens_node_plus") and dataset.has_sample_field(
        "fclens_node_minus_minus"
    )
    first_views = dataset.get_run_info(RUN_KEY).config.views
    dataset.set_values("fclens_node_path", [["stale"]] * len(dataset))

    to_fiftyone(photo_scan, dataset, nodes=["confusing"], pairs=1)
    assert not dataset.has_sample_field("fclens_node_plus") and dataset.has_sample_field("fclens_confusing")
    assert dataset.list_saved_views() == first_views[:1]
    rows = photo_scan.rows(["path", "node_path"], ok_only=True).to_pylist()
    by_path = {row["path"]: row["node_path"] for row in rows}
    stored = dict(zip(dataset.values("filepath"), dataset.values("fclens_node_path"), strict=True))
    assert stored == by_path  # the lists replaced, not merged
    assert dataset.values("notes").count("mine") == 4


def test_readme_names_every_field_written(fo: Any, samples: dict[int, Any]) -> None:
    readme = (Path(__file__).parents[1] / "README.md").read_text("utf-8")
    table = readme.split("### FiftyOne", 1)[1].split("###", 1)[0]
    documented = set(re.findall(r"`((?:ground_truth|fclens_)\w*)`", table))
    written = {name for sample in samples.values() for name in sample.field_names}
    assert written - {"id", "filepath", "tags", "metadata", "created_at", "last_modified_at"} <= documented

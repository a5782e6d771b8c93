"""Scans and calls of earlier fclens releases keep working (issue 21).

Every manifest format a commit could write reads, atlases, prunes, re-fits and is causal-tested: the
fixtures in tests/fixtures were written by those releases' own code (make_scans.py says which and how).
fclens 0.1's spellings (commit 284cd16) work for one release with a DeprecationWarning naming the new
one, pointing at the caller's line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

import fclens
from conftest import FIXTURES, OLD_SCANS
from fclens import FclensError, read_scan
from fclens.cli import main
from fclens.models import Classifier
from fclens.options import RUNNER_UP
from fclens.scanning import LocalEngine, RayEngine, ScanError
from fclens.scanning.schema import SCHEMA_VERSION

LITE0_SCANS = ("scan-284cd16", "scan-3286d7d")
"""The fixtures scanned by the embedded EfficientNet-Lite0 (scan-v1 is a tiny random classifier's)."""

EXPECTED = {  # options as read today, class names, feature grid, features per image
    "scan-284cd16": ({"maps": ("activation",), "min_size": 20, "scores": "none"}, 1000, (7, 7), 1280),
    "scan-3286d7d": ({"maps": ("activation",), "min_size": 20, "scores": "none"}, 1000, (7, 7), 1280),
    "scan-v1": ({"maps": ("activation",), "min_size": 4, "scores": "terminal"}, 3, (8, 8), 16),
}


@pytest.fixture
def elsewhere(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working folder that is not where any scan ran, so that no image is found by luck."""
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    monkeypatch.chdir(folder)
    return folder


def deprecations(record: list[warnings.WarningMessage]) -> list[str]:
    """The DeprecationWarnings caught, each checked to point at the line in this file that made it."""
    found = [w for w in record if issubclass(w.category, DeprecationWarning)]
    assert all(w.filename == __file__ for w in found), [(w.filename, str(w.message)) for w in found]
    return [str(w.message) for w in found]


# --- every earlier manifest reads -----------------------------------------------------------------


@pytest.mark.parametrize("name", OLD_SCANS)
def test_a_scan_of_an_earlier_release_reads_as_written(
    old_scan: Callable[..., Path], elsewhere: Path, name: str
) -> None:
    options, classes, grid, width = EXPECTED[name]
    directory = old_scan(name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # an old scan is data, not a deprecated call: it reads quietly
        scan = read_scan(directory)
    manifest = scan.manifest
    assert manifest.schema_version == 1 and manifest.complete
    assert manifest.counts == {"images": 7, "ok": 6, "skipped": 1}
    assert {key: getattr(manifest.options, key) for key in options} == options
    assert manifest.options.contrast == RUNNER_UP and manifest.options.features
    assert len(scan.class_names) == classes and scan.grid == grid
    rows = scan.rows(["index", "path", "status", "reason", "label"]).to_pylist()
    assert len(rows) == 7 and sorted(row["index"] for row in rows) == list(range(7))
    (skipped,) = [row for row in rows if row["status"] == "skipped"]
    assert skipped["path"].endswith("espresso/broken.jpg") and "not an image" in skipped["reason"]
    names = {row["path"].split("/")[-2] for row in rows}
    assert names == {"tabby", "espresso"}
    labels = {row["path"].split("/")[-2]: scan.class_names[row["label"]] for row in rows}
    assert labels == {"tabby": "tabby", "espresso": "espresso"}
    assert scan.read_features().z.shape == (6, width) and np.isfinite(scan.read_features().z.numpy()).all()
    ok = scan.rows(["node_path"], ok_only=True).column("node_path").to_pylist()
    maps = scan.node_maps(0)
    assert maps.shape == (len(ok[0]), *grid) and np.isfinite(maps).all()
    assert scan.contrast_map(0).shape == grid


@pytest.fixture(scope="module")
def todays_scan(tmp_path_factory: pytest.TempPathFactory, classifier: Classifier) -> fclens.Scan:
    """Today's scan of tests/fixtures/photos, as the Lite0 fixtures' releases scanned them."""
    out = tmp_path_factory.mktemp("today") / "scan"
    return fclens.scan(
        classifier, FIXTURES / "photos", out, features=True, engine=LocalEngine(workers=0), progress=False
    )


@pytest.mark.slow
@pytest.mark.parametrize("name", LITE0_SCANS)
def test_an_old_scans_rows_say_what_todays_scan_of_the_same_photos_says(
    old_scan: Callable[..., Path], todays_scan: fclens.Scan, name: str
) -> None:
    old = read_scan(old_scan(name))
    columns = ["index", "status", "label", "pred", "target", "rival", "top5", "node_path", "node_size"]
    assert (
        old.rows(columns).sort_by("index").to_pylist()
        == todays_scan.rows(columns).sort_by("index").to_pylist()
    )
    np.testing.assert_allclose(
        old.read_features().z.numpy(), todays_scan.read_features().z.numpy(), rtol=1e-2, atol=1e-2
    )


# --- atlas, prune, re-fit, causal test -------------------------------------------------------------


@pytest.mark.parametrize("name", OLD_SCANS)
def test_an_old_scan_atlases_with_its_images_found_where_they_moved_with_it(
    old_scan: Callable[..., Path], elsewhere: Path, tmp_path: Path, name: str, capsys: pytest.CaptureFixture
) -> None:
    """The paths are relative (284cd16, 067169c) or absolute into a worktree that is gone (3286d7d): the
    images are found beside the scan's copy from a working folder that is neither (or, for scan-v1, at
    its recorded source, /work/main/tests/fixtures/photos, where that exists)."""
    directory = old_scan(name)
    found = fclens.atlas(directory, top_k=2)
    assert {atlas.name for atlas in found.classes} == {"tabby", "espresso"}
    shown = [Path(image.path) for atlas in found.classes for image in atlas.confusing_images]
    places = (tmp_path / "tests", Path(found.manifest.source))
    assert shown and all(path.is_file() and any(map(path.is_relative_to, places)) for path in shown)
    assert main(["atlas", str(directory), "--out", "atlas", "--html", "--top-k", "2"]) == 0
    assert "2 classes" in capsys.readouterr().out
    pages = "".join(page.read_text() for page in (elsewhere / "atlas").glob("class-*.html"))
    assert "not shown:" not in pages and pages.count("data:image/") >= 4


def test_an_old_scan_without_its_images_atlases_and_says_which_are_missing(
    old_scan: Callable[..., Path], elsewhere: Path
) -> None:
    directory = old_scan("scan-284cd16", photos=False)
    assert main(["atlas", str(directory), "--out", "atlas", "--html", "--top-k", "2"]) == 0
    pages = "".join(page.read_text() for page in (elsewhere / "atlas").glob("class-*.html"))
    assert pages.count("not shown: no such file") >= 4 and "data:image/png" not in pages


@pytest.mark.slow
@pytest.mark.parametrize("name", LITE0_SCANS)
def test_an_old_scan_prunes_refits_and_is_causal_tested(
    old_scan: Callable[..., Path], elsewhere: Path, name: str, capsys: pytest.CaptureFixture
) -> None:
    directory = old_scan(name)
    curve = fclens.prune_curve(directory, methods=("tree", "magnitude"), sparsities=(0.5,))
    assert curve.n_images == curve.n_labelled == 6 and len(curve.points) == 2
    assert all(point.accuracy is not None and 0 <= point.agreement <= 1 for point in curve.points)
    layer = fclens.fit_layer(directory, max_iter=5)
    assert layer.weight.shape == (1000, 1280) and torch.isfinite(layer.weight).all()
    table = fclens.causal_test(directory, ms=(1, 4), rules=("tree", "random"))
    assert (281, 285) in {(test.target, test.rival) for test in table.pairs}  # tabby → Egyptian cat
    command = ["prune", str(directory), "--out", "prune", "--sparsity", "0.5", "--methods", "tree"]
    assert main(command) == 0
    assert "6 images (6 labelled)" in capsys.readouterr().out


# --- a damaged manifest still says so; a rerun refuses -------------------------------------------


def without(key: str) -> Callable[[dict], object]:
    return lambda manifest: {name: value for name, value in manifest.items() if name != key}


DAMAGE: dict[str, tuple[Callable[[dict], object], str]] = {  # the manifest → its damaged JSON
    "no class names": (without("class_names"), "the manifest is damaged (no class_names)"),
    "class names a string": (lambda m: {**m, "class_names": "tabby"}, "class_names is not a list of names"),
    "options a list": (lambda m: {**m, "options": [1, 2]}, "options is not a mapping"),
    "no options": (without("options"), "the manifest is damaged (no options)"),
    "a map kind that is a number": (
        lambda m: {**m, "options": {**m["options"], "map_kind": 5}},
        "maps must be a map kind's name or a sequence of them, got int 5",
    ),
    "an unknown option": (
        lambda m: {**m, "options": {**m["options"], "colour": "red"}},
        "unknown options colour",
    ),
    "a schema version that is text": (lambda m: {**m, "schema_version": "one"}, "schema_version 'one'"),
    "a list, not an object": (lambda m: [m], "a JSON list, not an object"),
}


@pytest.mark.parametrize("damage", DAMAGE, ids=list(DAMAGE))
def test_a_truly_damaged_manifest_is_one_line_naming_the_file(
    old_scan: Callable[..., Path], damage: str
) -> None:
    change, message = DAMAGE[damage]
    directory = old_scan("scan-284cd16", photos=False)
    path = directory / "manifest.json"
    path.write_text(json.dumps(change(json.loads(path.read_text()))))
    with pytest.raises(ScanError) as caught:
        read_scan(directory)
    text = str(caught.value)
    assert text.startswith(f"{path}: ") and message in text and "\n" not in text


def test_a_manifest_that_is_not_json_or_from_a_newer_fclens_says_so(old_scan: Callable[..., Path]) -> None:
    directory = old_scan("scan-3286d7d", photos=False)
    path = directory / "_manifest.json"
    manifest = json.loads(path.read_text())
    path.write_text(json.dumps({**manifest, "schema_version": 99}))
    with pytest.raises(
        ScanError, match=rf"schema version 99; this fclens reads up to {SCHEMA_VERSION}: upgrade fclens"
    ):
        read_scan(directory)
    path.write_text("{garbage")
    with pytest.raises(ScanError, match=rf"^{path}: cannot read the manifest \(Expecting"):
        read_scan(directory)


@pytest.mark.parametrize("name", ["scan-284cd16", pytest.param("scan-3286d7d", marks=pytest.mark.slow)])
def test_a_rerun_into_an_old_scan_refuses_in_one_line_and_changes_nothing(
    old_scan: Callable[..., Path], name: str, capsys: pytest.CaptureFixture
) -> None:
    """Refused, not resumed: today's rows would join version-1 rows (relative paths, manifest.json) in
    one directory. The old scan reads as it is; --force starts over, another --out keeps it."""
    directory = old_scan(name)
    before = {path.name: path.read_bytes() for path in directory.iterdir()}
    photos = directory.parent / "photos"
    assert main(["scan", str(photos), "--out", str(directory), "--features", "--workers", "0"]) == 2
    error = capsys.readouterr().err
    assert (
        error.count("\n") == 1
        and f"written by an earlier fclens, scan schema 1 (this one writes {SCHEMA_VERSION})" in error
    )
    assert "cannot be resumed" in error and "--force to start over" in error
    assert {path.name: path.read_bytes() for path in directory.iterdir()} == before


# --- fclens 0.1's calls warn and work --------------------------------------------------------------


def test_scan_with_fclens_0_1_keywords_warns_naming_the_new_spelling_and_scans_the_same(
    classifier: Classifier, todays_scan: fclens.Scan, capsys: pytest.CaptureFixture
) -> None:
    """Rerun into today's scan: the old spellings make the same fingerprint, so there is nothing to do
    (and no Ray is started for engine="ray")."""
    photos, out = FIXTURES / "photos", todays_scan.directory
    calls = {
        "local": {
            "engine": "local",
            "workers": 0,
            "map_kind": "activation",
            "scores": None,
            "features": True,
        },
        "ray": {"engine": "ray", "ray_address": "auto", "actors": 8, "features": True},
    }
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        local = fclens.scan(classifier, photos, out, **calls["local"])
        assert "nothing to do" in capsys.readouterr().err
        fclens.scan(classifier, photos, out, **calls["ray"])
        assert "nothing to do" in capsys.readouterr().err
    assert deprecations(record) == [
        "scan(engine='local', workers=0) is deprecated and goes in the next release; use engine=LocalEngine(workers=0)",
        "map_kind='activation' is deprecated and goes in the next release; use maps='activation'",
        "scores=None is deprecated and goes in the next release; use scores='none'",
        "scan(engine='ray', ray_address='auto', actors=8) is deprecated and goes in the next release; use engine=RayEngine(address='auto', actors=8)",
    ]
    assert local.manifest.options == todays_scan.manifest.options


@pytest.mark.parametrize(
    ("keywords", "message"),
    [
        ({"engine": 42}, r"^engine must be LocalEngine\(…\) or RayEngine\(…\); got int 42$"),
        ({"engine": "spark"}, r"^engine must be LocalEngine\(…\) or RayEngine\(…\); got 'spark'$"),
        (
            {"engine": LocalEngine(), "workers": 2},
            r"^give workers to the engine: engine=LocalEngine\(workers=…\)$",
        ),
        (
            {"engine": RayEngine(), "ray_address": "auto"},
            r"^give ray_address to the engine: engine=RayEngine\(address=…\)$",
        ),
        (
            {"map_kind": "activation", "maps": "contribution"},
            r"^map_kind and maps both given; give maps only$",
        ),
        ({"options": "fast"}, r"^options must be an fclens.Options; got str 'fast'$"),
    ],
)
def test_a_wrong_engine_or_options_for_scan_is_one_line(
    classifier: Classifier, tmp_path: Path, keywords: dict, message: str
) -> None:
    with pytest.raises(FclensError, match=message):
        fclens.scan(classifier, FIXTURES / "photos", tmp_path / "scan", progress=False, **keywords)
    assert not (tmp_path / "scan").exists()


@pytest.mark.slow
def test_explain_with_fclens_0_1_keywords_warns_and_computes_what_they_meant(
    classifier: Classifier, chelsea: Path
) -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        unscored = fclens.explain(classifier, chelsea, scores=False, min_size=1000)
        scored = fclens.explain(classifier, chelsea, scores=True, min_size=1000)
        contribution = fclens.explain(classifier, chelsea, map_kind="contribution", scores="none")
    assert deprecations(record) == [
        "scores=False is deprecated and goes in the next release; use scores='none'",
        "scores=True is deprecated and goes in the next release; use scores='all'",
        "map_kind='contribution' is deprecated and goes in the next release; use maps='contribution'",
    ]
    assert all(node.score is None for node in unscored.nodes)
    assert len(scored.nodes) > 1 and all(node.score is not None for node in scored.nodes)
    assert contribution.primary == "contribution"


@pytest.mark.slow
def test_one_folder_given_to_explain_warns_and_a_list_with_a_folder_gives_its_images(
    classifier: Classifier, chelsea: Path
) -> None:
    tabby = FIXTURES / "photos" / "tabby"
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        from_folder = fclens.explain(classifier, tabby, scores="none")
    (message,) = deprecations(record)
    assert f"use [{str(tabby)!r}] for a list" in message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        listed = fclens.explain(classifier, [tabby, chelsea], scores="none")
    assert [Path(e.source).name for e in from_folder] == ["0.jpg", "1.jpg", "2.jpg"]
    assert [Path(e.source).name for e in listed] == ["0.jpg", "1.jpg", "2.jpg", chelsea.name]
    assert [e.target.index for e in listed[:3]] == [e.target.index for e in from_folder]


def test_fit_ald_workers_and_a_manifest_read_as_a_dict_warn_and_work(
    classifier: Classifier, old_scan: Callable[..., Path]
) -> None:
    weight = classifier.head.weight[:20]
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        fit = fclens.fit_ald(weight, workers=4)
        scan = read_scan(old_scan("scan-v1", photos=False))
        counts = scan.manifest["counts"]
        names = fclens.atlas(scan).manifest["class_names"]
    messages = deprecations(record)
    assert messages[0].startswith("fit_ald(workers=…) is deprecated") and "ignored" in messages[0]
    assert messages[1:] == [
        "scan.manifest['counts'] is deprecated and goes in the next release; use scan.manifest.counts",
        "scan.manifest['class_names'] is deprecated and goes in the next release; use scan.manifest.class_names",
    ]
    np.testing.assert_array_equal(fit.pos.r2, fclens.fit_ald(weight).pos.r2)
    assert counts == {"images": 7, "ok": 6, "skipped": 1} and names == ["tabby", "espresso", "other"]


MYPY_SNIPPET = """
from pathlib import Path
import numpy as np
import torch
from PIL import Image
import fclens
model = fclens.load_model()
reveal_type(fclens.explain(model, "cat.jpg"))
reveal_type(fclens.explain(model, Path("cat.jpg"), target="tabby"))
reveal_type(fclens.explain(model, Image.new("RGB", (8, 8))))
reveal_type(fclens.explain(model, np.zeros((8, 8, 3))))
reveal_type(fclens.explain(model, torch.zeros(3, 8, 8)))
reveal_type(fclens.explain(model, ["a.jpg", Path("b.jpg")], target=[1, 2]))
reveal_type(fclens.explain(model, [torch.zeros(3, 8, 8)]))
"""


@pytest.mark.slow
def test_explains_return_type_follows_its_input_for_a_type_checker(tmp_path: Path) -> None:
    """The @overloads, as mypy reads them: one image → Explanation, a sequence → a list, a tensor → either."""
    (tmp_path / "snippet.py").write_text(MYPY_SNIPPET)
    source = Path(fclens.__file__).parents[1]
    command = [sys.executable, "-m", "mypy", "--follow-imports=silent", "--ignore-missing-imports"]
    command += ["--cache-dir", str(tmp_path / "cache"), str(tmp_path / "snippet.py")]
    done = subprocess.run(
        command, capture_output=True, text=True, env={**os.environ, "MYPYPATH": str(source)}
    )
    revealed = [
        line.split('Revealed type is "')[1].rstrip('"')
        for line in done.stdout.splitlines()
        if "Revealed" in line
    ]
    one, many = "fclens.explaining.Explanation", "list[fclens.explaining.Explanation]"
    assert revealed == [one, one, one, one, f"{one} | {many}", many, many], done.stdout

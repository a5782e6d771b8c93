"""The fclens command as a user runs it: outputs, exit codes, one-line errors, reruns."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import timm
from safetensors.torch import save_file

import fclens
from fclens.cli import main
from fclens.images import sample_image


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ([], ["weights"], ["tree"], ["survey"], ["explain"]):
        with pytest.raises(SystemExit) as exit_:
            main([*command, "--help"])
        assert exit_.value.code == 0
    assert "--json" in capsys.readouterr().out


HEAVY = ("torch", "torchvision", "timm", "numpy", "scipy", "matplotlib", "PIL", "jinja2")
HEAVY += ("pyarrow", "pandas", "polars", "duckdb", "ray")
HELP_PROBE = """
import argparse, contextlib, io, json, sys
from fclens.cli import _parser, main
(commands,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
asked = [["--help"], ["--version"]] + [[name, "--help"] for name in commands.choices]
for argv in asked:
    with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):
        main(argv)
    assert out.getvalue().strip(), argv
heavy = sorted(name for name in sys.modules if name.split(".")[0] in HEAVY)
print(json.dumps({"commands": list(commands.choices), "heavy": heavy}))
"""


def test_help_and_version_import_nothing_heavy() -> None:
    """--help of fclens and of every subcommand, and --version, answer without torch & co.

    Heavy imports belong inside the ``_run_*`` functions (the rule atop fclens/cli.py); a subcommand
    added later is checked too, since the probe walks the parser's subcommands.
    """
    done = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}" + HELP_PROBE],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    found = json.loads(done.stdout)
    assert {"weights", "tree", "survey", "explain"} <= set(found["commands"])
    assert found["heavy"] == []


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.strip() == "fclens 0.1.0"


def test_weights_json_summary_and_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "weights", "--out", str(tmp_path), "--json")
    assert code == 0
    summary = json.loads(out)
    assert summary["model"] == "efficientnet_lite0" and summary["classes"] == 1000
    assert summary["joint"]["pos"]["r2"] == pytest.approx(0.844, abs=0.005)
    assert {"marginal_mean_pos", "marginal_mean_neg", "r2_quantiles", "mle", "aic"} <= set(summary)
    assert {"mean", "r2"} <= set(summary["joint"]["neg"])
    with open(tmp_path / "ald.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert len(rows) == 1000 and rows[285]["name"] == "Egyptian cat"


def test_weights_plots_and_page(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(
        capsys, "weights", "--out", str(tmp_path), "--plots", "--html", "--plot-classes", "285,espresso"
    )
    assert code == 0 and "marginal mean" in out
    assert "per-class R² pos: median 0.847" in out and "gauss 912" in out and "n/a" not in out
    assert (tmp_path / "r2-histogram.png").stat().st_size > 10_000
    assert sorted(p.name for p in (tmp_path / "classes").iterdir()) == [
        "0285-Egyptian_cat.png",
        "0967-espresso.png",
    ]
    assert "Egyptian cat" in (tmp_path / "weights.html").read_text()


def test_tree_text_and_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "tree", "--class", "Egyptian cat")
    assert code == 0 and "Egyptian cat" in out and "+++" in out and "---" in out
    code, out, _ = run(capsys, "tree", "--class", "285", "--mode", "full", "--min-size", "200", "--json")
    data = json.loads(out)
    assert code == 0 and data["class"] == {"index": 285, "name": "Egyptian cat"} and data["mode"] == "full"


def test_unknown_class_is_a_one_line_error_with_close_matches(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "tree", "--class", "egyptian kat")
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and "did you mean 'Egyptian cat'" in err and "Traceback" not in err


def test_debug_shows_the_traceback(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ValueError, match="unknown class"):
        main(["tree", "--class", "egyptian kat", "--debug"])


def test_survey_continues_past_a_failing_model(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    save_file(
        timm.create_model("resnet18", num_classes=10).state_dict(), str(tmp_path / "resnet18.safetensors")
    )
    code, out, _ = run(
        capsys,
        "survey",
        "--models",
        "efficientnet_lite0,timm:resnet_18,timm:resnet18",
        "--weights-dir",
        str(tmp_path),
        "--json",
    )
    rows = json.loads(out)
    assert code == 3 and [row["status"] for row in rows] == ["ok", "failed", "ok"]
    assert "did you mean" in rows[1]["reason"] and rows[2]["classes"] == 10
    assert rows[0]["joint_pos_r2"] == pytest.approx(0.844, abs=0.005)
    assert rows[0]["median_r2_pos"] == pytest.approx(0.847, abs=0.005) and rows[0]["ald_preferred"] == 88


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "photos"
    folder.mkdir()
    shutil.copy(sample_image("chelsea"), folder / "<img src=x onerror=alert(1)>.jpg")
    (folder / "notes.jpg").write_text("not a picture")
    (folder / "cut.jpg").write_bytes(sample_image("coffee").read_bytes()[:4000])
    return folder


def test_explain_folder_skips_bad_files_and_reruns_skip_finished(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, photos: Path
) -> None:
    out = tmp_path / "out"
    code, text, _ = run(
        capsys,
        "explain", str(photos), "--out", str(out), "--html", "--map", "activation,contribution", "--overlays",
    )  # fmt: skip
    assert code == 3
    with open(out / "summary.csv", newline="") as file:
        rows = {Path(row["source"]).name: row for row in csv.DictReader(file)}
    assert rows["notes.jpg"]["status"] == "skipped" and "not an image" in rows["notes.jpg"]["reason"]
    assert rows["cut.jpg"]["status"] == "skipped" and "truncated" in rows["cut.jpg"]["reason"]
    cat = rows["<img src=x onerror=alert(1)>.jpg"]
    assert cat["status"] == "ok" and cat["prediction"] in {"tabby", "tiger cat", "Egyptian cat"}
    folder = Path(cat["output"])
    assert (folder / "explanation.json").is_file() and (folder / "chain.jpg").is_file()
    assert (folder / "maps.npz").is_file() and (folder / "node-root-contribution.png").is_file()
    page = (out / "report.html").read_text()
    assert "<img src=x onerror" not in page and "&lt;img src=x onerror=alert(1)&gt;.jpg" in page

    finished = (folder / "explanation.json").stat().st_mtime_ns
    code, text, _ = run(
        capsys, "explain", str(photos), "--out", str(out), "--html", "--map", "activation,contribution"
    )
    assert code == 3 and "done earlier" in text
    assert (folder / "explanation.json").stat().st_mtime_ns == finished
    with open(out / "summary.csv", newline="") as file:
        again = {Path(row["source"]).name: row for row in csv.DictReader(file)}
    earlier = again["<img src=x onerror=alert(1)>.jpg"]
    assert earlier["status"] == "done earlier" and earlier["prediction"] == cat["prediction"]
    assert earlier["discriminative_score"] == cat["discriminative_score"]
    assert 'id="image-1-img-src-x-onerror-alert-1-jpg"' in (out / "report.html").read_text()  # shown again


def test_explain_with_a_tree_that_never_splits(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--min-size above the layer's width leaves a root alone: no terminal nodes, and no crash."""
    code, text, _ = run(capsys, "explain", "--sample", "coffee", "--out", str(tmp_path), "--min-size", "5000")
    assert code == 0 and "discriminative none (tree not split)" in text
    with open(tmp_path / "summary.csv", newline="") as file:
        (row,) = csv.DictReader(file)
    assert row["status"] == "ok" and row["discriminative_score"] == ""


def test_explain_json_for_one_image(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "explain", "--sample", "coffee", "--out", str(tmp_path), "--json")
    (row,) = json.loads(out)  # always a list, one object per image, whatever their number
    assert row["status"] == "ok" and row["source"] == "sample:coffee"
    data = row["explanation"]
    assert code == 0 and data["prediction"]["name"] == "espresso" and data["target"]["index"] == 967
    assert data["discriminative"].startswith("+") and data["confusing"].startswith("-")
    assert all({"path", "size", "score"} <= set(node) for node in data["nodes"])
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert data == json.loads((folder / "explanation.json").read_text())  # what the file holds, no maps
    assert data["maps"] == {"file": "maps.npz", "shape": [len(data["nodes"]), 7, 7]}
    assert sorted(p.name for p in folder.iterdir()) == [
        "chain.jpg",
        "explanation.json",
        "image.jpg",
        "maps.npz",
    ]


def test_samples_are_named_not_located(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """--sample chelsea reads "sample:chelsea" in the summary, the JSON and the page, not a site-packages path."""
    code, text, _ = run(capsys, "explain", "--sample", "chelsea", "--out", str(tmp_path), "--html")
    assert code == 0 and text.startswith("sample:chelsea: ")
    with open(tmp_path / "summary.csv", newline="") as file:
        (row,) = csv.DictReader(file)
    assert row["source"] == "sample:chelsea"
    assert json.loads(Path(row["output"], "explanation.json").read_text())["source"] == "sample:chelsea"
    page = (tmp_path / "report.html").read_text()
    assert "sample:chelsea" in page and "site-packages" not in page and "samples/chelsea" not in page


@pytest.mark.parametrize(
    "args, message",
    [
        (["explain", "--sample", "chelsea", "--map", "gradcam"], "unknown map kind 'gradcam'"),
        (["explain", "--sample", "dog"], "unknown sample image 'dog'"),
        (["explain"], "no images given"),
        (["weights", "--model", "timm:not_a_model"], "timm has no model"),
        (["weights", "--weights", "missing.pth"], "does not exist"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, args, message
) -> None:
    code, _, err = run(capsys, *args, "--out", str(tmp_path)) if args[0] == "explain" else run(capsys, *args)
    assert code == 2 and message in err and err.count("\n") == 1


def test_console_entry_point_runs() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "fclens", "tree", "--class", "espresso"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "espresso" in done.stdout


def test_samples_make_a_labelled_folder_a_scan_can_read(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, classifier: fclens.Classifier
) -> None:
    """`fclens samples` (and fclens.sample_folder) works from any folder: no clone, no scikit-image."""
    out = tmp_path / "photos"
    code, printed, _ = run(capsys, "samples", "--out", str(out), "--count", "6", "--json")
    doc = json.loads(printed)
    assert code == 0 and doc["images"] == 6
    assert set(doc["classes"]) <= set(classifier.class_names)  # the folder names are the labels
    photos = sorted(out.rglob("*.jpg"))
    assert len(photos) == 6 and {p.parent.name for p in photos} == set(doc["classes"])
    assert "CC0" in (out / "ATTRIBUTION.md").read_text()
    again = fclens.sample_folder(tmp_path / "again", 6)  # seeded: the same call makes the same files
    assert [p.read_bytes() for p in photos] == [p.read_bytes() for p in sorted(again.rglob("*.jpg"))]
    assert run(capsys, "samples", "--out", str(out / "ATTRIBUTION.md"))[0] == 2

"""The fclens command as a user runs it: outputs, exit codes, one-line errors, reruns."""

from __future__ import annotations

import csv
import json
import os
import pickle
import pty
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import timm
from safetensors.torch import save_file

import fclens
import feature_scan
from fclens.cli import main
from fclens.errors import FclensError
from fclens.samples import sample_image
from fclens.scanning import ScanError
from fclens.surveying import SURVEY_COLUMNS, survey

PHOTOS = Path(__file__).parent / "fixtures" / "photos"


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_help_for_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ([], ["weights"], ["tree"], ["survey"], ["explain"]):
        assert main([*command, "--help"]) == 0
    assert "--json" in capsys.readouterr().out


HEAVY = ("torch", "torchvision", "timm", "numpy", "scipy", "matplotlib", "PIL", "jinja2")
HEAVY += ("pyarrow", "pandas", "polars", "duckdb", "ray")
HELP_PROBE = """
import argparse, contextlib, io, json, sys
from fclens.cli import build_parser, main
(commands,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
asked = [["--help"], ["--version"]] + [[name, "--help"] for name in commands.choices]
for argv in asked:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert main(argv) == 0, argv
    assert out.getvalue().strip(), argv
heavy = sorted(name for name in sys.modules if name.split(".")[0] in HEAVY)
print(json.dumps({"commands": list(commands.choices), "heavy": heavy}))
"""


def test_help_and_version_import_nothing_heavy() -> None:
    """--help of fclens and of every subcommand, and --version, answer without torch & co.

    Heavy imports belong inside each command's ``run`` (the rule atop fclens/cli/__init__.py); a
    subcommand added later is checked too, since the probe walks the parser's subcommands.
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
    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"fclens {fclens.__version__}"


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
    code, out, err = run(
        capsys, "weights", "--out", str(tmp_path), "--plots", "--html", "--plot-classes", "285,espresso"
    )
    assert code == 0 and "marginal mean" in out and err == ""  # no bar where stderr is no terminal
    assert "per-class R² pos: median 0.847" in out and "gauss 912" in out and "n/a" not in out
    wrote = out.splitlines()[-1]  # every file by name, the page included; the class plots counted
    assert wrote == (
        f"wrote {tmp_path}/: ald.csv, summary.json, r2-histogram.png, slope-intercept.png, weights.html, "
        "classes/ (2 fit plots)"
    )
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
    with pytest.raises(ValueError, match="matches no class"):
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


def test_help_lists_every_exit_code_and_flag_errors_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    epilog = " ".join(capsys.readouterr().out.split()).split("Exit codes: ")[1]
    assert [part.split()[0] for part in epilog.split("; ")] == ["0", "1", "2", "3", "130"]
    code, out, err = run(capsys, "scan", str(PHOTOS))  # --out missing
    assert code == 2 and out == "" and err.count("\n") == 1
    assert err.startswith("fclens scan: error: ") and "--out" in err and "fclens scan --help" in err


def existing_scan(directory: Path) -> Path:
    """A small scan with stored features and labels (the head floor's synthetic one): a real input."""
    means = feature_scan.class_means(3, 4, spread=1.0)
    counts = np.array([30, 20, 10])
    feature_scan.write(directory, means, counts, feature_scan.bayes_layer(means, counts / counts.sum()))
    return directory


@pytest.mark.parametrize(
    "args",
    [
        ["explain", "missing_folder/", "--out", "OUT"],
        ["explain", str(PHOTOS / "tabby" / "0.jpg"), "missing.jpg", "--out", "OUT"],
        ["scan", "missing_folder/", "--out", "OUT"],
        ["scan", "missing.csv", "--out", "OUT"],
        ["atlas", "missing_scan/", "--out", "OUT"],
        ["prune", "missing_scan/", "--out", "OUT"],
        ["rebalance", "missing_scan/", "--eval", "SCAN", "--out", "OUT"],
        ["rebalance", "SCAN", "--eval", "missing_scan/", "--out", "OUT"],
        ["weights", "--weights", "missing.safetensors", "--out", "OUT"],
        ["tree", "--class", "1", "--weights", "missing.pth"],
        ["survey", "--models", "efficientnet_lite0", "--weights-dir", "missing_folder/", "--out", "OUT"],
    ],
)
def test_a_missing_input_is_exit_2_in_one_line_before_any_work(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    existing_scan(tmp_path / "SCAN")
    code, out, err = run(capsys, *args)
    missing = next(arg for arg in args if arg.startswith("missing"))
    assert code == 2 and out == "" and err.count("\n") == 1
    assert f"{missing} does not exist" in err and "Traceback" not in err
    assert not (tmp_path / "OUT").exists()  # explain wrote no summary.csv, scan no manifest


def test_errors_speak_python_to_python_and_flags_to_the_command(
    capsys: pytest.CaptureFixture[str], classifier: fclens.Classifier, tmp_path: Path
) -> None:
    """One refusal, two wordings: ``str(error)`` names keywords, the command names flags."""
    out = tmp_path / "scan"
    out.mkdir()
    (out / "part-00000.parquet").write_bytes(b"")  # shards but no manifest: not a scan to resume
    with pytest.raises(ScanError) as refused:
        fclens.scan(classifier, PHOTOS, out, progress=False)
    assert str(refused.value).endswith("pass another out= directory, or force=True")
    assert "--" not in str(refused.value)
    code, _, err = run(capsys, "scan", str(PHOTOS), "--out", str(out))
    assert (
        code == 2
        and err == f"fclens: error: {out} holds shards but no manifest; use another --out, or --force\n"
    )
    copy = pickle.loads(pickle.dumps(refused.value))  # what a Ray worker sends back keeps both
    assert (str(copy), copy.cli) == (str(refused.value), refused.value.cli)
    with pytest.raises(ScanError) as refused:
        fclens.read_scan(PHOTOS)  # images, not a scan: what makes one, in each caller's words
    assert str(refused.value).endswith(
        f"scan it first: fclens.scan(model, {str(PHOTOS)!r}, out=SCAN), then pass SCAN"
    )
    assert refused.value.cli.endswith(
        f"scan it first: `fclens scan {PHOTOS} --out SCAN`, then `fclens atlas SCAN`"
    )


def test_survey_tells_how_to_give_weights_that_cannot_be_fetched() -> None:
    """With no hub, the survey's hint is its own flag (--weights-dir), not load_model's weights=."""
    code = (
        "import json\nfrom fclens.cli import main\nfrom fclens.surveying import survey\n"
        "print(json.dumps([survey(['timm:resnet18'], progress=False)[0].reason]))\n"
        "main(['survey', '--models', 'timm:resnet18', '--json'])"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    python, command = done.stdout.split("\n", 1)
    (python,), (row,) = json.loads(python), json.loads(command)
    assert "could not get pretrained weights for timm:resnet18" in python
    assert python.endswith("pass weights_dir= a folder holding resnet18.safetensors (or .pth)")
    assert row["status"] == "failed"
    assert row["reason"].endswith("pass --weights-dir DIR, a folder holding resnet18.safetensors (or .pth)")


def test_survey_rows_are_typed(tmp_path: Path) -> None:
    save_file(
        timm.create_model("resnet18", num_classes=10).state_dict(), str(tmp_path / "resnet18.safetensors")
    )
    (row,) = survey(["timm:resnet18"], weights_dir=tmp_path, progress=False)
    assert (row.status, row.classes, row.inputs, row.reason) == ("ok", 10, 512, "")
    assert 0 < row.joint_pos_r2 <= 1 and 0 <= row.ald_preferred <= 10
    assert tuple(row.to_dict()) == SURVEY_COLUMNS
    with pytest.raises(FclensError, match="weights_dir='nowhere' is not a folder"):
        survey(["timm:resnet18"], weights_dir="nowhere")


def test_ctrl_c_or_sigterm_keeps_whole_files_and_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SIGTERM while the second class plot is drawn: exit 130, one line saying what was kept."""
    from fclens.report import weights

    drawn = []

    def stopped(*args: object) -> None:
        drawn.append(args)
        if len(drawn) == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's stop: taken as Ctrl-C
        return real(*args)

    real, handler = weights.fit_plot, signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(weights, "fit_plot", stopped)
    code, out, err = run(capsys, "weights", "--out", str(tmp_path), "--plots", "--plot-classes", "1,2,3")
    assert code == 130 and out == ""
    assert err == f"fclens: interrupted: 5 files kept in {tmp_path}, each whole; rerun to write them all\n"
    kept = {p.name for p in tmp_path.rglob("*") if p.is_file()}
    assert kept == {"ald.csv", "summary.json", "r2-histogram.png", "slope-intercept.png", "0001-goldfish.png"}
    assert signal.getsignal(signal.SIGTERM) is handler  # the command's own handler is gone


def test_an_internal_error_is_exit_1_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import fclens.tree

    def broken(*args: object, **kwargs: object) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(fclens.tree, "split_tree", broken)
    code, out, err = run(capsys, "tree", "--class", "1")
    assert code == 1 and out == ""
    assert err == "fclens: internal error: ZeroDivisionError: a bug (rerun with --debug for the traceback)\n"


def on_terminal(args: list[str], cwd: Path) -> str:
    """What ``fclens ARGS`` writes to stderr when stderr is a terminal (a pseudo-terminal here)."""
    primary, secondary = pty.openpty()
    with subprocess.Popen(
        [sys.executable, "-m", "fclens", *args], cwd=cwd, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=secondary,
    ) as process:  # fmt: skip
        os.close(secondary)
        chunks = []
        while True:
            try:
                chunk = os.read(primary, 1 << 16)
            except OSError:  # EIO: the command closed its end
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=300) in (0, 3), b"".join(chunks)
    os.close(primary)
    return b"".join(chunks).decode("utf-8", "replace")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "bar"),
    [
        (["weights", "--plots", "--plot-classes", "285", "--out", "w"], "weights: 100%"),
        (["survey", "--models", "efficientnet_lite0"], "survey: 100%"),
        (["scan", str(PHOTOS), "--out", "s", "--workers", "0"], "scan: 100%"),
        (
            ["rebalance", "SCAN", "--eval", "SCAN", "--methods", "tau-norm,logit-adjust", "--out", "r"],
            "rebalance: 100%",
        ),
        (["atlas", "PHOTO_SCAN", "--html", "--out", "a"], "atlas pages: 100%"),
    ],
)
def test_a_progress_bar_on_a_terminal_and_none_in_a_pipe(
    tmp_path: Path, photo_scan: fclens.Scan, args: list[str], bar: str
) -> None:
    existing_scan(tmp_path / "SCAN")
    args = [str(photo_scan.directory) if arg == "PHOTO_SCAN" else arg for arg in args]
    shown = on_terminal(args, tmp_path)
    assert bar in shown and "<" in shown and "/s]" in shown  # the time left, and items per second
    piped = subprocess.run(
        [sys.executable, "-m", "fclens", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert piped.returncode in (0, 3) and bar.split(":")[0] + ":" not in piped.stderr

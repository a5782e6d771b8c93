"""`fclens explain` into a folder, to a scan's standard: what a rerun does with finished images (the same
options, others, --force), what Ctrl-C and SIGTERM keep, the progress bar, and the report built from
every image on disk, paged when there are many.

Real photos throughout (tests/fixtures/photos, fclens's samples) on the embedded EfficientNet-Lite0.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import pty
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from fclens.cli import main
from fclens.errors import FclensError
from fclens.explaining import Explanation, explain
from fclens.images import sample_image
from fclens.models import Classifier
from fclens.options import EXPLAIN_DEFAULTS
from fclens.report.files import DONE_MARKER, IMAGE_FILE, load_explanation, node_filename
from fclens.report.folders import explain_to_folder
from fclens.report.html import PAGE_SIZE, report_pages

PHOTOS = Path(__file__).parent / "fixtures" / "photos"
QUICK = EXPLAIN_DEFAULTS.but(scores="none", batch_size=2)
"""No masked scores: a folder of six photos explains in seconds."""
SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    """Six real photos (tabby, espresso) and one file that is not a picture."""
    folder = tmp_path / "photos"
    shutil.copytree(PHOTOS, folder)
    return folder


def _images(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.jpg"))


def _summary(out: Path) -> list[dict[str, str]]:
    with open(out / "summary.csv", newline="") as file:
        return list(csv.DictReader(file))


def _sections(page: Path) -> int:
    return page.read_text("utf-8").count('<section class="explanation"')


def _stamps(out: Path) -> dict[Path, int]:
    """Every file under ``out`` and when it was last written."""
    return {path: path.stat().st_mtime_ns for path in out.rglob("*") if path.is_file()}


def test_a_rerun_skips_finished_images_and_its_report_shows_every_image(
    classifier: Classifier, photos: Path, tmp_path: Path
):
    out = tmp_path / "out"
    first = explain_to_folder(classifier, _images(photos)[:4], out, options=QUICK, html=True)
    assert [row["status"] for row in first.rows].count("ok") == 3 and len(first.skipped) == 1
    assert _sections(out / "report.html") == 3
    explained = [row for row in first.rows if row["status"] == "ok"]
    finished = {row["output"]: Path(row["output"], DONE_MARKER).stat().st_mtime_ns for row in explained}

    seen: list[dict[str, Any]] = []
    again = explain_to_folder(
        classifier, _images(photos)[:4], out, options=QUICK, html=True, on_row=seen.append
    )
    assert seen == again.rows  # each row handed over as it was settled, in order
    assert [row["status"] for row in again.rows].count("done earlier") == 3
    assert {path: Path(path, DONE_MARKER).stat().st_mtime_ns for path in finished} == finished  # none redone
    page = (out / "report.html").read_text("utf-8")
    assert _sections(out / "report.html") == 3 and "3 images explained, 1 skipped" in page
    assert all(Path(row["source"]).name in page for row in first.rows)
    rows = _summary(out)
    assert [row["prediction"] for row in rows] == [row.get("prediction", "") for row in first.rows]


def test_a_rerun_with_other_options_refuses_naming_each_difference_and_changes_nothing(
    classifier: Classifier, photos: Path, tmp_path: Path
):
    out = tmp_path / "out"
    explain_to_folder(classifier, _images(photos)[:2], out, options=QUICK, html=True)
    before = _stamps(out)
    other = QUICK.but(min_size=10, contrast="runner-up")
    with pytest.raises(FclensError) as refused:
        explain_to_folder(classifier, _images(photos), out, options=other, target="Egyptian cat", html=True)
    message = str(refused.value)
    assert "\n" not in message and f"{out} holds 2 images of this request explained another way" in message
    for difference in (
        "class: the predicted class then, 285 (Egyptian cat) now",
        "min_size: 20 then, 10 now",
        "contrast: None then, 'runner-up' now",
    ):
        assert difference in message
    assert "--force" in message and "batch_size" not in message  # the batch size changes no result
    assert _stamps(out) == before  # refused before any work: not a file touched

    # A class given by name or by index is one request; the batch size, and a seed where no map kind
    # is noisy, change no result.
    named = QUICK.but(contrast="tiger cat", batch_size=1)
    explain_to_folder(classifier, _images(photos)[2:3], out, options=named, target=285)
    same = named.but(contrast="282", batch_size=3, seed=7)
    again = explain_to_folder(classifier, _images(photos)[2:3], out, options=same, target="285")
    assert again.rows[0]["status"] == "done earlier"


@pytest.mark.slow
def test_force_redoes_every_image_with_the_new_options(classifier: Classifier, photos: Path, tmp_path: Path):
    out = tmp_path / "out"
    images = _images(photos)[:2]
    explain_to_folder(classifier, images, out, options=QUICK)
    other = QUICK.but(contrast="runner-up")
    with pytest.raises(FclensError):
        explain_to_folder(classifier, images, out, options=other)
    done = explain_to_folder(classifier, images, out, options=other, force=True, html=True)
    assert [row["status"] for row in done.rows] == ["ok", "ok"]
    for row in done.rows:
        record = json.loads(Path(row["output"], DONE_MARKER).read_text("utf-8"))
        assert record["made_with"]["options"]["contrast"] == "runner-up" and record["contrast"] is not None
    assert "Why not" in (out / "report.html").read_text("utf-8")
    assert explain_to_folder(classifier, images, out, options=other).rows[0]["status"] == "done earlier"


def test_what_a_folder_records_and_reads_back(classifier: Classifier, photos: Path, tmp_path: Path):
    """explanation.json says what made it; load_explanation gives back what the page and overlays need."""
    out = tmp_path / "out"
    (image,) = _images(photos)[:1]
    options = QUICK.but(maps=("activation", "contribution"), contrast="runner-up")
    (row,) = explain_to_folder(classifier, [image], out, options=options, target_layer=None).rows
    folder = Path(row["output"])
    made = json.loads((folder / DONE_MARKER).read_text("utf-8"))["made_with"]
    assert made["model"] == "efficientnet_lite0" and made["class"] is None and made["target_layer"] is None
    assert len(made["head_sha256"]) == 64 and made["weights_sha256"] is None
    assert made["options"] == options.but(seed=None).to_dict()  # no noisy map kind: no seed
    assert "batch_size" not in made["options"]

    (fresh,) = explain(classifier, [image], options=options)
    loaded = load_explanation(folder, classifier)
    assert loaded.image.size == fresh.image.size and loaded.source == str(image)
    assert [n.path for n in loaded.nodes] == [n.path for n in fresh.nodes]
    assert loaded.tree.discriminative.path == fresh.tree.discriminative.path
    assert loaded.target == fresh.target and loaded.top5 == fresh.top5
    assert loaded.contrast.rival == fresh.contrast.rival and loaded.contrast.gap == pytest.approx(
        fresh.contrast.gap
    )
    for a, b in zip(loaded.nodes, fresh.nodes, strict=True):
        for kind in options.maps:
            assert a.maps[kind].shape == b.maps[kind].shape
            assert float((a.maps[kind] - b.maps[kind]).abs().max()) <= 2e-3 * float(b.maps[kind].abs().max())

    with pytest.raises(FclensError, match="another final layer"):  # its trees split otherwise
        load_explanation(folder, _another_layer(classifier))
    (folder / IMAGE_FILE).unlink()
    with pytest.raises(FclensError, match="no finished explanation"):
        load_explanation(folder, classifier)


def _another_layer(classifier: Classifier) -> Classifier:
    """A copy whose final layer weighs 100 features 1 and the rest 0 for every class."""
    import copy

    other = copy.deepcopy(classifier)
    weight = other.head.weight.data
    weight.zero_()
    weight[:, :100] = 1.0
    return other


@pytest.mark.slow
def test_a_folder_of_an_earlier_release_is_refused_until_forced(
    classifier: Classifier, photos: Path, tmp_path: Path
):
    """fclens before this release wrote no record of how (and no image.jpg): a rerun cannot vouch for it."""
    out = tmp_path / "out"
    images = _images(photos)[:1]
    (row,) = explain_to_folder(classifier, images, out, options=QUICK).rows
    folder = Path(row["output"])
    record = json.loads((folder / DONE_MARKER).read_text("utf-8"))
    del record["made_with"]
    (folder / DONE_MARKER).write_text(json.dumps(record), "utf-8")
    (folder / IMAGE_FILE).unlink()
    with pytest.raises(FclensError, match="explained by an earlier fclens, which did not record how"):
        explain_to_folder(classifier, images, out, options=QUICK)
    (again,) = explain_to_folder(classifier, images, out, options=QUICK, force=True, html=True).rows
    assert again["status"] == "ok" and (folder / IMAGE_FILE).is_file()


@pytest.mark.slow
def test_overlays_asked_for_on_a_rerun_are_drawn_from_the_folder(
    classifier: Classifier, photos: Path, tmp_path: Path
):
    out = tmp_path / "out"
    images = _images(photos)[:1]
    (row,) = explain_to_folder(classifier, images, out, options=QUICK).rows
    folder = Path(row["output"])
    finished = (folder / DONE_MARKER).stat().st_mtime_ns
    (again,) = explain_to_folder(classifier, images, out, options=QUICK, overlays=True).rows
    record = json.loads((folder / DONE_MARKER).read_text("utf-8"))
    assert again["status"] == "done earlier" and (folder / DONE_MARKER).stat().st_mtime_ns == finished
    assert all((folder / node_filename(node["path"])).is_file() for node in record["nodes"])


def test_an_interrupt_keeps_finished_images_and_writes_their_summary_and_report(
    classifier: Classifier, photos: Path, tmp_path: Path
):
    """Ctrl-C after the first new image: it and the images finished earlier (later in the order too) are
    kept, listed and shown; the rerun finishes the rest."""
    out = tmp_path / "out"
    images = _images(photos)  # espresso 0-2, espresso/broken.jpg, tabby 0-2
    options = QUICK.but(batch_size=1)
    explain_to_folder(classifier, images[4:], out, options=options)

    def ctrl_c(row: dict[str, Any]) -> None:
        if row["status"] == "ok":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as interrupt:
        explain_to_folder(classifier, images, out, options=options, html=True, on_row=ctrl_c)
    assert str(interrupt.value) == f"interrupted: 4 of 7 images kept in {out}; rerun to continue"
    rows = _summary(out)
    assert [row["status"] for row in rows] == ["ok", *["done earlier"] * 3]
    assert all(Path(row["output"], DONE_MARKER).is_file() for row in rows)
    assert _sections(out / "report.html") == 4

    done = explain_to_folder(classifier, images, out, options=options, html=True)
    assert [row["status"] for row in done.rows] == [
        "done earlier",
        "ok",
        "ok",
        "skipped",
        *["done earlier"] * 3,
    ]
    assert _sections(out / "report.html") == 6 and len(_summary(out)) == 7


@pytest.mark.slow
def test_the_command_refuses_other_options_with_exit_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Issue 22: --class then --contrast into the same folder named neither difference and exited 0."""
    out = str(tmp_path / "out")
    quick = ["--min-size", "5000"]  # a root alone: one masked score, the same request both times
    assert main(["explain", "--sample", "coffee", "--class", "cup", "--out", out, "--json", *quick]) == 0
    capsys.readouterr()
    code = main(["explain", "--sample", "coffee", "--contrast", "runner-up", "--html", "--out", out, *quick])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith("fclens: error: ")
    assert (
        "class: 968 (cup) then, the predicted class now" in err
        and "contrast: None then, 'runner-up' now" in err
    )
    assert not (tmp_path / "out" / "report.html").exists()


# ---------------------------------------------------------------------------------------------------------
# The command in a process of its own: signals, the progress bar, the lines as images finish
# ---------------------------------------------------------------------------------------------------------
def _command(*args: str) -> list[str]:
    return [sys.executable, "-m", "fclens", "explain", *args]


def _environment() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_stopped_command_keeps_its_work_and_says_so(photos: Path, tmp_path: Path, stop: signal.Signals):
    out = tmp_path / "out"
    process = subprocess.Popen(
        _command(str(photos), "--out", str(out), "--html", "--batch-size", "1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_environment(),
    )
    deadline = time.monotonic() + 300
    while not list(out.glob(f"*/{DONE_MARKER}")):  # poll for the first finished image
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.05)
    process.send_signal(stop)
    printed, err = process.communicate(timeout=300)
    assert process.returncode == 130, err
    last = err.strip().splitlines()[-1]
    match = re.fullmatch(
        rf"fclens: interrupted: (\d+) of 7 images kept in {re.escape(str(out))}; rerun to continue", last
    )
    assert match, err
    kept = int(match.group(1))
    assert 1 <= kept < 6
    rows = _summary(out)
    assert sum(row["status"] == "ok" for row in rows) == kept == _sections(out / "report.html")
    assert len(list(out.glob(f"*/{DONE_MARKER}"))) == kept
    assert printed.count("; target ") == kept  # each line printed as its image finished


@pytest.mark.slow
def test_a_progress_bar_on_a_terminal_and_none_in_a_pipe(tmp_path: Path):
    command = _command("--sample", "coffee", "--sample", "chelsea", "--batch-size", "1", "--min-size", "5000")
    piped = subprocess.run(
        [*command, "--out", str(tmp_path / "piped")],
        capture_output=True,
        text=True,
        env=_environment(),
        timeout=300,
    )
    assert piped.returncode == 0 and piped.stderr == "" and piped.stdout.count("\n") == 3

    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*command, "--out", str(tmp_path / "terminal")],
        stdout=subprocess.PIPE,
        stderr=follower,
        env=_environment(),
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the process closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    os.close(leader)
    assert process.wait(timeout=300) == 0
    bar = shown.decode("utf-8", "replace")
    assert "explain:" in bar and "2/2" in bar and re.search(r"(img/s|s/img)", bar), bar


# ---------------------------------------------------------------------------------------------------------
# A report of many images
# ---------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pair(classifier: Classifier) -> list[Explanation]:
    return explain(
        classifier, [sample_image("chelsea"), sample_image("coffee")], scores="none", contrast="runner-up"
    )


def test_a_report_of_many_images_is_an_index_and_pages_of_ten(pair: list[Explanation]):
    count = 2 * PAGE_SIZE + 3

    def load(i: int) -> Explanation:
        return dataclasses.replace(pair[i % 2], source=f"photo-{i:03d}.jpg")

    pages = dict(report_pages(count, load, skipped=[("broken.jpg", "not an image")]))
    assert list(pages) == ["report.html", "report-1.html", "report-2.html", "report-3.html"]
    index = pages["report.html"]
    assert '<section class="explanation"' not in index
    assert "broken.jpg" in index and "not an image" in index
    links = re.findall(r'<td><a href="(report-\d\.html#image-\d+-[a-z0-9-]+)"><img', index)
    assert len(links) == count and links[0] == "report-1.html#image-1-photo-000-jpg"
    assert links[-1] == "report-3.html#image-23-photo-022-jpg"
    for link in links:
        name, anchor = link.split("#")
        assert f'id="{anchor}"' in pages[name]
    assert [page.count('<section class="explanation"') for page in list(pages.values())[1:]] == [10, 10, 3]
    assert all(len(page) < 4_000_000 for page in pages.values())
    assert 'aria-current="page"' in pages["report-2.html"] and 'href="report.html"' in pages["report-2.html"]
    few = dict(report_pages(2, lambda i: pair[i]))
    assert list(few) == ["report.html"] and few["report.html"].count('<section class="explanation"') == 2

"""Every fenced code block of README.md runs as written, in order, in one working folder (issue 22).

The folder first gets the placeholders the README names and leaves to the reader: ``cat.jpg``, ``a.jpg``,
``b.jpg``, ``digit.png``, ``my-photos/``, ``val/`` and ``train/`` (labelled crops of the sample photos),
``list.csv``, ``ckpts/`` and ``r50.safetensors`` (a ResNet-50 with untrained weights: no hub here) and,
in Python, ``my_mnist_cnn``. A ``bash`` block's ``fclens …`` lines run through the command's own entry
point, in this process (its exit code must be 0, or 3 where an image is skipped); a ``python`` block
runs in one namespace shared by every block, as a reader's session would. A block the README marks
``<!-- readme: not run (why) -->`` (installs, a Ray cluster, a FiftyOne database) is skipped, saying
why; each of those calls is run by its own test elsewhere.
"""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

README = Path(__file__).resolve().parents[1] / "README.md"
NOT_RUN = re.compile(r"<!-- readme: not run \((?P<why>[^)]+)\) -->\s*$")


@dataclass(frozen=True)
class Block:
    line: int
    language: str
    code: str
    not_run: str | None

    @property
    def name(self) -> str:
        return f"README.md:{self.line}-{self.language}"


def blocks() -> list[Block]:
    """The README's fenced ``bash`` and ``python`` blocks, in order (other fences are output samples)."""
    found = []
    lines = README.read_text("utf-8").splitlines()
    i = 0
    while i < len(lines):
        fence = re.fullmatch(r"```(\w*)", lines[i].strip())
        if fence is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].strip() == "```")
        marker = NOT_RUN.search(lines[i - 1]) if i > 0 else None
        if fence.group(1) in ("bash", "python"):
            code = "\n".join(lines[i + 1 : end])
            found.append(Block(i + 2, fence.group(1), code, marker.group("why") if marker else None))
        i = end + 1
    return found


BLOCKS = blocks()


def commands(code: str) -> list[list[str]]:
    """A bash block's commands: lines joined at a trailing backslash, comments dropped, ``&&`` split."""
    joined = re.sub(r"\\\n\s*", " ", code)
    found = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        while words:
            cut = words.index("&&") if "&&" in words else len(words)
            found.append(words[:cut])
            words = words[cut + 1 :]
    return found


class OneChannelCNN:
    """``my_mnist_cnn``: the README's "a model of your own" for 28×28 grey digits (untrained)."""

    def __new__(cls) -> Any:
        import torch
        from torch import nn

        torch.manual_seed(0)
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10),
        )  # fmt: skip


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The reader's folder with the placeholders in it, and the namespace the Python blocks share."""
    import fclens

    work = tmp_path_factory.mktemp("readme")
    chelsea, coffee = fclens.sample_image("chelsea"), fclens.sample_image("coffee")
    shutil.copyfile(chelsea, work / "cat.jpg")
    with Image.open(chelsea) as cat, Image.open(coffee) as cup:
        cat.crop((40, 20, 400, 290)).save(work / "a.jpg")
        cup.crop((100, 50, 500, 380)).save(work / "b.jpg")
        cup.convert("L").resize((28, 28)).save(work / "digit.png")
    (work / "my-photos").mkdir()
    for name in ("cat.jpg", "a.jpg", "b.jpg"):
        shutil.copyfile(work / name, work / "my-photos" / name)
    fclens.sample_folder(work / "val", count=10, seed=11)
    fclens.sample_folder(work / "train", count=16, seed=12)
    (work / "list.csv").write_text("path,label\ncat.jpg,tabby\nb.jpg,espresso\n")
    _untrained_resnet50(work)
    return {"work": work, "namespace": {"__name__": "__readme__", "my_mnist_cnn": OneChannelCNN()}}


def _untrained_resnet50(work: Path) -> None:
    """ResNet-50's architecture with its initial weights, as ``ckpts/resnet50.safetensors`` (what
    ``fclens survey --weights-dir`` finds) and ``r50.safetensors``: no model hub is reachable here."""
    import timm
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in timm.create_model("resnet50").state_dict().items()}
    (work / "ckpts").mkdir()
    save_file(state, str(work / "ckpts" / "resnet50.safetensors"))
    shutil.copyfile(work / "ckpts" / "resnet50.safetensors", work / "r50.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[block.name for block in BLOCKS])
def test_the_block_runs_as_written(
    block: Block, session: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    if block.not_run is not None:
        pytest.skip(f"README.md:{block.line} is not run here: {block.not_run}")
    monkeypatch.chdir(session["work"])
    if block.language == "python":
        exec(compile(block.code, block.name, "exec"), session["namespace"])
        return
    from fclens.cli import main

    for words in commands(block.code):
        assert words[0] == "fclens", f"{block.name}: only fclens commands run here, not {words[0]!r}"
        code = main(words[1:])
        captured = capsys.readouterr()
        assert code in (0, 3), f"{block.name}: `{shlex.join(words)}` exited {code}: {captured.err.strip()}"


def test_every_block_not_run_says_why_and_is_one_of_the_kinds_run_elsewhere() -> None:
    """Only installs, environment settings, a Ray cluster and a FiftyOne database are left out."""
    kinds = ("install", "environment", "Ray", "FiftyOne")
    left_out = [block for block in BLOCKS if block.not_run is not None]
    assert left_out and all(any(kind in block.not_run for kind in kinds) for block in left_out), left_out
    assert len(left_out) <= 6 and len(BLOCKS) - len(left_out) >= 14

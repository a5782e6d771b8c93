"""Atomic writes leave ordinary files behind, and nothing else."""

import os
from pathlib import Path

from fclens.io import atomic_write_text


def test_atomic_write_gives_an_ordinary_file_and_no_leftovers(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "sub" / "report.html", "<p>ok</p>")
    finally:
        os.umask(previous)
    assert path.read_text() == "<p>ok</p>"
    assert path.stat().st_mode & 0o777 == 0o644
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]

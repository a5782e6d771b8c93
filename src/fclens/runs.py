"""What a long run shows and how it stops: a progress bar on a terminal, and SIGTERM taken as Ctrl-C.

Every command that takes more than a few seconds (a scan, explaining a folder, fitting many plots, an
atlas's pages, a survey) uses these two, so that each shows the same bar and keeps its finished work the same way.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

__all__ = ["progress_bar", "sigterm_interrupts"]


def progress_bar(total: int, done: int = 0, *, enabled: bool = True, desc: str, unit: str) -> Any:
    """A tqdm bar on stderr (items/s, time left), shown only when ``enabled`` and stderr is a terminal:
    nothing is written into a pipe or a log file.

    A terminal that reports no size (``script``, some IDE and container consoles say 0×0) made tqdm print
    nothing at all: such a terminal gets 80×24, the size ``shutil.get_terminal_size`` falls back to.
    """
    from tqdm import tqdm

    columns, lines = shutil.get_terminal_size()
    try:
        size = os.get_terminal_size(sys.stderr.fileno())
        columns, lines = size.columns or columns, size.lines or lines
    except (AttributeError, OSError, ValueError):  # not a terminal (or no file descriptor): tqdm stays off
        pass
    return tqdm(
        total=total,
        initial=done,
        desc=desc,
        unit=unit,
        disable=None if enabled else True,
        smoothing=0.1,
        ncols=columns,
        nrows=lines,
        file=sys.stderr,
    )


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM (a scheduler's or ``kill``'s stop) interrupts as Ctrl-C does, so finished work is kept.

    Only the main thread can install a handler; elsewhere SIGTERM keeps its own handling.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    earlier = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, earlier)

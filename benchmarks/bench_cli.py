"""Benchmarks of the ``fclens`` command: how fast it answers, and what it adds per image to the API.

1. startup: ``fclens --help``, ``fclens explain --help`` and ``fclens --version``, each a fresh
   interpreter, against ``python -c "import torch"`` (target: ≤ 0.25× of it).
2. explain, cost per image: ``fclens explain FILES --out OUT`` (in process, default options, the
   model loaded beforehand: startup excluded) against ``fclens.explain(model, FILES)`` with the same
   options (target: CLI ≤ 1.4× API). Also the bytes the CLI writes per image (target: ≤ 300 KB).

Candidates run side by side, repeats interleaved, after one warm-up each; tables show medians.

    python benchmarks/bench_cli.py
    python benchmarks/bench_cli.py --images 16 --repeats 5 --only explain
"""

from __future__ import annotations

import argparse
import contextlib
import io
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from photos import make_photo_folder


def timed(run: Callable[[], object]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def command(*argv: str) -> Callable[[], object]:
    return lambda: subprocess.run([sys.executable, *argv], check=True, capture_output=True)


def startup(repeats: int) -> None:
    candidates = {
        'python -c "import torch"': command("-c", "import torch"),
        "fclens --help": command("-m", "fclens", "--help"),
        "fclens explain --help": command("-m", "fclens", "explain", "--help"),
        "fclens --version": command("-m", "fclens", "--version"),
        'python -c "pass"': command("-c", "pass"),
    }
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for run in candidates.values():
        run()  # warm-up: the file system cache
    for _ in range(repeats):
        for name, run in candidates.items():
            times[name].append(timed(run))
    floor = statistics.median(times['python -c "import torch"'])
    print(f"\n| command | median of {repeats} | ÷ import torch |\n|---|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| `{name}` | {median * 1000:.0f} ms | {median / floor:.2f}× |")


def explain_cost(images: int, repeats: int, work: Path) -> None:
    import torch

    import fclens
    import fclens.models
    from fclens import cli

    folder = make_photo_folder(work / "photos", images)
    paths = sorted(folder.rglob("*.jpg"))
    model = fclens.load_model()
    fclens.models.load_model = lambda *args, **kwargs: model  # startup excluded: the command gets it loaded
    outputs = work / "out"

    def command_line() -> None:
        shutil.rmtree(outputs, ignore_errors=True)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            code = cli.main(["explain", *map(str, paths), "--out", str(outputs)])
        assert code == 0, code

    candidates = {
        "`fclens.explain(model, paths)`": lambda: fclens.explain(model, paths),
        "`fclens explain PATHS --out OUT`": command_line,
    }
    for run in candidates.values():
        run()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            times[name].append(timed(run) / images)
    sizes = sorted(sum(f.stat().st_size for f in d.iterdir()) for d in outputs.iterdir() if d.is_dir())
    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, Python {platform.python_version()}; "
        f"{images} photo crops (benchmarks/photos.py), EfficientNet-Lite0, default options (activation "
        f"maps, every node scored, batch 16), the model loaded beforehand\n"
    )
    api = statistics.median(times["`fclens.explain(model, paths)`"])
    print(f"| pipeline | per image, median of {repeats} | ratio |\n|---|---:|---:|")
    for name, values in times.items():
        print(
            f"| {name} | {statistics.median(values) * 1000:.0f} ms | {statistics.median(values) / api:.2f}× |"
        )
    print(
        f"\nCLI output per image: median {statistics.median(sizes) / 1000:.0f} KB, "
        f"largest {sizes[-1] / 1000:.0f} KB (of {len(sizes)} images)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="photos per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--startup-repeats", type=int, default=11)
    parser.add_argument("--only", choices=("startup", "explain"))
    parser.add_argument("--work", type=Path, help="keep the photos here (default: a temporary folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fclens-bench-cli-"))
    if args.only in (None, "startup"):
        startup(args.startup_repeats)
    if args.only in (None, "explain"):
        explain_cost(args.images, args.repeats, work)


if __name__ == "__main__":
    main()

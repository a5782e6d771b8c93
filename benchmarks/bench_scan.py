"""The data-set scan against the plain pipeline a user would write, side by side in one process.

The floor: the same DataLoader (same images, batch size and worker count) with timm's eval transform and a
plain forward under ``inference_mode``, predictions kept. The scan: ``fclens.scan`` with its defaults (maps,
contrast and contributions, no masked scores), writing Parquet. Runs alternate, after a warm-up of each;
the table gives medians of images/s and the ratio scan / floor, and the bytes per image on disk.

    python benchmarks/bench_scan.py --images 256 --repeats 3
    python benchmarks/bench_scan.py --only memory --memory-images 20000     # RSS over a long scan
    python benchmarks/bench_scan.py --only pss --pss-images 300 --repeats 3  # peak PSS of the process tree

``--only pss`` runs each case in a fresh process and samples, every 50 ms from this process, the PSS
(proportional set size: a page shared by n processes counts 1/n in each) of the child and every
descendant (its DataLoader workers), so shared pages are counted once in the sum. Cases: ``import torch``
alone; the floor (a random-weight timm ``tf_efficientnet_lite0``, the same architecture as fclens's
embedded model, without importing fclens) with 2 decode workers; the scan with the embedded model, its
defaults otherwise (``LocalEngine``), with 2, 1 and 0 workers. Cases alternate within each repeat.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).parent))

if TYPE_CHECKING:
    import fclens
    from fclens.scanning import Engine


class _Files(Dataset):
    """What a user writes: open the file, convert to RGB, timm's transform."""

    def __init__(self, paths: list[Path], transform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as image:
            return self.transform(image.convert("RGB"))


def make_photo_folder(root: Path, count: int, **options: int) -> Path:
    """``photos.make_photo_folder``, imported only when called: it imports fclens, which the floor's
    process in ``--only pss`` must not."""
    from photos import make_photo_folder as make

    return make(root, count, **options)


def floor(
    module: torch.nn.Module, device: torch.device, paths: list[Path], batch_size: int, workers: int
) -> float:
    """images/s of decode + timm transform + plain forward, predictions kept. Imports no fclens."""
    import timm.data

    config = timm.data.resolve_data_config({}, model=module)
    loader = DataLoader(
        _Files(paths, timm.data.create_transform(**config)),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=device.type == "cuda",
    )
    predictions = []
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in loader:
            predictions.append(module(batch.to(device, non_blocking=True)).argmax(1).cpu())
    return len(paths) / (time.perf_counter() - start)


def scanned(
    classifier: fclens.Classifier, folder: Path, out: Path, batch_size: int, engine: Engine, **options
) -> float:
    import fclens

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = fclens.scan(
        classifier,
        folder,
        out,
        labels="none",
        batch_size=batch_size,
        engine=engine,
        progress=False,
        **options,
    )
    elapsed = time.perf_counter() - start
    return result.manifest.counts["ok"] / elapsed


def bytes_per_image(out: Path) -> float:
    import fclens

    shards = list(out.glob("part-*.parquet"))
    rows = fclens.read_scan(out).table.num_rows
    return sum(path.stat().st_size for path in shards) / rows


def load(source: str, device: str) -> fclens.Classifier:
    import fclens

    if source.startswith("timm:"):
        import timm

        return fclens.load_model(timm.create_model(source[5:], pretrained=False), device=device)
    return fclens.load_model(source, device=device)


def speed(args: argparse.Namespace, work: Path) -> None:
    from fclens.scanning import LocalEngine

    folder = make_photo_folder(work / "photos", args.images)
    paths = sorted(folder.rglob("*.jpg"))
    print(f"| model | pipeline | images/s (median of {args.repeats}) | ratio | bytes/image |")
    print("|---|---|---:|---:|---:|")
    for source in args.models.split(","):
        classifier = load(source, args.device)
        module, device = classifier.module, classifier.device
        floor(module, device, paths[: args.batch_size], args.batch_size, args.workers)  # warm-up
        scanned(classifier, folder, work / "warm", args.batch_size, LocalEngine(workers=args.workers))
        floors, scans = [], []
        for _ in range(args.repeats):
            floors.append(floor(module, device, paths, args.batch_size, args.workers))
            scans.append(
                scanned(classifier, folder, work / "scan", args.batch_size, LocalEngine(workers=args.workers))
            )
        size = bytes_per_image(work / "scan")
        engine = LocalEngine(workers=args.workers)
        scanned(classifier, folder, work / "features", args.batch_size, engine, features=True)
        with_features = bytes_per_image(work / "features")
        f, s = statistics.median(floors), statistics.median(scans)
        print(f"| {source} | floor: DataLoader + timm transform + forward | {f:.1f} | 1.00× | |")
        print(
            f"| {source} | fclens.scan (maps, contrast, contributions) | {s:.1f} | {s / f:.2f}× | {size:.0f} |"
        )
        print(f"| {source} | fclens.scan --features | | | {with_features:.0f} |")
        print(
            f"|  | runs: floor {', '.join(f'{v:.1f}' for v in floors)}; scan {', '.join(f'{v:.1f}' for v in scans)} | | | |"
        )
        sys.stdout.flush()


def _rss_mib() -> float:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * 4096 / 2**20


def memory(args: argparse.Namespace, work: Path) -> None:
    """RSS of the scanning process sampled through a long scan of small images."""
    folder = make_photo_folder(work / f"small-{args.memory_images}", args.memory_images, seed=1, side=96)
    import fclens
    from fclens.scanning import LocalEngine

    classifier = load("efficientnet_lite0", args.device)
    samples: list[tuple[float, float]] = []
    done = threading.Event()

    def sample() -> None:
        start = time.perf_counter()
        while not done.wait(1.0):
            samples.append((time.perf_counter() - start, _rss_mib()))

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    start = time.perf_counter()
    fclens.scan(
        classifier,
        folder,
        work / "long",
        labels="none",
        batch_size=args.batch_size,
        engine=LocalEngine(workers=args.workers),
        progress=False,
    )
    elapsed = time.perf_counter() - start
    done.set()
    thread.join()
    marks = [samples[min(len(samples) - 1, int(len(samples) * q))] for q in (0.1, 0.25, 0.5, 0.75, 1.0)]
    print(
        f"{args.memory_images} images of 96×96 px in {elapsed:.0f} s ({args.memory_images / elapsed:.1f} images/s)"
    )
    print("RSS (MiB) at 10/25/50/75/100 % of the scan: " + ", ".join(f"{rss:.0f}" for _, rss in marks))
    print(f"growth from 10 % to the end: {marks[-1][1] - marks[0][1]:+.0f} MiB")


def _process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants (from /proc/PID/task/*/children)."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for children in Path(f"/proc/{current}/task").glob("*/children"):
            with contextlib.suppress(OSError):  # the task ended meanwhile
                todo += [int(child) for child in children.read_text().split()]
    return found


def _pss_mib(pid: int) -> float:
    """PSS of one process from /proc/PID/smaps_rollup, 0 if it has ended."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as file:
            return next(int(line.split()[1]) for line in file if line.startswith("Pss:")) / 1024
    except (OSError, StopIteration):
        return 0.0


def peak_pss(command: list[str]) -> tuple[float, float]:
    """Run ``command``; the peak over 50 ms samples of its process tree's summed PSS (MiB), and the
    main process's own PSS in that same sample."""
    child = subprocess.Popen(command)
    peak = (0.0, 0.0)
    while child.poll() is None:
        sample = [_pss_mib(pid) for pid in _process_tree(child.pid)]
        if sum(sample) > peak[0]:
            peak = (sum(sample), sample[0])
        time.sleep(0.05)
    if child.returncode:
        raise SystemExit(f"{' '.join(command)} failed with exit code {child.returncode}")
    return peak


def pss_case(args: argparse.Namespace, work: Path) -> None:
    """One case of ``--only pss``, run in a child process that ``pss`` watches."""
    folder = work / f"photos-{args.pss_images}"  # made by the parent
    if args.pss_case == "floor":
        import timm

        module = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
        floor(module, torch.device("cpu"), sorted(folder.rglob("*.jpg")), args.batch_size, args.workers)
    else:
        import fclens
        from fclens.scanning import LocalEngine

        out = work / f"pss-scan-{args.workers}"
        shutil.rmtree(out, ignore_errors=True)
        engine = LocalEngine(workers=args.workers)
        fclens.scan(fclens.load_model(), folder, out, labels="none", engine=engine, progress=False)


def pss(args: argparse.Namespace, work: Path) -> None:
    """Peak PSS of ``import torch``, of the floor and of the scan, each in a fresh process tree."""
    make_photo_folder(work / f"photos-{args.pss_images}", args.pss_images)
    this = [sys.executable, __file__, "--work", str(work), "--pss-images", str(args.pss_images),
            "--batch-size", str(args.batch_size)]  # fmt: skip
    cases = {"import torch": [sys.executable, "-c", "import time, torch; time.sleep(1)"]}
    for kind, counts in (("floor", (2,)), ("scan", (2, 1, 0))):
        for workers in counts:
            cases[f"{kind}, {workers} workers"] = [*this, "--pss-case", kind, "--workers", str(workers)]
    peaks: dict[str, list[tuple[float, float]]] = {name: [] for name in cases}
    for _ in range(args.repeats):
        for name, command in cases.items():
            peaks[name].append(peak_pss(command))
    tree = {name: statistics.median(total for total, _ in values) for name, values in peaks.items()}
    main = {name: statistics.median(own for _, own in values) for name, values in peaks.items()}
    print(f"\n{args.pss_images} images, batch {args.batch_size}; medians of {args.repeats} interleaved runs")
    print(
        "| case | peak PSS, process tree (MiB) | of which the main process | scan / floor (2 workers) | runs |"
    )
    print("|---|---:|---:|---:|---|")
    for name, values in peaks.items():
        workers = name.split(", ")[-1]
        ratio = f"{tree[name] / tree['floor, 2 workers']:.2f}×" if name.startswith("scan") else ""
        runs = ", ".join(f"{total:.0f}" for total, _ in values)
        print(f"| {name} | {tree[name]:.0f} | {main[name]:.0f} | {ratio} | {runs} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="efficientnet_lite0,timm:resnet50")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=("speed", "memory", "pss"))
    parser.add_argument("--memory-images", type=int, default=20000)
    parser.add_argument("--pss-images", type=int, default=300)
    parser.add_argument("--pss-case", choices=("floor", "scan"), help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help="keep the photos here (default: a temporary folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fclens-bench-scan-"))
    if args.pss_case:
        pss_case(args, work)
        return
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
        f"batch {args.batch_size}, {args.workers} decode workers"
    )
    if args.only in (None, "speed"):
        speed(args, work)
    if args.only in (None, "memory"):
        memory(args, work)
    if args.only in (None, "pss"):
        pss(args, work)


if __name__ == "__main__":
    main()

"""The data-set scan against the plain pipeline a user would write, side by side in one process.

The floor: the same DataLoader (same images, batch size and worker count) with timm's eval transform and a
plain forward under ``inference_mode``, predictions kept. The scan: ``fclens.scan`` with its defaults (maps,
contrast and contributions, no masked scores), writing Parquet. Runs alternate, after a warm-up of each;
the table gives medians of images/s and the ratio scan / floor, and the bytes per image on disk.

    python benchmarks/bench_scan.py --images 256 --repeats 3
    python benchmarks/bench_scan.py --only memory --memory-images 20000     # RSS over a long scan
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).parent))
from photos import make_photo_folder  # noqa: E402

import fclens  # noqa: E402
from fclens.scanning import Engine, LocalEngine  # noqa: E402


class _Files(Dataset):
    """What a user writes: open the file, convert to RGB, timm's transform."""

    def __init__(self, paths: list[Path], transform) -> None:
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> torch.Tensor:
        with Image.open(self.paths[i]) as image:
            return self.transform(image.convert("RGB"))


def floor(classifier: fclens.Classifier, paths: list[Path], batch_size: int, workers: int) -> float:
    """images/s of decode + timm transform + plain forward, predictions kept."""
    import timm.data

    config = timm.data.resolve_data_config({}, model=classifier.module)
    loader = DataLoader(
        _Files(paths, timm.data.create_transform(**config)),
        batch_size=batch_size,
        num_workers=workers,
        pin_memory=classifier.device.type == "cuda",
    )
    predictions = []
    start = time.perf_counter()
    with torch.inference_mode():
        for batch in loader:
            predictions.append(classifier.module(batch.to(classifier.device, non_blocking=True)).argmax(1).cpu())
    return len(paths) / (time.perf_counter() - start)


def scanned(classifier: fclens.Classifier, folder: Path, out: Path, batch_size: int, engine: Engine, **options) -> float:
    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    result = fclens.scan(
        classifier, folder, out, labels="none", batch_size=batch_size, engine=engine, progress=False, **options
    )
    elapsed = time.perf_counter() - start
    return result.manifest["counts"]["ok"] / elapsed


def bytes_per_image(out: Path) -> float:
    shards = list(out.glob("part-*.parquet"))
    rows = fclens.read_scan(out).table.num_rows
    return sum(path.stat().st_size for path in shards) / rows


def load(source: str, device: str) -> fclens.Classifier:
    if source.startswith("timm:"):
        import timm

        return fclens.load_model(timm.create_model(source[5:], pretrained=False), device=device)
    return fclens.load_model(source, device=device)


def speed(args: argparse.Namespace, work: Path) -> None:
    folder = make_photo_folder(work / "photos", args.images)
    paths = sorted(folder.rglob("*.jpg"))
    print(f"| model | pipeline | images/s (median of {args.repeats}) | ratio | bytes/image |")
    print("|---|---|---:|---:|---:|")
    for source in args.models.split(","):
        classifier = load(source, args.device)
        floor(classifier, paths[: args.batch_size], args.batch_size, args.workers)  # warm-up
        scanned(classifier, folder, work / "warm", args.batch_size, LocalEngine(workers=args.workers))
        floors, scans = [], []
        for _ in range(args.repeats):
            floors.append(floor(classifier, paths, args.batch_size, args.workers))
            scans.append(scanned(classifier, folder, work / "scan", args.batch_size, LocalEngine(workers=args.workers)))
        size = bytes_per_image(work / "scan")
        scanned(classifier, folder, work / "features", args.batch_size, LocalEngine(workers=args.workers), features=True)
        with_features = bytes_per_image(work / "features")
        f, s = statistics.median(floors), statistics.median(scans)
        print(f"| {source} | floor: DataLoader + timm transform + forward | {f:.1f} | 1.00× | |")
        print(f"| {source} | fclens.scan (maps, contrast, contributions) | {s:.1f} | {s / f:.2f}× | {size:.0f} |")
        print(f"| {source} | fclens.scan --features | | | {with_features:.0f} |")
        print(f"|  | runs: floor {', '.join(f'{v:.1f}' for v in floors)}; scan {', '.join(f'{v:.1f}' for v in scans)} | | | |")
        sys.stdout.flush()


def _rss_mib() -> float:
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * 4096 / 2**20


def memory(args: argparse.Namespace, work: Path) -> None:
    """RSS of the scanning process sampled through a long scan of small images."""
    folder = make_photo_folder(work / f"small-{args.memory_images}", args.memory_images, seed=1, side=96)
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
    fclens.scan(classifier, folder, work / "long", labels="none", batch_size=args.batch_size,
                engine=LocalEngine(workers=args.workers), progress=False)
    elapsed = time.perf_counter() - start
    done.set()
    thread.join()
    marks = [samples[min(len(samples) - 1, int(len(samples) * q))] for q in (0.1, 0.25, 0.5, 0.75, 1.0)]
    print(f"{args.memory_images} images of 96×96 px in {elapsed:.0f} s ({args.memory_images / elapsed:.1f} images/s)")
    print("RSS (MiB) at 10/25/50/75/100 % of the scan: " + ", ".join(f"{rss:.0f}" for _, rss in marks))
    print(f"growth from 10 % to the end: {marks[-1][1] - marks[0][1]:+.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default="efficientnet_lite0,timm:resnet50")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--only", choices=("speed", "memory"))
    parser.add_argument("--memory-images", type=int, default=20000)
    parser.add_argument("--work", type=Path, help="keep the photos here (default: a temporary folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fclens-bench-scan-"))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"batch {args.batch_size}, {args.workers} decode workers")
    if args.only in (None, "speed"):
        speed(args, work)
    if args.only in (None, "memory"):
        memory(args, work)


if __name__ == "__main__":
    main()

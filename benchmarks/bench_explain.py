"""Benchmarks of fclens.explain against the plain forward pass, the author's pipeline and pytorch-grad-cam.

1. maps: every node's closed-form maps for a batch vs the model's plain forward on the same batch
   (target ≤ 1.25×; 1× is the floor, since the maps need that forward).
2. full explanation, every node's masked score, no curves: vs the author's pipeline — torchcam's
   SmoothGradCAMpp per node, driven the author's way, plus one masked forward per node (target ≥ 10×
   faster) — and vs the plain forward of one image (target ≤ 8×).
3. throughput on a folder of photos (crops of the samples), batched, vs a loop of pytorch-grad-cam's
   GradCAM on the class logit, in images per second.
4. memory over consecutive explanations: growth of the resident set (and of CUDA memory) between
   explanation 100 and the last.
5. curves (issue 24): a full explanation with deletion/insertion curves beside their baselines (a random
   map's curves, 2·17 more forwards per image) vs the same explanation with the curves of before (the
   root's and the leaves' only, as fclens drew them), vs the plain forward. The baselines should cost
   what their extra forwards cost, no more: the expected time is the reference plus 34/102 of its
   curves' share.

Candidates of a comparison run side by side in one process, repeats interleaved, after one warm-up each;
the table shows medians. CUDA is synchronised before every timer read.

    python benchmarks/bench_explain.py                     # CPU, embedded EfficientNet-Lite0
    python benchmarks/bench_explain.py --device cuda --repeats 20
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn

import fclens.images
from fclens.batch import BatchRunner
from fclens.explaining import explain
from fclens.maps import NodeBatch, capture, node_maps, node_membership
from fclens.models import Classifier, load_model
from fclens.options import EXPLAIN_DEFAULTS
from fclens.preprocessing import to_batch
from fclens.samples import sample_image
from fclens.scores import deletion_insertion, upsample_normalised
from fclens.tree import split_tree


@dataclass
class Row:
    benchmark: str
    method: str
    value: str
    ratio: str = ""
    target: str = ""


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def compare(
    candidates: dict[str, Callable[[], object]], repeats: int, device: torch.device
) -> dict[str, float]:
    """Median seconds per call of each candidate: one warm-up each, then repeats interleaved."""
    for run in candidates.values():
        run()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, run in candidates.items():
            synchronise(device)
            start = time.perf_counter()
            run()
            synchronise(device)
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def milliseconds(seconds: float) -> str:
    return f"{seconds * 1e3:.1f} ms"


# --- 1. closed-form maps vs the plain forward ------------------------------------------------------------


def maps_candidates(classifier: Classifier, batch: torch.Tensor) -> dict[str, Callable[[], object]]:
    """The plain forward of ``batch``, the maps of every node alone, and explanations without scores.

    "capture + every node's maps" is the target's measure: the hooked forward and the closed-form maps
    of every node of each image's predicted class (trees are weight-only work, made once, as explain
    caches them). The explain rows add what a user also gets: top-5, result objects, display pictures.
    """
    module, device, size, head = classifier.module, classifier.device, len(batch), classifier.head

    def forward() -> None:
        with torch.no_grad():
            module(batch.to(device))

    with torch.no_grad():
        predicted = module(batch.to(device)).argmax(dim=1).tolist()
    trees = [split_tree(head.weight[k].cpu(), 20) for k in predicted]
    membership = node_membership(
        [[node.indices for node in tree.nodes] for tree in trees], head.num_features, device
    )
    targets = torch.tensor(predicted, device=device)

    def maps_only() -> None:
        inputs = batch.to(device)
        node_maps(
            NodeBatch(module, head, inputs, capture(module, head, inputs), targets, membership),
            ["activation"],
        )

    return {
        "plain forward": forward,
        "capture + every node's maps (activation)": maps_only,
        "explain(scores='none'), activation": lambda: explain(
            classifier, batch, scores="none", batch_size=size
        ),
        "explain(scores='none'), activation + contribution": lambda: explain(
            classifier, batch, maps=("activation", "contribution"), scores="none", batch_size=size
        ),
    }


def bench_maps(
    classifier: Classifier, photos: torch.Tensor, batch_sizes: list[int], repeats: int
) -> list[Row]:
    rows = []
    for size in batch_sizes:
        medians = compare(
            maps_candidates(classifier, photos[torch.arange(size) % len(photos)]), repeats, classifier.device
        )
        base = medians["plain forward"]
        for name, seconds in medians.items():
            target = "" if name == "plain forward" else "≤ 1.25×"
            rows.append(
                Row(
                    f"1. every node's maps, batch {size}",
                    name,
                    milliseconds(seconds),
                    f"{seconds / base:.2f}× forward",
                    target,
                )
            )
    return rows


# --- 2. full explanation vs the author's pipeline ---------------------------------------------------------


class Backbone(nn.Module):
    """The model the author handed torchcam: the classifier up to its 4-D features."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(x)


def authors_pipeline(classifier: Classifier, image: torch.Tensor) -> list[float]:
    """The author's notebook, on torchcam 0.5.0: per node, Smooth Grad-CAM++ then one masked forward."""
    from torchcam.methods import SmoothGradCAMpp

    module, device = classifier.module, classifier.device
    x = image.to(device)
    with torch.no_grad():
        target = int(module(x).argmax())
    tree = split_tree(classifier.head.weight[target].cpu(), 20)
    backbone = Backbone(module).eval()
    scores = []
    with SmoothGradCAMpp(backbone, f"model.{classifier.head.feature_layer_name}") as extractor:
        for node in tree.nodes:
            channels = torch.as_tensor(node.indices, device=device)
            features = backbone(x)
            (cam,) = extractor(targets=lambda sample, c=channels: sample[c].sum(), scores=features)
            mask = upsample_normalised(cam.detach(), tuple(x.shape[2:]))
            with torch.no_grad():
                scores.append(float(module(x * mask[:, None]).softmax(dim=1)[0, target]))
    return scores


def bench_full(classifier: Classifier, photos: torch.Tensor, repeats: int) -> list[Row]:
    module, device = classifier.module, classifier.device
    chelsea = photos[:1]

    def forward() -> None:
        with torch.no_grad():
            module(chelsea.to(device))

    candidates = {
        "plain forward, 1 image": forward,
        "author's pipeline: torchcam SmoothGradCAMpp + masked forward per node": lambda: authors_pipeline(
            classifier, chelsea
        ),
        "fclens explain, smooth-gradcam++ + masked scores": lambda: explain(
            classifier, chelsea, maps="smooth-gradcam++"
        ),
        "fclens explain, activation + masked scores": lambda: explain(classifier, chelsea),
    }
    medians = compare(candidates, repeats, device)
    nodes = len(explain(classifier, chelsea, scores="none")[0].nodes)
    base, author = (
        medians["plain forward, 1 image"],
        medians[next(n for n in medians if n.startswith("author"))],
    )
    rows = []
    for name, seconds in medians.items():
        fclens = name.startswith("fclens")
        rows.append(
            Row(
                f"2. full explanation, 1 image, {nodes} nodes",
                name,
                milliseconds(seconds),
                f"{seconds / base:.1f}× forward"
                + (f", {author / seconds:.1f}× faster than author" if fclens else ""),
                "≥ 10× faster, ≤ 8× forward" if fclens else "",
            )
        )
    return rows


# --- 3. throughput on a folder ---------------------------------------------------------------------------


def photo_folder(directory: Path, count: int) -> list[Path]:
    """``count`` JPEG crops of the sample photos: different pictures, as a folder of real files."""
    generator = torch.Generator().manual_seed(0)
    paths = []
    for i in range(count):
        with Image.open(sample_image(fclens.samples.SAMPLE_NAMES[i % 2])) as photo:
            width, height = photo.size
            side = int(min(width, height) * (0.6 + 0.4 * float(torch.rand(1, generator=generator))))
            left = int(torch.randint(0, width - side + 1, (1,), generator=generator))
            top = int(torch.randint(0, height - side + 1, (1,), generator=generator))
            path = directory / f"photo-{i:03d}.jpg"
            photo.crop((left, top, left + side, top + side)).save(path, quality=92)
        paths.append(path)
    return paths


def gradcam_loop(classifier: Classifier, paths: list[Path]) -> None:
    """pytorch-grad-cam's GradCAM on the predicted class's logit, one image at a time."""
    from pytorch_grad_cam import GradCAM

    with GradCAM(model=classifier.module, target_layers=[classifier.head.feature_layer]) as cam:
        for path in paths:
            inputs, _ = to_batch([path], classifier.preprocessing)
            cam(input_tensor=inputs.to(classifier.device), targets=None)


def bench_throughput(classifier: Classifier, count: int, batch_size: int, repeats: int) -> list[Row]:
    with tempfile.TemporaryDirectory() as directory:
        paths = photo_folder(Path(directory), count)
        candidates = {
            "pytorch-grad-cam GradCAM loop (class map only)": lambda: gradcam_loop(classifier, paths),
            f"fclens explain(folder), batch {batch_size}, every node's maps": lambda: explain(
                classifier, directory, scores="none", batch_size=batch_size
            ),
            f"fclens explain(folder), batch {batch_size}, maps + masked scores": lambda: explain(
                classifier, directory, batch_size=batch_size
            ),
        }
        medians = compare(candidates, repeats, classifier.device)
    base = medians[next(iter(medians))]
    return [
        Row(
            f"3. throughput, {count} photos",
            name,
            f"{count / seconds:.1f} images/s",
            f"{base / seconds:.2f}× grad-cam",
        )
        for name, seconds in medians.items()
    ]


# --- 5. curves beside their baselines --------------------------------------------------------------------


def curves_before(classifier: Classifier, image: torch.Tensor) -> None:
    """The explanation with curves as fclens drew them before issue 24: every node's masked score, then the
    deletion/insertion curves of the root and the leaves in one batched run, no baseline."""
    options = EXPLAIN_DEFAULTS
    runner = BatchRunner(classifier, options)
    inputs = image.to(classifier.device)
    result = runner(inputs, [None])
    rows, nodes = runner._chosen(result.trees, every_node=False)
    deletion_insertion(
        classifier.module, inputs, result.maps[options.primary][rows, nodes], rows, result.targets[rows],
        batch_size=options.batch_size,
    )  # fmt: skip


def bench_curves(classifier: Classifier, photos: torch.Tensor, repeats: int) -> list[Row]:
    module, device = classifier.module, classifier.device
    chelsea = photos[:1]

    def forward() -> None:
        with torch.no_grad():
            module(chelsea.to(device))

    candidates = {
        "plain forward, 1 image": forward,
        "explain, every node's masked score, no curves": lambda: explain(classifier, chelsea),
        "the same + curves of the root and the leaves (before issue 24)": lambda: curves_before(
            classifier, chelsea
        ),
        "explain(curves=True): + the random map's curves (issue 24)": lambda: explain(
            classifier, chelsea, curves=True
        ),
    }
    medians = compare(candidates, repeats, device)
    base, plain, before, after = medians.values()
    expected = before + (before - plain) * 34 / 102
    label = "5. curves beside their baselines, 1 image"
    rows = [
        Row(label, name, milliseconds(seconds), f"{seconds / base:.1f}× forward")
        for name, seconds in medians.items()
    ]
    rows.append(
        Row(label, "expected: before + 34/102 of its curves", milliseconds(expected), f"{expected / base:.1f}× forward",
            f"after / expected = {after / expected:.2f}")
    )  # fmt: skip
    return rows


# --- 4. memory --------------------------------------------------------------------------------------------


def resident_megabytes() -> float:
    """Resident set size of this process from /proc/self/statm (Linux), in MiB."""
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def bench_memory(classifier: Classifier, runs: int) -> list[Row]:
    chelsea = sample_image("chelsea")
    device = classifier.device
    marks: dict[int, tuple[float, float, float]] = {}
    checkpoint = min(100, runs)
    for run in range(1, runs + 1):
        explain(classifier, chelsea)
        if run in (checkpoint, runs):
            synchronise(device)
            cuda = (
                (torch.cuda.memory_allocated(device) / 2**20, torch.cuda.max_memory_allocated(device) / 2**20)
                if device.type == "cuda"
                else (float("nan"), float("nan"))
            )
            marks[run] = (resident_megabytes(), *cuda)
    (rss_a, cuda_a, peak_a), (rss_b, cuda_b, peak_b) = marks[checkpoint], marks[runs]
    label = f"4. memory, explain(chelsea) × {runs}"
    rows = [
        Row(
            label,
            f"RSS after {checkpoint} → {runs}",
            f"{rss_a:.0f} → {rss_b:.0f} MiB",
            f"{rss_b - rss_a:+.1f} MiB",
            "flat",
        )
    ]
    if device.type == "cuda":
        rows.append(
            Row(
                label,
                "CUDA allocated",
                f"{cuda_a:.0f} → {cuda_b:.0f} MiB",
                f"{cuda_b - cuda_a:+.1f} MiB",
                "flat",
            )
        )
        rows.append(
            Row(
                label,
                "CUDA peak allocated",
                f"{peak_a:.0f} → {peak_b:.0f} MiB",
                f"{peak_b - peak_a:+.1f} MiB",
                "flat",
            )
        )
    return rows


# --- main -------------------------------------------------------------------------------------------------


def table(rows: list[Row]) -> str:
    lines = ["| benchmark | method | median | ratio | target |", "|---|---|---|---|---|"]
    lines += [f"| {r.benchmark} | {r.method} | {r.value} | {r.ratio} | {r.target} |" for r in rows]
    return "\n".join(lines)


def environment(device: torch.device) -> str:
    hardware = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    return f"device {device} ({hardware}); torch {torch.__version__}; Python {platform.python_version()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default cpu)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repeats per candidate (default 5)")
    parser.add_argument("--images", type=int, default=32, help="photos in the throughput folder (default 32)")
    parser.add_argument("--batch-size", type=int, default=16, help="explain's batch size (default 16)")
    parser.add_argument("--memory-runs", type=int, default=500, help="consecutive explanations (default 500)")
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's own choice)")
    parser.add_argument(
        "--only",
        nargs="*",
        choices=["maps", "full", "throughput", "memory", "curves"],
        help="run these benchmarks only",
    )
    args = parser.parse_args(argv)
    chosen = set(args.only or ["maps", "full", "throughput", "memory"])
    if args.threads:
        torch.set_num_threads(args.threads)
    classifier = load_model(device=args.device)
    device = classifier.device
    photos, _ = to_batch([sample_image("chelsea"), sample_image("coffee")], classifier.preprocessing)
    print(f"# fclens.explain benchmarks\n\n{environment(device)}; model {classifier.name}\n", flush=True)
    rows: list[Row] = []
    if "maps" in chosen:
        rows += bench_maps(classifier, photos, sorted({1, args.batch_size}), args.repeats)
    if "full" in chosen:
        rows += bench_full(classifier, photos, args.repeats)
    if "throughput" in chosen:
        rows += bench_throughput(classifier, args.images, args.batch_size, max(1, args.repeats // 2))
    if "memory" in chosen:
        rows += bench_memory(classifier, args.memory_runs)
    if "curves" in chosen:
        rows += bench_curves(classifier, photos, args.repeats)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

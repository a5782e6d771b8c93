"""How far to trust fclens's maps (issue 24): the paper's claim measured, and sanity checks beside CAM methods.

1. claim: is the map of the terminal + node (the paper's "most discriminative" neurons) more faithful
   than the class's whole map (the root) and than a seeded random map at the feature grid's resolution?
   Deletion AUC (most relevant pixels removed first: lower is better) and insertion AUC (least relevant
   first, read backwards: higher is better), per fill, on crops of fclens's sample photos
   (:func:`fclens.sample_folder`, the model's prediction as target) and on the known-answer shapes
   (tests/known_answers.py, held-out images, the label as target). Paired over images: how many images
   the node wins, and the two-sided Wilcoxon signed-rank p of the differences.
2. sanity: Adebayo et al.'s randomisation checks on the embedded EfficientNet-Lite0: each map is set
   beside itself after the final layer is re-initialised, after the backbone is, and with the runner-up
   class as target; mean Spearman ρ over the photos, on the feature grid (pytorch-grad-cam's maps, which
   it resizes to the input, are averaged back onto the 7 × 7 grid). fclens's maps (the terminal nodes and
   the root) beside pytorch-grad-cam's GradCAM, GradCAM++ and LayerCAM at the same layer.

    python benchmarks/bench_faithfulness.py                          # everything, CPU
    python benchmarks/bench_faithfulness.py --only claim --fills rise road --photos 12
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr, wilcoxon
from torch.nn import functional as F

from fclens.explaining import Explanation, explain
from fclens.images import iter_image_paths
from fclens.models import Classifier, load_model
from fclens.options import FILLS
from fclens.preprocessing import to_batch
from fclens.samples import sample_folder

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import known_answers as ka

CURVES = ("deletion", "insertion")
BETTER = {"deletion": np.less, "insertion": np.greater}
"""A node beats a baseline on a curve when its area is lower (deletion) or higher (insertion)."""


# --- 1. the paper's claim --------------------------------------------------------------------------------


def aucs(explanations: list[Explanation]) -> dict[str, dict[str, np.ndarray]]:
    """Per curve, the AUCs (images,) of the + terminal node, the root and the random map; images whose
    tree was never split are left out."""
    kept = [e for e in explanations if e.discriminative is not None]
    return {
        curve: {
            "node": np.array([getattr(e.discriminative, f"{curve}_auc") for e in kept]),
            "class map": np.array([getattr(e.nodes[0], f"{curve}_auc") for e in kept]),
            "random": np.array([getattr(e.baselines, f"random_{curve}_auc") for e in kept]),
        }
        for curve in CURVES
    }


def paired(curve: str, mine: np.ndarray, theirs: np.ndarray) -> str:
    """'wins/n, p' of ``mine`` against ``theirs`` on one curve, Wilcoxon signed-rank, two-sided."""
    wins = int(BETTER[curve](mine, theirs).sum())
    p = wilcoxon(mine, theirs).pvalue if np.any(mine != theirs) else 1.0
    return f"{wins}/{len(mine)}, p = {p:.2g}"


def claim_rows(data: str, kind: str, fill: str, explanations: list[Explanation]) -> list[str]:
    found = aucs(explanations)
    rows = []
    for curve in CURVES:
        a = found[curve]
        medians = " / ".join(f"{np.median(a[name]):.3f}" for name in ("node", "class map", "random"))
        rows.append(
            f"| {data} | {kind} | {fill} | {curve} | {medians} | {paired(curve, a['node'], a['class map'])} | "
            f"{paired(curve, a['node'], a['random'])} | {paired(curve, a['class map'], a['random'])} |"
        )
    return rows


CLAIM_HEADER = [
    "| images | map kind | fill | curve | median AUC: + node / class map / random | + node beats the class map "
    "(images, Wilcoxon p) | + node beats random | class map beats random |",
    "|---|---|---|---|---|---|---|---|",
]


def photo_crops(count: int, directory: Path) -> list[Path]:
    """``count`` crops of fclens's sample photos (chelsea, coffee), as a user gets them from sample_folder."""
    return iter_image_paths(sample_folder(directory, count, seed=0)) if count else []


def bench_claim(
    classifier: Classifier,
    photos: list[Path],
    road_photos: int,
    shapes: int,
    kinds: list[str],
    fills: list[str],
    road_kinds: list[str],
) -> list[str]:
    rows = list(CLAIM_HEADER)
    shapes_model = ka.classifier() if shapes else None
    held_out = ka.make(shapes // len(ka.CLASS_NAMES), seed=1) if shapes else None
    for fill in fills:
        for kind in road_kinds if fill == "road" else kinds:
            chosen = photos[:road_photos] if fill == "road" else photos
            if chosen:
                started = time.perf_counter()
                explained = explain(
                    classifier, chosen, maps=kind, scores="none", curves=True, fill=fill, batch_size=8
                )
                took = time.perf_counter() - started
                rows += claim_rows(f"{len(chosen)} photo crops", kind, fill, explained)
                print(f"  photos, {kind}, {fill}: {took:.0f} s", file=sys.stderr, flush=True)
            if shapes:
                explained = explain(
                    shapes_model, held_out.images, held_out.labels.tolist(), maps=kind, scores="none",
                    curves=True, fill=fill, min_size=ka.MIN_SIZE, batch_size=32,
                )  # fmt: skip
                rows += claim_rows(f"{len(held_out)} shapes", kind, fill, explained)
            new_rows = 2 * bool(chosen) + 2 * bool(shapes)  # deletion and insertion per data set
            print("\n".join(rows[len(rows) - new_rows :]), file=sys.stderr, flush=True)
    return rows


# --- 2. sanity checks on Lite0 --------------------------------------------------------------------------


def reinitialised(classifier: Classifier, part: str) -> Classifier:
    """A copy of the classifier with fresh, seeded default weights in its final layer or in everything else."""
    module = copy.deepcopy(classifier.module)
    final = dict(module.named_modules())[classifier.head.layer_name]
    torch.manual_seed(1)
    for layer in [final] if part == "final layer" else [m for m in module.modules() if m is not final]:
        if hasattr(layer, "reset_parameters"):
            layer.reset_parameters()
    return load_model(
        module.eval(), class_names=list(classifier.class_names), preprocessing=classifier.preprocessing
    )


def fclens_maps(
    classifier: Classifier, inputs: torch.Tensor, targets: list[int]
) -> dict[str, list[np.ndarray]]:
    """fclens's shown maps of the + and − terminal nodes and the root, per kind, on the 7 × 7 grid."""
    found = {}
    for kind in ("activation", "contribution", "smooth-gradcam++"):
        explained = explain(classifier, inputs, targets, maps=kind, scores="none", seed=0, batch_size=8)
        for label, pick in (
            ("+ node", lambda e: e.discriminative),
            ("− node", lambda e: e.confusing),
            ("root", lambda e: e.nodes[0]),
        ):
            found[f"fclens {kind}, {label}"] = [pick(e).shown().flatten().numpy() for e in explained]
    return found


def gradcam_maps(
    classifier: Classifier, inputs: torch.Tensor, targets: list[int]
) -> dict[str, list[np.ndarray]]:
    """pytorch-grad-cam's GradCAM, GradCAM++ and LayerCAM of the target at the head's feature layer,
    averaged back onto the feature grid."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, LayerCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    module = classifier.module
    layer = dict(module.named_modules())[classifier.head.feature_layer_name]
    grid = tuple(classifier.head.grid)
    found = {}
    for name, method in (("GradCAM", GradCAM), ("GradCAM++", GradCAMPlusPlus), ("LayerCAM", LayerCAM)):
        with method(model=module, target_layers=[layer]) as cam:
            heat = cam(input_tensor=inputs, targets=[ClassifierOutputTarget(k) for k in targets])
        pooled = F.adaptive_avg_pool2d(torch.from_numpy(heat)[:, None], grid)[:, 0]
        found[f"pytorch-grad-cam {name}"] = [m.flatten().numpy() for m in pooled]
    return found


def mean_rho(before: list[np.ndarray], after: list[np.ndarray]) -> float:
    """Mean Spearman ρ over images; a pair with a constant map counts 1 if both are equal, else 0."""

    def rho(a: np.ndarray, b: np.ndarray) -> float:
        if np.ptp(a) == 0 or np.ptp(b) == 0:
            return 1.0 if np.array_equal(a, b) else 0.0
        return float(spearmanr(a, b).statistic)

    return float(np.mean([rho(a, b) for a, b in zip(before, after, strict=True)]))


def bench_sanity(classifier: Classifier, photos: list[Path], bound: float) -> list[str]:
    inputs, _ = to_batch(photos, classifier.preprocessing)
    with torch.no_grad():
        ranked = classifier.module(inputs).topk(2, dim=1).indices
    predicted, runner_up = ranked[:, 0].tolist(), ranked[:, 1].tolist()
    maps: Callable[[Classifier, list[int]], dict[str, list[np.ndarray]]] = lambda c, t: {  # noqa: E731
        **fclens_maps(c, inputs, t),
        **gradcam_maps(c, inputs, t),
    }
    before = maps(classifier, predicted)
    changed = {
        "final layer": maps(reinitialised(classifier, "final layer"), predicted),
        "backbone": maps(reinitialised(classifier, "backbone"), predicted),
        "target class (runner-up)": maps(classifier, runner_up),
    }
    rows = [
        f"| map ({len(photos)} photo crops) | "
        + " | ".join(f"ρ after: {name}" for name in changed)
        + " | passes |",
        "|---|" + "---|" * (len(changed) + 1),
    ]
    for name, original in before.items():
        rhos = [mean_rho(original, after[name]) for after in changed.values()]
        verdict = (
            "all three"
            if all(r < bound for r in rhos)
            else "fails " + ", ".join(check for check, r in zip(changed, rhos, strict=True) if r >= bound)
        )
        rows.append(f"| {name} | " + " | ".join(f"{r:.2f}" for r in rhos) + f" | {verdict} |")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--photos", type=int, default=40, help="crops of the sample photos (default 40)")
    parser.add_argument(
        "--road-photos", type=int, default=16, help="of those, explained with ROAD (default 16)"
    )
    parser.add_argument("--shapes", type=int, default=120, help="held-out shapes images (default 120)")
    parser.add_argument("--kinds", nargs="*", default=["contribution", "activation"], help="map kinds scored")
    parser.add_argument("--fills", nargs="*", default=list(FILLS), choices=FILLS, help="fills (default all)")
    parser.add_argument("--bound", type=float, default=0.8, help="the sanity check's bound on mean ρ (0.8)")
    parser.add_argument(
        "--road-kinds", nargs="*", default=["contribution"], help="map kinds scored with ROAD"
    )
    parser.add_argument("--threads", type=int, help="torch's CPU threads (default: torch's own choice)")
    parser.add_argument("--only", nargs="*", choices=["claim", "sanity"], help="run these benchmarks only")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    chosen = set(args.only or ["claim", "sanity"])
    torch.manual_seed(0)
    classifier = load_model()
    print(
        f"# fclens faithfulness\n\ntorch {torch.__version__}, {torch.get_num_threads()} threads\n", flush=True
    )
    with tempfile.TemporaryDirectory() as directory:
        photos = photo_crops(args.photos, Path(directory))
        if "claim" in chosen:
            claim = bench_claim(
                classifier, photos, args.road_photos, args.shapes, args.kinds, args.fills, args.road_kinds
            )
            print("\n".join(claim))
            print(flush=True)
        if "sanity" in chosen:
            print("\n".join(bench_sanity(classifier, photos, args.bound)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

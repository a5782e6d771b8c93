"""Benchmarks of ``fclens explain`` into a folder (issue 22): what the folder, its record and its report
cost per image, against the explanation itself.

1. per image, the model loaded beforehand: ``fclens.explain(model, paths)`` (the reference) against
   ``explain_to_folder`` (what ``fclens explain PATHS --out OUT`` runs) without and with ``html``, and
   its reruns (every image done earlier: the summary, and the report read back from the folders);
2. the report's pictures: one upsampling call per map (fclens before this change) against one call per
   explanation (:func:`fclens.report.figures.overlays`), per image; and the weight of the pages.

Candidates run side by side, repeats interleaved, after one warm-up each; tables show medians.

    python benchmarks/bench_explain_folder.py
    python benchmarks/bench_explain_folder.py --images 32 --repeats 5
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
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


def table(times: dict[str, list[float]], reference: str, repeats: int) -> None:
    base = statistics.median(times[reference])
    print(f"| candidate | per image, median of {repeats} | ratio |\n|---|---:|---:|")
    for name, values in times.items():
        median = statistics.median(values)
        print(f"| {name} | {median * 1000:.0f} ms | {median / base:.2f}× |")


def folder_cost(images: int, repeats: int, work: Path) -> None:
    import torch

    import fclens
    from fclens.options import EXPLAIN_DEFAULTS
    from fclens.report import explain_to_folder

    paths = sorted(make_photo_folder(work / "photos", images).rglob("*.jpg"))
    model = fclens.load_model()
    options = EXPLAIN_DEFAULTS
    out = work / "out"

    def fresh(html: bool) -> Callable[[], object]:
        def run() -> object:
            shutil.rmtree(out, ignore_errors=True)
            return explain_to_folder(model, paths, out, options=options, html=html, progress=False)

        return run

    def rerun(html: bool) -> Callable[[], object]:
        return lambda: explain_to_folder(model, paths, out, options=options, html=html, progress=False)

    candidates = {
        "`fclens.explain(model, paths)`": lambda: fclens.explain(model, paths, options=options),
        "`explain_to_folder` (= `fclens explain PATHS --out OUT`)": fresh(False),
        "the same, `html=True` (the report)": fresh(True),
        "its rerun, all done earlier, `html=True` (report read back)": rerun(True),
        "its rerun, all done earlier, no report": rerun(False),
    }
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for run in candidates.values():
        run()  # warm-up
    for _ in range(repeats):
        for name, run in candidates.items():
            times[name].append(timed(run) / images)
    fresh(True)()
    print(
        f"\ntorch {torch.__version__}, {torch.get_num_threads()} threads, Python {platform.python_version()}; "
        f"{images} photo crops (benchmarks/photos.py), EfficientNet-Lite0, default options (activation "
        f"maps, every node scored, batch 16), the model loaded beforehand\n"
    )
    table(times, "`fclens.explain(model, paths)`", repeats)
    sizes = sorted(sum(f.stat().st_size for f in d.iterdir()) for d in out.iterdir() if d.is_dir())
    pages = sorted(out.glob("report*.html"))
    print(
        f"\nfolder per image: median {statistics.median(sizes) / 1000:.0f} KB, largest {sizes[-1] / 1000:.0f} KB; "
        f"report: {len(pages)} pages, "
        + ", ".join(f"{page.name} {page.stat().st_size / 1e6:.1f} MB" for page in pages[:3])
    )


def picture_cost(images: int, repeats: int, work: Path) -> None:
    import fclens
    from fclens.report.figures import overlay
    from fclens.report.html import _pictures, image_uri

    paths = sorted(make_photo_folder(work / "photos", images).rglob("*.jpg"))
    model = fclens.load_model()
    explanations = fclens.explain(
        model, paths, maps=("activation", "contribution"), scores="none", contrast="runner-up"
    )

    def one_call_per_map() -> None:  # what the page did before this change
        for e in explanations:
            ends = [e.contrast.rival_discriminative, e.contrast.rival_confusing]
            for node in [*e.nodes, *(end for end in ends if end is not None)]:
                for kind in e.map_kinds:
                    image_uri(overlay(e.image, node.shown(kind)))
            image_uri(overlay(e.image, e.contrast.shown()))

    candidates = {
        "one upsampling call per map (before)": one_call_per_map,
        "one call per explanation (`overlays`)": lambda: [_pictures(e) for e in explanations],
    }
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for run in candidates.values():
        run()  # warm-up
    for _ in range(repeats):
        for name, run in candidates.items():
            times[name].append(timed(run) / images)
    pictures = len(_pictures(explanations[0]))
    print(
        f"\nThe report's pictures: {images} photo crops, activation and contribution maps and the runner-up "
        f"contrast ({pictures} pictures per image)\n"
    )
    table(times, "one upsampling call per map (before)", repeats)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=32, help="photos per run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", choices=("folder", "pictures"))
    parser.add_argument("--work", type=Path, help="keep the photos here (default: a temporary folder)")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="fclens-bench-folder-"))
    if args.only in (None, "folder"):
        folder_cost(args.images, args.repeats, work)
    if args.only in (None, "pictures"):
        picture_cost(args.images, args.repeats, work)


if __name__ == "__main__":
    main()

"""Nothing slower: fclens's main calls timed side by side with an earlier release of fclens, in one run.

Each case runs in a fresh subprocess with one release's sources first on ``sys.path`` (``--before``, a
checkout of the earlier release, e.g. ``git worktree add /tmp/fclens-before 6afc05d``; the current tree
for "after"), the two releases interleaved, ``--repeats`` times each. A case times its calls inside the
process, after a warm-up call, so imports and model loading are not what is measured. The data sets are
written once, by the earlier release's own test helpers, so both releases read the very same files (and
the current one proves it still reads them).

Cases (each the call a user makes):
- ``explain``: ``explain(model, chelsea)``, default options (every node scored), median of 5 calls;
- ``explain-16``: 16 crops of the sample photos in one call (batch 16);
- ``scan``: ``scan`` of 64 sample crops, in-process decoding (``LocalEngine(workers=0)``);
- ``atlas``: the atlas of a synthesised 50,000-row, 1,000-class scan (tests/synthetic_scan.py);
- ``evaluate``: the scanned layer judged on a 20,000 × 512, 200-class feature scan (tests/feature_scan.py);
- ``prune``: ``prune_curve`` of the default methods and sparsities on that scan;
- ``causal``: ``causal_test`` of its top 20 pairs;
- ``fit``: a ``ce`` re-fit of that layer, 30 L-BFGS iterations.

    flock /tmp/fclens-bench.lock python benchmarks/bench_release.py --before /tmp/fclens-before
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

HERE = Path(__file__).resolve().parent
AFTER = HERE.parent

SETUP = """
import json, statistics, sys, time, warnings
warnings.simplefilter("ignore")
import fclens
def timed(call, repeats):
    call()  # warm-up: caches, lazy imports, the allocator
    times = []
    for _ in range(repeats):
        started = time.perf_counter(); call(); times.append(time.perf_counter() - started)
    return statistics.median(times)
def evaluate(scan, layer):  # 0.1: evaluate_head(scan, head); 0.2: evaluate(scan, layer)
    if hasattr(fclens, "Evaluation"):
        return fclens.evaluate(scan, layer)
    return fclens.evaluate_head(scan, layer)
def layer_of(scan):
    return scan.layer if hasattr(scan, "layer") else scan
def fit(scan, method, **options):
    if hasattr(fclens, "fit_layer"):
        return fclens.fit_layer(scan, method, **options)
    return fclens.fit_head(scan, method, **options)
"""

CASES = {
    "explain": """
model = fclens.load_model()
image = fclens.sample_image("chelsea")
seconds = timed(lambda: fclens.explain(model, image), 5)
""",
    "explain-16": """
from pathlib import Path
model = fclens.load_model()
images = sorted(Path(DATA, "photos").rglob("*.jpg"))[:16]
seconds = timed(lambda: fclens.explain(model, images, batch_size=16), 3)
""",
    "scan": """
import shutil
from pathlib import Path
from fclens.scanning import LocalEngine
model = fclens.load_model()
out = Path(DATA, "scan-out-" + str(time.time_ns()))
def once():
    shutil.rmtree(out, ignore_errors=True)
    fclens.scan(model, Path(DATA, "photos"), out, engine=LocalEngine(workers=0), progress=False)
seconds = timed(once, 3)
shutil.rmtree(out, ignore_errors=True)
""",
    "atlas": """
seconds = timed(lambda: fclens.atlas(Path(DATA, "atlas-scan")), 3)
""",
    "evaluate": """
scan = fclens.read_scan(Path(DATA, "feature-scan"))
seconds = timed(lambda: evaluate(scan, layer_of(scan)), 3)
""",
    "prune": """
scan = fclens.read_scan(Path(DATA, "feature-scan"))
seconds = timed(lambda: fclens.prune_curve(scan), 3)
""",
    "causal": """
scan = fclens.read_scan(Path(DATA, "feature-scan"))
seconds = timed(lambda: fclens.causal_test(scan), 3)
""",
    "fit": """
scan = fclens.read_scan(Path(DATA, "feature-scan"))
seconds = timed(lambda: fit(scan, "ce", max_iter=30), 3)
""",
}

MAKE_DATA = """
import sys
from pathlib import Path
import numpy as np
sys.path.insert(0, str(Path(TREE, "tests")))
import fclens, feature_scan, synthetic_scan
data = Path(DATA)
fclens.sample_folder(data / "photos", count=64, seed=0)
synthetic_scan.write(data / "atlas-scan", rows=50_000, classes=1000)
means = feature_scan.class_means(200, 512, spread=0.25, seed=1)
counts = np.full(200, 100)
feature_scan.write(data / "feature-scan", means, counts, feature_scan.bayes_layer(means, counts / counts.sum()))
"""


def run(tree: Path, code: str, data: Path, threads: int) -> dict:
    """``code`` in a fresh interpreter with ``tree``'s sources first; its JSON line."""
    env = {**os.environ, "PYTHONPATH": str(tree / "src"), "OMP_NUM_THREADS": str(threads)}
    prelude = f"TREE = {str(tree)!r}\nDATA = {str(data)!r}\nfrom pathlib import Path\n"
    done = subprocess.run(
        [sys.executable, "-c", prelude + code], env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"{tree}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the earlier release")
    parser.add_argument("--repeats", type=int, default=3, help="processes per release and case")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated, of: " + ", ".join(CASES))
    parser.add_argument("--threads", type=int, default=2, help="OMP_NUM_THREADS of every process")
    args = parser.parse_args()
    cases = [case.strip() for case in args.cases.split(",") if case.strip()]
    with tempfile.TemporaryDirectory(prefix="fclens-release-") as scratch:
        data = Path(scratch)
        run(args.before, MAKE_DATA + "print('{}')", data, args.threads)
        trees = {"before": args.before.resolve(), "after": AFTER}
        print(f"before: {trees['before']}  after: {trees['after']}  ({args.repeats} processes each)\n")
        print("| case | before (s) | after (s) | after / before |")
        print("|---|---|---|---|")
        for case in cases:
            code = SETUP + textwrap.dedent(CASES[case]) + "print(json.dumps({'seconds': seconds}))"
            times: dict[str, list[float]] = {"before": [], "after": []}
            for _ in range(args.repeats):
                for name, tree in trees.items():
                    times[name].append(run(tree, code, data, args.threads)["seconds"])
            before, after = statistics.median(times["before"]), statistics.median(times["after"])
            print(f"| {case} | {before:.3f} | {after:.3f} | {after / before:.2f} |", flush=True)


if __name__ == "__main__":
    main()

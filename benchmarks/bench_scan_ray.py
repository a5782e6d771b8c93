"""The scan's Ray engine on a local two-node Ray cluster against the local engine, side by side in one process.

The cluster is Ray's own test cluster (``ray.cluster_utils.Cluster``): a head and a worker node of one CPU
each, the two cores of this machine. Both engines scan the same photos with the same batch size and decode
worker count; a Ray run includes what a user waits for (joining the cluster, starting the model actors).
Runs alternate after a warm-up of each; the table gives medians of images/s and the ratio ray / local.

    python benchmarks/bench_scan_ray.py --images 192 --repeats 3 --actors 1,2
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import fclens
from bench_scan import scanned
from fclens.scanning import LocalEngine, RayEngine
from photos import make_photo_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--workers", type=int, default=1, help="decode workers (local) and decode tasks at a time (ray)"
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--actors", default="1,2", help="model actor counts to run")
    parser.add_argument("--work", type=Path, help="keep the photos here (default: a temporary folder)")
    args = parser.parse_args()
    from ray.cluster_utils import Cluster

    work = args.work or Path(tempfile.mkdtemp(prefix="fclens-bench-ray-"))
    folder = make_photo_folder(work / "photos", args.images)
    classifier = fclens.load_model()
    # Ray runs its workers at niceness 15; on a machine shared with other work that starves them, so they
    # run at the local engine's priority here.
    os.environ.setdefault("RAY_worker_niceness", "0")
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "object_store_memory": 200 << 20})
    cluster.add_node(num_cpus=1, object_store_memory=200 << 20)
    engines = {"local": LocalEngine(workers=args.workers)} | {
        f"ray, {n} actor{'s' if n > 1 else ''}": RayEngine(
            address=cluster.address, actors=n, workers=args.workers
        )
        for n in map(int, args.actors.split(","))
    }
    try:
        print(
            f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.images} images, "
            f"batch {args.batch_size}, {args.workers} decode workers; Ray cluster: 2 nodes × 1 CPU"
        )
        for engine in engines.values():  # warm-up: page cache, imports, Ray's worker pool
            scanned(classifier, folder, work / "warm", args.batch_size, engine)
        runs: dict[str, list[float]] = {name: [] for name in engines}
        for _ in range(args.repeats):
            for name, engine in engines.items():
                runs[name].append(scanned(classifier, folder, work / "scan", args.batch_size, engine))
    finally:
        cluster.shutdown()
    local = statistics.median(runs["local"])
    print(f"| engine | images/s (median of {args.repeats}) | ratio to local | runs |")
    print("|---|---:|---:|---|")
    for name, values in runs.items():
        median = statistics.median(values)
        print(f"| {name} | {median:.1f} | {median / local:.2f}× | {', '.join(f'{v:.1f}' for v in values)} |")


if __name__ == "__main__":
    main()

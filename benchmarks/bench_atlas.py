"""Benchmark of fclens.atlasing's aggregation on a synthesised scan, beside DuckDB on the same shards.

A scan of ``--rows`` images (default 50,000) over ``--classes`` classes (default 1,000) is written in the
documented format by tests/synthetic_scan.py (5 nodes per tree, 7×7 maps, shards of 4,096 rows). Then:

1. fclens.atlas (pyarrow compute, shard by shard): the whole atlas, before any page is drawn.
2. DuckDB over the same Parquet files: the same per-class counts, soft confusions, errors and node
   means, and the same top-k images per class (``max_by(..., k)``), as SQL — the engine we did not pick.

Each candidate runs in a fresh subprocess, interleaved, ``--repeats`` times; the table shows the median
wall time and the median peak resident set (VmHWM) of those processes, with their value after the
engine's imports in brackets.

    flock /tmp/fclens-bench.lock python benchmarks/bench_atlas.py
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

DUCKDB_SQL = """
create temp view t as select * from read_parquet({shards}) where status = 'ok';
create temp table classes as
  select target k, count(*) n, count(label) labelled, count(*) filter (where pred = label) correct
  from t group by target;
create temp table soft as
  select k, b, sum(p) / any_value(n) soft from (
    select target k, unnest(top5) b, unnest(top5_prob) p from t
  ) join classes using (k) where b != k group by k, b;
create temp table errors as
  select target k, pred b, count(*) e from t where label is not null and pred != label group by k, b;
create temp table nodes as
  select k, path, any_value(size) size, avg(c) mean from (
    select target k, unnest(node_path) path, unnest(node_size) size, unnest(node_contribution) c from t
  ) group by k, path;
create temp table confusing as
  select k, arg_max(path, length(path)) path from nodes where regexp_full_match(path, '-+') group by k;
create temp table confusing_images as
  select k, max_by({{index: index, path: t.path, strength: -c}}, -c, {top_k}) images from (
    select target k, index, path, unnest(node_path) np, unnest(node_contribution) c from t
  ) t join confusing using (k) where np = confusing.path group by k;
create temp table top_rival as select k, arg_max(b, soft) b from soft group by k;
create temp table rival_images as
  select k, max_by({{index: index, path: path, strength: logit_rival - logit_target}},
                   logit_rival - logit_target, {top_k}) images
  from t join top_rival on t.target = top_rival.k and t.rival = top_rival.b group by k;
"""


def child(engine: str, directory: str, top_k: int) -> None:
    """One timed run in this process; prints JSON with the seconds and the peak resident set."""
    if engine == "pyarrow":
        import fclens.scanning  # noqa: F401  (what atlas() imports to read the manifest, torch included)
        from fclens.atlasing import atlas
    else:
        import duckdb
    baseline = _peak_mib()
    start = time.perf_counter()
    if engine == "pyarrow":
        found = atlas(directory, top_k=top_k)
        summary = (len(found.classes), len(found.pairs))
    else:
        shards = sorted(str(p) for p in Path(directory).glob("part-*.parquet"))
        connection = duckdb.connect()
        connection.execute("set threads = 2")
        connection.execute(DUCKDB_SQL.format(shards=shards, top_k=top_k))
        summary = tuple(
            connection.execute(f"select count(*) from {name}").fetchone()[0] for name in ("classes", "soft")
        )
    seconds = time.perf_counter() - start
    print(
        json.dumps(
            {"seconds": seconds, "baseline_mib": baseline, "peak_mib": _peak_mib(), "summary": summary}
        )
    )


def _peak_mib() -> float:
    """This process's peak resident set so far (VmHWM; ru_maxrss would keep the parent's across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def run(engine: str, directory: Path, top_k: int) -> dict:
    script = [sys.executable, __file__, "--child", engine, "--scan", str(directory), "--top-k", str(top_k)]
    out = subprocess.run(script, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--top-k", type=int, default=8)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--scan", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.scan, args.top_k)
        return

    import synthetic_scan

    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder) / "scan"
        start = time.perf_counter()
        synthetic_scan.write(directory, args.rows, classes=args.classes)
        size = sum(p.stat().st_size for p in directory.glob("part-*.parquet")) / 2**20
        print(f"synthesised {args.rows:,} rows, {args.classes} classes, {size:.0f} MiB of Parquet "
              f"in {time.perf_counter() - start:.1f} s")  # fmt: skip
        results: dict[str, list[dict]] = {"pyarrow": [], "duckdb": []}
        for _ in range(args.repeats):
            for engine in results:
                results[engine].append(run(engine, directory, args.top_k))
        print(
            "\n| engine | median s | runs (s) | peak RSS MiB (after imports) | result |\n|---|---|---|---|---|"
        )
        fastest = min(statistics.median(r["seconds"] for r in runs) for runs in results.values())
        for engine, runs in results.items():
            seconds = [r["seconds"] for r in runs]
            median = statistics.median(seconds)
            peak = statistics.median(r["peak_mib"] for r in runs)
            base = statistics.median(r["baseline_mib"] for r in runs)
            label = (
                "fclens.atlas (pyarrow, per shard)" if engine == "pyarrow" else "DuckDB SQL, same aggregates"
            )
            print(
                f"| {label} | {median:.2f} ({median / fastest:.2f}×) | {', '.join(f'{s:.2f}' for s in seconds)} "
                f"| {peak:.0f} ({base:.0f}) | {runs[0]['summary']} |"
            )


if __name__ == "__main__":
    main()

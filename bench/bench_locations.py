"""Huff scoring with the bucketed great-circle join against the same scoring on cross joins,
then the bucketed job alone at growing sizes, on generated cities (locations/generator.py).

    python bench/bench_locations.py                                  # the default sizes
    python bench/bench_locations.py --sizes 2000 --max-points 4000   # smoke run (~1 min)
    python bench/bench_locations.py --sizes 50000 --max-points 0     # only 50k vs cross join

(a) For each of `--sizes` (demand points; as many candidates; stores = points / 5) the whole
    `huff.score` is run twice on the same cached inputs: with `geometry.pairs_within`
    (bucketed) and with `geometry.pairs_within_brute` (cross joins), up to `--naive-max`
    points for the latter (`--naive-timeout` cancels a cross join that runs longer). Prints
    the candidate-point pairs in reach, both times, their ratio, whether the two agree, and
    the time of the bucketed job's two pair searches alone (candidates x points, points x
    stores: counted, no scoring), which shows how much of the job is the join itself.
(b) The bucketed job alone, points and candidates scaled together up to `--max-points`:
    pairs in reach, time and seconds per million pairs. The generator's geography is fixed
    for a seed, so pairs grow as the square of the points; a flat s/M pairs column means
    the cost grows linearly with the pairs in reach, not with points x candidates.

Each run is materialised by one aggregate over every output column (nothing is collected
row by row). The inputs are generated in pandas, made Spark DataFrames and cached before
the clocks start. One Spark session for everything; a tiny warm-up run first, untimed.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import tempfile
import threading
import time
from pathlib import Path

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from retail_lake.config import load_config
from retail_lake.locations import generator
from retail_lake.locations.geometry import pairs_within, pairs_within_brute
from retail_lake.locations.huff import HuffParams, score
from retail_lake.session import build_session

LADDER = [10_000, 25_000, 50_000, 100_000, 200_000, 400_000, 800_000, 1_600_000]


class Inputs:
    """One generated scenario as cached Spark DataFrames."""

    def __init__(self, spark, n: int, seed: int) -> None:
        t0 = time.perf_counter()
        frames = generator.scenario(n, seed=seed)
        self.candidates, self.points, self.stores = (
            generator.to_spark(spark, pdf).cache() for pdf in frames
        )
        for df in (self.candidates, self.points, self.stores):
            df.count()
        self.sizes = tuple(len(pdf) for pdf in frames)
        self.seconds = time.perf_counter() - t0

    def drop(self) -> None:
        for df in (self.candidates, self.points, self.stores):
            df.unpersist()


def materialise(scored: DataFrame) -> dict[str, float]:
    """One aggregate touching every output column (so no part of the plan is pruned)."""
    row = scored.agg(
        F.count(F.lit(1)).alias("candidates"),
        F.sum("points_in_reach").alias("pairs"),
        F.sum("captured_demand").alias("captured"),
        F.sum("cannibalised_demand").alias("cannibalised"),
        F.sum("net_gain").alias("net"),
        F.sum("demand_in_reach").alias("in_reach"),
        F.sum(F.size("top_points")).alias("explained"),
    ).first()
    return {k: (v if v is not None else 0) for k, v in row.asDict().items()}


def timed_score(spark, inputs: Inputs, params: HuffParams, pairs_fn, timeout: float | None):
    """(seconds, totals) of one materialised score; (None, None) when cancelled at timeout."""
    sc = spark.sparkContext
    group = f"score-{pairs_fn.__name__}-{time.monotonic_ns()}"
    sc.setJobGroup(group, group, interruptOnCancel=True)
    timer = threading.Timer(timeout, sc.cancelJobGroup, args=(group,)) if timeout else None
    if timer:
        timer.start()
    t0 = time.perf_counter()
    try:
        scored = score(inputs.candidates, inputs.points, inputs.stores, params, pairs_fn)
        totals = materialise(scored)
        return time.perf_counter() - t0, totals
    except Exception as exc:  # cancelled by the timer (a Py4J / Spark error)
        if timer and not timer.is_alive():
            print(f"  cancelled after {time.perf_counter() - t0:.0f}s ({type(exc).__name__})")
            return None, None
        raise
    finally:
        if timer:
            timer.cancel()
        sc.setLocalProperty("spark.jobGroup.id", None)


def timed_pairs(inputs: Inputs, max_km: float) -> float:
    """Seconds of the two bucketed pair searches of `score` alone (counted, distances summed)."""
    t0 = time.perf_counter()
    points = inputs.points.select("point_id", "lat", "lon")
    for left, right in ((inputs.candidates, points), (points, inputs.stores)):
        pairs_within(left, right, max_km).agg(F.count(F.lit(1)), F.sum("distance_km")).first()
    return time.perf_counter() - t0


def agree(a: dict[str, float], b: dict[str, float]) -> bool:
    keys = ("candidates", "pairs", "explained")
    same_counts = all(a[k] == b[k] for k in keys)
    sums = ("captured", "cannibalised", "net", "in_reach")
    return same_counts and all(math.isclose(a[k], b[k], rel_tol=1e-9, abs_tol=1e-6) for k in sums)


def fmt(seconds: float | None, timeout: float | None = None) -> str:
    if seconds is None:
        return f"> {timeout:.0f}" if timeout else "-"
    return f"{seconds:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        type=int,
        nargs="*",
        default=[2_000, 5_000, 10_000, 20_000, 50_000],
        help="(a) demand points (= candidates; stores = points / 5) for bucketed vs naive",
    )
    parser.add_argument(
        "--naive-max", type=int, default=50_000, help="(a) largest size the cross join runs at"
    )
    parser.add_argument(
        "--naive-timeout", type=float, default=1800, help="(a) cancel a cross join after (s)"
    )
    parser.add_argument(
        "--max-points",
        type=int,
        default=200_000,
        help=f"(b) bucketed alone at the sizes of {LADDER} below this, then this (0: skip)",
    )
    parser.add_argument("--max-km", type=float, default=25.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress shows when piped to a file
    command = shlex.join(["python", "bench/bench_locations.py", *sys.argv[1:]])

    root = tempfile.mkdtemp(prefix="bench-locations-")
    cfg = load_config(
        "local",
        [
            f"paths.root={root}",
            f"spark.master={args.master}",
            f"spark.driver_memory={args.driver_memory}",
            f"spark.shuffle_partitions={args.shuffle_partitions}",
            "spark.ui_enabled=false",
            "spark.log_level=ERROR",
        ],
    )
    spark = build_session(cfg, "bench locations")
    params = HuffParams(max_km=args.max_km)
    settings = {
        "master": args.master,
        "cores": spark.sparkContext.defaultParallelism,
        "driver_memory": args.driver_memory,
        "shuffle_partitions": args.shuffle_partitions,
        "max_km": args.max_km,
        "seed": args.seed,
    }
    print(f"$ {command}")
    print(" ".join(f"{k}={v}" for k, v in settings.items()))
    results: dict = {"command": command, "settings": settings, "versus": [], "scaling": []}

    def save() -> None:
        if args.json:
            args.json.write_text(json.dumps(results, indent=2) + "\n")

    warm = Inputs(spark, 500, args.seed)  # JIT, codegen, Arrow: untimed
    for fn in (pairs_within, pairs_within_brute):
        timed_score(spark, warm, params, fn, None)
    warm.drop()

    for n in args.sizes:
        inputs = Inputs(spark, n, args.seed)
        print(f"(a) {inputs.sizes} candidates/points/stores generated in {inputs.seconds:.1f}s")
        fast, totals = timed_score(spark, inputs, params, pairs_within, None)
        print(f"  bucketed {fast:.1f}s, {int(totals['pairs']):,} pairs in reach")
        row = {"points": n, "candidates": inputs.sizes[0], "stores": inputs.sizes[2]}
        row |= {"pairs": int(totals["pairs"]), "bucketed_s": fast, "naive_s": None}
        row["pairs_only_s"] = timed_pairs(inputs, args.max_km)
        print(f"  bucketed pair searches alone {row['pairs_only_s']:.1f}s")
        if n <= args.naive_max:
            slow, naive = timed_score(spark, inputs, params, pairs_within_brute, args.naive_timeout)
            row |= {"naive_s": slow, "naive_timeout_s": args.naive_timeout}
            if naive is not None:
                row |= {"ratio": slow / fast, "agree": agree(totals, naive)}
                print(f"  naive {slow:.1f}s ({slow / fast:.1f}x), agree: {row['agree']}")
        inputs.drop()
        results["versus"].append(row)
        save()

    ladder = [s for s in LADDER if s < args.max_points] + [args.max_points]
    for n in ladder if args.max_points > 0 else []:
        inputs = Inputs(spark, n, args.seed)
        print(f"(b) {inputs.sizes} candidates/points/stores generated in {inputs.seconds:.1f}s")
        secs, totals = timed_score(spark, inputs, params, pairs_within, None)
        pairs = int(totals["pairs"])
        row = {"points": n, "stores": inputs.sizes[2], "pairs": pairs, "bucketed_s": secs}
        row["s_per_m_pairs"] = secs / (pairs / 1e6) if pairs else None
        print(f"  bucketed {secs:.1f}s, {pairs:,} pairs in reach")
        inputs.drop()
        results["scaling"].append(row)
        save()
    spark.stop()
    print_tables(results)


def print_tables(results: dict) -> None:
    s = results["settings"]
    print(f"\n$ {results['command']}")
    print(
        f"master={s['master']} ({s['cores']} cores), driver {s['driver_memory']}, "
        f"{s['shuffle_partitions']} shuffle partitions, reach {s['max_km']:g} km, seed {s['seed']}"
    )
    if results["versus"]:
        print("\n(a) Huff score: bucketed pairs_within vs cross join (pairs_within_brute)\n")
        print(
            "| points = candidates | stores | pairs in reach | bucketed (s) | naive (s) "
            "| naive / bucketed | results agree | bucketed pair searches alone (s) |"
        )
        print("|---|---|---|---|---|---|---|---|")
        for r in results["versus"]:
            naive = fmt(r["naive_s"], r.get("naive_timeout_s"))
            ratio = f"{r['ratio']:.1f}" if "ratio" in r else "-"
            same = {True: "yes", False: "NO"}.get(r.get("agree"), "-")
            print(
                f"| {r['points']:,} | {r['stores']:,} | {r['pairs']:,} | {r['bucketed_s']:.1f} "
                f"| {naive} | {ratio} | {same} | {r['pairs_only_s']:.1f} |"
            )
    if results["scaling"]:
        print("\n(b) bucketed Huff score alone, points and candidates scaled together\n")
        print("| points = candidates | stores | pairs in reach | time (s) | s per M pairs |")
        print("|---|---|---|---|---|")
        for r in results["scaling"]:
            per = f"{r['s_per_m_pairs']:.2f}" if r["s_per_m_pairs"] is not None else "-"
            print(
                f"| {r['points']:,} | {r['stores']:,} | {r['pairs']:,} "
                f"| {r['bucketed_s']:.1f} | {per} |"
            )


if __name__ == "__main__":
    main()

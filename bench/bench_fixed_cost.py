"""The fixed cost of one step: a job that publishes one 10-row table through the whole runner.

    python bench/bench_fixed_cost.py --repeats 3 [--set key=value ...]

Each repeat makes a fresh lake and runs, through `runner.run_job` (contract, conservation,
the table's suite, the write, the ops rows), a job that publishes 10 rows of silver.stores:
`first` on the fresh lake (the table and the ops tables are created), `changed` with one row
changed (a MERGE), `same` with the same rows again (nothing to commit). Beside them, the
baseline: the same 10 rows written as a new Delta table with a bare `df.write.save()`.
Prints seconds and Spark jobs of each, and each run's ratio to the bare write.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

from pyspark.sql import DataFrame, SparkSession

from retail_lake.config import load_config
from retail_lake.registry import run_job
from retail_lake.runner import JobResult, Output
from retail_lake.session import build_session

SCHEMA = (
    "store int, store_type string, assortment string, competition_distance_m "
    "double, competition_open_since date, promo2 boolean, promo2_since date, "
    "promo2_months array<int>, _source_file string, _line_number bigint"
)


def stores(spark: SparkSession, changed: bool = False) -> DataFrame:
    rows = [
        (i, "abcd"[i % 4], "abc"[i % 3], 100.0 * i, None, i % 2 == 0, None, [], "f", i + 1)
        for i in range(1, 11)
    ]
    if changed:
        rows[0] = (1, "b", "a", 999.0, None, False, None, [], "f", 2)
    return spark.createDataFrame(rows, SCHEMA)


def timed(spark: SparkSession, label: str, fn) -> tuple[float, int]:
    """Seconds and Spark jobs of `fn()`, its jobs counted by a job group."""
    context = spark.sparkContext
    context.setJobGroup(label, label)
    try:
        started = time.perf_counter()
        fn()
        seconds = time.perf_counter() - started
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)
    return seconds, len(context.statusTracker().getJobIdsForGroup(label))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", default="test")
    parser.add_argument("--set", action="append", default=[], help="a config override")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="bench-fixed-")
    cfg = load_config(args.profile, [f"paths.root={base}/warm", "spark.log_level=ERROR", *args.set])
    spark = build_session(cfg, "bench fixed cost")
    # Warm-up on a lake of its own: JIT, imports, the suite's first load.
    run_job(
        spark, cfg, "bench_stores", lambda ctx: JobResult([Output("silver.stores", stores(spark))])
    )
    print("repeat  bare_s  first_s  changed_s  same_s  | jobs: bare first changed same | ratios")
    for i in range(1, args.repeats + 1):
        lake_cfg = load_config(
            args.profile, [f"paths.root={base}/lake{i}", "spark.log_level=ERROR", *args.set]
        )

        def run(changed: bool, c=lake_cfg) -> None:
            run_job(
                spark,
                c,
                "bench_stores",
                lambda ctx: JobResult([Output("silver.stores", stores(spark, changed))]),
            )

        bare = timed(
            spark,
            f"bare-{i}",
            lambda path=f"{base}/bare{i}": stores(spark).write.format("delta").save(path),
        )
        first = timed(spark, f"first-{i}", lambda: run(False))
        changed = timed(spark, f"changed-{i}", lambda: run(True))
        same = timed(spark, f"same-{i}", lambda: run(True))
        print(
            f"{i:6d}  {bare[0]:6.2f}  {first[0]:7.2f}  {changed[0]:9.2f}  {same[0]:6.2f}  | "
            f"{bare[1]:4d} {first[1]:5d} {changed[1]:7d} {same[1]:4d} | "
            f"{first[0] / bare[0]:.1f}x {changed[0] / bare[0]:.1f}x {same[0] / bare[0]:.1f}x"
        )
    spark.stop()
    shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Re-running an upsert with unchanged data: Lake.write (anti-join on keys + content hash,
then MERGE only what changed) against a plain hash-conditioned Delta MERGE, side by side.

    python bench/bench_merge_rerun.py --rows 500000 --repeats 3

Prints, per repeat, both times, the ratio, and the Delta versions each approach committed.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from pyspark.sql import functions as F

from retail_lake.config import load_config
from retail_lake.contracts import CONTENT_HASH, Col, TableContract, meta_columns
from retail_lake.lake import Lake, with_metadata
from retail_lake.session import build_session

CONTRACT = TableContract(
    name="silver.bench_rows",
    description="benchmark",
    columns=(
        Col("id", "bigint", "key", False),
        Col("store", "int", "store"),
        Col("sales", "double", "sales"),
        Col("note", "string", "text"),
        *meta_columns(),
    ),
    keys=("id",),
)


def plain_merge(lake: Lake, df, run_id: str) -> None:
    rows = with_metadata(df, CONTRACT, run_id)
    (
        lake.delta_table(CONTRACT.name)
        .alias("t")
        .merge(rows.alias("s"), "t.id = s.id")
        .whenMatchedUpdateAll(condition=f"t.{CONTENT_HASH} <> s.{CONTENT_HASH}")
        .whenNotMatchedInsertAll()
        .execute()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="bench-merge-")
    cfg = load_config("test", [f"paths.root={root}", "spark.log_level=ERROR"])
    spark = build_session(cfg, "bench merge rerun")
    df = spark.range(args.rows).select(
        F.col("id"),
        (F.col("id") % 1115).cast("int").alias("store"),
        (F.col("id") * 1.5).alias("sales"),
        F.concat(F.lit("row "), F.col("id")).alias("note"),
    )
    df = df.cache()
    df.count()
    plain = Lake(spark, f"{root}/plain")
    ours = Lake(spark, f"{root}/ours")
    plain.write(df, CONTRACT, "load")
    ours.write(df, CONTRACT, "load")
    print(f"rows={args.rows} (re-run with identical data)")
    print("repeat  plain_merge_s  lake_write_s  ratio  plain_versions  lake_versions")
    for i in range(1, args.repeats + 1):
        v0 = plain.version(CONTRACT.name)
        t0 = time.perf_counter()
        plain_merge(plain, df, f"rerun-{i}")
        t_plain = time.perf_counter() - t0
        v1 = ours.version(CONTRACT.name)
        t0 = time.perf_counter()
        ours.write(df, CONTRACT, f"rerun-{i}")
        t_ours = time.perf_counter() - t0
        print(
            f"{i:6d}  {t_plain:13.2f}  {t_ours:12.2f}  {t_plain / t_ours:5.2f}  "
            f"{plain.version(CONTRACT.name) - v0:14d}  {ours.version(CONTRACT.name) - v1:13d}"
        )
    spark.stop()


if __name__ == "__main__":
    main()

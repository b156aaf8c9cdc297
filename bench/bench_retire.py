"""What retiring and verifying cost a merge: `Lake.write` as it was, with `retire`, and with
`verify`, side by side in one session on the same rows.

    python bench/bench_retire.py --rows 200000 --repeats 3

Three lakes hold the same table. Each repeat writes to each, in turn, (a) the same rows again
(the common re-run: nothing is committed) and (b) the rows with 1% of them changed and 1% gone
(a tightened rule): `plain` (no retire: the gone rows stay, the behaviour before), `retire`
(`retire="true"`: they are deleted in the same MERGE) and `verify` (`retire` and `verify`:
stored rows hashed anew). Prints seconds, each ratio to `plain`, and rows deleted.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from pyspark.sql import functions as F

from bench_merge_rerun import CONTRACT  # the same 4-column table (run as a script)
from retail_lake.config import load_config
from retail_lake.lake import Lake
from retail_lake.session import build_session

KINDS = {"plain": {}, "retire": {"retire": "true"}, "verify": {"retire": "true", "verify": True}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="bench-retire-")
    cfg = load_config("test", [f"paths.root={root}"])
    spark = build_session(cfg, "bench retire")
    base = spark.range(args.rows).select(
        F.col("id"),
        (F.col("id") % 1115).cast("int").alias("store"),
        (F.col("id") * 1.5).alias("sales"),
        F.concat(F.lit("row "), F.col("id")).alias("note"),
    )
    print(f"rows={args.rows}")
    print("repeat  case     plain_s  retire_s  verify_s  retire/plain  verify/plain  deleted")
    for i in range(1, args.repeats + 1):
        lakes = {k: Lake(spark, f"{root}/{i}/{k}") for k in KINDS}
        for lake in lakes.values():
            lake.write(base, CONTRACT, "load")
        tightened = base.where(F.col("id") % 100 != 7).withColumn(
            "sales", F.when(F.col("id") % 100 == 3, -1.0).otherwise(F.col("sales"))
        )
        for case, df in (("same", base), ("tighter", tightened)):
            df = df.cache()
            df.count()
            seconds, deleted = {}, {}
            for kind, options in KINDS.items():
                started = time.perf_counter()
                result = lakes[kind].write(df, CONTRACT, f"{case}-{i}", **options)
                seconds[kind] = time.perf_counter() - started
                deleted[kind] = result.deleted
            df.unpersist()
            print(
                f"{i:6d}  {case:7s}  {seconds['plain']:7.2f}  {seconds['retire']:8.2f}  "
                f"{seconds['verify']:8.2f}  {seconds['retire'] / seconds['plain']:12.2f}  "
                f"{seconds['verify'] / seconds['plain']:12.2f}  "
                f"{deleted['plain']}/{deleted['retire']}/{deleted['verify']}"
            )
    spark.stop()


if __name__ == "__main__":
    main()

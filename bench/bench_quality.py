"""The quality gate of silver.transactions, evaluated by both engines side by side.

    python bench/bench_quality.py --rows 500000 --repeats 3

A generated frame with the columns of the silver.transactions contract (sales lines: unique
line ids, guests without a customer token, non-product lines flagged) is persisted as the
runner persists a pending output, and the table's whole suite (the contract's key rules and
conf/suites/silver.transactions.yaml) is validated on it by `quality.engine` spark and
great_expectations in turn, alternating, in one Spark session. Prints, per repeat, both
times, their ratio and the Spark jobs each ran; then whether both engines recorded the same
results.
"""

from __future__ import annotations

import argparse
import tempfile
import time

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from retail_lake.config import load_config
from retail_lake.lake import with_metadata
from retail_lake.quality import ExpectationResult, load_suite, validate
from retail_lake.registry import CONTRACTS
from retail_lake.session import build_session

TABLE = "silver.transactions"
NON_PRODUCT = ("postage", "carriage", "manual", "discount", "samples", "bank_charges")


def sales_lines(spark: SparkSession, rows: int) -> DataFrame:
    """`rows` sales lines shaped as silver.transactions (before the run's metadata)."""
    n = F.col("id")
    guest = (n % 4) == 0
    product = (n % 50) != 0
    invoice_at = F.timestamp_seconds(F.lit(1_291_161_600) + (n * 37) % 31_536_000)
    price = (((n * 7919) % 100_000) / 1000 + 0.001).cast("decimal(12,3)")
    quantity = ((n * 31) % 24 + 1).cast("int")
    return spark.range(rows).select(
        F.concat(F.lit("online_retail.csv.gz#"), n + 2).alias("line_id"),
        F.concat(F.lit("5"), F.lpad((n / 20).cast("bigint").cast("string"), 5, "0")).alias(
            "invoice_no"
        ),
        F.when(product, F.concat(F.lpad((n % 4000 + 10000).cast("string"), 5, "0"), F.lit("A")))
        .otherwise(F.lit("POST"))
        .alias("stock_code"),
        F.when(n % 100 == 0, None)
        .otherwise(F.concat(F.lit("ITEM "), n % 4000))
        .alias("description"),
        quantity.alias("quantity"),
        invoice_at.alias("invoice_date"),
        F.to_date(invoice_at).alias("invoice_day"),
        price.alias("unit_price"),
        (price * quantity).cast("decimal(18,3)").alias("line_total"),
        F.when(guest, None)
        .otherwise(F.sha2((n % 4372).cast("string"), 256))
        .alias("customer_token"),
        guest.alias("is_guest"),
        F.element_at(
            F.array(*map(F.lit, ("United Kingdom", "France", "EIRE"))), (n % 3 + 1).cast("int")
        ).alias("country"),
        product.alias("is_product"),
        F.when(product, None)
        .otherwise(
            F.element_at(F.array(*map(F.lit, NON_PRODUCT)), (n % len(NON_PRODUCT) + 1).cast("int"))
        )
        .alias("non_product_kind"),
        F.lit("online_retail.csv.gz").alias("_source_file"),
        (n + 2).alias("_line_number"),
    )


def timed(spark: SparkSession, label: str, fn) -> tuple[float, int, list[ExpectationResult]]:
    """Seconds, Spark jobs and results of `fn()`, its jobs counted by a job group."""
    context = spark.sparkContext
    context.setJobGroup(label, label)
    try:
        started = time.perf_counter()
        results = fn()
        seconds = time.perf_counter() - started
    finally:
        context.setLocalProperty("spark.jobGroup.id", None)
    return seconds, len(context.statusTracker().getJobIdsForGroup(label)), results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--profile", default="local")
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="bench-quality-")
    cfg = load_config(
        args.profile, [f"paths.root={root}", "spark.log_level=ERROR", "spark.ui_enabled=false"]
    )
    spark = build_session(cfg, "bench quality")
    contract = CONTRACTS[TABLE]
    pending = sales_lines(spark, args.rows).persist(StorageLevel.MEMORY_AND_DISK)
    pending.count()
    rows = with_metadata(pending, contract, "bench")
    specs = [s.resolved({"bronze.online_retail_raw": args.rows}) for s in load_suite(contract)]

    def run(engine: str) -> list[ExpectationResult]:
        return validate(rows, contract, specs, engine=engine)

    run("spark")  # warm-up: JIT, GX imports
    print(f"rows={args.rows} expectations={len(specs)} table={TABLE}")
    print("repeat  great_expectations_s  spark_s  ratio  gx_jobs  spark_jobs")
    outcomes: dict[str, list[ExpectationResult]] = {}
    for i in range(1, args.repeats + 1):
        # Alternate which engine goes first, so neither always finds the cache warmer.
        order = ("great_expectations", "spark") if i % 2 else ("spark", "great_expectations")
        measured = {}
        for engine in order:
            seconds, jobs, outcomes[engine] = timed(spark, f"{engine}-{i}", lambda e=engine: run(e))
            measured[engine] = (seconds, jobs)
        (gx_s, gx_jobs), (spark_s, spark_jobs) = measured["great_expectations"], measured["spark"]
        print(
            f"{i:6d}  {gx_s:20.2f}  {spark_s:7.2f}  {gx_s / spark_s:5.1f}  "
            f"{gx_jobs:7d}  {spark_jobs:10d}"
        )
    same = outcomes["spark"] == outcomes["great_expectations"]
    failed = [r.describe() for r in outcomes["spark"] if not r.success]
    print(f"same results from both engines: {same}; failed expectations: {failed or 'none'}")
    pending.unpersist()
    spark.stop()


if __name__ == "__main__":
    main()

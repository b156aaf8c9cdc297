"""Cleanse: bronze -> silver for every source that has landed, behind the quality gates.

Each source has a `Cleanser`: the bronze table it conserves, any lookup tables it reads,
and a function returning its silver outputs, its quarantined rows and the exact duplicates
it removed (`Cleansed`). Conservation, per source:
bronze rows = rows in the source's conserved silver outputs + quarantined at cleanse +
exact duplicates removed. Tables derived from those outputs (dimensions such as
`silver.customers`) are written too but are not part of the count.
"""

from __future__ import annotations

import logging
from datetime import datetime

from pyspark import StorageLevel
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from retail_lake.cleansing import CleanseEnv
from retail_lake.quarantine import QUARANTINE
from retail_lake.runner import Conservation, JobContext, JobResult, Output

log = logging.getLogger(__name__)


def _count(df: DataFrame, cached: list[DataFrame]) -> int:
    df.persist(StorageLevel.MEMORY_AND_DISK)
    cached.append(df)
    return df.count()


def run(ctx: JobContext) -> JobResult:
    """The cleanse job: each landed source's bronze table into its silver tables.

    Reads the bronze table of each registered cleanser (`retail_lake.registry.CLEANSERS`)
    and the lookup tables it needs: bronze.rossmann_sales_raw, bronze.rossmann_stores_raw,
    bronze.rossmann_plans_raw, bronze.online_retail_raw, bronze.countries_raw,
    bronze.places_raw, bronze.store_locations_raw and bronze.fashion_mnist_raw. Merges
    into silver.store_daily_sales, silver.stores, silver.store_day_plans,
    silver.transactions, silver.returns, silver.customers, silver.products,
    silver.countries, silver.places, silver.store_locations and silver.product_images
    (a row no longer produced is retired), and the rows a rule rejected into
    silver.quarantine. A source not ingested yet is skipped with a warning; one whose inputs,
    settings and code did not change since its last successful run is skipped as a unit
    (`JobContext.unchanged`).

    Args:
        ctx: the run's context, given by the runner.

    Returns:
        The silver and quarantine outputs, unwritten, and for each source the check
        bronze rows = silver + quarantined + duplicates removed.

    Example:
        From the command line::

            retail-lake run cleanse
            retail-lake run cleanse --full   # rebuild every source, compare rows by content

        From Python:

        >>> from retail_lake.registry import JOBS, run_job
        >>> ctx, writes = run_job(spark, cfg, "cleanse", JOBS["cleanse"])
        >>> {table: w.rows_changed for table, w in writes.items()}
    """
    from retail_lake.privacy import key_id as privacy_key_id
    from retail_lake.privacy import load_key, pseudonymiser

    result = JobResult()

    def persist(df: DataFrame) -> DataFrame:
        result.cached.append(df.persist(StorageLevel.MEMORY_AND_DISK))
        return df

    key = load_key(ctx.cfg)
    env = CleanseEnv(datetime.utcnow(), ctx.cfg, pseudonymiser(key), persist)
    # A new pseudonymisation key changes silver's tokens: it is part of what shapes the rows.
    key_id = {"key": privacy_key_id(key)}
    quarantined: list[DataFrame] = []
    sources: list[str] = []
    for cleanser in ctx.components.cleansers:
        missing = [t for t in (cleanser.bronze, *cleanser.lookups) if not ctx.lake.exists(t)]
        if missing:
            log.warning(
                "cleanse: %s not ingested yet; skipping %s", ", ".join(missing), cleanser.source
            )
            continue
        unit = f"cleanse {cleanser.source}"
        if ctx.unchanged(unit, (cleanser.bronze, *cleanser.lookups), key_id, dated=False):
            continue
        frames = {t: ctx.read(t) for t in (cleanser.bronze, *cleanser.lookups)}
        cleansed = cleanser.fn(frames, env)
        n_bronze = _count(frames[cleanser.bronze], result.cached)
        counted = {f"{t}_rows": _count(df, result.cached) for t, df in cleansed.outputs.items()}
        counted["quarantined"] = _count(cleansed.quarantine, result.cached)
        counted["duplicates_removed"] = _count(cleansed.duplicates, result.cached)
        result.rows_read[cleanser.bronze] = n_bronze
        result.conservation.append(
            Conservation(
                f"cleanse {cleanser.source}: bronze rows = silver + quarantined + "
                "duplicates removed",
                {"bronze_rows": n_bronze},
                counted,
            )
        )
        log.info("cleanse %s: %d bronze -> %s", cleanser.source, n_bronze, counted)
        # Silver is rebuilt from the whole bronze table: a row no longer produced (a rule
        # tightened or loosened, a bronze row gone) is retired, not left behind.
        for table, df in {**cleansed.outputs, **cleansed.derived}.items():
            result.outputs.append(Output(table, df, mode="merge", unit=unit, retire="true"))
        quarantined.append(_own_source(cleansed.quarantine, cleanser.source))
        sources.append(cleanser.source)
    if quarantined:
        union = quarantined[0]
        for q in quarantined[1:]:
            union = union.unionByName(q)
        # The cleanse-stage rows of the sources cleansed now are theirs (ingest's rows and
        # the skipped sources' rows are untouched).
        owned = (F.col("stage") == "cleanse") & F.col("source").isin(sources)
        result.outputs.append(Output(QUARANTINE, union, mode="merge", retire=owned))
    return result


def _own_source(quarantine: DataFrame, source: str) -> DataFrame:
    """`quarantine` with a check that each row names `source` at the cleanse stage: the
    rows it retires are found by that name (failing the job, in the same pass, otherwise)."""
    ok = (F.col("source") == source) & (F.col("stage") == "cleanse")
    message = F.concat(
        F.lit(f"cleanse {source}: the quarantine row of "),
        F.coalesce(F.col("_source_file"), F.lit("null")),
        F.lit(" line "),
        F.coalesce(F.col("_line_number").cast("string"), F.lit("null")),
        F.lit(" (rule "),
        F.coalesce(F.col("rule"), F.lit("null")),
        F.lit(") names source "),
        F.coalesce(F.col("source"), F.lit("null")),
        F.lit(", stage "),
        F.coalesce(F.col("stage"), F.lit("null")),
    )
    return quarantine.withColumn(
        "source", F.when(ok, F.col("source")).otherwise(F.raise_error(message))
    )

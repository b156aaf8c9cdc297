"""Cleanse: bronze -> silver for every source that has landed, behind the quality gates.

Conservation, per source: bronze rows = rows in silver + quarantined at cleanse +
exact duplicates removed.
"""

from __future__ import annotations

import logging
from datetime import datetime

from pyspark import StorageLevel
from pyspark.sql import DataFrame

from retail_lake.forecasting import cleanse as rossmann
from retail_lake.runner import Conservation, JobContext, JobResult, Output

log = logging.getLogger(__name__)

QUARANTINE = "silver.quarantine"

# source name -> (bronze table, silver table, cleanse function)
CLEANSERS = {
    rossmann.SALES_SOURCE: (
        "bronze.rossmann_sales_raw",
        "silver.store_daily_sales",
        rossmann.cleanse_sales,
    ),
    rossmann.STORES_SOURCE: (
        "bronze.rossmann_stores_raw",
        "silver.stores",
        rossmann.cleanse_stores,
    ),
}


def _count(df: DataFrame, cached: list[DataFrame]) -> int:
    df.persist(StorageLevel.MEMORY_AND_DISK)
    cached.append(df)
    return df.count()


def run(ctx: JobContext) -> JobResult:
    """The cleanse job: each landed source's bronze table into its silver table."""
    at = datetime.utcnow()
    result = JobResult()
    quarantined: list[DataFrame] = []
    for source, (bronze_name, silver_name, cleanse) in CLEANSERS.items():
        if not ctx.lake.exists(bronze_name):
            log.warning("cleanse: %s has not been ingested yet; skipping %s", bronze_name, source)
            continue
        bronze = ctx.read(bronze_name)
        silver, quarantine, duplicates = cleanse(bronze, at)
        n_bronze = _count(bronze, result.cached)
        n_silver, n_quarantine, n_dupes = (
            _count(df, result.cached) for df in (silver, quarantine, duplicates)
        )
        result.rows_read[bronze_name] = n_bronze
        result.conservation.append(
            Conservation(
                f"cleanse {source}: bronze rows = silver + quarantined + duplicates removed",
                {"bronze_rows": n_bronze},
                {
                    "silver_rows": n_silver,
                    "quarantined": n_quarantine,
                    "duplicates_removed": n_dupes,
                },
            )
        )
        log.info(
            "cleanse %s: %d bronze -> %d silver, %d quarantined, %d duplicates",
            source,
            n_bronze,
            n_silver,
            n_quarantine,
            n_dupes,
        )
        result.outputs.append(Output(silver_name, silver, mode="merge"))
        quarantined.append(quarantine)
    if quarantined:
        union = quarantined[0]
        for q in quarantined[1:]:
            union = union.unionByName(q)
        result.outputs.append(Output(QUARANTINE, union, mode="merge"))
    return result

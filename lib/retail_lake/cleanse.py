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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from pyspark import StorageLevel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from retail_lake.config import Config
from retail_lake.runner import Conservation, JobContext, JobResult, Output

log = logging.getLogger(__name__)

QUARANTINE = "silver.quarantine"


@dataclass(frozen=True)
class CleanseEnv:
    """What a cleanse function may use besides its bronze frames."""

    at: datetime
    cfg: Config
    # Column -> Column: the keyed pseudonym (HMAC-SHA256) of a personal identifier.
    pseudonymise: Callable[[Column], Column]
    # Caches an intermediate frame several outputs share; released when the run ends.
    persist: Callable[[DataFrame], DataFrame] = lambda df: df


@dataclass(frozen=True)
class Cleansed:
    """The result of cleansing one source."""

    outputs: Mapping[str, DataFrame]  # silver table -> rows; every bronze row lands in one
    quarantine: DataFrame
    duplicates: DataFrame
    derived: Mapping[str, DataFrame] = field(default_factory=dict)  # not counted


@dataclass(frozen=True)
class Cleanser:
    """How one source is cleansed: `fn(frames, env)`; `frames` holds bronze and lookups."""

    source: str
    bronze: str
    fn: Callable[[Mapping[str, DataFrame], CleanseEnv], Cleansed]
    lookups: tuple[str, ...] = ()


def _single(silver: str, fn: Callable) -> Callable[[Mapping[str, DataFrame], CleanseEnv], Cleansed]:
    """Adapts `fn(bronze, at) -> (silver rows, quarantine, duplicates)` of one bronze table."""

    def run(frames: Mapping[str, DataFrame], env: CleanseEnv) -> Cleansed:
        (bronze,) = frames.values()
        rows, quarantine, duplicates = fn(bronze, env.at)
        return Cleansed({silver: rows}, quarantine, duplicates)

    return run


def cleansers() -> list[Cleanser]:
    """Every source's cleanser, in the order the job runs them."""
    from retail_lake.forecasting import cleanse as rossmann
    from retail_lake.retail import cleanse as online_retail

    return [
        Cleanser(
            rossmann.SALES_SOURCE,
            "bronze.rossmann_sales_raw",
            _single("silver.store_daily_sales", rossmann.cleanse_sales),
        ),
        Cleanser(
            rossmann.STORES_SOURCE,
            "bronze.rossmann_stores_raw",
            _single("silver.stores", rossmann.cleanse_stores),
        ),
        Cleanser(
            rossmann.PLANS_SOURCE,
            "bronze.rossmann_plans_raw",
            _single("silver.store_day_plans", rossmann.cleanse_plans),
        ),
        Cleanser(online_retail.SOURCE, online_retail.BRONZE, online_retail.cleanse),
        *_optional_cleansers(),
    ]


def _optional_cleansers() -> list[Cleanser]:
    """Cleansers of the domains that provide a `CLEANSERS` list (geo, images)."""
    import importlib

    found: list[Cleanser] = []
    for module in ("retail_lake.geo.cleanse", "retail_lake.images.cleanse"):
        try:
            found.extend(importlib.import_module(module).CLEANSERS)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
    return found


def _count(df: DataFrame, cached: list[DataFrame]) -> int:
    df.persist(StorageLevel.MEMORY_AND_DISK)
    cached.append(df)
    return df.count()


def run(ctx: JobContext) -> JobResult:
    """The cleanse job: each landed source's bronze table into its silver tables."""
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
    for cleanser in cleansers():
        missing = [t for t in (cleanser.bronze, *cleanser.lookups) if not ctx.lake.exists(t)]
        if missing:
            log.warning(
                "cleanse: %s not ingested yet; skipping %s", ", ".join(missing), cleanser.source
            )
            continue
        unit = f"cleanse {cleanser.source}"
        if ctx.unchanged(unit, (cleanser.bronze, *cleanser.lookups), key_id):
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

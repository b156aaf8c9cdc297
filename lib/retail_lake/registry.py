"""The registry: every job, landing format, cleanser and table contract of retail-lake.

This is the one place a new piece is registered, and it imports what it lists (no import
strings): reading this file shows the whole lake. Nothing below it imports it; the runner
receives its part (`COMPONENTS`) when a job runs, so the import graph has no cycles
(`tests/test_layout.py` checks).

    layer      where it lives                                    registered here as
    landing    conf/base.yaml `sources` (or a profile)           FORMATS (how a file is read)
    bronze     retail_lake.sources.<source>.tables               CONTRACTS
    silver     retail_lake.sources.<source>.cleanse / .tables    CLEANSERS, CONTRACTS
    gold       retail_lake.<capability>.tables                   CONTRACTS
    ops        retail_lake.ops (the runner's own)                CONTRACTS
    jobs       retail_lake.<job module>.run                      JOBS

Example:
    >>> from retail_lake.registry import CONTRACTS, JOBS
    >>> CONTRACTS["silver.transactions"].keys
    ('line_id',)
    >>> list(JOBS)[:3]
    ['ingest', 'cleanse', 'features']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from typing import Any

from pyspark.sql import SparkSession

from retail_lake import cleanse, features, ingest, maintenance, ops, quarantine, runner
from retail_lake.config import Config, ConfigError
from retail_lake.contracts import Registry, TableContract, raw_table
from retail_lake.forecasting import score as forecast_job
from retail_lake.forecasting import tables as forecasting_tables
from retail_lake.forecasting import train as train_forecaster_job
from retail_lake.images import score as classify_images_job
from retail_lake.images import tables as image_tables
from retail_lake.images import train as train_image_classifier_job
from retail_lake.lake import WriteResult
from retail_lake.locations import score as score_locations_job
from retail_lake.locations import tables as location_tables
from retail_lake.recommend import abtest as recommend_abtest
from retail_lake.recommend import job as recommend_job
from retail_lake.recommend import model_tables as recommend_model_tables
from retail_lake.recommend import tables as recommend_feature_tables
from retail_lake.sources.fashion_mnist import cleanse as fashion_mnist
from retail_lake.sources.fashion_mnist import idx
from retail_lake.sources.fashion_mnist import tables as fashion_mnist_tables
from retail_lake.sources.geography import cleanse as geography
from retail_lake.sources.geography import tables as geography_tables
from retail_lake.sources.online_retail import cleanse as online_retail
from retail_lake.sources.online_retail import tables as online_retail_tables
from retail_lake.sources.rossmann import cleanse as rossmann
from retail_lake.sources.rossmann import tables as rossmann_tables

# --------------------------------------------------------------------------- jobs
JOBS: dict[str, Callable[[runner.JobContext], runner.JobResult]] = {
    "ingest": ingest.run,
    "cleanse": cleanse.run,
    "features": features.run,
    "train_forecaster": train_forecaster_job.run,
    "forecast": forecast_job.run,
    "score_locations": score_locations_job.run,
    "recommend": recommend_job.run,
    # Not in the default pipeline: it needs purchases after the published snapshot.
    "evaluate_recommendations": recommend_abtest.evaluate,
    "train_image_classifier": train_image_classifier_job.run,
    "classify_images": classify_images_job.run,
    # Every table, each keeping its contract's retention (`retail-lake vacuum` for options).
    "vacuum": maintenance.vacuum(),
    # OPTIMIZE and a VACUUM guarded by the versions models need (`maintain.*` settings).
    "maintain": maintenance.maintain(),
}

# Jobs whose results depend on a logical date / as-of snapshot (the Online Retail snapshot
# day: features' customer and product tables, and recommend; `recommend.as_of`).
TIME_DEPENDENT = frozenset({"features", "recommend"})


@dataclass(frozen=True)
class JobIO:
    """What a job reads and writes besides the run journal (ops.*, which every job writes).

    Table names, `layer.*` for every table of a layer, `model:<name>` for a registered model
    and `landing` for the landing folder. The scheduler's task dependencies are derived from
    these (`retail_lake.airflow_dag`); `tests/test_airflow_dag.py` checks them against the
    versions a pipeline run recorded in ops.job_runs.
    """

    reads: tuple[str, ...]
    writes: tuple[str, ...]


_FORECASTER = f"model:{forecast_job.MODEL_NAME}"
_CLASSIFIER = f"model:{classify_images_job.MODEL_NAME}"
_RECOMMENDER = f"model:{recommend_job.MODEL_NAME}"
_FORECAST_FEATURES = (forecasting_tables.SALES_WINDOWS, forecasting_tables.STORE_DAY_FEATURES)
JOB_IO: dict[str, JobIO] = {
    # ingest reads bronze for the files it holds (provenance) before appending new ones.
    "ingest": JobIO(("landing", "bronze.*"), ("bronze.*", quarantine.QUARANTINE)),
    "cleanse": JobIO(("bronze.*",), ("silver.*",)),
    "features": JobIO(
        ("silver.*",),
        (
            *_FORECAST_FEATURES,
            location_tables.CANDIDATES,
            recommend_feature_tables.CUSTOMER_FEATURES,
            recommend_feature_tables.PRODUCT_FEATURES,
            recommend_model_tables.CUSTOMER_INDEX,
            recommend_model_tables.PRODUCT_INDEX,
            recommend_model_tables.INTERACTIONS,
        ),
    ),
    "train_forecaster": JobIO(_FORECAST_FEATURES, (_FORECASTER,)),
    "forecast": JobIO(
        (_FORECASTER, *_FORECAST_FEATURES, rossmann_tables.STORE_DAY_PLANS, rossmann_tables.STORES),
        (forecasting_tables.SALES_FORECASTS,),
    ),
    "score_locations": JobIO(
        (location_tables.CANDIDATES, geography_tables.PLACES, geography_tables.STORE_LOCATIONS),
        (location_tables.SCORES,),
    ),
    "recommend": JobIO(
        (
            online_retail_tables.TRANSACTIONS,
            online_retail_tables.RETURNS,
            online_retail_tables.CUSTOMERS,
            online_retail_tables.PRODUCTS,
            recommend_model_tables.INTERACTIONS,
            recommend_model_tables.CUSTOMER_INDEX,
            recommend_model_tables.PRODUCT_INDEX,
        ),
        (
            recommend_model_tables.RECOMMENDATIONS,
            recommend_model_tables.SIMILAR_PRODUCTS,
            recommend_model_tables.AB_ASSIGNMENTS,
            _RECOMMENDER,
        ),
    ),
    "evaluate_recommendations": JobIO(
        (
            recommend_model_tables.AB_ASSIGNMENTS,
            recommend_model_tables.RECOMMENDATIONS,
            online_retail_tables.TRANSACTIONS,
        ),
        (recommend_model_tables.AB_RESULTS,),
    ),
    "train_image_classifier": JobIO((fashion_mnist_tables.SILVER_TABLE,), (_CLASSIFIER,)),
    "classify_images": JobIO(
        (_CLASSIFIER, fashion_mnist_tables.SILVER_TABLE), (image_tables.PREDICTIONS_TABLE,)
    ),
    # VACUUM changes no table's rows, but removes files older versions read: after the rest.
    "vacuum": JobIO(("*",), ()),
    "maintain": JobIO(("*",), ()),
}

# --------------------------------------------------------------------------- landing formats
# format name (`sources.<name>.format`) -> reader with the signature of `ingest.ingest_source`.
FORMATS: dict[str, Callable[..., Any]] = {
    "csv": ingest.ingest_source,
    "idx": idx.ingest_idx,
}

# --------------------------------------------------------------------------- cleansers
# bronze -> silver, one or more per source, in the order the cleanse job runs them.
CLEANSERS = (
    *rossmann.CLEANSERS,
    *online_retail.CLEANSERS,
    *geography.CLEANSERS,
    *fashion_mnist.CLEANSERS,
)

# --------------------------------------------------------------------------- contracts
CONTRACT_LIST: tuple[TableContract, ...] = (
    # bronze
    *rossmann_tables.BRONZE,
    *online_retail_tables.BRONZE,
    *geography_tables.BRONZE,
    *fashion_mnist_tables.BRONZE,
    # silver
    *rossmann_tables.SILVER,
    *online_retail_tables.SILVER,
    *geography_tables.SILVER,
    *fashion_mnist_tables.SILVER,
    quarantine.CONTRACT,
    # gold
    *forecasting_tables.GOLD,
    *location_tables.GOLD,
    *image_tables.GOLD,
    *recommend_feature_tables.FEATURE_TABLES,
    *recommend_model_tables.MODEL_TABLES,
    # ops
    *ops.OPS,
)
CONTRACTS = Registry(CONTRACT_LIST)

COMPONENTS = runner.Components(CONTRACTS, FORMATS, CLEANSERS)


class UnknownJobError(KeyError):
    """A job name that is not in `JOBS`."""

    def __str__(self) -> str:
        return f"unknown job {self.args[0]!r} (jobs: {', '.join(JOBS)})"


def resolve(name: str) -> Callable[[runner.JobContext], runner.JobResult]:
    """The job function registered as `name`.

    Raises:
        UnknownJobError: no such job (the message lists the jobs).
    """
    if name not in JOBS:
        raise UnknownJobError(name)
    return JOBS[name]


def components(cfg: Config) -> runner.Components:
    """`COMPONENTS` plus the bronze contract of each configured CSV source no module declares.

    A source added in the config alone (`sources.<name>` with its `table` and `columns`)
    gets a bronze contract derived from its declared columns: every column as text, under
    its name in snake case, with provenance (`contracts.raw_table`).
    """
    derived = [
        raw_table(spec["table"], f"sources.{name} ({spec['pattern']})", columns, _about(name))
        for name, spec, columns in _config_only_sources(cfg)
    ]
    if not derived:
        return COMPONENTS
    return runner.Components(Registry((*CONTRACT_LIST, *derived)), FORMATS, CLEANSERS)


def _about(name: str) -> str:
    return f"Source {name} as it arrived (declared in the config), every field as text."


def _config_only_sources(cfg: Config) -> list[tuple[str, dict, list[tuple[str, str]]]]:
    found = []
    for name in cfg.sources:
        spec = cfg.get(f"sources.{name}")
        if spec.get("format", "csv") != "csv" or spec.get("table") in CONTRACTS:
            continue
        columns = [(ingest.bronze_name(c), c) for c in spec["columns"]]
        names = [bronze for bronze, _ in columns]
        clashes = sorted({c for c, b in columns if names.count(b) > 1})
        if clashes:
            raise ConfigError(
                f"sources.{name}.columns: {clashes} map to the same bronze column name "
                "(names are snake_cased): rename them in the config"
            )
        found.append((name, spec, columns))
    return found


def run_job(
    spark: SparkSession,
    cfg: Config,
    job: str,
    fn: Callable[[runner.JobContext], runner.JobResult],
    run_date: date | None = None,
    params: dict[str, str] | None = None,
    parent_run_id: str | None = None,
) -> tuple[runner.JobContext, dict[str, WriteResult]]:
    """`runner.run_job` with this registry's components (and the config's own sources).

    Example:
        >>> from retail_lake.registry import JOBS, run_job
        >>> ctx, writes = run_job(spark, cfg, "ingest", JOBS["ingest"])
        >>> writes["bronze.online_retail_raw"].inserted
    """
    return runner.run_job(
        spark,
        cfg,
        job,
        fn,
        run_date,
        params,
        parent_run_id,
        components=components(cfg),
    )

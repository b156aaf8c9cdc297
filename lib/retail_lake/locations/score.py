"""Jobs: gold.location_candidates (part of `features`) and `score_locations`.

`score_locations` reads gold.location_candidates, silver.places and silver.store_locations at
recorded versions, scores every candidate with Huff's model (`retail_lake.locations.huff`)
and ranks them by net gain. It then runs the held-out check (conf: locations.holdout):
a seeded 10% of the real existing stores are removed, their sites are scored as candidates
against the remaining stores together with the usual candidates, and the AUC of held-out
sites against the other candidates (and their median percentile) is recorded in
ops.model_metrics. Tune parameters with a different seed than the one reported.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from retail_lake.lake import local_frame
from retail_lake.locations.candidates import (
    CandidateSpec,
    candidate_features,
    candidate_sites,
    demand_points,
    existing_stores,
    place_sites,
    scope,
)
from retail_lake.locations.huff import HuffParams, score
from retail_lake.locations.tables import CANDIDATES, SCORES
from retail_lake.ops import MODEL_METRICS
from retail_lake.runner import JobContext, JobError, JobResult, Output
from retail_lake.sources.geography.tables import PLACES, STORE_LOCATIONS
from retail_lake.training.tracking import metric_rows

log = logging.getLogger(__name__)

MODEL_NAME = "huff"


@dataclass(frozen=True)
class LocationConfig:
    """The `locations` section, checked."""

    countries: tuple[str, ...]
    candidates: CandidateSpec
    huff: HuffParams
    holdout_enabled: bool
    holdout_fraction: float
    holdout_seed: int

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> LocationConfig:
        """Reads `cfg["locations"]`; a JobError for a bad fraction or country code."""
        holdout = section.get("holdout") or {}
        fraction = float(holdout.get("fraction", 0.1))
        if not 0 < fraction < 1:
            raise JobError(f"locations.holdout.fraction must be in (0, 1), got {fraction}")
        countries = tuple(section.get("countries") or ())
        bad = [c for c in countries if not (isinstance(c, str) and len(c) == 2 and c.isalpha())]
        if bad:
            raise JobError(
                f"locations.countries must be ISO alpha-2 codes, got {bad!r} (in YAML, quote "
                "NO: a bare NO reads as false)"
            )
        return cls(
            countries=countries,
            candidates=CandidateSpec.from_config(section.get("candidates") or {}),
            huff=HuffParams.from_config(section.get("huff") or {}),
            holdout_enabled=bool(holdout.get("enabled", True)),
            holdout_fraction=fraction,
            holdout_seed=int(holdout.get("seed", 2017)),
        )


def model_version(params: HuffParams) -> str:
    """The Huff model's version: `huff-` and a hash of its parameters."""
    text = json.dumps(params.as_map(), sort_keys=True)
    return "huff-" + hashlib.sha256(text.encode()).hexdigest()[:12]


def _inputs(ctx: JobContext) -> tuple[DataFrame, DataFrame]:
    for table in (PLACES, STORE_LOCATIONS):
        if not ctx.lake.exists(table):
            raise JobError(f"{ctx.job}: {table} does not exist; run ingest and cleanse first")
    return ctx.read(PLACES), ctx.read(STORE_LOCATIONS)


def _versions(ctx: JobContext, tables: tuple[str, ...]) -> F.Column:
    return F.create_map(
        *[x for t in tables for x in (F.lit(t), F.lit(ctx.versions_read[t]).cast("long"))]
    )


def _site_columns(table_names: bool = True) -> list[F.Column]:
    """The site columns, named as in the tables (latitude) or as the Huff code wants (lat)."""
    renames = (("lat", "latitude"), ("lon", "longitude"))
    coords = [F.col(a).alias(b) if table_names else F.col(b).alias(a) for a, b in renames]
    return [F.col("candidate_id"), F.col("kind"), F.col("name"), *coords, "country_code", "region"]


# ----------------------------------------------------------------------------- candidates
def build_candidates(ctx: JobContext) -> list[Output]:
    """gold.location_candidates, or nothing when the geography was never loaded."""
    if not (ctx.lake.exists(PLACES) and ctx.lake.exists(STORE_LOCATIONS)):
        log.warning(
            "[%s] features: %s skipped: %s and %s are needed (land the GeoNames and store "
            "directory files, then run ingest and cleanse)",
            ctx.run_id,
            CANDIDATES,
            PLACES,
            STORE_LOCATIONS,
        )
        return []
    unit = "features location_candidates"
    if ctx.unchanged(unit, (PLACES, STORE_LOCATIONS), dated=False):
        return []
    conf = LocationConfig.from_config(ctx.cfg["locations"])
    places, stores_raw = _inputs(ctx)
    countries = scope(stores_raw, conf.countries)
    log.info("[%s] location scope: %d countries", ctx.run_id, len(countries))
    points = demand_points(places, countries)
    stores = existing_stores(stores_raw, countries, conf.huff)
    spec = conf.candidates
    sites = candidate_sites(ctx.spark, points, stores, spec, float(spec.max_radius_km))
    features = candidate_features(sites, points, stores, spec, conf.huff.max_km)
    rows = features.select(
        *_site_columns(),
        "population_within_km",
        "stores_within_km",
        "nearest_store_km",
        _versions(ctx, (PLACES, STORE_LOCATIONS)).alias("input_versions"),
    )
    return [Output(CANDIDATES, rows, unit=unit)]


# ----------------------------------------------------------------------------- scoring
def ranked(scores: DataFrame) -> DataFrame:
    """Ranks by net gain (then captured demand, then id, so ties order deterministically)."""
    order = [F.col("net_gain").desc(), F.col("captured_demand").desc(), F.col("candidate_id")]

    def rank(*by: str) -> F.Column:
        frame = Window.partitionBy(*by).orderBy(*order) if by else Window.orderBy(*order)
        return F.row_number().over(frame)

    return (
        scores.withColumn("rank_overall", rank())
        .withColumn("rank_in_country", rank("country_code"))
        .withColumn("rank_in_region", rank("country_code", "region"))
    )


def _rounded(df: DataFrame) -> DataFrame:
    # Sums over pairs may come out in a different order on a re-run: rounding keeps a
    # re-run's rows equal (a person-level 1e-6 is far below any meaningful difference).
    return df.withColumns(
        {
            c: F.round(c, 6)
            for c in ("captured_demand", "cannibalised_demand", "net_gain", "demand_in_reach")
        }
    )


def run(ctx: JobContext) -> JobResult:
    """The score_locations job: every candidate site scored and ranked by Huff's model.

    Reads gold.location_candidates (run features first), silver.places and
    silver.store_locations. Writes gold.location_scores (captured and cannibalised demand,
    net gain, ranks overall, in the country and in the region) and appends the held-out
    check's metrics to ops.model_metrics (`locations.holdout`).

    Skipped as a unit of work (`JobContext.unchanged`) when the candidates, places, stores,
    settings and code are those of its last successful run and nobody wrote to the scores
    since: a re-run then reads nothing and records no second set of held-out metrics.

    Args:
        ctx: the run's context, given by the runner.

    Returns:
        The gold.location_scores and ops.model_metrics outputs, unwritten.

    Raises:
        JobError: an input table is missing, or the `locations` settings are invalid.

    Example:
        From the command line::

            retail-lake run score_locations
            retail-lake run score_locations --set locations.holdout.seed=7

        From Python:

        >>> from retail_lake.registry import JOBS, run_job
        >>> ctx, writes = run_job(spark, cfg, "score_locations", JOBS["score_locations"])
        >>> ctx.lake.read("gold.location_scores").orderBy("rank_overall").show(10)
    """
    conf = LocationConfig.from_config(ctx.cfg["locations"])
    if not ctx.lake.exists(CANDIDATES):
        raise JobError(f"score_locations: {CANDIDATES} does not exist; run features first")
    unit = "score_locations"
    if ctx.unchanged(unit, (CANDIDATES, PLACES, STORE_LOCATIONS), dated=False):
        return JobResult()
    places, stores_raw = _inputs(ctx)
    candidates = ctx.read(CANDIDATES)
    countries = scope(stores_raw, conf.countries)
    points = demand_points(places, countries)
    stores = existing_stores(stores_raw, countries, conf.huff)
    sites = candidates.select(*_site_columns(table_names=False)).persist()
    params = conf.huff
    scored = _rounded(score(sites.select("candidate_id", "lat", "lon"), points, stores, params))
    version = model_version(params)
    rows = ranked(sites.join(scored, on="candidate_id", how="inner")).select(
        *_site_columns(),
        "captured_demand",
        "cannibalised_demand",
        "net_gain",
        "demand_in_reach",
        "points_in_reach",
        "rank_overall",
        "rank_in_country",
        "rank_in_region",
        "top_points",
        F.lit(MODEL_NAME).alias("model_name"),
        F.lit(version).alias("model_version"),
        F.create_map(*[F.lit(x) for kv in params.as_map().items() for x in kv]).alias("parameters"),
        _versions(ctx, (CANDIDATES, PLACES, STORE_LOCATIONS)).alias("input_versions"),
    )
    n_candidates = candidates.count()
    outputs = [Output(SCORES, rows, unit=unit)]
    metrics = (
        holdout_check(points, stores, conf, conf.holdout_seed) if conf.holdout_enabled else None
    )
    if conf.holdout_enabled and metrics is None:
        log.warning(
            "[%s] held-out check skipped: the seeded %.0f%% draw of the existing stores in "
            "scope holds no store, or leaves no other candidate (too few stores)",
            ctx.run_id,
            conf.holdout_fraction * 100,
        )
    if metrics is not None:
        log.info(
            "[%s] held-out check (seed %d): %d held-out sites among %d candidates: AUC by net "
            "gain %.3f, by captured demand %.3f; median percentile %.1f / %.1f",
            ctx.run_id,
            conf.holdout_seed,
            metrics["holdout_sites"],
            metrics["candidates"],
            metrics["auc_net_gain"],
            metrics["auc_captured_demand"],
            metrics["median_percentile_net_gain"],
            metrics["median_percentile_captured_demand"],
        )
        rows_m = metric_rows(
            ctx.run_id,
            MODEL_NAME,
            version,
            None,
            {f"holdout_seed_{conf.holdout_seed}": metrics},
            dict(ctx.versions_read),
        )
        outputs.append(
            Output(
                MODEL_METRICS,
                local_frame(ctx.spark, rows_m, ctx.registry[MODEL_METRICS].spark_schema()),
                mode="append",
            )
        )
    return JobResult(
        outputs=outputs,
        rows_read={CANDIDATES: n_candidates},
        cached=[sites],
    )


# ----------------------------------------------------------------------------- held-out check
def holdout_split(stores: DataFrame, fraction: float, seed: int) -> tuple[DataFrame, DataFrame]:
    """(kept, held out): a store is held out when a seeded hash of its id falls below
    `fraction` (stable whatever the partitioning)."""
    u = F.pmod(F.xxhash64(F.lit(seed), F.col("store_id")), F.lit(1_000_000)) / F.lit(1e6)
    flagged = stores.withColumn("_held", u < F.lit(fraction))
    return flagged.where(~F.col("_held")).drop("_held"), flagged.where("_held").drop("_held")


def auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Mann-Whitney AUC: P(a positive outscores a negative), ties counting one half."""
    ranks = pd.Series(scores).rank(method="average").to_numpy()
    n_pos = int(positive.sum())
    n_neg = len(scores) - n_pos
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs positives and negatives")
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def holdout_check(
    points: DataFrame, stores: DataFrame, conf: LocationConfig, seed: int
) -> dict[str, float] | None:
    """Scores held-out real store sites among the usual candidates; returns the metrics
    (None when the draw holds no store or leaves no other candidate)."""
    kept, held = holdout_split(stores, conf.holdout_fraction, seed)
    kept = kept.persist()
    try:
        usual = place_sites(points, kept, conf.candidates).select("candidate_id", "lat", "lon")
        held_sites = held.select(
            F.concat(F.lit("holdout-"), F.col("store_id")).alias("candidate_id"), "lat", "lon"
        )
        sites = usual.unionByName(held_sites)
        scored = score(sites, points, kept, conf.huff).select(
            "candidate_id", "net_gain", "captured_demand"
        )
        pdf = scored.toPandas()
    finally:
        kept.unpersist()
    positive = pdf["candidate_id"].str.startswith("holdout-")
    if not positive.any() or positive.all():
        return None
    return holdout_metrics(pdf)


def holdout_metrics(pdf: pd.DataFrame) -> dict[str, float]:
    """AUC and median percentile of the held-out sites (ids holdout-*) by each score."""
    positive = pdf["candidate_id"].str.startswith("holdout-").to_numpy()
    out: dict[str, float] = {
        "holdout_sites": float(positive.sum()),
        "candidates": float(len(pdf)),
    }
    for col in ("net_gain", "captured_demand"):
        values = pdf[col].to_numpy(dtype=float)
        out[f"auc_{col}"] = auc(values, positive)
        pct = pd.Series(values).rank(method="average", pct=True).to_numpy() * 100
        out[f"median_percentile_{col}"] = float(np.median(pct[positive]))
    return out

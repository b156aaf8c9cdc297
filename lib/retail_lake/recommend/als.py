"""ALS with implicit preferences, popularity baselines, and their evaluation on a time split.

A split at day `start` (`split_at`): the training interactions are built from the lines
before `start`; a customer's relevant items are the products they bought in [start, end]
that they had not bought before (`repeats=False`, matching the exclusion of past purchases
from recommendations), or every product bought then (`repeats=True`). Only customers with
history in both periods are evaluated.

Every recommender here returns (user, item, score, rank) lists from the blocked top-N
(`retail_lake.recommend.topn`): ALS from its factors; the popularity baselines as rank-1 (or
per-country) "factors", so they exclude past purchases exactly as ALS does and ties break
the same way (by item index).

- `global_popularity`: distinct buyers over the whole training period.
- `recent_popularity`: distinct buyers over its last `recent_days` days.
- `country_popularity`: distinct buyers in the customer's country (the country of most of
  their training lines), then global popularity for the rest of the list.
"""

from __future__ import annotations

import itertools
import logging
import time
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from pyspark.ml.recommendation import ALS, ALSModel
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from retail_lake.recommend.interactions import (
    CUSTOMER,
    CUSTOMER_IDX,
    PRODUCT,
    PRODUCT_IDX,
    interactions,
    personal_lines,
    with_indices,
)
from retail_lake.recommend.metrics import ranking_metrics
from retail_lake.recommend.topn import ITEM, USER, top_n

log = logging.getLogger(__name__)

BASELINES = ("global_popularity", "recent_popularity", "country_popularity")


class RecommendConfigError(ValueError):
    """A `recommend.*` setting that cannot be used."""


@dataclass(frozen=True)
class Params:
    rank: int
    reg_param: float
    alpha: float

    def label(self) -> str:
        return f"rank={self.rank},reg_param={self.reg_param:g},alpha={self.alpha:g}"

    def as_dict(self) -> dict[str, float]:
        return {"rank": self.rank, "reg_param": self.reg_param, "alpha": self.alpha}


@dataclass(frozen=True)
class RecommendConfig:
    as_of: str
    preference: str
    half_life_days: float
    test_days: int
    validation_days: int
    repeats: bool
    max_iter: int
    seed: int
    search: tuple[Params, ...]
    k: int
    top_n: int
    exclude_purchased: bool
    similar_k: int
    batch_size: int
    require_beat_baselines: bool
    incremental_min_pairs: int = 1_000_000
    segments: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_config(cls, section: dict[str, Any]) -> RecommendConfig:
        split = section.get("split") or {}
        als = section.get("als") or {}
        grid = als.get("search") or {}
        values = {}
        for key, cast in (("rank", int), ("reg_param", float), ("alpha", float)):
            raw = grid.get(key)
            if not raw:
                raise RecommendConfigError(f"recommend.als.search.{key} needs at least one value")
            values[key] = [cast(v) for v in raw]
            if any(v <= 0 and key != "reg_param" for v in values[key]) or any(
                v < 0 for v in values[key]
            ):
                raise RecommendConfigError(
                    f"recommend.als.search.{key} values must be positive, got {raw!r}"
                )
        search = tuple(
            Params(r, g, a)
            for r, g, a in itertools.product(values["rank"], values["reg_param"], values["alpha"])
        )
        conf = cls(
            as_of=str(section.get("as_of") or ""),
            preference=str(section.get("preference", "log_invoices")),
            half_life_days=float(section.get("half_life_days", 0.0)),
            test_days=int(split.get("test_days", 30)),
            validation_days=int(split.get("validation_days", 30)),
            repeats=bool(split.get("repeats", False)),
            max_iter=int(als.get("max_iter", 10)),
            seed=int(als.get("seed", 7)),
            search=search,
            k=int(section.get("k", 10)),
            top_n=int(section.get("top_n", 20)),
            exclude_purchased=bool(section.get("exclude_purchased", True)),
            similar_k=int(section.get("similar_k", 10)),
            batch_size=int(section.get("batch_size", 1024)),
            require_beat_baselines=bool(section.get("require_beat_baselines", True)),
            incremental_min_pairs=int(section.get("incremental_min_pairs", 1_000_000)),
            segments=dict(section.get("segments") or {}),
        )
        if conf.half_life_days < 0:
            raise RecommendConfigError("recommend.half_life_days must be >= 0 (0: no decay)")
        for name in ("test_days", "validation_days", "max_iter", "k", "top_n", "similar_k"):
            if getattr(conf, name) <= 0:
                key = f"split.{name}" if name.endswith("_days") else name
                raise RecommendConfigError(f"recommend.{key} must be positive")
        if conf.top_n < conf.k:
            raise RecommendConfigError(
                f"recommend.top_n ({conf.top_n}) must be at least recommend.k ({conf.k})"
            )
        return conf


# ----------------------------------------------------------------------------- split
@dataclass
class Split:
    """Training interactions before `start` and the relevant items in [start, end]."""

    start: date
    end: date
    train: DataFrame  # user, item, preference (+ customer_token, stock_code)
    relevant: DataFrame  # user, item
    users: DataFrame  # user: the evaluated customers
    train_lines: DataFrame  # known customers' product lines before start (with user, item)
    catalogue: int  # products in the training interactions

    def cache(self) -> Split:
        for df in (self.train, self.relevant, self.users):
            df.persist()
        return self

    def unpersist(self) -> None:
        for df in (self.train, self.relevant, self.users):
            df.unpersist()


def split_at(
    sales: DataFrame,
    returns: DataFrame,
    customer_index: DataFrame,
    product_index: DataFrame,
    start: date,
    end: date,
    conf: RecommendConfig,
) -> Split:
    """The split at `start` (see the module docstring)."""
    before = start - timedelta(days=1)
    train = with_indices(
        interactions(sales, returns, None, before, conf.preference), customer_index, product_index
    ).select(
        F.col(CUSTOMER_IDX).alias(USER),
        F.col(PRODUCT_IDX).alias(ITEM),
        decayed(conf, start).alias("preference"),
        CUSTOMER,
        PRODUCT,
    )
    later = (
        with_indices(
            personal_lines(sales, start, end).select(CUSTOMER, PRODUCT).distinct(),
            customer_index,
            product_index,
        )
        .select(F.col(CUSTOMER_IDX).alias(USER), F.col(PRODUCT_IDX).alias(ITEM))
        .join(train.select(USER).distinct(), on=USER, how="left_semi")
    )
    if not conf.repeats:
        later = later.join(train.select(USER, ITEM), on=[USER, ITEM], how="left_anti")
    lines = with_indices(personal_lines(sales, None, before), customer_index, product_index)
    train_lines = lines.withColumnRenamed(CUSTOMER_IDX, USER).withColumnRenamed(PRODUCT_IDX, ITEM)
    catalogue = train.select(ITEM).distinct().count()
    return Split(
        start=start,
        end=end,
        train=train,
        relevant=later,
        users=later.select(USER).distinct(),
        train_lines=train_lines,
        catalogue=catalogue,
    )


def decayed(conf: RecommendConfig, now: date) -> Column:
    """The preference ALS trains on: `preference` halved every `half_life_days` between the
    last purchase and `now` (no decay with 0). Shopping is seasonal: what a customer bought
    lately says more about the next weeks than what they bought a year ago."""
    if not conf.half_life_days:
        return F.col("preference")
    age = F.datediff(F.lit(now), F.to_date("last_purchase_at")).cast("double")
    return F.col("preference") * F.pow(F.lit(0.5), age / F.lit(conf.half_life_days))


# ----------------------------------------------------------------------------- models
def fit(
    train: DataFrame, params: Params, conf: RecommendConfig, blocks: int | None = None
) -> ALSModel:
    """ALS with implicit preferences on (user, item, preference)."""
    blocks = blocks or int(train.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    als = ALS(
        rank=params.rank,
        maxIter=conf.max_iter,
        regParam=params.reg_param,
        alpha=params.alpha,
        implicitPrefs=True,
        userCol=USER,
        itemCol=ITEM,
        ratingCol="preference",
        coldStartStrategy="drop",
        seed=conf.seed,
        numUserBlocks=blocks,
        numItemBlocks=blocks,
        # No checkpoint directory is set: lineage stays short at these iteration counts.
        checkpointInterval=-1,
    )
    started = time.monotonic()
    model = als.fit(train.select(USER, ITEM, "preference"))
    log.info("ALS %s fitted in %.1fs", params.label(), time.monotonic() - started)
    return model


def als_top_n(
    model: ALSModel, users: DataFrame, n: int, exclude: DataFrame | None, batch_size: int
) -> DataFrame:
    """The ALS lists of `users` (user column), past `exclude` pairs masked."""
    factors = model.userFactors.join(users.select(F.col(USER).alias("id")), on="id", how="inner")
    return top_n(
        factors,
        model.itemFactors,
        n,
        exclude=exclude,
        batch_size=batch_size,
        user_col="id",
        item_col="id",
    )


def _popularity(lines: DataFrame) -> DataFrame:
    """item, buyers (distinct customers)."""
    return lines.groupBy(ITEM).agg(F.countDistinct(USER).cast("double").alias("buyers"))


def popularity_top_n(
    scores: DataFrame, users: DataFrame, n: int, exclude: DataFrame | None, batch_size: int
) -> DataFrame:
    """The same list for every user: items by `score` (item, score), past pairs masked."""
    items = scores.select(F.col(ITEM), F.array(F.col("score").cast("double")).alias("features"))
    ones = users.select(USER, F.array(F.lit(1.0)).alias("features"))
    return top_n(ones, items, n, exclude=exclude, batch_size=batch_size)


def user_countries(train_lines: DataFrame) -> DataFrame:
    """user, country: the country of most of the customer's lines (ties: the latest line's)."""
    counts = train_lines.groupBy(USER, "country").agg(
        F.count(F.lit(1)).alias("lines"), F.max("invoice_date").alias("latest")
    )
    best = Window.partitionBy(USER).orderBy(
        F.col("lines").desc(), F.col("latest").desc(), F.col("country")
    )
    return (
        counts.withColumn("_r", F.row_number().over(best)).where("_r = 1").select(USER, "country")
    )


def country_top_n(
    train_lines: DataFrame, users: DataFrame, n: int, exclude: DataFrame | None, batch_size: int
) -> DataFrame:
    """Popularity in the customer's country, then global popularity.

    Factors: a user is the one-hot vector of their country plus a constant 1; an item holds
    its buyers in each country and, in the last slot, its global buyers scaled below one
    buyer, so a country's products come first and the global order settles the rest.
    """
    countries = sorted(r[0] for r in train_lines.select("country").distinct().collect())
    slot = {c: i for i, c in enumerate(countries)}
    width = len(countries) + 1
    overall = _popularity(train_lines)
    top = overall.agg(F.max("buyers")).first()[0] or 0.0
    by_country = train_lines.groupBy(ITEM, "country").agg(
        F.countDistinct(USER).cast("double").alias("buyers")
    )
    spark = train_lines.sparkSession
    slots = spark.createDataFrame(list(slot.items()), "country string, slot int")
    per_item = (
        by_country.join(F.broadcast(slots), on="country", how="inner")
        .groupBy(ITEM)
        .agg(F.map_from_entries(F.collect_list(F.struct("slot", "buyers"))).alias("m"))
        .join(overall, on=ITEM, how="inner")
    )
    vector = [F.coalesce(F.col("m")[i], F.lit(0.0)) for i in range(width - 1)]
    items = per_item.select(
        ITEM, F.array(*vector, F.col("buyers") / F.lit(top + 1.0)).alias("features")
    )
    homes = user_countries(train_lines).join(F.broadcast(slots), on="country", how="inner")
    onehot = [F.when(F.col("slot") == i, 1.0).otherwise(0.0) for i in range(width - 1)]
    user_vectors = users.join(homes, on=USER, how="left").select(
        USER, F.array(*onehot, F.lit(1.0)).alias("features")
    )
    return top_n(user_vectors, items, n, exclude=exclude, batch_size=batch_size)


def baseline_top_n(
    name: str, split: Split, n: int, exclude: DataFrame | None, conf: RecommendConfig
) -> DataFrame:
    lines = split.train_lines
    if name == "global_popularity":
        scores = _popularity(lines).withColumnRenamed("buyers", "score")
    elif name == "recent_popularity":
        since = split.start - timedelta(days=conf.test_days)
        scores = _popularity(lines.where(F.col("invoice_day") >= F.lit(since)))
        scores = scores.withColumnRenamed("buyers", "score")
    elif name == "country_popularity":
        return country_top_n(lines, split.users, n, exclude, conf.batch_size)
    else:
        raise ValueError(f"unknown baseline {name!r}; known: {BASELINES}")
    return popularity_top_n(scores, split.users, n, exclude, conf.batch_size)


# ----------------------------------------------------------------------------- evaluation
def evaluation_exclude(split: Split, conf: RecommendConfig) -> DataFrame | None:
    """Past purchases of the evaluated users, masked unless repeats are evaluated."""
    if conf.repeats:
        return None
    return split.train.select(USER, ITEM).join(split.users, on=USER, how="left_semi")


def evaluate(recommended: DataFrame, split: Split, k: int) -> dict[str, float]:
    """precision/recall/map/ndcg/coverage at k and the evaluated users."""
    metrics = ranking_metrics(recommended, split.relevant, k, split.catalogue)
    return {name: float(value) for name, value in metrics.items()}


def evaluate_als(model: ALSModel, split: Split, conf: RecommendConfig) -> dict[str, float]:
    recs = als_top_n(
        model, split.users, conf.k, evaluation_exclude(split, conf), conf.batch_size
    ).persist()
    try:
        return evaluate(recs, split, conf.k)
    finally:
        recs.unpersist()


def evaluate_baselines(split: Split, conf: RecommendConfig) -> dict[str, dict[str, float]]:
    exclude = evaluation_exclude(split, conf)
    out = {}
    for name in BASELINES:
        recs = baseline_top_n(name, split, conf.k, exclude, conf).persist()
        try:
            out[name] = evaluate(recs, split, conf.k)
        finally:
            recs.unpersist()
    return out


def search(split: Split, conf: RecommendConfig) -> tuple[Params, dict[str, dict[str, float]]]:
    """Every combination of conf.search fitted on the split's training part and scored on
    its held-out part; the best by MAP@k (then NDCG@k, then the order given)."""
    results: dict[str, dict[str, float]] = {}
    best: tuple[float, float] | None = None
    chosen = conf.search[0]
    for params in conf.search:
        model = fit(split.train, params, conf)
        metrics = evaluate_als(model, split, conf)
        results[params.label()] = metrics
        log.info(
            "search %s: MAP@%d %.4f, NDCG@%d %.4f",
            params.label(),
            conf.k,
            metrics["map"],
            conf.k,
            metrics["ndcg"],
        )
        key = (metrics["map"], metrics["ndcg"])
        if best is None or key > best:
            best, chosen = key, params
    return chosen, results

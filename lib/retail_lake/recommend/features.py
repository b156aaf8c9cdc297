"""Customer and product features of Online Retail for one snapshot day (gold).

Point in time: a snapshot is a day (`recommend.as_of`, default the last day of sales). Only
sales and returns whose `invoice_day` is on or before it count, whatever their time of day,
so a purchase or return after it changes no feature. Guests (no customer token) and
non-product lines (`is_product` false: postage, fees, ...) never enter the customer
features; product features count guest sales for popularity, units and revenue, but only
known customers as buyers. Returns count from the day they were booked.

RFM scores. Each of recency (fewer days is better), frequency and monetary is scored over
all customers of the snapshot with the rank rule

    score = 1 + floor(bins * (rank - 1) / n)

where `rank` is SQL RANK() in the order worst to best (ties share the lowest rank) and n is
the number of customers. Scores run 1..bins, bins are equal-sized quantiles when values are
distinct, and tied values always get the same score (the lower one), whatever the row order.

RFM segments. Scores are put on a 1..5 scale (`level = 1 + floor(5 * (score - 1) / bins)`,
the identity for the default 5 bins), FM is the mean of the F and M levels rounded half up,
and the segment comes from the table `RFM_SEGMENTS` (R level x FM level, every cell once):

    FM level ->   1               2                    3                    4          5
    R 5           new             potential_loyalists  potential_loyalists  champions  champions
    R 4           promising       potential_loyalists  potential_loyalists  loyal      loyal
    R 3           about_to_sleep  about_to_sleep       need_attention       loyal      loyal
    R 2           hibernating     hibernating          at_risk              at_risk    cant_lose
    R 1           lost            lost                 at_risk              at_risk    cant_lose

K-means. Spark ML KMeans (k-means||, `recommend.segments.seed`) on StandardScaler-scaled
(mean 0, unit variance) `KMEANS_FEATURES`: log1p(frequency), log1p(max(monetary, 0)),
log1p(recency_days), tenure_days and min(return_rate, 1). The logs tame the long tails of
frequency, spending and recency; return_rate is capped because a customer returning goods
bought before the data starts would otherwise be a cluster of one. k is `kmeans_k`, capped
at the number of customers (one customer: cluster 0, no fit). The customers are
hash-partitioned into `KMEANS_PARTITIONS` fixed partitions and sorted before fitting, so the
same data and seed give the same clusters on any machine or profile.
`kmeans_segment` names a cluster by its centroid, taken back to the customers' units
(inverse scaling, then expm1): `heavy_returners` when its return rate is at least
HEAVY_RETURN_RATE (0.5: such a cluster is defined by its returns, whatever its RFM), else
the RFM name of its recency, frequency and monetary scored against the snapshot's customers
with the rank rule above (rank - 1 = customers strictly worse than the centroid). Clusters
may share a name; `kmeans_cluster` tells them apart.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from pyspark.ml.clustering import KMeans
from pyspark.ml.feature import StandardScaler, VectorAssembler
from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from retail_lake.contracts import TableContract
from retail_lake.recommend.tables import (
    CUSTOMER_FEATURES,
    FEATURE_TABLES,
    INPUT_VERSIONS,
    PRODUCT_FEATURES,
)
from retail_lake.sources.online_retail.tables import (
    CUSTOMER_TOKEN,
    PRODUCTS,
    RETURNS,
    STOCK_CODE,
    TRANSACTIONS,
)

log = logging.getLogger(__name__)

METHODS = ("rfm", "kmeans")
LEVELS = 5
# (segment, R levels, FM levels) on the 1..5 scale; together they cover each cell once.
RFM_SEGMENTS: tuple[tuple[str, tuple[int, ...], tuple[int, ...]], ...] = (
    ("champions", (5,), (4, 5)),
    ("loyal", (3, 4), (4, 5)),
    ("potential_loyalists", (4, 5), (2, 3)),
    ("new", (5,), (1,)),
    ("promising", (4,), (1,)),
    ("need_attention", (3,), (3,)),
    ("about_to_sleep", (3,), (1, 2)),
    ("at_risk", (1, 2), (3, 4)),
    ("cant_lose", (1, 2), (5,)),
    ("hibernating", (2,), (1, 2)),
    ("lost", (1,), (1, 2)),
)
KMEANS_FEATURES = (
    "log_frequency",
    "log_monetary",
    "log_recency",
    "tenure_days",
    "capped_return_rate",
)
KMEANS_PARTITIONS = 4
# A cluster whose centroid returns at least half the units it buys is named for that.
HEAVY_RETURNERS = "heavy_returners"
HEAVY_RETURN_RATE = 0.5
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_RAW, _SCALED = "_features", "_scaled"
LINE_COLUMNS = (
    "invoice_no",
    STOCK_CODE,
    "quantity",
    "invoice_date",
    "invoice_day",
    "unit_price",
    "line_total",
    CUSTOMER_TOKEN,
    "country",
    "is_product",
)


class FeatureError(ValueError):
    """Invalid snapshot, segment configuration or input for the recommendation features."""


@dataclass(frozen=True)
class SegmentSpec:
    """conf: recommend.segments."""

    method: str = "rfm"
    rfm_bins: int = 5
    kmeans_k: int = 6
    seed: int = 42

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise FeatureError(
                f"recommend.segments.method must be one of {METHODS}, got {self.method!r}"
            )
        for key, value in (("rfm_bins", self.rfm_bins), ("kmeans_k", self.kmeans_k)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 2:
                raise FeatureError(
                    f"recommend.segments.{key} must be a whole number >= 2, got {value!r}"
                )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise FeatureError(f"recommend.segments.seed must be a whole number, got {self.seed!r}")

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> SegmentSpec:
        return cls(
            method=section.get("method", "rfm"),
            rfm_bins=section.get("rfm_bins", 5),
            kmeans_k=section.get("kmeans_k", 6),
            seed=section.get("seed", 42),
        )


def _contract(name: str) -> TableContract:
    return next(c for c in FEATURE_TABLES if c.name == name)


def _conformed(df: DataFrame, contract: TableContract) -> DataFrame:
    """The contract's content columns (but input_versions, the job's), cast to its types."""
    return df.select(
        *[
            F.col(c.name).cast(c.type).alias(c.name)
            for c in contract.columns
            if not c.name.startswith("_") and c.name != INPUT_VERSIONS.name
        ]
    )


def _require(df: DataFrame, columns: Iterable[str], what: str) -> None:
    missing = sorted(set(columns) - set(df.columns))
    if missing:
        raise FeatureError(f"{what} lacks columns {missing}")


def _in_snapshot(lines: DataFrame, as_of: date) -> DataFrame:
    """Product lines booked on or before the snapshot day."""
    return lines.where(F.col("is_product") & (F.col("invoice_day") <= F.lit(as_of)))


# ----------------------------------------------------------------------------- snapshot
def _parse_day(text: str) -> date | None:
    """YYYY-MM-DD as a date; None for any other form (fromisoformat also takes 20110331)."""
    if not _DAY.match(text):
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def snapshot_day(sales: DataFrame, as_of: str | date | None) -> date:
    """The snapshot day: `as_of` (a date or YYYY-MM-DD), else the last invoice_day of sales."""
    if isinstance(as_of, datetime):
        return as_of.date()
    if isinstance(as_of, date):
        return as_of
    if as_of is not None and not isinstance(as_of, str):
        raise FeatureError(f"recommend.as_of must be a day YYYY-MM-DD, got {as_of!r}")
    text = (as_of or "").strip()
    if text:
        day = _parse_day(text)
        if day is None:
            raise FeatureError(f"recommend.as_of must be a day YYYY-MM-DD, got {as_of!r}")
        return day
    _require(sales, ("invoice_day",), TRANSACTIONS)
    last = sales.agg(F.max("invoice_day")).first()[0]
    if last is None:
        raise FeatureError("recommend.as_of is empty and there are no sales to take it from")
    return last


# ----------------------------------------------------------------------------- scores
def quantile_score(order: Column, bins: int, partition_by: Sequence[str] = ()) -> Column:
    """1 + floor(bins * (rank - 1) / n) within each `partition_by` group (default: the whole
    frame), `order` from worst to best; n is the group's row count.
    """
    group = Window.partitionBy(*partition_by)
    rank = F.rank().over(group.orderBy(order))
    n = F.count(F.lit(1)).over(
        group.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    )
    return (F.floor(F.lit(bins) * (rank - 1) / n) + 1).cast("int")


def _level(score: Column, bins: int) -> Column:
    """A score 1..bins on the 1..5 scale of RFM_SEGMENTS."""
    return F.floor(F.lit(LEVELS) * (score - 1) / F.lit(bins)) + 1


def rfm_segment(r_score: Column, f_score: Column, m_score: Column, bins: int) -> Column:
    """The RFM_SEGMENTS name of scores 1..bins (FM: mean of the F and M levels, half up)."""
    r = _level(r_score, bins)
    fm = F.floor((_level(f_score, bins) + _level(m_score, bins) + 1) / 2)
    name = None
    for segment, r_levels, fm_levels in RFM_SEGMENTS:
        matches = r.isin(*r_levels) & fm.isin(*fm_levels)
        name = F.when(matches, F.lit(segment)) if name is None else name.when(matches, segment)
    return name


def rfm_segment_of(r_level: int, fm_level: int) -> str:
    """The RFM_SEGMENTS name of one cell (levels 1..5), for docs and checks."""
    (name,) = [s for s, rs, fms in RFM_SEGMENTS if r_level in rs and fm_level in fms]
    return name


# ----------------------------------------------------------------------------- customers
def _main_country(bought: DataFrame) -> DataFrame:
    """The country on most of each customer's lines; ties: the latest line's."""
    most_first = Window.partitionBy(CUSTOMER_TOKEN).orderBy(
        F.col("n").desc(), F.col("last").desc(), F.col("country")
    )
    return (
        bought.groupBy(CUSTOMER_TOKEN, "country")
        .agg(F.count(F.lit(1)).alias("n"), F.max("invoice_date").alias("last"))
        .withColumn("_rank", F.row_number().over(most_first))
        .where(F.col("_rank") == 1)
        .select(CUSTOMER_TOKEN, "country")
    )


def _customer_base(sales: DataFrame, returns: DataFrame, as_of: date) -> DataFrame:
    """One row per customer with product sales up to as_of: RFM and behaviour, unscored."""
    known = F.col(CUSTOMER_TOKEN).isNotNull()
    bought = _in_snapshot(sales, as_of).where(known)
    returned = (
        _in_snapshot(returns, as_of)
        .where(known)
        .groupBy(CUSTOMER_TOKEN)
        .agg(
            (-F.sum("quantity")).alias("units_returned"),
            (-F.sum("line_total")).alias("value_returned"),
        )
    )
    totals = bought.groupBy(CUSTOMER_TOKEN).agg(
        F.min("invoice_date").alias("first_purchase_at"),
        F.max("invoice_date").alias("last_purchase_at"),
        F.min("invoice_day").alias("first_day"),
        F.max("invoice_day").alias("last_day"),
        F.countDistinct("invoice_no").alias("frequency"),
        F.sum("quantity").alias("units"),
        F.sum("line_total").alias("value"),
    )
    units_returned = F.coalesce(F.col("units_returned"), F.lit(0))
    # Both sides hold one row per customer of `bought`: the joins neither drop nor multiply.
    return (
        totals.join(_main_country(bought), on=CUSTOMER_TOKEN, how="inner")
        .join(returned, on=CUSTOMER_TOKEN, how="left")
        .select(
            CUSTOMER_TOKEN,
            F.lit(as_of).alias("as_of_date"),
            "country",
            "first_purchase_at",
            "last_purchase_at",
            F.datediff(F.lit(as_of), F.col("last_day")).alias("recency_days"),
            F.col("frequency").cast("bigint").alias("frequency"),
            (F.col("value") - F.coalesce(F.col("value_returned"), F.lit(0)))
            .cast("decimal(18,3)")
            .alias("monetary"),
            F.datediff(F.lit(as_of), F.col("first_day")).alias("tenure_days"),
            (F.col("units") / F.col("frequency")).alias("avg_basket_size"),
            (F.col("value").cast("double") / F.col("frequency")).alias("avg_basket_value"),
            (units_returned / F.col("units")).alias("return_rate"),
        )
    )


def _kmeans_columns() -> dict[str, Column]:
    """KMEANS_FEATURES from the per-customer columns."""
    return {
        "log_frequency": F.log1p("frequency"),
        "log_monetary": F.log1p(F.greatest(F.col("monetary").cast("double"), F.lit(0.0))),
        "log_recency": F.log1p("recency_days"),
        "tenure_days": F.col("tenure_days").cast("double"),
        "capped_return_rate": F.least(F.col("return_rate"), F.lit(1.0)),
    }


def _kmeans_input(base: DataFrame) -> DataFrame:
    """KMEANS_FEATURES assembled into one vector, in a fixed partitioning and order."""
    columns = _kmeans_columns()
    inputs = [f"_k_{name}" for name in KMEANS_FEATURES]
    features = base.select(
        "*", *[columns[name].alias(i) for name, i in zip(KMEANS_FEATURES, inputs, strict=True)]
    )
    return VectorAssembler(inputCols=inputs, outputCol=_RAW).transform(
        features.repartition(KMEANS_PARTITIONS, CUSTOMER_TOKEN).sortWithinPartitions(CUSTOMER_TOKEN)
    )


def centroid_segments(
    customers: DataFrame, centroids: Sequence[tuple[int, float, float, float, float]], bins: int
) -> DataFrame:
    """(kmeans_cluster, kmeans_segment) of each centroid (cluster, recency_days, frequency,
    monetary, return_rate), in the customers' units.

    A centroid returning at least HEAVY_RETURN_RATE of its units is `heavy_returners`; any
    other is scored against `customers` (recency_days, frequency, monetary) with the rank
    rule and named by RFM_SEGMENTS.
    """
    schema = (
        "kmeans_cluster int, c_recency double, c_frequency double, c_monetary double, "
        "c_return_rate double"
    )
    centres = customers.sparkSession.createDataFrame(list(centroids), schema)

    def score(worse: Column) -> Column:
        # A centroid beyond every customer (all of them worse) scores `bins`, not bins + 1.
        below = F.sum(F.when(worse, 1).otherwise(0))
        return F.least(F.floor(F.lit(bins) * below / F.count(F.lit(1))) + 1, F.lit(bins)).cast(
            "int"
        )

    scored = (
        customers.select("recency_days", "frequency", "monetary")
        .crossJoin(F.broadcast(centres))
        .groupBy("kmeans_cluster", "c_return_rate")
        .agg(
            score(F.col("recency_days") > F.col("c_recency")).alias("r"),
            score(F.col("frequency") < F.col("c_frequency")).alias("f"),
            score(F.col("monetary").cast("double") < F.col("c_monetary")).alias("m"),
        )
    )
    heavy = F.col("c_return_rate") >= F.lit(HEAVY_RETURN_RATE)
    return scored.select(
        "kmeans_cluster",
        F.when(heavy, F.lit(HEAVY_RETURNERS))
        .otherwise(rfm_segment(F.col("r"), F.col("f"), F.col("m"), bins))
        .alias("kmeans_segment"),
    )


def _with_kmeans(base: DataFrame, n: int, spec: SegmentSpec) -> DataFrame:
    """`base` with kmeans_cluster and kmeans_segment."""
    vectors = _kmeans_input(base)
    scaler = StandardScaler(inputCol=_RAW, outputCol=_SCALED, withMean=True, withStd=True)
    scaler_model = scaler.fit(vectors)
    scaled = scaler_model.transform(vectors)
    k = min(spec.kmeans_k, n)
    if k >= 2:
        model = KMeans(
            k=k, seed=spec.seed, featuresCol=_SCALED, predictionCol="kmeans_cluster"
        ).fit(scaled)
        clustered = model.transform(scaled)
        centres = [list(c) for c in model.clusterCenters()]
    else:
        clustered = scaled.withColumn("kmeans_cluster", F.lit(0))
        centres = [[0.0] * len(KMEANS_FEATURES)]
    mean, std = scaler_model.mean.toArray(), scaler_model.std.toArray()
    raw = [[float(z * s + m) for z, s, m in zip(c, std, mean, strict=True)] for c in centres]
    at = {name: i for i, name in enumerate(KMEANS_FEATURES)}
    centroids = [
        (
            i,
            math.expm1(r[at["log_recency"]]),
            math.expm1(r[at["log_frequency"]]),
            math.expm1(r[at["log_monetary"]]),
            r[at["capped_return_rate"]],
        )
        for i, r in enumerate(raw)
    ]
    log.info(
        "k-means on %d customers: k=%d, centroids (cluster, R, F, M, returns) %s", n, k, centroids
    )
    names = centroid_segments(base, centroids, spec.rfm_bins)
    return clustered.join(F.broadcast(names), on="kmeans_cluster", how="inner").select(
        *base.columns, F.col("kmeans_cluster").cast("int").alias("kmeans_cluster"), "kmeans_segment"
    )


def customer_features(
    sales: DataFrame, returns: DataFrame, as_of: date, segments: Mapping[str, Any]
) -> DataFrame:
    """gold.customer_features (without input_versions) for the snapshot day `as_of`.

    Args:
        sales: silver.transactions.
        returns: silver.returns.
        as_of: the snapshot day (see `snapshot_day`).
        segments: conf recommend.segments (method, rfm_bins, kmeans_k, seed).

    Fits the scaler and k-means here (Spark actions); the per-customer aggregate they pass
    over is cached. Raises FeatureError on a bad configuration or when no customer bought a
    product on or before `as_of`.
    """
    spec = SegmentSpec.from_config(segments)
    _require(sales, LINE_COLUMNS, TRANSACTIONS)
    _require(returns, LINE_COLUMNS, RETURNS)
    base = _customer_base(sales, returns, as_of).cache()
    n = base.count()
    if n == 0:
        raise FeatureError(f"recommend.as_of {as_of}: no customer bought a product by then")
    bins = spec.rfm_bins
    chosen = "rfm_segment" if spec.method == "rfm" else "kmeans_segment"
    # The snapshot's customers are one group: as_of_date is the same on every row.
    snapshot = ("as_of_date",)
    scored = _with_kmeans(base, n, spec).select(
        "*",
        quantile_score(F.col("recency_days").desc(), bins, snapshot).alias("r_score"),
        quantile_score(F.col("frequency").asc(), bins, snapshot).alias("f_score"),
        quantile_score(F.col("monetary").asc(), bins, snapshot).alias("m_score"),
    )
    return _conformed(
        scored.select(
            "*",
            rfm_segment(F.col("r_score"), F.col("f_score"), F.col("m_score"), bins).alias(
                "rfm_segment"
            ),
        ).select("*", F.col(chosen).alias("segment"), F.lit(spec.method).alias("segment_method")),
        _contract(CUSTOMER_FEATURES),
    )


# ----------------------------------------------------------------------------- products
def product_features(
    sales: DataFrame, returns: DataFrame, products: DataFrame, as_of: date
) -> DataFrame:
    """gold.product_features (without input_versions) for the snapshot day `as_of`.

    Args:
        sales: silver.transactions.
        returns: silver.returns.
        products: silver.products (for the canonical description).
        as_of: the snapshot day (see `snapshot_day`).
    """
    _require(sales, LINE_COLUMNS, TRANSACTIONS)
    _require(returns, LINE_COLUMNS, RETURNS)
    _require(products, (STOCK_CODE, "description"), PRODUCTS)
    totals = (
        _in_snapshot(sales, as_of)
        .groupBy(STOCK_CODE)
        .agg(
            F.countDistinct("invoice_no").alias("invoices"),
            F.countDistinct(CUSTOMER_TOKEN).alias("buyers"),
            F.sum("quantity").alias("units_sold"),
            F.sum("line_total").alias("revenue"),
            F.min("unit_price").alias("min_price"),
            F.max("unit_price").alias("max_price"),
            F.stddev_pop(F.col("unit_price").cast("double")).alias("price_stddev"),
            F.min("invoice_date").alias("first_sold_at"),
            F.max("invoice_date").alias("last_sold_at"),
        )
    )
    returned = (
        _in_snapshot(returns, as_of).groupBy(STOCK_CODE).agg((-F.sum("quantity")).alias("returned"))
    )
    units_returned = F.coalesce(F.col("returned"), F.lit(0))
    # silver.products and `returned` hold one row per stock code: left joins keep every row once.
    joined = totals.join(
        products.select(STOCK_CODE, "description"), on=STOCK_CODE, how="left"
    ).join(returned, on=STOCK_CODE, how="left")
    return _conformed(
        joined.select(
            "*",
            F.lit(as_of).alias("as_of_date"),
            (F.col("revenue").cast("double") / F.col("units_sold")).alias("avg_price"),
            units_returned.alias("units_returned"),
            (units_returned / F.col("units_sold")).alias("return_rate"),
        ),
        _contract(PRODUCT_FEATURES),
    )

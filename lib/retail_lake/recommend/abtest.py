"""An A/B test of the published recommendations: who gets which variant, and what it did.

Assignment (`recommend` job): every customer seen by the snapshot falls into a bucket
0..9999 by a hash of their token with `recommend.ab_test.salt`, and the buckets are cut into
the variants in the order and shares of `recommend.ab_test.shares`. The same customer stays
in the same variant for as long as the salt is the same; another salt draws a new split.
Variants: `als` (the published model's lists) and `popularity` (the products most customers
bought, their own past purchases masked like ALS's: the control). Customers the model does
not know get the popularity list in either variant (an intention-to-treat split: every
assigned customer counts in the evaluation, whatever they were shown).

Evaluation (`evaluate_recommendations` job): for the snapshot `recommend` published, what
each variant's customers bought in the `window_days` after it (silver.transactions): the
share who bought at least one of their top-k recommended products (hit rate, Wilson 95%
interval), the mean precision@k and the mean revenue of recommended products bought per
customer (normal 95% intervals), and the share who bought anything (a check of the split:
it should not differ). Each variant is compared with the control by a two-sided test (two
proportions, or Welch's for means, with the normal approximation: the groups are hundreds
to thousands of customers).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from retail_lake.lake import local_frame
from retail_lake.recommend.model_tables import (
    AB_ASSIGNMENTS,
    AB_RESULTS,
    RECOMMENDATIONS,
)
from retail_lake.runner import JobContext, JobError, JobResult, Output
from retail_lake.sources.online_retail.tables import CUSTOMER_TOKEN, STOCK_CODE, TRANSACTIONS

log = logging.getLogger(__name__)

VARIANTS = ("als", "popularity")
CONTROL = "popularity"
BUCKETS = 10_000
Z95 = 1.959963984540054


class ABTestConfigError(ValueError):
    """recommend.ab_test cannot be used (an unknown variant, shares not summing to 1, ...)."""


@dataclass(frozen=True)
class ABTest:
    salt: str
    shares: tuple[tuple[str, float], ...]  # in the configured order
    window_days: int

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> ABTest:
        shares = section.get("shares") or {"als": 1.0}
        if not isinstance(shares, Mapping):
            raise ABTestConfigError(
                f"recommend.ab_test.shares must map variants to shares, got {shares!r}"
            )
        unknown = sorted(set(shares) - set(VARIANTS))
        if unknown:
            raise ABTestConfigError(
                f"recommend.ab_test.shares: unknown variant(s) {unknown} (known: {list(VARIANTS)})"
            )
        parsed = tuple((str(k), float(v)) for k, v in shares.items())
        if any(v <= 0 for _, v in parsed) or abs(sum(v for _, v in parsed) - 1.0) > 1e-9:
            raise ABTestConfigError(
                f"recommend.ab_test.shares must be positive and sum to 1, got {dict(shares)}"
            )
        window = int(section.get("window_days", 28))
        if window <= 0:
            raise ABTestConfigError("recommend.ab_test.window_days must be positive")
        return cls(str(section.get("salt", "")), parsed, window)

    @property
    def active(self) -> bool:
        """More than one variant: a test is running."""
        return len(self.shares) > 1

    def bounds(self) -> list[tuple[str, int]]:
        """(variant, first bucket past it) in order: the last bound is BUCKETS."""
        out, total = [], 0.0
        for name, share in self.shares:
            total += share
            out.append((name, BUCKETS if name == self.shares[-1][0] else round(total * BUCKETS)))
        return out


def assign(customers: DataFrame, test: ABTest) -> DataFrame:
    """customer_token, bucket, variant for each row of `customers` (a customer_token column)."""
    bucket = F.pmod(
        F.xxhash64(F.concat(F.lit(test.salt + ":"), F.col(CUSTOMER_TOKEN))), F.lit(BUCKETS)
    ).cast("int")
    # A chain of when(bucket < bound) in order; the last variant takes the rest.
    chain = None
    for name, bound in test.bounds()[:-1]:
        chain = (
            F.when(F.col("bucket") < bound, F.lit(name))
            if chain is None
            else chain.when(F.col("bucket") < bound, F.lit(name))
        )
    last = F.lit(test.bounds()[-1][0])
    return (
        customers.select(CUSTOMER_TOKEN)
        .withColumn("bucket", bucket)
        .withColumn("variant", last if chain is None else chain.otherwise(last))
    )


# ----------------------------------------------------------------------------- statistics
def wilson(successes: int, n: int) -> tuple[float, float]:
    """Wilson score 95% interval of a proportion."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    z2 = Z95 * Z95
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return centre - half, centre + half


def mean_interval(mean: float, variance: float, n: int) -> tuple[float, float]:
    """Normal 95% interval of a mean (sample variance, n values)."""
    if n < 2:
        return math.nan, math.nan
    half = Z95 * math.sqrt(variance / n)
    return mean - half, mean + half


def _two_sided(z: float) -> float:
    return math.erfc(abs(z) / math.sqrt(2.0))


def two_proportion_p(s1: int, n1: int, s2: int, n2: int) -> float:
    """Two-sided p-value of the pooled two-proportion z-test."""
    if not n1 or not n2:
        return math.nan
    pooled = (s1 + s2) / (n1 + n2)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    if se == 0:
        return 1.0
    return _two_sided((s1 / n1 - s2 / n2) / se)


def welch_p(m1: float, v1: float, n1: int, m2: float, v2: float, n2: int) -> float:
    """Two-sided p-value of Welch's test on two means (normal approximation)."""
    if n1 < 2 or n2 < 2:
        return math.nan
    se = math.sqrt(v1 / n1 + v2 / n2)
    if se == 0:
        return 1.0 if m1 == m2 else 0.0
    return _two_sided((m1 - m2) / se)


# ----------------------------------------------------------------------------- evaluation
def per_customer(
    assigned: DataFrame, recommended: DataFrame, bought: DataFrame, k: int
) -> DataFrame:
    """variant, hits (recommended top-k products bought), revenue (their GBP), active (bought
    anything) for every assigned customer.

    assigned: customer_token, variant; recommended: customer_token, rank, stock_code;
    bought: the window's product sales lines (customer_token, stock_code, line_total).
    """
    spent = bought.groupBy(CUSTOMER_TOKEN, STOCK_CODE).agg(
        F.sum("line_total").cast("double").alias("revenue")
    )
    hits = (
        recommended.where(F.col("rank") <= k)
        .select(CUSTOMER_TOKEN, STOCK_CODE)
        .join(spent, [CUSTOMER_TOKEN, STOCK_CODE], "inner")
        .groupBy(CUSTOMER_TOKEN)
        .agg(F.count(F.lit(1)).alias("hits"), F.sum("revenue").alias("revenue"))
    )
    active = bought.select(CUSTOMER_TOKEN).distinct().withColumn("active", F.lit(True))
    return (
        assigned.select(CUSTOMER_TOKEN, "variant")
        .join(hits, CUSTOMER_TOKEN, "left")
        .join(active, CUSTOMER_TOKEN, "left")
        .select(
            CUSTOMER_TOKEN,
            "variant",
            F.coalesce("hits", F.lit(0)).alias("hits"),
            F.coalesce("revenue", F.lit(0.0)).alias("revenue"),
            F.coalesce("active", F.lit(False)).alias("active"),
        )
    )


def summarise(groups: Mapping[str, Mapping[str, float]], k: int) -> list[dict[str, Any]]:
    """Result rows (variant, metric, customers, value, interval, difference and p-value
    against the control) from each variant's sums: n, hit_customers, active_customers,
    precision_sum, precision_sq, revenue_sum, revenue_sq."""
    stats: dict[str, dict[str, tuple]] = {}
    for variant, g in groups.items():
        n = int(g["n"])
        out = {}
        for metric, key in (("hit_rate", "hit_customers"), ("active_rate", "active_customers")):
            s = int(g[key])
            out[metric] = (s / n if n else math.nan, *wilson(s, n), s)
        for metric, key in (("precision_at_k", "precision"), ("revenue_per_customer", "revenue")):
            mean = g[f"{key}_sum"] / n if n else math.nan
            var = (g[f"{key}_sq"] - n * mean * mean) / (n - 1) if n > 1 else math.nan
            out[metric] = (mean, *mean_interval(mean, max(var, 0.0), n), max(var, 0.0))
        stats[variant] = out
    control = CONTROL if CONTROL in stats else None
    rows = []
    for variant, out in stats.items():
        n = int(groups[variant]["n"])
        for metric, (value, low, high, extra) in out.items():
            difference = p_value = None
            if control and variant != control:
                c_value, _, _, c_extra = stats[control][metric]
                nc = int(groups[control]["n"])
                difference = value - c_value
                if metric in ("hit_rate", "active_rate"):
                    p_value = two_proportion_p(int(extra), n, int(c_extra), nc)
                else:
                    p_value = welch_p(value, extra, n, c_value, c_extra, nc)
            rows.append(
                {
                    "variant": variant,
                    "metric": metric,
                    "k": k,
                    "customers": n,
                    "value": value,
                    "ci_low": low,
                    "ci_high": high,
                    "control": control,
                    "difference": difference,
                    "p_value": p_value,
                }
            )
    return rows


def evaluate(ctx: JobContext) -> JobResult:
    """The evaluate_recommendations job: what each variant's customers bought after the
    snapshot `recommend` published -> gold.recommendation_ab_results.

    Reads gold.recommendation_assignments (the snapshot day and salt), gold.recommendations
    and silver.transactions. Merges one row per (salt, snapshot, window, variant, metric).

    Raises:
        JobError: an input is missing, or no purchase was made after the snapshot (publish
            as of an earlier day, `recommend.as_of`, to replay a test on past data).

    Example:
        Replaying an A/B test on Online Retail's last weeks::

            retail-lake run features --set recommend.as_of=2011-11-08
            retail-lake run recommend --set recommend.as_of=2011-11-08 \\
                --set 'recommend.ab_test.shares={als: 0.5, popularity: 0.5}'
            retail-lake run evaluate_recommendations
    """
    from retail_lake.recommend.als import RecommendConfig

    missing = [t for t in (AB_ASSIGNMENTS, RECOMMENDATIONS, TRANSACTIONS) if not ctx.lake.exists(t)]
    if missing:
        raise JobError(f"evaluate_recommendations: {', '.join(missing)} missing; run recommend")
    test = ABTest.from_config(ctx.cfg["recommend"].get("ab_test") or {})
    k = RecommendConfig.from_config(ctx.cfg["recommend"]).k
    assigned = ctx.read(AB_ASSIGNMENTS)
    heads = assigned.select("salt", "as_of_date").distinct().collect()
    if len(heads) != 1:
        raise JobError(
            f"evaluate_recommendations: {AB_ASSIGNMENTS} holds {len(heads)} snapshots; "
            "run recommend again"
        )
    salt, as_of = heads[0]["salt"], heads[0]["as_of_date"]
    sales = ctx.read(TRANSACTIONS).where(F.col("is_product") & F.col(CUSTOMER_TOKEN).isNotNull())
    last = sales.agg(F.max("invoice_day")).first()[0]
    if last is None or last <= as_of:
        raise JobError(
            f"evaluate_recommendations: no purchase after the snapshot {as_of} (the data ends "
            f"{last}): publish recommendations as of an earlier day (recommend.as_of) to "
            "replay the test on the days after it"
        )
    end = min(as_of + timedelta(days=test.window_days), last)
    window = sales.where(F.col("invoice_day").between(F.lit(as_of + timedelta(days=1)), F.lit(end)))
    customers = per_customer(
        assigned,
        ctx.read(RECOMMENDATIONS),
        window.select(CUSTOMER_TOKEN, STOCK_CODE, "line_total"),
        k,
    )
    precision = F.col("hits") / F.lit(float(k))
    sums = customers.groupBy("variant").agg(
        F.count(F.lit(1)).alias("n"),
        F.sum((F.col("hits") > 0).cast("long")).alias("hit_customers"),
        F.sum(F.col("active").cast("long")).alias("active_customers"),
        F.sum(precision).alias("precision_sum"),
        F.sum(precision * precision).alias("precision_sq"),
        F.sum("revenue").alias("revenue_sum"),
        F.sum(F.col("revenue") * F.col("revenue")).alias("revenue_sq"),
    )
    groups = {r["variant"]: r.asDict() for r in sums.collect()}
    rows = summarise(groups, k)
    for row in rows:
        row.update(
            salt=salt, as_of_date=as_of, window_start=as_of + timedelta(days=1), window_end=end
        )
        log.info(
            "[%s] A/B %s..%s %s %s %.4f [%.4f, %.4f] (n=%d)%s",
            ctx.run_id,
            as_of + timedelta(days=1),
            end,
            row["variant"],
            row["metric"],
            row["value"],
            row["ci_low"],
            row["ci_high"],
            row["customers"],
            ""
            if row["p_value"] is None
            else f" vs {row['control']} {row['difference']:+.4f} p={row['p_value']:.3g}",
        )
    schema = T.StructType(
        [f for f in ctx.registry[AB_RESULTS].spark_schema().fields if not f.name.startswith("_")]
    )
    df = local_frame(ctx.spark, rows, schema)
    return JobResult(
        outputs=[Output(AB_RESULTS, df, mode="merge")],
        rows_read={AB_ASSIGNMENTS: sum(int(g["n"]) for g in groups.values())},
    )

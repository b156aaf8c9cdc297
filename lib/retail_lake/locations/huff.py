"""Huff's gravity model: the demand a candidate site captures when added to existing stores.

The probability that demand at point i goes to store j is

    P_ij = U_ij / (U0 + sum_k U_ik),   U_ij = A_j / max(d_ij, d_min) ** decay

over the stores k within `max_km` of i (a store beyond reach has no pull). `U0` is the
utility of the outside option (buying elsewhere or not at all); at its default 0 this is
Huff's original model, where all demand in reach of some store goes to the stores.

A candidate c is evaluated as one new store added to the existing ones:

- captured demand:     sum_i w_i * U_ic / (U0 + S_i + U_ic)
- cannibalised demand: sum_i w_i * (S_i / (U0 + S_i) - S_i / (U0 + S_i + U_ic)),
  what the existing stores lose (S_i = sum of existing stores' utilities at i);
- net gain = captured - cannibalised: demand new to the chain.

With U0 = 0, demand at a point an existing store already reaches is only moved between
stores (net gain 0 there), so the net gain is the demand in reach of the candidate that no
existing store reached.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from retail_lake.locations.geometry import DISTANCE_KM, check_max_km, pairs_within

# How a place's demand is scaled by its country: none, or store_density (the country's
# existing stores per person of demand population, relative to the whole scope's).
COUNTRY_DEMAND = ("none", "store_density")


class HuffError(ValueError):
    """Invalid Huff parameters or inputs."""


@dataclass(frozen=True)
class HuffParams:
    """The model's parameters (conf: locations.huff)."""

    decay: float = 2.0
    max_km: float = 25.0
    min_km: float = 1.0
    outside_utility: float = 0.0
    candidate_attractiveness: float = 1.0
    demand_exponent: float = 1.0
    country_demand: str = "none"
    attractiveness: Mapping[str, float] = field(default_factory=dict)
    default_attractiveness: float = 1.0
    explain_top: int = 3

    def __post_init__(self) -> None:
        def positive(name: str, value: Any, allow_zero: bool = False) -> None:
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            ok = ok and math.isfinite(value) and (value >= 0 if allow_zero else value > 0)
            if not ok:
                bound = ">= 0" if allow_zero else "> 0"
                raise HuffError(
                    f"locations.huff.{name} must be a finite number {bound}, got {value!r}"
                )

        positive("decay", self.decay)
        try:
            check_max_km(self.max_km)
        except ValueError as exc:
            raise HuffError(f"locations.huff.max_km: {exc}") from None
        positive("min_km", self.min_km)
        if self.min_km >= self.max_km:
            raise HuffError(
                f"locations.huff.min_km ({self.min_km}) must be below max_km ({self.max_km})"
            )
        positive("outside_utility", self.outside_utility, allow_zero=True)
        positive("candidate_attractiveness", self.candidate_attractiveness)
        positive("demand_exponent", self.demand_exponent)
        positive("default_attractiveness", self.default_attractiveness)
        for key, value in self.attractiveness.items():
            positive(f"attractiveness.{key}", value)
        if self.country_demand not in COUNTRY_DEMAND:
            raise HuffError(
                f"locations.huff.country_demand must be one of {COUNTRY_DEMAND}, "
                f"got {self.country_demand!r}"
            )
        if not isinstance(self.explain_top, int) or self.explain_top < 0:
            raise HuffError(
                f"locations.huff.explain_top must be an integer >= 0, got {self.explain_top!r}"
            )

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> HuffParams:
        known = set(cls.__dataclass_fields__)
        unknown = set(section) - known
        if unknown:
            raise HuffError(
                f"locations.huff: unknown key(s) {sorted(unknown)} (known: {sorted(known)})"
            )
        values = dict(section)
        if "attractiveness" in values:
            values["attractiveness"] = dict(values["attractiveness"] or {})
        return cls(**values)

    def as_map(self) -> dict[str, str]:
        """The parameters as text, for the `parameters` column of scored rows."""
        out = {}
        for key, value in sorted(asdict(self).items()):
            if isinstance(value, Mapping):
                for k, v in sorted(value.items()):
                    out[f"{key}.{k}"] = repr(float(v))
            else:
                out[key] = repr(value)
        return out


def utility(attractiveness: Column, distance_km: Column, params: HuffParams) -> Column:
    """A / max(d, d_min) ** decay."""
    d = F.greatest(distance_km, F.lit(float(params.min_km)))
    return attractiveness / F.pow(d, F.lit(float(params.decay)))


def demand_weight(population: Column, params: HuffParams) -> Column:
    return F.pow(population.cast("double"), F.lit(float(params.demand_exponent)))


def store_attractiveness(kind: Column, params: HuffParams) -> Column:
    """A_j from the store's kind (ownership type); the default for kinds not listed."""
    mapping = (
        F.create_map(
            *[
                x
                for k, v in sorted(params.attractiveness.items())
                for x in (F.lit(k), F.lit(float(v)))
            ]
        )
        if params.attractiveness
        else None
    )
    default = F.lit(float(params.default_attractiveness))
    if mapping is None:
        return default
    return F.coalesce(F.element_at(mapping, kind), default)


PairsFn = Callable[[DataFrame, DataFrame, float], DataFrame]

# Sums of doubles depend on the order Spark adds them in, which changes between runs (shuffle
# blocks arrive in any order): a re-run would write different last digits. Each term is cast
# to a decimal first (deterministic per row) and decimal addition is exact, so the sum is the
# same in any order. 38 digits, 15 after the point: terms up to 1e23, utilities kept to 1e-15.
_EXACT = T.DecimalType(38, 15)


def exact_sum(column: Column) -> Column:
    """The sum of a double column, independent of the order of addition, as a double."""
    return F.sum(column.cast(_EXACT)).cast("double")


def weighted_demand(points: DataFrame, stores: DataFrame, params: HuffParams) -> DataFrame:
    """The points with `w`, the demand weight: `demand ** demand_exponent` times the country's
    factor (`params.country_demand`; none: 1).

    store_density: (stores / demand) of the country over the same ratio for the whole scope,
    from the stores given (the held-out check passes the kept ones only), with demand before
    the exponent (people). A country with twice the scope's stores per person weighs each
    place twice: the chain's revealed spend per person there, which population alone does not
    show. The factor multiplies the weight after the exponent, so it is never raised to it.
    points need country_code; stores need country_code.
    """
    weight = demand_weight(F.col("demand"), params)
    if params.country_demand == "none":
        return points.withColumn("w", weight)
    people = points.groupBy("country_code").agg(exact_sum(F.col("demand")).alias("_people"))
    count = stores.groupBy("country_code").agg(F.count(F.lit(1)).alias("_stores"))
    per_country = people.join(count, on="country_code", how="left").fillna(0, ["_stores"])
    totals = per_country.agg(
        exact_sum(F.col("_people")).alias("p"), F.sum("_stores").alias("s")
    ).first()
    if not totals or not totals["s"] or not totals["p"]:
        return points.withColumn("w", weight)
    overall = totals["s"] / totals["p"]
    factor = per_country.select(
        "country_code", (F.col("_stores") / F.col("_people") / F.lit(overall)).alias("_factor")
    )
    return (
        points.join(F.broadcast(factor), on="country_code", how="left")
        .withColumn("w", weight * F.coalesce(F.col("_factor"), F.lit(0.0)))
        .drop("_factor")
    )


def _pull_in_reach(
    points: DataFrame, stores: DataFrame, params: HuffParams, pairs_fn: PairsFn
) -> DataFrame:
    """S_i and the store count for the points some store reaches (others are absent)."""
    pairs = pairs_fn(
        points.select("point_id", "lat", "lon"),
        stores.select("store_id", "lat", "lon", "attractiveness"),
        params.max_km,
    )
    return pairs.groupBy("point_id").agg(
        exact_sum(utility(F.col("attractiveness"), F.col(DISTANCE_KM), params)).alias("pull"),
        F.count(F.lit(1)).alias("stores_in_reach"),
    )


def score(
    candidates: DataFrame,
    points: DataFrame,
    stores: DataFrame,
    params: HuffParams,
    pairs_fn: PairsFn = pairs_within,
) -> DataFrame:
    """Captured, cannibalised and net demand per candidate (one row per candidate).

    candidates: candidate_id, lat, lon; points: point_id, lat, lon, demand (weight before
    the demand exponent), point_name; stores: store_id, lat, lon, attractiveness.
    With `params.country_demand` other than none, points and stores also need
    country_code. Candidates with no demand point in reach get zeros. `top_points` lists the demand
    points contributing most to the captured demand. `pairs_fn` finds the pairs in reach
    (`geometry.pairs_within_brute` for the cross-join reference).
    """
    for name, df, cols in (
        ("candidates", candidates, ("candidate_id", "lat", "lon")),
        ("points", points, ("point_id", "lat", "lon", "demand", "point_name")),
        ("stores", stores, ("store_id", "lat", "lon", "attractiveness")),
    ):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise HuffError(f"{name} lacks column(s) {missing}")
    points = weighted_demand(points, stores, params)
    pull = _pull_in_reach(points, stores, params, pairs_fn)
    # Each point carries its weight and the existing stores' pull into the pair search, so
    # the (large) set of pairs is never joined again.
    weighted = points.select("point_id", "point_name", "lat", "lon", "w").join(
        pull, on="point_id", how="left"
    )
    weighted = weighted.withColumn("pull", F.coalesce(F.col("pull"), F.lit(0.0)))
    near = pairs_fn(
        candidates.select("candidate_id", "lat", "lon"),
        weighted.select("point_id", "point_name", "lat", "lon", "w", "pull"),
        params.max_km,
    )
    u0 = F.lit(float(params.outside_utility))
    u_c = utility(F.lit(float(params.candidate_attractiveness)), F.col(DISTANCE_KM), params)
    s = F.col("pull")
    # The stores' loss at a point simplifies to captured * S / (U0 + S), the gain to
    # captured * U0 / (U0 + S) (all of it where nothing competed): computed this way, never
    # as a difference, so neither goes negative by rounding.
    new_share = F.when(s + u0 > 0, u0 / (s + u0)).otherwise(F.lit(1.0))
    captured = F.col("w") * u_c / (u0 + s + u_c)
    contributions = near.select(
        "candidate_id",
        "point_id",
        "point_name",
        DISTANCE_KM,
        "w",
        captured.alias("captured"),
        (captured * new_share).alias("gained"),
    )
    top = F.slice(
        F.sort_array(
            F.collect_list(
                F.struct(
                    F.col("captured"),
                    F.col("point_id"),
                    F.col("point_name"),
                    F.col(DISTANCE_KM),
                )
            ),
            asc=False,
        ),
        1,
        params.explain_top,
    )
    sums = [
        exact_sum(F.col("captured")).alias("captured_demand"),
        exact_sum(F.col("gained")).alias("net_gain"),
        exact_sum(F.col("w")).alias("demand_in_reach"),
        F.count(F.lit(1)).alias("points_in_reach"),
    ]
    explained_type = T.ArrayType(
        T.StructType(
            [
                T.StructField("point_id", points.schema["point_id"].dataType),
                T.StructField("name", points.schema["point_name"].dataType),
                T.StructField("distance_km", T.DoubleType()),
                T.StructField("captured_demand", T.DoubleType()),
            ]
        )
    )
    if params.explain_top:
        per_candidate = contributions.groupBy("candidate_id").agg(*sums, top.alias("top"))
        explained = F.transform(
            F.coalesce(F.col("top"), F.array()),
            lambda t: F.struct(
                t["point_id"].alias("point_id"),
                t["point_name"].alias("name"),
                F.round(t[DISTANCE_KM], 3).alias("distance_km"),
                F.round(t["captured"], 6).alias("captured_demand"),
            ),
        ).cast(explained_type)
    else:
        # Explanations need each candidate's contributions together: skipped when 0.
        per_candidate = contributions.groupBy("candidate_id").agg(*sums)
        explained = F.array().cast(explained_type)
    zero = F.lit(0.0)
    return (
        candidates.select("candidate_id")
        .join(per_candidate, on="candidate_id", how="left")
        .select(
            "candidate_id",
            F.coalesce(F.col("captured_demand"), zero).alias("captured_demand"),
            F.greatest(F.coalesce(F.col("captured_demand") - F.col("net_gain"), zero), zero).alias(
                "cannibalised_demand"
            ),
            F.coalesce(F.col("net_gain"), zero).alias("net_gain"),
            F.coalesce(F.col("demand_in_reach"), zero).alias("demand_in_reach"),
            F.coalesce(F.col("points_in_reach"), F.lit(0)).cast("long").alias("points_in_reach"),
            explained.alias("top_points"),
        )
    )


def score_python(
    candidates: list[tuple], points: list[tuple], stores: list[tuple], params: HuffParams
) -> dict[Any, tuple[float, float, float]]:
    """Brute-force reference in plain Python: {candidate_id: (captured, cannibalised, net)}.

    candidates: (id, lat, lon); points: (id, lat, lon, demand); stores: (id, lat, lon, A).
    """
    from retail_lake.locations.geometry import haversine_km_py

    def u(a: float, d: float) -> float:
        return a / max(d, params.min_km) ** params.decay

    pulls = {}
    for pid, plat, plon, _ in points:
        pulls[pid] = sum(
            u(a, d)
            for _, slat, slon, a in stores
            if (d := haversine_km_py(plat, plon, slat, slon)) <= params.max_km
        )
    out = {}
    u0 = params.outside_utility
    for cid, clat, clon in candidates:
        captured = cannibalised = 0.0
        for pid, plat, plon, demand in points:
            d = haversine_km_py(clat, clon, plat, plon)
            if d > params.max_km:
                continue
            w = float(demand) ** params.demand_exponent
            s, uc = pulls[pid], u(params.candidate_attractiveness, d)
            before = s / (s + u0) if s + u0 > 0 else 0.0
            captured += w * uc / (u0 + s + uc)
            cannibalised += w * (before - s / (u0 + s + uc))
        out[cid] = (captured, cannibalised, captured - cannibalised)
    return out

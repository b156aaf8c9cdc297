"""Synthetic demand points, existing stores and candidate sites clustered around cities.

Deterministic for a seed (numpy `default_rng`, one stream per kind, so the points of a seed
do not depend on how many stores or candidates are asked for), at any scale. `n_cities`
centres lie uniformly in a box (default Europe-sized) with Zipf shares (~ 1 / rank) and a
Gaussian spread growing as sqrt(share). Points pick a city with probability ~ share ** spread
(a `rural` fraction: uniform in the box) and carry lognormal demand (median 2,000) times
share ** (1 - spread), so a city's demand is proportional to its share; candidates follow
the same law; stores sit ~1 km from points picked in proportion to demand.

With the defaults, 50,000 points have about 115 others within 25 km and demand quartiles
near 1,000 / 2,300 / 5,700: the order of GeoNames' 66,000 European places of 1,000+ people
(63 within 25 km; 1,200 / 2,200 / 5,500). A seed fixes the geography, so more points sample
the same places more finely and pairs in reach grow as the square of the count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import types as T

log = logging.getLogger(__name__)

KM_PER_DEG = 111.195  # one degree of latitude on the mean sphere
EUROPE = (36.0, 60.0, -10.0, 30.0)  # lat_min, lat_max, lon_min, lon_max

_TYPES = {"long": T.LongType(), "double": T.DoubleType(), "string": T.StringType()}
# The columns of each generated frame, keyed by its first (id) column.
COLUMNS = {
    "point_id": "point_id long, lat double, lon double, demand double, point_name string",
    "store_id": "store_id string, lat double, lon double, attractiveness double",
    "candidate_id": "candidate_id string, lat double, lon double",
}


@dataclass(frozen=True)
class Geography:
    """City centres (degrees, largest city first), shares (sum 1), spreads (km), settings."""

    lat: np.ndarray
    lon: np.ndarray
    share: np.ndarray
    sigma_km: np.ndarray
    bbox: tuple[float, float, float, float]
    rural: float
    spread: float
    seed: int


def cities(
    n_cities: int = 400,
    seed: int = 0,
    bbox: tuple[float, float, float, float] = EUROPE,
    zipf: float = 1.0,
    max_sigma_km: float = 20.0,
    min_sigma_km: float = 1.5,
    rural: float = 0.25,
    spread: float = 0.5,
) -> Geography:
    """Draws the city centres, their Zipf shares and their spreads.

    Args:
        n_cities: Number of cities (>= 1).
        seed: Seed of every draw made from this geography.
        bbox: (lat_min, lat_max, lon_min, lon_max) in degrees.
        zipf: Rank-size exponent: the k-th city's share is proportional to k ** -zipf.
        max_sigma_km: Gaussian sigma of the largest city.
        min_sigma_km: Lower bound of any city's sigma.
        rural: Fraction of points and candidates placed uniformly in the box.
        spread: Points per city grow as share ** spread, demand per point as
            share ** (1 - spread): settlements are more even than people (0 < spread <= 1).

    Returns:
        The geography.
    """
    lat_min, lat_max, lon_min, lon_max = bbox
    box = -90 <= lat_min < lat_max <= 90 and -180 <= lon_min < lon_max <= 180
    if not (n_cities >= 1 and box and 0 <= rural <= 1 and 0 < spread <= 1):
        raise ValueError(f"invalid geography: {n_cities=}, {bbox=}, {rural=}, {spread=}")
    lat, lon = _uniform(np.random.default_rng([seed, 0]), n_cities, bbox)
    share = np.arange(1, n_cities + 1, dtype=float) ** -zipf
    share /= share.sum()
    sigma = np.maximum(max_sigma_km * np.sqrt(share / share[0]), min_sigma_km)
    log.debug("%d cities, largest share %.3f, seed %d", n_cities, share[0], seed)
    return Geography(lat, lon, share, sigma, bbox, rural, spread, seed)


def _uniform(rng: np.random.Generator, n: int, bbox: tuple[float, ...]) -> tuple[np.ndarray, ...]:
    """Uniform on the sphere within the box (uniform in sin(lat), not in lat)."""
    lat_min, lat_max, lon_min, lon_max = bbox
    s = rng.uniform(np.sin(np.radians(lat_min)), np.sin(np.radians(lat_max)), n)
    return np.degrees(np.arcsin(s)), rng.uniform(lon_min, lon_max, n)


def _scatter(geo: Geography, n: int, stream: int) -> tuple[np.ndarray, ...]:
    """n positions from the geography's law: (lat, lon, city index or -1 for rural)."""
    rng = np.random.default_rng([geo.seed, stream])
    pick = geo.share**geo.spread
    city = rng.choice(len(pick), size=n, p=pick / pick.sum())
    city[rng.random(n) < geo.rural] = -1
    lat, lon = _uniform(rng, n, geo.bbox)
    urban = city >= 0
    c = city[urban]
    dy, dx = rng.normal(size=(2, int(urban.sum()))) * geo.sigma_km[c]
    lat[urban] = geo.lat[c] + dy / KM_PER_DEG
    lon[urban] = geo.lon[c] + dx / (KM_PER_DEG * np.cos(np.radians(geo.lat[c])))
    lat_min, lat_max, lon_min, lon_max = geo.bbox
    return np.clip(lat, lat_min, lat_max), np.clip(lon, lon_min, lon_max), city


def demand_points(geo: Geography, n: int) -> pd.DataFrame:
    """Draws n demand points from `geo`.

    Returns:
        point_id (0..n-1), lat, lon, demand, point_name ("city<rank>-<id>" or "rural-<id>").
    """
    lat, lon, city = _scatter(geo, n, 1)
    rng = np.random.default_rng([geo.seed, 2])
    relative = geo.share[city] / np.median(geo.share)  # rural rows (-1) masked just below
    weight = np.where(city >= 0, relative ** (1 - geo.spread), 0.5)
    demand = np.round(rng.lognormal(np.log(2000.0), 1.0, n) * weight, 1)
    ids = np.arange(n, dtype=np.int64)
    names = [f"city{c}-{i}" if c >= 0 else f"rural-{i}" for c, i in zip(city, ids, strict=True)]
    return pd.DataFrame(
        {"point_id": ids, "lat": lat, "lon": lon, "demand": demand, "point_name": names}
    )


def candidates(geo: Geography, n: int) -> pd.DataFrame:
    """Draws n candidate sites from the points' law (independently of the points).

    Returns:
        candidate_id ("C0".."C{n-1}"), lat, lon.
    """
    lat, lon, _ = _scatter(geo, n, 3)
    return pd.DataFrame({"candidate_id": [f"C{i}" for i in range(n)], "lat": lat, "lon": lon})


def stores(geo: Geography, points: pd.DataFrame, n: int, jitter_km: float = 1.0) -> pd.DataFrame:
    """Draws n existing stores, each `jitter_km` (sigma) from a point picked by its demand.

    Returns:
        store_id ("S0".."S{n-1}"), lat, lon, attractiveness (lognormal, median 1).
    """
    rng = np.random.default_rng([geo.seed, 4])
    demand = points["demand"].to_numpy(dtype=float)
    at = rng.choice(len(points), size=n, p=demand / demand.sum())
    dy, dx = rng.normal(0.0, jitter_km, size=(2, n))
    lat = points["lat"].to_numpy()[at] + dy / KM_PER_DEG
    lon = points["lon"].to_numpy()[at] + dx / (KM_PER_DEG * np.cos(np.radians(lat)))
    lat_min, lat_max, lon_min, lon_max = geo.bbox
    lat, lon = np.clip(lat, lat_min, lat_max), np.clip(lon, lon_min, lon_max)
    ids, a = [f"S{i}" for i in range(n)], np.round(rng.lognormal(0.0, 0.4, n), 4)
    return pd.DataFrame({"store_id": ids, "lat": lat, "lon": lon, "attractiveness": a})


def scenario(
    n_points: int,
    n_candidates: int | None = None,
    n_stores: int | None = None,
    seed: int = 0,
    **geography: Any,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(candidates, points, stores) for `huff.score`, in its argument order.

    Args:
        n_points: Number of demand points (>= 1).
        n_candidates: Number of candidate sites (default: n_points).
        n_stores: Number of existing stores (default: n_points // 5, at least 1).
        seed: Seed of every draw.
        **geography: Other arguments of `cities` (n_cities, bbox, zipf, rural...).
    """
    if n_points < 1:
        raise ValueError(f"need at least one demand point, got {n_points}")
    geo = cities(seed=seed, **geography)
    points = demand_points(geo, n_points)
    n_cand = n_points if n_candidates is None else n_candidates
    n_st = max(1, n_points // 5) if n_stores is None else n_stores
    log.info("scenario seed %d: %d points, %d candidates, %d stores", seed, n_points, n_cand, n_st)
    return candidates(geo, n_cand), points, stores(geo, points, n_st)


def schema(id_column: str) -> T.StructType:
    """The Spark schema (non-nullable) of the generated frame whose first column is given."""
    fields = (column.split() for column in COLUMNS[id_column].split(", "))
    return T.StructType([T.StructField(name, _TYPES[kind], False) for name, kind in fields])


def to_spark(spark: SparkSession, pdf: pd.DataFrame) -> DataFrame:
    """A generated points, stores or candidates frame as a Spark DataFrame of its schema."""
    spark_schema = schema(pdf.columns[0])
    return spark.createDataFrame(pdf[spark_schema.fieldNames()], spark_schema)

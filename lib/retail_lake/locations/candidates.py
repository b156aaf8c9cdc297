"""Scope, demand points, existing stores and candidate sites with their features.

Inputs are silver.places (demand: `demand_population` at each populated place) and
silver.store_locations (existing stores). The scope is a list of countries: by default
every country that has existing stores (a country without stores has no competition, so
its candidates would win every ranking).

Candidate sites come from one of three methods (conf: locations.candidates.method):
- `places`: populated places in scope with no existing store within
  `min_store_distance_km` (and at least `min_population` people);
- `grid`: a regular grid over `grid.region` [lat_min, lon_min, lat_max, lon_max] every
  `grid.spacing_km`, each point taking the country and region of its nearest place;
- `list`: the sites in `list` ({id, name, lat, lon}), likewise placed in a country.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from retail_lake.locations.geometry import DISTANCE_KM, EARTH_RADIUS_KM, pairs_within
from retail_lake.locations.huff import HuffParams, store_attractiveness

METHODS = ("places", "grid", "list")


class CandidateError(ValueError):
    """Invalid candidate configuration."""


@dataclass(frozen=True)
class CandidateSpec:
    """conf: locations.candidates."""

    method: str = "places"
    min_store_distance_km: float = 2.0
    min_population: int = 0
    radii_km: tuple[int, ...] = (1, 5, 10)
    grid_region: tuple[float, ...] = ()
    grid_spacing_km: float = 5.0
    sites: tuple[Mapping[str, Any], ...] = ()

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CandidateError(
                f"locations.candidates.method must be one of {METHODS}, got {self.method!r}"
            )
        if not self.radii_km or any(
            not isinstance(r, int) or isinstance(r, bool) or r <= 0 for r in self.radii_km
        ):
            raise CandidateError(
                "locations.candidates.radii_km must be a non-empty list of whole km > 0, "
                f"got {list(self.radii_km)!r}"
            )
        if self.min_store_distance_km < 0:
            raise CandidateError("locations.candidates.min_store_distance_km must be >= 0")
        if self.method == "grid":
            region = self.grid_region
            if len(region) != 4 or not (-90 <= region[0] < region[2] <= 90):
                raise CandidateError(
                    "locations.candidates.grid.region must be [lat_min, lon_min, lat_max, "
                    f"lon_max] with -90 <= lat_min < lat_max <= 90, got {list(region)!r}"
                )
            if not (-180 <= region[1] <= 180 and -180 <= region[3] <= 180):
                raise CandidateError("locations.candidates.grid.region: longitudes in -180..180")
            if self.grid_spacing_km <= 0:
                raise CandidateError("locations.candidates.grid.spacing_km must be > 0")
        if self.method == "list":
            if not self.sites:
                raise CandidateError("locations.candidates.list is empty (method: list)")
            for i, site in enumerate(self.sites):
                missing = {"id", "lat", "lon"} - set(site)
                if missing:
                    raise CandidateError(
                        f"locations.candidates.list[{i}] lacks {sorted(missing)} ({site!r})"
                    )
                if not (-90 <= float(site["lat"]) <= 90 and -180 <= float(site["lon"]) <= 180):
                    raise CandidateError(
                        f"locations.candidates.list[{i}] ({site['id']}): coordinates out of range"
                    )

    @classmethod
    def from_config(cls, section: Mapping[str, Any]) -> CandidateSpec:
        grid = section.get("grid") or {}
        return cls(
            method=section.get("method", "places"),
            min_store_distance_km=float(section.get("min_store_distance_km", 2.0)),
            min_population=int(section.get("min_population", 0)),
            radii_km=tuple(section.get("radii_km", (1, 5, 10))),
            grid_region=tuple(float(v) for v in grid.get("region", ()) or ()),
            grid_spacing_km=float(grid.get("spacing_km", 5.0)),
            sites=tuple(section.get("list", ()) or ()),
        )

    @property
    def max_radius_km(self) -> int:
        return max(self.radii_km)


# ----------------------------------------------------------------------------- inputs
def scope(stores: DataFrame, countries: Sequence[str]) -> list[str]:
    """The countries to score: the configured ones, else those with existing stores."""
    if countries:
        return sorted({c.upper() for c in countries})
    return sorted(r[0] for r in stores.select("country_code").distinct().collect())


def demand_points(places: DataFrame, countries: Sequence[str]) -> DataFrame:
    """silver.places in scope as Huff demand points."""
    return places.where(F.col("country_code").isin(list(countries))).select(
        F.col("geonameid").alias("point_id"),
        F.col("name").alias("point_name"),
        F.col("latitude").alias("lat"),
        F.col("longitude").alias("lon"),
        F.col("demand_population").cast("double").alias("demand"),
        "country_code",
        F.col("admin1_code").alias("region"),
    )


def existing_stores(stores: DataFrame, countries: Sequence[str], params: HuffParams) -> DataFrame:
    """silver.store_locations in scope, with their Huff attractiveness."""
    return stores.where(F.col("country_code").isin(list(countries))).select(
        F.col("store_number").alias("store_id"),
        "country_code",
        F.col("latitude").alias("lat"),
        F.col("longitude").alias("lon"),
        store_attractiveness(F.col("ownership_type"), params).alias("attractiveness"),
    )


# ----------------------------------------------------------------------------- sites
SITE_COLUMNS = ("candidate_id", "kind", "name", "lat", "lon", "country_code", "region")


def place_sites(points: DataFrame, stores: DataFrame, spec: CandidateSpec) -> DataFrame:
    """Populated places with no existing store within `min_store_distance_km`."""
    places = points.where(F.col("demand") >= F.lit(float(spec.min_population)))
    if spec.min_store_distance_km > 0:
        covered = pairs_within(
            places.select("point_id", "lat", "lon"),
            stores.select("store_id", "lat", "lon"),
            spec.min_store_distance_km,
        ).select("point_id")
        places = places.join(covered.distinct(), on="point_id", how="left_anti")
    return places.select(
        F.concat(F.lit("place-"), F.col("point_id").cast("string")).alias("candidate_id"),
        F.lit("place").alias("kind"),
        F.col("point_name").alias("name"),
        "lat",
        "lon",
        "country_code",
        "region",
    )


def grid_points(region: Sequence[float], spacing_km: float) -> list[tuple[str, float, float]]:
    """Grid sites every `spacing_km` (north-south and east-west at each row's latitude)."""
    lat_min, lon_min, lat_max, lon_max = region
    width = (lon_max - lon_min) % 360 or (360.0 if lon_max != lon_min else 0.0)
    step_lat = math.degrees(spacing_km / EARTH_RADIUS_KM)
    out = []
    lat = lat_min
    while lat <= lat_max + 1e-12:
        cos = max(math.cos(math.radians(lat)), 1e-9)
        step_lon = min(math.degrees(spacing_km / (EARTH_RADIUS_KM * cos)), 360.0)
        k = 0
        while k * step_lon <= width + 1e-12 and k * step_lon < 360.0:
            lon = (lon_min + k * step_lon + 180.0) % 360.0 - 180.0
            out.append((f"grid-{lat:.5f}_{lon:.5f}", round(lat, 6), round(lon, 6)))
            k += 1
        lat += step_lat
    return out


def placed_sites(
    spark: SparkSession,
    sites: list[tuple[str, str, str | None, float, float]],
    points: DataFrame,
    search_km: float,
) -> DataFrame:
    """Grid or listed sites in scope: each takes the country and region of its nearest
    place within `search_km`; a site with none is outside the scope and left out."""
    schema = T.StructType(
        [
            T.StructField("candidate_id", T.StringType(), False),
            T.StructField("kind", T.StringType(), False),
            T.StructField("name", T.StringType(), True),
            T.StructField("lat", T.DoubleType(), False),
            T.StructField("lon", T.DoubleType(), False),
        ]
    )
    df = spark.createDataFrame(sites, schema)
    nearest = (
        pairs_within(
            df.select("candidate_id", "lat", "lon"),
            points.select("point_id", "lat", "lon", "country_code", "region"),
            search_km,
        )
        .groupBy("candidate_id")
        .agg(
            F.min_by(F.struct("country_code", "region"), F.struct(DISTANCE_KM, "point_id")).alias(
                "near"
            )
        )
    )
    return df.join(nearest, on="candidate_id", how="inner").select(
        *SITE_COLUMNS[:5],
        F.col("near.country_code").alias("country_code"),
        F.col("near.region").alias("region"),
    )


def candidate_sites(
    spark: SparkSession, points: DataFrame, stores: DataFrame, spec: CandidateSpec, search_km: float
) -> DataFrame:
    """The candidate sites of the configured method, as SITE_COLUMNS."""
    if spec.method == "places":
        return place_sites(points, stores, spec)
    if spec.method == "grid":
        rows = [
            (i, "grid", None, lat, lon)
            for i, lat, lon in grid_points(spec.grid_region, spec.grid_spacing_km)
        ]
    else:
        rows = [
            (f"list-{s['id']}", "list", s.get("name"), float(s["lat"]), float(s["lon"]))
            for s in spec.sites
        ]
    return placed_sites(spark, rows, points, search_km)


# ----------------------------------------------------------------------------- features
def candidate_features(
    sites: DataFrame, points: DataFrame, stores: DataFrame, spec: CandidateSpec, nearest_km: float
) -> DataFrame:
    """Population and existing stores within each radius; distance to the nearest store.

    `nearest_store_km` is null when no existing store lies within `nearest_km`.
    """
    radii = sorted(spec.radii_km)
    xy = sites.select("candidate_id", "lat", "lon")
    near_points = pairs_within(
        xy, points.select("point_id", "lat", "lon", "demand"), float(radii[-1])
    )
    population = near_points.groupBy("candidate_id").agg(
        *[
            F.sum(F.when(F.col(DISTANCE_KM) <= r, F.col("demand")).otherwise(0.0))
            .cast("long")
            .alias(f"p{r}")
            for r in radii
        ]
    )
    near_stores = pairs_within(
        xy, stores.select("store_id", "lat", "lon"), max(float(radii[-1]), nearest_km)
    )
    store_counts = near_stores.groupBy("candidate_id").agg(
        *[F.count(F.when(F.col(DISTANCE_KM) <= r, 1)).alias(f"s{r}") for r in radii],
        F.min(DISTANCE_KM).alias("nearest"),
    )
    keys = F.array(*[F.lit(r) for r in radii])
    return (
        sites.join(population, on="candidate_id", how="left")
        .join(store_counts, on="candidate_id", how="left")
        .select(
            *SITE_COLUMNS,
            F.map_from_arrays(
                keys, F.array(*[F.coalesce(F.col(f"p{r}"), F.lit(0)) for r in radii])
            ).alias("population_within_km"),
            F.map_from_arrays(
                keys,
                F.array(*[F.coalesce(F.col(f"s{r}"), F.lit(0)).cast("long") for r in radii]),
            ).alias("stores_within_km"),
            F.when(F.col("nearest") <= F.lit(nearest_km), F.round("nearest", 3)).alias(
                "nearest_store_km"
            ),
        )
    )

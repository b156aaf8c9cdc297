"""Great-circle distances and the bucketed "all pairs within D km" join.

`pairs_within(left, right, max_km)` finds every (left, right) pair whose great-circle
distance is at most `max_km` without a cross join:

- Latitude is cut into bands of height D (in degrees); a point within D of another lies
  in the same band or an adjacent one.
- Each band is cut into longitude cells at least as wide as the widest longitude span a
  circle of radius D reaches in that band (wider cells towards the poles; one cell for a
  band touching a pole).
- A right-hand point sits in exactly one (band, cell). A left-hand point lists the cells of
  the three bands that its circle of radius D can reach: the longitude span of that circle
  is asin(sin(D/R) / cos(lat)) either side (all longitudes when the circle holds a pole),
  taken modulo 360 so the antimeridian wraps. The two sides join on (band, cell), the
  exact haversine distance is computed and pairs beyond D are dropped.

Each pair is produced exactly once (a right point has one cell; the listed cells of a left
point are distinct), so sums over pairs equal a brute-force cross join up to float rounding
of the summation order. The cell lists are slightly conservative (a margin of 1e-9 degree)
so that rounding never loses a pair at a cell edge.
"""

from __future__ import annotations

import math

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

# IUGG mean Earth radius (km): the radius of the sphere haversine distances are taken on.
EARTH_RADIUS_KM = 6371.0088
_MARGIN_DEG = 1e-9

LAT = "lat"
LON = "lon"
DISTANCE_KM = "distance_km"


class GeometryError(ValueError):
    """Invalid coordinates or distance parameters."""


def haversine_km(lat1: Column, lon1: Column, lat2: Column, lon2: Column) -> Column:
    """Great-circle distance in km between two WGS84 points given in degrees."""
    p1, p2 = F.radians(lat1), F.radians(lat2)
    dlat = p2 - p1
    dlon = F.radians(lon2) - F.radians(lon1)
    a = F.pow(F.sin(dlat / 2), 2) + F.cos(p1) * F.cos(p2) * F.pow(F.sin(dlon / 2), 2)
    return F.lit(2 * EARTH_RADIUS_KM) * F.asin(F.sqrt(F.least(F.lit(1.0), a)))


def haversine_km_py(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """The same distance in plain Python (tests and brute-force references)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = (
        math.sin((p2 - p1) / 2) ** 2
        + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * math.asin(math.sqrt(min(1.0, a)))


def check_max_km(max_km: float) -> float:
    if not isinstance(max_km, int | float) or isinstance(max_km, bool):
        raise GeometryError(f"maximum distance must be a number of km, got {max_km!r}")
    if not (0 < max_km < math.pi * EARTH_RADIUS_KM / 2):
        raise GeometryError(
            f"maximum distance must be > 0 and < {math.pi * EARTH_RADIUS_KM / 2:.0f} km "
            f"(a quarter of the Earth's circumference), got {max_km}"
        )
    return float(max_km)


class Grid:
    """Bands and cells sized from a maximum distance (see the module docstring)."""

    def __init__(self, max_km: float) -> None:
        self.max_km = check_max_km(max_km)
        self.delta = self.max_km / EARTH_RADIUS_KM  # angular radius (radians)
        self.band_deg = math.degrees(self.delta) * (1 + 1e-9)
        self.bands = math.ceil(180.0 / self.band_deg)

    def band(self, lat: Column) -> Column:
        b = F.floor((lat + F.lit(90.0)) / F.lit(self.band_deg))
        return F.least(F.greatest(b, F.lit(0)), F.lit(self.bands - 1)).cast("int")

    def cells_in_band(self, band: Column) -> Column:
        """Longitude cells of a band: each at least as wide as a circle's span there."""
        lo = F.lit(-90.0) + band.cast("double") * F.lit(self.band_deg)
        edge = F.least(F.greatest(F.abs(lo), F.abs(lo + F.lit(self.band_deg))), F.lit(90.0))
        reach = F.lit(math.sin(self.delta)) / F.cos(F.radians(edge))
        span_deg = F.degrees(F.asin(F.least(reach, F.lit(1.0))))
        n = F.floor(F.lit(360.0) / F.greatest(span_deg, F.lit(1e-12)))
        return (
            F.when((edge >= F.lit(90.0 - 1e-9)) | (reach >= F.lit(1.0)), F.lit(1))
            .otherwise(F.greatest(n, F.lit(1)))
            .cast("int")
        )

    def cell(self, lon: Column, cells: Column) -> Column:
        return F.pmod(
            F.floor((lon + F.lit(180.0)) / F.lit(360.0) * cells), cells.cast("long")
        ).cast("int")

    def lon_span_deg(self, lat: Column) -> Column:
        """Half-width in longitude of the circle of radius D around a point (180: all)."""
        reach = F.lit(math.sin(self.delta)) / F.cos(F.radians(lat))
        holds_pole = F.abs(F.radians(lat)) + F.lit(self.delta) >= F.lit(math.pi / 2)
        return F.when(holds_pole | (reach >= F.lit(1.0)), F.lit(180.0)).otherwise(
            F.degrees(F.asin(reach)) + F.lit(_MARGIN_DEG)
        )

    def bucketed(self, df: DataFrame) -> DataFrame:
        """Adds the one (_band, _cell) each point lies in."""
        with_band = df.withColumn("_band", self.band(F.col(LAT)))
        return with_band.withColumn(
            "_cell", self.cell(F.col(LON), self.cells_in_band(F.col("_band")))
        )

    def reachable(self, df: DataFrame) -> DataFrame:
        """One row per (point, cell its circle of radius D can reach), as (_band, _cell)."""
        own = self.band(F.col(LAT))
        bands = F.sequence(F.greatest(own - 1, F.lit(0)), F.least(own + 1, F.lit(self.bands - 1)))
        per_band = df.withColumn("_span", self.lon_span_deg(F.col(LAT))).withColumn(
            "_band", F.explode(bands)
        )
        n = F.col("_n")
        first = F.floor((F.col(LON) - F.col("_span") + F.lit(180.0)) / F.lit(360.0) * n)
        last = F.floor((F.col(LON) + F.col("_span") + F.lit(180.0)) / F.lit(360.0) * n)
        cells = F.when(
            (last - first + 1 >= n) | (F.col("_span") >= F.lit(180.0)),
            F.sequence(F.lit(0), n - 1),
        ).otherwise(
            F.transform(F.sequence(first.cast("int"), last.cast("int")), lambda k: F.pmod(k, n))
        )
        return (
            per_band.withColumn("_n", self.cells_in_band(F.col("_band")))
            .withColumn("_cell", F.explode(cells))
            .drop("_span", "_n")
        )


def _prefixed(df: DataFrame, prefix: str) -> DataFrame:
    return df.select(*[F.col(c).alias(f"{prefix}{c}") for c in df.columns])


def _check_sides(left: DataFrame, right: DataFrame) -> None:
    for side, df in (("left", left), ("right", right)):
        missing = {LAT, LON} - set(df.columns)
        if missing:
            raise GeometryError(f"{side} side lacks column(s) {sorted(missing)} (degrees)")
    clash = (set(left.columns) & set(right.columns)) - {LAT, LON}
    if clash:
        raise GeometryError(f"both sides have column(s) {sorted(clash)}; rename one side")


def pairs_within(left: DataFrame, right: DataFrame, max_km: float) -> DataFrame:
    """Every (left, right) pair at most `max_km` apart, bucketed (no cross join).

    Both sides have `lat` and `lon` (degrees) and otherwise distinct column names. The
    result holds the other columns of both sides plus `distance_km`.
    """
    _check_sides(left, right)
    grid = Grid(max_km)
    lhs = grid.reachable(_prefixed(left, "_l_").withColumnsRenamed({"_l_lat": LAT, "_l_lon": LON}))
    rhs = grid.bucketed(_prefixed(right, "_r_").withColumnsRenamed({"_r_lat": LAT, "_r_lon": LON}))
    lhs = lhs.withColumnsRenamed({LAT: "_l_lat", LON: "_l_lon"})
    rhs = rhs.withColumnsRenamed({LAT: "_r_lat", LON: "_r_lon"})
    joined = lhs.join(rhs, on=["_band", "_cell"], how="inner")
    return _finish(joined, left, right, grid.max_km)


def pairs_within_brute(left: DataFrame, right: DataFrame, max_km: float) -> DataFrame:
    """The same pairs from a cross join: the reference for tests and benchmarks."""
    _check_sides(left, right)
    max_km = check_max_km(max_km)
    joined = _prefixed(left, "_l_").crossJoin(_prefixed(right, "_r_"))
    return _finish(joined, left, right, max_km)


def _finish(joined: DataFrame, left: DataFrame, right: DataFrame, max_km: float) -> DataFrame:
    distance = haversine_km(F.col("_l_lat"), F.col("_l_lon"), F.col("_r_lat"), F.col("_r_lon"))
    keep = [F.col(f"_l_{c}").alias(c) for c in left.columns if c not in (LAT, LON)]
    keep += [F.col(f"_r_{c}").alias(c) for c in right.columns if c not in (LAT, LON)]
    return (
        joined.withColumn(DISTANCE_KM, distance)
        .where(F.col(DISTANCE_KM) <= F.lit(max_km))
        .select(*keep, DISTANCE_KM)
    )

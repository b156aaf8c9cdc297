"""Location scoring: great-circle pairs, the bucketed join and Huff's model."""

from __future__ import annotations

import math
import random

import pytest
from pyspark.sql import types as T

from retail_lake.locations.geometry import (
    GeometryError,
    haversine_km_py,
    pairs_within,
    pairs_within_brute,
)
from retail_lake.locations.huff import HuffError, HuffParams, exact_sum, score, score_python

POINT = T.StructType(
    [
        T.StructField("pid", T.StringType(), False),
        T.StructField("lat", T.DoubleType(), False),
        T.StructField("lon", T.DoubleType(), False),
    ]
)


def _frame(spark, rows, prefix):
    schema = T.StructType([T.StructField(f"{prefix}id", T.StringType(), False), *POINT.fields[1:]])
    return spark.createDataFrame(rows, schema)


def _pairs(df):
    return {(r[0], r[1]): r["distance_km"] for r in df.collect()}


def test_haversine_matches_known_distances():
    # London (51.5074, -0.1278) to Paris (48.8566, 2.3522): 343.5 km on the mean sphere.
    assert haversine_km_py(51.5074, -0.1278, 48.8566, 2.3522) == pytest.approx(343.56, abs=0.05)
    # A quarter meridian: pole to equator.
    assert haversine_km_py(90, 0, 0, 0) == pytest.approx(math.pi * 6371.0088 / 2, rel=1e-12)
    # Across the antimeridian: 0.2 degree of longitude on the equator.
    assert haversine_km_py(0, 179.9, 0, -179.9) == pytest.approx(22.239, abs=0.001)


def _edge_points(rng: random.Random, n: int) -> list[tuple[float, float]]:
    """Random points plus points crowding the places where bucketing could go wrong."""
    pts = [(rng.uniform(-90, 90), rng.uniform(-180, 180)) for _ in range(n)]
    for _ in range(n):
        kind = rng.choice(["antimeridian", "north", "south", "pole", "band_edge", "dense"])
        if kind == "antimeridian":
            pts.append((rng.uniform(-60, 60), rng.choice([-1, 1]) * rng.uniform(179.5, 180.0)))
        elif kind == "north":
            pts.append((rng.uniform(84, 90), rng.uniform(-180, 180)))
        elif kind == "south":
            pts.append((rng.uniform(-90, -84), rng.uniform(-180, 180)))
        elif kind == "pole":
            pts.append((rng.choice([90.0, -90.0]), rng.uniform(-180, 180)))
        elif kind == "band_edge":
            # multiples of the band height of a 50 km grid, and longitudes on cell edges
            h = math.degrees(50 / 6371.0088)
            pts.append(
                (-90 + h * rng.randint(1, int(180 / h)), rng.choice([-180.0, 0.0, 180.0, 90.0]))
            )
        else:
            pts.append((48.8 + rng.uniform(-0.5, 0.5), 2.3 + rng.uniform(-0.5, 0.5)))
    return pts


@pytest.mark.parametrize("max_km", [50.0, 400.0])
def test_bucketed_pairs_equal_brute_force(spark, max_km):
    rng = random.Random(7 + int(max_km))
    left = [(f"a{i}", lat, lon) for i, (lat, lon) in enumerate(_edge_points(rng, 150))]
    right = [(f"b{i}", lat, lon) for i, (lat, lon) in enumerate(_edge_points(rng, 150))]
    a, b = _frame(spark, left, "a"), _frame(spark, right, "b")
    bucketed = _pairs(pairs_within(a, b, max_km))
    brute = _pairs(pairs_within_brute(a, b, max_km))
    expected = {
        (i, j): d
        for i, la, loa in left
        for j, lb, lob in right
        if (d := haversine_km_py(la, loa, lb, lob)) <= max_km
    }
    assert len(expected) > 300  # the edge cases produce pairs, not just an empty set
    assert set(bucketed) == set(expected) == set(brute)
    for key, d in expected.items():
        assert bucketed[key] == pytest.approx(d, rel=1e-9, abs=1e-9)
    # every pair once: no duplicates from overlapping cells
    assert pairs_within(a, b, max_km).count() == len(expected)


def test_pairs_within_rejects_bad_input(spark):
    a = _frame(spark, [("a", 0.0, 0.0)], "a")
    with pytest.raises(GeometryError, match="maximum distance must be > 0"):
        pairs_within(a, _frame(spark, [("b", 0.0, 0.0)], "b"), 0)
    with pytest.raises(GeometryError, match="both sides have column"):
        pairs_within(a, a, 10)
    with pytest.raises(GeometryError, match="lacks column"):
        pairs_within(a.drop("lon"), _frame(spark, [("b", 0.0, 0.0)], "b"), 10)


def test_huff_hand_computed(spark):
    """Two points, one store, one candidate on the equator (1 degree = 111.195 km)."""
    km = 6371.0088 * math.pi / 180  # km per degree of longitude on the equator
    params = HuffParams(decay=2.0, max_km=3 * km, min_km=0.5)
    # point p1 at 0, store at 1 degree, candidate at 2 degrees; p2 at 4 degrees.
    points = [("p1", 0.0, 0.0, 100.0), ("p2", 0.0, 4.0, 50.0)]
    stores = [("s1", 0.0, 1.0, 1.0)]
    cands = [("c1", 0.0, 2.0)]
    # p1: S = 1/km^2; candidate at 2 km-degrees: U = 1/(2km)^2 = S/4 -> share 1/5 -> 20
    # p2: store is 3 degrees away -> in reach (<= 3 km-degrees): S = 1/(3km)^2,
    #     candidate 2 degrees away: U = 1/(2km)^2; share = (1/4)/(1/4+1/9) = 9/13
    s2 = 1 / (3 * km) ** 2
    u2 = 1 / (2 * km) ** 2
    expected_captured = 100 * 0.2 + 50 * u2 / (s2 + u2)
    got = _score(spark, cands, points, stores, params)["c1"]
    assert got["captured_demand"] == pytest.approx(expected_captured, rel=1e-9)
    # U0 = 0: every point was served, so all captured demand is cannibalised, net gain 0.
    assert got["cannibalised_demand"] == pytest.approx(expected_captured, rel=1e-9)
    assert got["net_gain"] == pytest.approx(0.0, abs=1e-9)
    assert [t["point_id"] for t in got["top_points"]] == ["p2", "p1"]  # 34.6 > 20


def test_exact_sum_does_not_depend_on_the_order(spark):
    """A re-run adds the same terms in another order (shuffle blocks arrive in any order): a
    plain double sum changes, the scores' sums must not, or an unchanged re-run rewrites."""
    from pyspark.sql import functions as F

    def sums(values):
        df = spark.createDataFrame([(v,) for v in values], "x double").coalesce(1)
        return tuple(df.agg(F.sum("x"), exact_sum(F.col("x"))).first())

    forward, backward = sums([1e16, 1.0, -1e16]), sums([1e16, -1e16, 1.0])
    assert forward[0] != backward[0]  # the plain sum does depend on the order
    assert forward[1] == backward[1] == 1.0
    small = [0.1] * 10 + [1e-12]
    assert sums(small)[1] == sums(list(reversed(small)))[1] == pytest.approx(1.0 + 1e-12)


def test_huff_outside_option_and_unserved_demand(spark):
    km = 6371.0088 * math.pi / 180
    params = HuffParams(decay=1.0, max_km=1.5 * km, min_km=0.5, outside_utility=1 / km)
    points = [("p1", 0.0, 0.0, 100.0), ("far", 0.0, 3.0, 40.0)]
    stores = [("s1", 0.0, 1.0, 2.0)]  # attractiveness 2 at 1 degree: S = 2/km
    cands = [("c1", 0.0, 2.0), ("alone", 50.0, 50.0)]
    got = _score(spark, cands, points, stores, params)
    u0, s = 1 / km, 2 / km
    u_c = 1 / (2 * km)  # p1 is 2 degrees from c1: beyond 1.5 -> not in reach
    assert u_c  # p1 out of reach: only "far" (1 degree from c1, no store in reach)
    u_far = 1 / km
    captured = 40 * u_far / (u0 + u_far)
    assert got["c1"]["captured_demand"] == pytest.approx(captured, rel=1e-9)
    assert got["c1"]["cannibalised_demand"] == pytest.approx(0.0, abs=1e-12)
    assert got["c1"]["net_gain"] == pytest.approx(captured, rel=1e-9)
    assert got["alone"]["captured_demand"] == 0.0 and got["alone"]["points_in_reach"] == 0
    # a served point with an outside option: cannibalised < captured
    cands2 = [("c2", 0.0, 0.5)]  # 0.5 deg from p1, 0.5 from s1
    got2 = _score(spark, cands2, points, stores, params)["c2"]
    u = 1 / (0.5 * km)
    cap = 100 * u / (u0 + s + u)
    can = 100 * (s / (u0 + s) - s / (u0 + s + u))
    assert got2["captured_demand"] == pytest.approx(cap, rel=1e-9)
    assert got2["cannibalised_demand"] == pytest.approx(can, rel=1e-9)
    assert 0 < got2["net_gain"] < got2["captured_demand"]


def _score(spark, cands, points, stores, params):
    c = spark.createDataFrame(cands, "candidate_id string, lat double, lon double")
    p = spark.createDataFrame(
        [(i, la, lo, d, f"name {i}") for i, la, lo, d in points],
        "point_id string, lat double, lon double, demand double, point_name string",
    )
    s = spark.createDataFrame(
        stores, "store_id string, lat double, lon double, attractiveness double"
    )
    return {r["candidate_id"]: r.asDict(recursive=True) for r in score(c, p, s, params).collect()}


def test_huff_equals_brute_force_on_random_inputs(spark):
    rng = random.Random(11)
    params = HuffParams(decay=1.7, max_km=30.0, min_km=1.0, outside_utility=0.01)

    def cluster(n, prefix, extra):
        out = []
        for i in range(n):
            lat = rng.choice([51.5, 71.0, -0.1]) + rng.gauss(0, 0.3)
            lon = rng.choice([-0.12, 179.9, 25.0]) + rng.gauss(0, 0.4)
            lon = (lon + 180) % 360 - 180
            out.append((f"{prefix}{i}", lat, lon, *extra()))
        return out

    points = cluster(120, "p", lambda: (float(rng.randint(1000, 90000)),))
    stores = cluster(40, "s", lambda: (rng.choice([1.0, 2.5]),))
    cands = [c[:3] for c in cluster(40, "c", lambda: ())]
    got = _score(spark, cands, points, stores, params)
    want = score_python(cands, points, stores, params)
    assert set(got) == set(want)
    assert sum(1 for v in want.values() if v[0] > 0) > 20
    for cid, (cap, can, net) in want.items():
        assert got[cid]["captured_demand"] == pytest.approx(cap, rel=1e-9, abs=1e-9)
        assert got[cid]["cannibalised_demand"] == pytest.approx(can, rel=1e-9, abs=1e-9)
        assert got[cid]["net_gain"] == pytest.approx(net, rel=1e-9, abs=1e-6)


def test_the_country_factor_multiplies_the_demand_after_the_exponent(spark):
    """README: a place's demand is demand_population ** 1.15 times its country's stores per
    person relative to the scope's. Two countries, worked out by hand: AA has 3 stores and
    2,000 people, BB 1 store and 6,000: stores per person 3/2000 and 1/6000 against 4/8000
    overall, factors 3 and 1/3."""
    params = HuffParams(demand_exponent=1.15, country_demand="store_density", max_km=50.0)
    points = [  # (id, lat, lon, people, country): AA around (0, 0), BB around (0, 10)
        ("a1", 0.0, 0.05, 1500.0, "AA"),
        ("a2", 0.05, 0.0, 500.0, "AA"),
        ("b1", 0.0, 10.05, 4000.0, "BB"),
        ("b2", 0.05, 10.0, 2000.0, "BB"),
    ]
    stores = [
        ("s1", 0.1, 0.1, 1.0, "AA"),
        ("s2", -0.1, 0.1, 1.0, "AA"),
        ("s3", 0.1, -0.1, 1.0, "AA"),
        ("s4", 0.1, 10.1, 1.0, "BB"),
    ]
    cands = [("ca", 0.0, 0.0), ("cb", 0.0, 10.0)]
    c = spark.createDataFrame(cands, "candidate_id string, lat double, lon double")
    p = spark.createDataFrame(
        [(i, la, lo, d, f"name {i}", cc) for i, la, lo, d, cc in points],
        "point_id string, lat double, lon double, demand double, point_name string, "
        "country_code string",
    )
    s = spark.createDataFrame(
        stores,
        "store_id string, lat double, lon double, attractiveness double, country_code string",
    )
    got = {r["candidate_id"]: r for r in score(c, p, s, params).collect()}
    factor = {"AA": 3.0, "BB": 1.0 / 3.0}
    # The reference weighs each place people ** 1.15 * factor; score_python raises what it is
    # given to the exponent, so it is given people * factor ** (1 / 1.15).
    scaled = [(i, la, lo, d * factor[cc] ** (1 / 1.15)) for i, la, lo, d, cc in points]
    want = score_python(cands, scaled, [x[:4] for x in stores], params)
    for cid, (cap, can, net) in want.items():
        assert got[cid]["captured_demand"] == pytest.approx(cap, rel=1e-9)
        assert got[cid]["cannibalised_demand"] == pytest.approx(can, rel=1e-9)
        assert got[cid]["net_gain"] == pytest.approx(net, rel=1e-9)
    assert got["ca"]["demand_in_reach"] == pytest.approx(3.0 * (1500**1.15 + 500**1.15))
    assert got["cb"]["demand_in_reach"] == pytest.approx((4000**1.15 + 2000**1.15) / 3.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"decay": 0}, "decay must be a finite number > 0"),
        ({"max_km": -5}, "max_km"),
        ({"min_km": 30, "max_km": 25}, "min_km .* must be below max_km"),
        ({"outside_utility": -1}, "outside_utility must be a finite number >= 0"),
        ({"attractiveness": {"Licensed": 0}}, "attractiveness.Licensed"),
        ({"decay": float("nan")}, "decay"),
    ],
)
def test_invalid_parameters_are_clear_errors(kwargs, message):
    with pytest.raises(HuffError, match=message):
        HuffParams(**kwargs)
    with pytest.raises(HuffError, match="unknown key"):
        HuffParams.from_config({"decay_rate": 2})


def test_grid_points_are_spaced_and_wrap_the_antimeridian():
    from retail_lake.locations.candidates import grid_points

    pts = grid_points([0.0, 179.9, 0.1, -179.9], 5.0)  # crosses 180 eastwards
    lats = sorted({lat for _, lat, _ in pts})
    assert len(lats) == 3  # 0, 0.045, 0.09 degrees: 5 km apart
    assert haversine_km_py(lats[0], 0, lats[1], 0) == pytest.approx(5.0, abs=1e-3)  # 6 decimals
    row = sorted(lon for _, lat, lon in pts if lat == lats[0])
    # 0.2 degrees of longitude (22.2 km) every 5 km: 5 sites, both sides of the antimeridian
    assert len(row) == 5 and row[0] < -179 and row[-1] > 179
    assert all(-180 <= lon < 180 for lon in row)
    ids = [i for i, _, _ in pts]
    assert len(ids) == len(set(ids)) and ids[0] == "grid-0.00000_179.90000"


def test_listed_and_grid_sites_take_the_nearest_places_country(spark):
    from retail_lake.locations.candidates import CandidateSpec, candidate_sites

    points = spark.createDataFrame(
        [
            (1, "Luxembourg", 49.61, 6.13, 120000.0, "LU", "LU"),
            (2, "Trier", 49.75, 6.64, 110000.0, "DE", "08"),
        ],
        "point_id long, point_name string, lat double, lon double, demand double, "
        "country_code string, region string",
    )
    stores = spark.createDataFrame([], "store_id string, lat double, lon double")
    spec = CandidateSpec(
        method="list",
        sites=(
            {"id": "a", "name": "near Trier", "lat": 49.74, "lon": 6.60},
            {"id": "b", "lat": 49.60, "lon": 6.10},
            {"id": "far", "lat": 10.0, "lon": 10.0},  # no place within the search radius
        ),
    )
    got = candidate_sites(spark, points, stores, spec, search_km=10.0).collect()
    assert sorted((r["candidate_id"], r["name"], r["country_code"], r["region"]) for r in got) == [
        ("list-a", "near Trier", "DE", "08"),
        ("list-b", None, "LU", "LU"),
    ]
    grid = CandidateSpec(method="grid", grid_region=(49.5, 6.0, 49.8, 6.7), grid_spacing_km=10.0)
    sites = candidate_sites(spark, points, stores, grid, search_km=10.0).collect()
    assert {r["country_code"] for r in sites} == {"LU", "DE"}
    assert all(r["kind"] == "grid" and r["name"] is None for r in sites)
    # with no place farther than 10 km from a site kept
    for r in sites:
        assert (
            min(
                haversine_km_py(r["lat"], r["lon"], 49.61, 6.13),
                haversine_km_py(r["lat"], r["lon"], 49.75, 6.64),
            )
            <= 10.0
        )

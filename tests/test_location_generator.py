"""The synthetic location generator: determinism, sizes, ranges, clustering; Huff on it."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from retail_lake.locations import generator as gen
from retail_lake.locations.geometry import EARTH_RADIUS_KM


def _km(lat1, lon1, lat2, lon2):
    """Haversine distance in km, numpy-broadcast."""
    p1, p2 = np.radians(lat1), np.radians(lat2)
    a = (
        np.sin((p2 - p1) / 2) ** 2
        + np.cos(p1) * np.cos(p2) * np.sin(np.radians(lon2 - lon1) / 2) ** 2
    )
    return 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(a, 1.0)))


def _nearest_city_km(geo: gen.Geography, lat, lon) -> np.ndarray:
    lat, lon = np.asarray(lat), np.asarray(lon)
    return _km(lat[:, None], lon[:, None], geo.lat[None, :], geo.lon[None, :]).min(axis=1)


def test_same_seed_same_frames_other_seed_other_frames():
    first = gen.scenario(3000, seed=11)
    again = gen.scenario(3000, seed=11)
    other = gen.scenario(3000, seed=12)
    for a, b, c in zip(first, again, other, strict=True):
        pd.testing.assert_frame_equal(a, b)
        assert not np.allclose(a["lat"].to_numpy(), c["lat"].to_numpy())


def test_points_do_not_depend_on_other_counts():
    _, points, _ = gen.scenario(500, n_candidates=10, n_stores=3, seed=5)
    _, same, _ = gen.scenario(500, n_candidates=900, n_stores=400, seed=5)
    pd.testing.assert_frame_equal(points, same)


def test_requested_sizes_columns_and_ids():
    cands, points, stores = gen.scenario(1234, n_candidates=56, n_stores=7, seed=1)
    assert (len(cands), len(points), len(stores)) == (56, 1234, 7)
    for df in (cands, points, stores):
        expected = [c.split()[0] for c in gen.COLUMNS[df.columns[0]].split(", ")]
        assert list(df.columns) == expected
        assert df.iloc[:, 0].is_unique
        assert not df.isna().any().any()
    cands, points, stores = gen.scenario(1000, seed=1)
    assert (len(cands), len(points), len(stores)) == (1000, 1000, 200)
    assert (points["demand"] > 0).all() and (stores["attractiveness"] > 0).all()


@pytest.mark.parametrize("bbox", [gen.EUROPE, (-10.0, 5.0, 170.0, 180.0)])
def test_coordinates_stay_in_the_box(bbox):
    lat_min, lat_max, lon_min, lon_max = bbox
    for df in gen.scenario(4000, seed=3, bbox=bbox, n_cities=20):
        assert df["lat"].between(lat_min, lat_max).all()
        assert df["lon"].between(lon_min, lon_max).all()


def test_points_and_candidates_cluster_around_cities():
    geo = gen.cities(seed=2)
    points, cands = gen.demand_points(geo, 5000), gen.candidates(geo, 5000)
    rng = np.random.default_rng(0)
    lat_min, lat_max, lon_min, lon_max = geo.bbox
    uniform = _nearest_city_km(
        geo, rng.uniform(lat_min, lat_max, 5000), rng.uniform(lon_min, lon_max, 5000)
    )
    for df in (points, cands):
        near = _nearest_city_km(geo, df["lat"].to_numpy(), df["lon"].to_numpy())
        assert np.median(near) < np.median(uniform) / 4
    # Big cities hold more points and more demand per point than small ones.
    city = points["point_name"].str.extract(r"^city(\d+)-")[0].dropna().astype(int)
    assert (city < 10).sum() > (city >= 390).sum() * 5
    demand = points.loc[city.index, "demand"]
    assert demand[city < 10].median() > 2 * demand[city >= 200].median()


def test_stores_follow_demand():
    geo = gen.cities(seed=4)
    points = gen.demand_points(geo, 20000)
    stores = gen.stores(geo, points, 4000)
    big = dataclasses.replace(geo, lat=geo.lat[:10], lon=geo.lon[:10])
    store_share = (_nearest_city_km(big, stores["lat"], stores["lon"]) < 30).mean()
    point_share = (_nearest_city_km(big, points["lat"], points["lon"]) < 30).mean()
    # Stores go where the demand is: more of them than of points lie in the 10 biggest cities.
    assert store_share > 1.5 * point_share


def test_invalid_arguments():
    with pytest.raises(ValueError):
        gen.cities(n_cities=0)
    with pytest.raises(ValueError):
        gen.cities(bbox=(10.0, 5.0, 0.0, 1.0))
    with pytest.raises(ValueError):
        gen.cities(rural=1.5)
    with pytest.raises(ValueError):
        gen.scenario(0)


def test_huff_scores_generated_inputs_like_the_references(spark):
    from retail_lake.locations.geometry import pairs_within_brute
    from retail_lake.locations.huff import HuffParams, score, score_python

    cands, points, stores = gen.scenario(
        300, n_candidates=40, n_stores=25, seed=9, bbox=(50.0, 51.5, 3.0, 6.0), n_cities=6
    )
    frames = [gen.to_spark(spark, df) for df in (cands, points, stores)]
    assert [f.schema for f in frames] == [
        gen.schema(df.columns[0]) for df in (cands, points, stores)
    ]
    params = HuffParams(max_km=25.0)
    bucketed = {r["candidate_id"]: r for r in score(*frames, params).collect()}
    brute = {r["candidate_id"]: r for r in score(*frames, params, pairs_within_brute).collect()}
    expected = score_python(
        list(cands.itertuples(index=False)),
        list(points[["point_id", "lat", "lon", "demand"]].itertuples(index=False)),
        list(stores.itertuples(index=False)),
        params,
    )
    assert set(bucketed) == set(brute) == set(expected)
    assert sum(r["points_in_reach"] for r in bucketed.values()) > 1000
    for cid, (captured, cannibalised, net) in expected.items():
        for got in (bucketed[cid], brute[cid]):
            assert got["captured_demand"] == pytest.approx(captured, rel=1e-9, abs=1e-6)
            assert got["cannibalised_demand"] == pytest.approx(cannibalised, rel=1e-9, abs=1e-6)
            assert got["net_gain"] == pytest.approx(net, rel=1e-9, abs=1e-6)
        assert bucketed[cid]["points_in_reach"] == brute[cid]["points_in_reach"]

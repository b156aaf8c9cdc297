"""The location jobs on the demo lake: candidates and scores against plain-Python references."""

from __future__ import annotations

import dataclasses
import re
import statistics

import pytest
from pyspark.sql import functions as F

from retail_lake.lake import Lake
from retail_lake.locations.geometry import haversine_km_py
from retail_lake.locations.huff import HuffParams, score_python
from retail_lake.locations.score import (
    LocationConfig,
    auc,
    holdout_metrics,
    model_version,
)
from retail_lake.runner import JobError

# conf/base.yaml locations.huff (the test profile keeps it) as the `parameters` column holds
# it, written out here rather than derived from the code.
CONFIGURED_PARAMETERS = {
    "candidate_attractiveness": "1.0",
    "country_demand": "'store_density'",
    "decay": "2.0",
    "default_attractiveness": "1.0",
    "demand_exponent": "1.15",
    "explain_top": "3",
    "max_km": "25.0",
    "min_km": "1.0",
    "outside_utility": "1.0",
}
# Their version by the documented rule, huff-<first 12 hex of the SHA-256 of the parameters>,
# worked out outside the code: the parameters above as one line of sorted JSON, {"key": "value"}
# pairs joined by ", ", piped through `sha256sum`, give ec31ed343dfac1a5... A different value
# means the versions recorded so far no longer match their parameters.
CONFIGURED_VERSION = "huff-ec31ed343dfa"


@pytest.fixture(scope="module")
def demo(spark, demo_lake):
    lake = Lake(spark, demo_lake.root)
    places = lake.read("silver.places").collect()
    stores = lake.read("silver.store_locations").collect()
    return demo_lake.cfg, lake, places, stores


@pytest.mark.slow
def test_demo_candidates_are_places_without_a_store_nearby(demo):
    cfg, lake, places, stores = demo
    spec = LocationConfig.from_config(cfg["locations"]).candidates
    assert len(stores) == 30 and {s["country_code"] for s in stores} == {"LU"}

    def dist(p, s):
        return haversine_km_py(p["latitude"], p["longitude"], s["latitude"], s["longitude"])

    expected = {
        f"place-{p['geonameid']}": p
        for p in places
        if all(dist(p, s) > spec.min_store_distance_km for s in stores)
    }
    rows = {r["candidate_id"]: r for r in lake.read("gold.location_candidates").collect()}
    assert set(rows) == set(expected)
    assert 20 < len(rows) < len(places)  # the stores cover some places, not all
    for cid, row in rows.items():
        place = expected[cid]
        assert (row["kind"], row["name"], row["country_code"], row["region"]) == (
            "place",
            place["name"],
            "LU",
            place["admin1_code"],
        )
        for r in (1, 5, 10):
            near = [q for q in places if dist(place, q) <= r]
            assert row["population_within_km"][r] == sum(q["demand_population"] for q in near)
            assert row["stores_within_km"][r] == sum(1 for s in stores if dist(place, s) <= r)
        nearest = min(dist(place, s) for s in stores)
        assert row["nearest_store_km"] == pytest.approx(round(nearest, 3), abs=1e-9)
        assert row["input_versions"] == {
            "silver.places": lake.data_version("silver.places"),
            "silver.store_locations": lake.data_version("silver.store_locations"),
        }


@pytest.mark.slow
def test_demo_scores_equal_a_brute_force_huff(demo):
    cfg, lake, places, stores = demo
    params = HuffParams.from_config(cfg["locations"]["huff"])
    candidates = lake.read("gold.location_candidates").collect()
    scores = {r["candidate_id"]: r for r in lake.read("gold.location_scores").collect()}
    assert set(scores) == {c["candidate_id"] for c in candidates}  # each scored once
    assert lake.read("gold.location_scores").count() == len(candidates)
    # One country in scope: the country demand factor is exactly 1.
    want = score_python(
        [(c["candidate_id"], c["latitude"], c["longitude"]) for c in candidates],
        [(p["geonameid"], p["latitude"], p["longitude"], p["demand_population"]) for p in places],
        [(s["store_number"], s["latitude"], s["longitude"], 1.0) for s in stores],
        params,
    )
    for cid, (captured, cannibalised, net) in want.items():
        row = scores[cid]
        assert row["captured_demand"] == pytest.approx(captured, rel=1e-9, abs=2e-6)
        assert row["cannibalised_demand"] == pytest.approx(cannibalised, rel=1e-9, abs=2e-6)
        assert row["net_gain"] == pytest.approx(net, rel=1e-9, abs=2e-6)
    assert sum(1 for v in want.values() if v[2] > 1000) > 10  # real numbers, not zeros
    # Ranks follow net gain, overall and within each region.
    by_net = sorted(scores.values(), key=lambda r: (-r["net_gain"], -r["captured_demand"], r[0]))
    assert [r["rank_overall"] for r in by_net] == list(range(1, len(by_net) + 1))
    for region in {r["region"] for r in by_net}:
        in_region = [r for r in by_net if r["region"] == region]
        assert [r["rank_in_region"] for r in in_region] == list(range(1, len(in_region) + 1))
    # Explanations: the places contributing most, largest first, summing to at most the total.
    best = by_net[0]
    top = best["top_points"]
    assert len(top) == params.explain_top
    assert [t["captured_demand"] for t in top] == sorted(
        (t["captured_demand"] for t in top), reverse=True
    )
    assert sum(t["captured_demand"] for t in top) <= best["captured_demand"] + 1e-6
    # Lineage: the configured parameters, their version, the input versions read.
    assert {(r["model_name"], r["model_version"]) for r in scores.values()} == {
        ("huff", CONFIGURED_VERSION)
    }
    assert best["parameters"] == CONFIGURED_PARAMETERS
    assert best["input_versions"] == {
        "gold.location_candidates": lake.data_version("gold.location_candidates"),
        "silver.places": lake.data_version("silver.places"),
        "silver.store_locations": lake.data_version("silver.store_locations"),
    }


@pytest.mark.slow
def test_demo_holdout_metrics_are_recorded(demo):
    cfg, lake, places, stores = demo
    conf = LocationConfig.from_config(cfg["locations"])
    rows = lake.read("ops.model_metrics").where(F.col("model_name") == "huff").collect()
    metrics = {r["metric"]: r["value"] for r in rows}
    assert set(metrics) == {
        "holdout_sites",
        "candidates",
        "auc_net_gain",
        "auc_captured_demand",
        "median_percentile_net_gain",
        "median_percentile_captured_demand",
    }
    assert {(r["split"], r["model_version"]) for r in rows} == {
        ("holdout_seed_2017", CONFIGURED_VERSION)
    }
    # The check redone by brute force. Held out: the stores whose hash of the store number,
    # seeded 2017, falls in the lowest 10% (locations.holdout, restated). Candidates: the
    # places with no kept store within 2 km, and the held-out sites. Each scored by the
    # plain-Python Huff against the kept stores (one country: demand factor 1; every store
    # kind weighs 1).
    drawn = F.pmod(F.xxhash64(F.lit(2017), F.col("store_number")), F.lit(1_000_000)) / 1e6 < 0.1
    held_rows = lake.read("silver.store_locations").where(drawn).select("store_number")
    held = {r["store_number"] for r in held_rows.collect()}
    kept = [s for s in stores if s["store_number"] not in held]

    def dist(p, s):
        return haversine_km_py(p["latitude"], p["longitude"], s["latitude"], s["longitude"])

    min_km = conf.candidates.min_store_distance_km
    sites = [
        (f"place-{p['geonameid']}", p["latitude"], p["longitude"])
        for p in places
        if all(dist(p, s) > min_km for s in kept)
    ] + [
        (f"holdout-{s['store_number']}", s["latitude"], s["longitude"])
        for s in stores
        if s["store_number"] in held
    ]
    scores = score_python(
        sites,
        [(p["geonameid"], p["latitude"], p["longitude"], p["demand_population"]) for p in places],
        [(s["store_number"], s["latitude"], s["longitude"], 1.0) for s in kept],
        conf.huff,
    )
    is_held = [cid.startswith("holdout-") for cid in scores]
    # The demo's draw: Demo Luxembourg 7 and Demo Differdange 12, of its 30 stores.
    assert metrics["holdout_sites"] == len(held) == sum(is_held) == 2
    assert metrics["candidates"] == len(sites)
    for name, k in (("net_gain", 2), ("captured_demand", 0)):
        values = [v[k] for v in scores.values()]
        pos = [v for v, h in zip(values, is_held, strict=True) if h]
        neg = [v for v, h in zip(values, is_held, strict=True) if not h]
        # AUC: every (held-out site, other candidate) pair, a win 1, a tie 1/2.
        won = sum((p > n) + (p == n) / 2 for p in pos for n in neg)
        assert metrics[f"auc_{name}"] == pytest.approx(won / (len(pos) * len(neg)), abs=1e-12)
        # Percentile: the average rank among all candidates (ties share it), of 100.
        pct = [
            (sum(v < p for v in values) + (sum(v == p for v in values) + 1) / 2) / len(values)
            for p in pos
        ]
        assert metrics[f"median_percentile_{name}"] == pytest.approx(
            100 * statistics.median(pct), abs=1e-9
        )
    # The two held-out sites outrank 239 of the 252 (held-out, other) pairs by net gain (AUC
    # 0.948) and 241 by captured demand (0.956). At 0.9 a constant score (0.5) fails, an
    # inverted one (0.05) fails, and a random one passes with probability 2 * (1 - 0.9) ** 2,
    # 2% (the mean of two uniform percentiles).
    assert metrics["auc_net_gain"] >= 0.9
    assert metrics["auc_captured_demand"] >= 0.9


def test_model_version_changes_with_every_parameter_and_only_with_them():
    base = HuffParams(attractiveness={"Licensed": 0.8, "Franchise": 0.9})
    same = HuffParams(attractiveness={"Franchise": 0.9, "Licensed": 0.8})  # other key order
    assert re.fullmatch(r"huff-[0-9a-f]{12}", model_version(base))
    assert model_version(same) == model_version(base)
    changed = {
        "decay": 1.5,
        "max_km": 30.0,
        "min_km": 0.5,
        "outside_utility": 0.5,
        "candidate_attractiveness": 2.0,
        "demand_exponent": 1.15,
        "country_demand": "store_density",
        "attractiveness": {"Licensed": 0.7, "Franchise": 0.9},
        "default_attractiveness": 0.5,
        "explain_top": 5,
    }
    assert set(changed) == {f.name for f in dataclasses.fields(HuffParams)}  # every one
    versions = [model_version(dataclasses.replace(base, **{k: v})) for k, v in changed.items()]
    # One more store kind weighed is a change too.
    extra = {"Licensed": 0.8, "Franchise": 0.9, "Joint Venture": 1.2}
    versions.append(model_version(dataclasses.replace(base, attractiveness=extra)))
    assert len(set(versions)) == len(versions) and model_version(base) not in versions


def test_auc_and_percentiles_by_hand():
    import numpy as np
    import pandas as pd

    # positives 3 and 1, negatives 2, 0, 1: pairs won 2+1+1 + 0+0.5+... by hand: positive 3
    # beats all 3 negatives (3); positive 1 beats 0 (1) and ties 1 (0.5) -> 4.5 / 6.
    scores = np.array([3.0, 1.0, 2.0, 0.0, 1.0])
    positive = np.array([True, True, False, False, False])
    assert auc(scores, positive) == pytest.approx(4.5 / 6)
    pdf = pd.DataFrame(
        {
            "candidate_id": ["holdout-a", "holdout-b", "place-1", "place-2", "place-3"],
            "net_gain": scores,
            "captured_demand": scores,
        }
    )
    m = holdout_metrics(pdf)
    assert m["auc_net_gain"] == pytest.approx(0.75) and m["holdout_sites"] == 2
    # percentiles (average ranks / 5): 3.0 -> 100, 1.0 -> 2.5/5 = 50; median 75
    assert m["median_percentile_net_gain"] == pytest.approx(75.0)
    with pytest.raises(ValueError, match="positives and negatives"):
        auc(scores, np.zeros(5, dtype=bool))


def test_location_config_errors_name_the_key():
    base = {"huff": {}, "candidates": {}, "holdout": {}}
    with pytest.raises(JobError, match="ISO alpha-2 codes, got \\[False\\].*quote NO"):
        LocationConfig.from_config({**base, "countries": ["GB", False]})
    with pytest.raises(JobError, match="holdout.fraction must be in"):
        LocationConfig.from_config({**base, "holdout": {"fraction": 1.5}})
    with pytest.raises(ValueError, match="candidates.method must be one of"):
        LocationConfig.from_config({**base, "candidates": {"method": "hexagons"}})
    with pytest.raises(ValueError, match="grid.region must be"):
        LocationConfig.from_config(
            {**base, "candidates": {"method": "grid", "grid": {"region": [50, 1, 40, 2]}}}
        )

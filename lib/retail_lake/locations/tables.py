"""Table contracts of location scoring (gold).

Both tables are rebuilt whole by each run (`overwrite`): a site that stops being a candidate
(a store opened near it) disappears. A re-run on the same inputs and parameters writes the
same rows, which the lake detects and skips, so no new version is committed.
"""

from __future__ import annotations

from retail_lake.contracts import Col, TableContract, meta_columns
from retail_lake.sources.geography.tables import PLACES, STORE_LOCATIONS

CANDIDATES = "gold.location_candidates"
SCORES = "gold.location_scores"

INPUT_VERSIONS = Col(
    "input_versions",
    "map<string,bigint>",
    "Delta version of every input table the row was computed from",
    False,
)
SITE = (
    Col("candidate_id", "string", "place-<geonameid>, grid-<lat>_<lon> or list-<id>", False),
    Col("kind", "string", "place, grid or list: the method that proposed the site", False),
    Col("name", "string", "place name (places), the listed name (list); null for grid"),
    Col("latitude", "double", "WGS84 latitude of the site", False),
    Col("longitude", "double", "WGS84 longitude of the site", False),
    Col("country_code", "string", "ISO 3166-1 alpha-2 country of the site (in scope)", False),
    Col(
        "region",
        "string",
        "first-level administrative division (GeoNames admin1 code) of the site or of its "
        "nearest place; null when GeoNames has none",
    ),
)

GOLD = [
    TableContract(
        name=CANDIDATES,
        description="Candidate store sites in scope (the countries with existing stores "
        "unless configured) with demand and competition around them. Method from "
        "locations.candidates: populated places with no existing store within "
        "min_store_distance_km, a grid over a region, or a listed set.",
        columns=(
            *SITE,
            Col(
                "population_within_km",
                "map<int,bigint>",
                "demand population (silver.places.demand_population) of the places within "
                "each radius (km, locations.candidates.radii_km), e.g. population_within_km[5]",
                False,
            ),
            Col(
                "stores_within_km",
                "map<int,bigint>",
                "existing stores within each radius (km), e.g. stores_within_km[5]",
                False,
            ),
            Col(
                "nearest_store_km",
                "double",
                "great-circle km to the nearest existing store; null when none lies within "
                "locations.huff.max_km (or the largest radius, if larger)",
            ),
            INPUT_VERSIONS,
            *meta_columns(),
        ),
        keys=("candidate_id",),
        write_mode="overwrite",
        source=f"{PLACES}, {STORE_LOCATIONS}",
    ),
    TableContract(
        name=SCORES,
        description="Huff-model score of every candidate site, each evaluated as one new "
        "store added to the existing ones: the demand it would capture, how much of it the "
        "existing stores lose, and the net gain, ranked. Demand is silver.places' "
        "demand_population; parameters in locations.huff (stored in `parameters`).",
        columns=(
            *SITE,
            Col(
                "captured_demand",
                "double",
                "expected demand (people) the site captures: sum over places in reach of "
                "demand x Huff probability of choosing the site",
                False,
            ),
            Col(
                "cannibalised_demand",
                "double",
                "the part of captured_demand the existing stores lose",
                False,
            ),
            Col(
                "net_gain",
                "double",
                "captured_demand - cannibalised_demand: demand new to the chain",
                False,
            ),
            Col("demand_in_reach", "double", "demand of all places within max_km", False),
            Col("points_in_reach", "bigint", "places within max_km", False),
            Col("rank_overall", "int", "rank by net gain among all candidates (1 = best)", False),
            Col("rank_in_country", "int", "rank by net gain within the country", False),
            Col(
                "rank_in_region",
                "int",
                "rank by net gain within the country's admin1 region (null region: its own group)",
                False,
            ),
            Col(
                "top_points",
                "array<struct<point_id:bigint,name:string,distance_km:double,"
                "captured_demand:double>>",
                "the places contributing most to captured_demand (locations.huff.explain_top), "
                "largest first",
                False,
            ),
            Col("model_name", "string", "huff", False),
            Col(
                "model_version",
                "string",
                "huff-<first 12 hex of the SHA-256 of the parameters>: equal parameters, "
                "equal version",
                False,
            ),
            Col("parameters", "map<string,string>", "the Huff parameters of the run", False),
            INPUT_VERSIONS,
            *meta_columns(),
        ),
        keys=("candidate_id",),
        write_mode="overwrite",
        source=f"{CANDIDATES}, {PLACES}, {STORE_LOCATIONS}",
    ),
]

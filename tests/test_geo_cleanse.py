"""Geography cleansing (countries, places, store locations): each rule on inline bronze rows
with exact expected rows, and the real GeoNames and Starbucks files end to end."""

from __future__ import annotations

import json
from datetime import datetime

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from retail_lake.lake import with_metadata
from retail_lake.registry import CONTRACTS
from retail_lake.sources.geography.cleanse import (
    CLEANSERS,
    cleanse_countries,
    cleanse_places,
    cleanse_stores,
)

AT = datetime(2026, 1, 1)
LINE = "_source_file string, _line_number bigint"
COUNTRIES_RAW = (
    "iso string, iso3 string, iso_numeric string, fips string, name string, capital string, "
    "area_km2 string, population string, continent_code string, tld string, "
    "currency_code string, currency_name string, phone string, postal_code_regex string, "
    f"languages string, geonameid string, neighbours string, {LINE}"
)
PLACES_RAW = (
    "geonameid string, name string, latitude string, longitude string, country_code string, "
    f"admin1_code string, population string, timezone string, {LINE}"
)
STORES_RAW = (
    "brand string, store_number string, store_name string, ownership_type string, "
    "street_address string, city string, state_province string, country string, "
    "postcode string, phone_number string, timezone string, longitude string, "
    f"latitude string, {LINE}"
)

ANDORRA = (
    "AD", "AND", "20", "AN", "Andorra", "Andorra la Vella", "468", "77006", "EU", ".ad", "EUR",
    "Euro", "376", "^(?:AD)*(\\d{3})$", "ca", "3041565", "ES,FR",
)  # fmt: skip
NAMIBIA = (
    "NA", "NAM", "516", "WA", "Namibia", "Windhoek", "825418", "2448301", "AF", ".na", "NAD",
    "Dollar", "264", "", "en-NA,af,de,hz,naq", "3355338", "ZA,BW,ZM,AO",
)  # fmt: skip
UNITED_STATES = (
    "US", "USA", "840", "US", "United States", "Washington", "9629091", "327167434", "NA",
    ".us", "USD", "Dollar", "1", "^\\d{5}(-\\d{4})?$", "en-US,es-US,haw,fr", "6252001",
    "CA,MX,CU",
)  # fmt: skip
ANTARCTICA = (
    "AQ", "ATA", "10", "AY", "Antarctica", "", "14000000", "0", "AN", ".aq", "", "", "", "",
    "", "6697173", "",
)  # fmt: skip
KOREA = (
    "KR", "KOR", "410", "KS", "South Korea", "Seoul", "98480", "51635256", "AS", ".kr", "KRW",
    "Won", "82", "^(?:SEOUL)*(\\d{6})$", "ko-KR,en", "1835841", "KP",
)  # fmt: skip
GERMANY = (
    "DE", "DEU", "276", "GM", "Germany", "Berlin", "357021", "82927922", "EU", ".de", "EUR",
    "Euro", "49", "^(\\d{5})$", "de", "2921044", "CH,PL,NL,DK,BE,CZ,LU,FR,AT",
)  # fmt: skip


def countries_bronze(spark, rows):
    return spark.createDataFrame(rows, COUNTRIES_RAW)


@pytest.fixture
def countries(spark):
    """silver.countries rows of Andorra, Namibia, the US, Germany and South Korea."""
    bronze = countries_bronze(
        spark,
        [
            (*ANDORRA, "c.csv", 2),
            (*NAMIBIA, "c.csv", 3),
            (*UNITED_STATES, "c.csv", 4),
            (*GERMANY, "c.csv", 5),
            (*KOREA, "c.csv", 6),
        ],
    )
    return cleanse_countries(bronze, AT)[0]


def rules(quarantine):
    return sorted((r["_line_number"], r["rule"], r["column"]) for r in quarantine.collect())


# ----------------------------------------------------------------------------- countries
def test_countries_are_typed_and_na_stays_text(spark):
    bad_numeric = ("XX", "XXX", "12a", *ANDORRA[3:])
    bad_iso = ("A1", *ANDORRA[1:])
    bad_continent = ("ZZ", "ZZZ", "999", *ANDORRA[3:8], "NN", *ANDORRA[9:])
    negative_area = ("YY", "YYY", "998", *ANDORRA[3:6], "-5", *ANDORRA[7:])
    bronze = countries_bronze(
        spark,
        [
            (*NAMIBIA, "c.csv", 2),
            (*UNITED_STATES, "c.csv", 3),
            (*ANTARCTICA, "c.csv", 4),
            (*bad_numeric, "c.csv", 5),
            (*bad_iso, "c.csv", 6),
            (*bad_continent, "c.csv", 7),
            (*negative_area, "c.csv", 8),
        ],
    )
    silver, quarantine, duplicates = cleanse_countries(bronze, AT)
    assertDataFrameEqual(
        silver,
        spark.createDataFrame(
            [
                (
                    "NA",
                    "NAM",
                    "516",
                    "WA",
                    "Namibia",
                    "Windhoek",
                    825418.0,
                    2448301,
                    "AF",
                    "Africa",
                    ".na",
                    "NAD",
                    "Dollar",
                    "264",
                    None,
                    ["en-NA", "af", "de", "hz", "naq"],
                    3355338,
                    ["ZA", "BW", "ZM", "AO"],
                    "c.csv",
                    2,
                ),
                (
                    "US",
                    "USA",
                    "840",
                    "US",
                    "United States",
                    "Washington",
                    9629091.0,
                    327167434,
                    "NA",
                    "North America",
                    ".us",
                    "USD",
                    "Dollar",
                    "1",
                    "^\\d{5}(-\\d{4})?$",
                    ["en-US", "es-US", "haw", "fr"],
                    6252001,
                    ["CA", "MX", "CU"],
                    "c.csv",
                    3,
                ),
                (
                    "AQ",
                    "ATA",
                    "010",
                    "AY",
                    "Antarctica",
                    None,
                    14000000.0,
                    0,
                    "AN",
                    "Antarctica",
                    ".aq",
                    None,
                    None,
                    None,
                    None,
                    [],
                    6697173,
                    [],
                    "c.csv",
                    4,
                ),
            ],
            "iso string, iso3 string, iso_numeric string, fips string, name string, "
            "capital string, area_km2 double, population bigint, continent_code string, "
            "continent string, tld string, currency_code string, currency_name string, "
            "phone string, postal_code_regex string, languages array<string>, "
            "geonameid bigint, neighbours array<string>, " + LINE,
        ),
    )
    assertDataFrameEqual(
        quarantine.select("_line_number", "rule", "column", "reason"),
        spark.createDataFrame(
            [
                (
                    5,
                    "unparseable_iso_numeric",
                    "iso_numeric",
                    "iso_numeric: '12a' is not an integer",
                ),
                (6, "invalid_iso", "iso", "iso: 'A1' is not 2 letters"),
                (
                    7,
                    "invalid_continent_code",
                    "continent_code",
                    "continent_code: 'NN' is not one of AF, AN, AS, EU, NA, OC, SA",
                ),
                (8, "negative_area_km2", "area_km2", "area_km2: '-5' is negative"),
            ],
            "_line_number bigint, rule string, column string, reason string",
        ),
    )
    assert duplicates.count() == 0
    payload = json.loads(quarantine.where("_line_number = 5").first()["payload"])
    assert (payload["iso"], payload["iso_numeric"]) == ("XX", "12a")
    with_metadata(silver, CONTRACTS["silver.countries"], "run")  # matches its contract


def test_country_duplicates_are_removed_or_quarantined(spark):
    renamed = (*NAMIBIA[:4], "Republic of Namibia", *NAMIBIA[5:])
    bronze = countries_bronze(
        spark,
        [(*NAMIBIA, "a.csv", 2), (*NAMIBIA, "a.csv", 3), (*renamed, "b.csv", 2)],
    )
    silver, quarantine, duplicates = cleanse_countries(bronze, AT)
    # The latest line (b.csv) is kept; both a.csv lines differ from it: conflicts.
    assert [(r["iso"], r["name"], r["_source_file"]) for r in silver.collect()] == [
        ("NA", "Republic of Namibia", "b.csv")
    ]
    assert rules(quarantine) == [
        (2, "conflicting_duplicate", "iso"),
        (3, "conflicting_duplicate", "iso"),
    ]
    assert duplicates.count() == 0

    silver, quarantine, duplicates = cleanse_countries(
        countries_bronze(spark, [(*NAMIBIA, "a.csv", 2), (*NAMIBIA, "a.csv", 3)]), AT
    )
    assert [r["_line_number"] for r in silver.collect()] == [3]
    assert [r["_line_number"] for r in duplicates.collect()] == [2]
    assert quarantine.count() == 0


# ----------------------------------------------------------------------------- places
PLACE_COLUMNS = (
    "geonameid bigint, name string, latitude double, longitude double, country_code string, "
    "country_name string, continent_code string, continent string, admin1_code string, "
    "population bigint, population_known boolean, demand_population bigint, timezone string, "
    + LINE
)


def test_places_are_typed_joined_and_weighted(spark, countries):
    bronze = spark.createDataFrame(
        [
            (
                "3039163",
                " Sant Julià de Lòria ",
                "42.46372",
                "1.49129",
                "AD",
                "06",
                "8022",
                "Europe/Andorra",
                "p.csv",
                2,
            ),
            (
                "3352136",
                "Windhoek",
                "-22.55941",
                "17.08323",
                "NA",
                "21",
                "268132",
                "Africa/Windhoek",
                "p.csv",
                3,
            ),
            # Population 0: a seat without a figure, kept with imputed demand.
            (
                "3041519",
                "Encamp",
                "42.53474",
                "1.58014",
                "AD",
                "03",
                "0",
                "Europe/Andorra",
                "p.csv",
                4,
            ),
            # On the equator: a single 0 is a real coordinate; admin1 empty -> null.
            ("2256027", "Ntokou", "0.0", "16.39083", "DE", "", "5909", "", "p.csv", 5),
            ("1", "Bad lat", "4x", "1.0", "AD", "01", "10", "Europe/Andorra", "p.csv", 6),
            ("2", "North of pole", "91", "1.0", "AD", "01", "10", "Europe/Andorra", "p.csv", 7),
            ("3", "West of W", "1.0", "-180.5", "AD", "01", "10", "Europe/Andorra", "p.csv", 8),
            ("4", "Null island", "0", "0.0", "AD", "01", "10", "Europe/Andorra", "p.csv", 9),
            ("5", "NaN", "NaN", "1.0", "AD", "01", "10", "Europe/Andorra", "p.csv", 10),
            ("6", "Nowhere", "1.0", "1.0", "QQ", "01", "10", "Europe/Andorra", "p.csv", 11),
            ("7", "Shrinking", "1.0", "1.0", "AD", "01", "-3", "Europe/Andorra", "p.csv", 12),
            ("8", "Fraction", "1.0", "1.0", "AD", "01", "12.5", "Europe/Andorra", "p.csv", 13),
            ("9", "No lat", "", "1.0", "AD", "01", "10", "Europe/Andorra", "p.csv", 14),
        ],
        PLACES_RAW,
    )
    silver, quarantine, duplicates = cleanse_places(bronze, countries, AT)
    assertDataFrameEqual(
        silver,
        spark.createDataFrame(
            [
                (
                    3039163,
                    "Sant Julià de Lòria",
                    42.46372,
                    1.49129,
                    "AD",
                    "Andorra",
                    "EU",
                    "Europe",
                    "06",
                    8022,
                    True,
                    8022,
                    "Europe/Andorra",
                    "p.csv",
                    2,
                ),
                (
                    3352136,
                    "Windhoek",
                    -22.55941,
                    17.08323,
                    "NA",
                    "Namibia",
                    "AF",
                    "Africa",
                    "21",
                    268132,
                    True,
                    268132,
                    "Africa/Windhoek",
                    "p.csv",
                    3,
                ),
                (
                    3041519,
                    "Encamp",
                    42.53474,
                    1.58014,
                    "AD",
                    "Andorra",
                    "EU",
                    "Europe",
                    "03",
                    0,
                    False,
                    1000,
                    "Europe/Andorra",
                    "p.csv",
                    4,
                ),
                (
                    2256027,
                    "Ntokou",
                    0.0,
                    16.39083,
                    "DE",
                    "Germany",
                    "EU",
                    "Europe",
                    None,
                    5909,
                    True,
                    5909,
                    None,
                    "p.csv",
                    5,
                ),
            ],
            PLACE_COLUMNS,
        ),
    )
    assertDataFrameEqual(
        quarantine.select("_line_number", "rule", "column", "reason"),
        spark.createDataFrame(
            [
                (6, "unparseable_latitude", "latitude", "latitude: '4x' is not a number"),
                (7, "latitude_out_of_range", "latitude", "latitude: '91' is not in -90..90"),
                (
                    8,
                    "longitude_out_of_range",
                    "longitude",
                    "longitude: '-180.5' is not in -180..180",
                ),
                (
                    9,
                    "zero_coordinates",
                    "latitude,longitude",
                    "latitude,longitude: 0/0 is a missing position, not a place",
                ),
                (10, "latitude_out_of_range", "latitude", "latitude: 'NaN' is not in -90..90"),
                (
                    11,
                    "unknown_country_code",
                    "country_code",
                    "country_code: 'QQ' is not a country code of the country table",
                ),
                (12, "negative_population", "population", "population: '-3' is negative"),
                (
                    13,
                    "unparseable_population",
                    "population",
                    "population: '12.5' is not an integer",
                ),
                (14, "missing_latitude", "latitude", "latitude: required value is empty"),
            ],
            "_line_number bigint, rule string, column string, reason string",
        ),
    )
    assert duplicates.count() == 0
    with_metadata(silver, CONTRACTS["silver.places"], "run")


@pytest.mark.slow  # a multi-run test: the full suite only (inner loop under 5 min)
def test_place_duplicates_by_id_and_by_identity(spark, countries):
    def place(geonameid, name, lat, lon, admin1, population, line):
        return (
            geonameid,
            name,
            lat,
            lon,
            "AD",
            admin1,
            population,
            "Europe/Andorra",
            "p.csv",
            line,
        )

    bronze = spark.createDataFrame(
        [
            place("1", "A", "10.0", "20.0", "07", "500", 2),
            place("1", "A", "10.0", "20.0", "07", "500", 3),  # same line again: removed
            place("2", "B", "11.0", "21.0", "07", "700", 4),
            place("2", "B", "11.0", "21.0", "07", "800", 5),  # same id, other figure: conflict
            place("3", "C", "1.0", "2.0", "02", "100", 6),
            place("4", "C", "1.0", "2.0", "02", "100", 7),  # same place under a new id: removed
            place("5", "D", "3.0", "4.0", "", "100", 8),
            place("6", "D", "3.0", "4.0", "", "200", 9),  # same place, other figure: quarantined
        ],
        PLACES_RAW,
    )
    silver, quarantine, duplicates = cleanse_places(bronze, countries, AT)
    assert sorted((r["geonameid"], r["_line_number"]) for r in silver.collect()) == [
        (1, 3),
        (2, 5),
        (3, 6),
        (5, 8),
    ]
    assert sorted(r["_line_number"] for r in duplicates.collect()) == [2, 7]
    assert rules(quarantine) == [
        (4, "conflicting_duplicate", "geonameid"),
        (9, "duplicate_place", "name,country_code,admin1_code,latitude,longitude"),
    ]
    reason = quarantine.where("_line_number = 9").first()["reason"]
    assert reason == (
        "another geonameid has the same name, country_code, admin1_code, latitude, longitude "
        "with a different population or time zone; the first line was kept"
    )


# ----------------------------------------------------------------------------- stores
STORE_COLUMNS = (
    "store_number string, brand string, store_name string, ownership_type string, "
    "street_address string, city string, state_province string, country_code string, "
    "postcode string, phone_number string, timezone string, utc_offset_minutes int, "
    "longitude double, latitude double, " + LINE
)
YOIDO = (
    "Starbucks", "19773-160973", "Yoido IFC Mall - 1F", "Joint Venture",
    "23 & 23-1, Yoido-Dong, Yongdongpo-Gu, 1F, #101", "Seoul", "11", "KR", "153-023", "",
    "GMT+09:00 Asia/Seoul",
)  # fmt: skip


def test_stores_are_typed_and_broken_rows_quarantined(spark, countries):
    bronze = spark.createDataFrame(
        [
            (
                "Starbucks",
                "47370-257954",
                "Meritxell, 96",
                "Licensed",
                "Av. Meritxell, 96",
                "Andorra la Vella",
                "7",
                "AD",
                "AD500",
                "376818720",
                "GMT+1:00 Europe/Andorra",
                "1.53",
                "42.51",
                "s.csv",
                2,
            ),
            (
                "Teavana",
                "1-2",
                " Mall ",
                "Company Owned",
                "",
                "",
                "NY",
                "US",
                "",
                "",
                "GMT-03:30 America/St_Johns",
                "-73.99",
                "40.75",
                "s.csv",
                3,
            ),
            (
                "Starbucks",
                "3-4",
                "Saigon",
                "Franchise",
                "1 Street",
                "PARAMUS",
                "NJ",
                "US",
                "7652",
                "",
                "GMT+000000 Asia/Saigon",
                "106.7",
                "0",
                "s.csv",
                4,
            ),
            # The shifted Heraklion line as it is in the file (13 fields).
            (
                "Starbucks",
                "31791-108572",
                "Heraklion Talos Mall",
                "4",
                "Licensed",
                "Venizelou Street & Minoos Street, Crete",
                "Heraklion",
                "M",
                "GR",
                "",
                "GMT+2:00 Europe/Athens",
                "25.12",
                "35.34",
                "s.csv",
                5,
            ),
            # Store 19773-160973 twice: the copy without coordinates is quarantined.
            (*YOIDO, "", "", "s.csv", 6),
            (*YOIDO, "126.92", "37.53", "s.csv", 7),
            (
                "Starbucks",
                "5-6",
                "Zero",
                "Licensed",
                "x",
                "y",
                "z",
                "US",
                "",
                "",
                "GMT-05:00 America/New_York",
                "0.0",
                "0",
                "s.csv",
                8,
            ),
            (
                "Starbucks",
                "7-8",
                "Tz",
                "Licensed",
                "x",
                "y",
                "z",
                "DE",
                "",
                "",
                "Europe/Paris",
                "1",
                "2",
                "s.csv",
                9,
            ),
        ],
        STORES_RAW,
    )
    silver, quarantine, duplicates = cleanse_stores(bronze, countries, AT)
    assertDataFrameEqual(
        silver,
        spark.createDataFrame(
            [
                (
                    "47370-257954",
                    "Starbucks",
                    "Meritxell, 96",
                    "Licensed",
                    "Av. Meritxell, 96",
                    "Andorra la Vella",
                    "7",
                    "AD",
                    "AD500",
                    "376818720",
                    "Europe/Andorra",
                    60,
                    1.53,
                    42.51,
                    "s.csv",
                    2,
                ),
                (
                    "1-2",
                    "Teavana",
                    "Mall",
                    "Company Owned",
                    None,
                    None,
                    "NY",
                    "US",
                    None,
                    None,
                    "America/St_Johns",
                    -210,
                    -73.99,
                    40.75,
                    "s.csv",
                    3,
                ),
                (
                    "3-4",
                    "Starbucks",
                    "Saigon",
                    "Franchise",
                    "1 Street",
                    "PARAMUS",
                    "NJ",
                    "US",
                    "7652",
                    None,
                    "Asia/Saigon",
                    None,
                    106.7,
                    0.0,
                    "s.csv",
                    4,
                ),
                (
                    "19773-160973",
                    "Starbucks",
                    "Yoido IFC Mall - 1F",
                    "Joint Venture",
                    "23 & 23-1, Yoido-Dong, Yongdongpo-Gu, 1F, #101",
                    "Seoul",
                    "11",
                    "KR",
                    "153-023",
                    None,
                    "Asia/Seoul",
                    540,
                    126.92,
                    37.53,
                    "s.csv",
                    7,
                ),
            ],
            STORE_COLUMNS,
        ),
    )
    assertDataFrameEqual(
        quarantine.select("_line_number", "rule", "column", "reason"),
        spark.createDataFrame(
            [
                (
                    5,
                    "invalid_ownership_type",
                    "ownership_type",
                    "ownership_type: '4' is not one of Company Owned, Licensed, Joint Venture, "
                    "Franchise; country_code: 'M' is not a country code of the country table",
                ),
                (
                    6,
                    "missing_latitude",
                    "latitude",
                    "latitude: required value is empty; longitude: required value is empty",
                ),
                (
                    8,
                    "zero_coordinates",
                    "latitude,longitude",
                    "latitude,longitude: 0/0 is a missing position, not a place",
                ),
                (
                    9,
                    "unparseable_timezone",
                    "timezone",
                    "timezone: 'Europe/Paris' is not 'GMT<offset> <zone>'",
                ),
            ],
            "_line_number bigint, rule string, column string, reason string",
        ),
    )
    assert duplicates.count() == 0
    payload = json.loads(quarantine.where("_line_number = 5").first()["payload"])
    assert (payload["ownership_type"], payload["country"], payload["postcode"]) == ("4", "M", "GR")
    with_metadata(silver, CONTRACTS["silver.store_locations"], "run")


def test_store_duplicates_are_removed_or_quarantined(spark, countries):
    store = (*YOIDO, "126.92", "37.53")
    moved = (*YOIDO, "126.93", "37.53")
    bronze = spark.createDataFrame(
        [(*store, "s.csv", 2), (*store, "s.csv", 3), (*moved, "t.csv", 2)], STORES_RAW
    )
    silver, quarantine, duplicates = cleanse_stores(bronze, countries, AT)
    assert [(r["longitude"], r["_source_file"]) for r in silver.collect()] == [(126.93, "t.csv")]
    assert rules(quarantine) == [
        (2, "conflicting_duplicate", "store_number"),
        (3, "conflicting_duplicate", "store_number"),
    ]
    silver, quarantine, duplicates = cleanse_stores(
        spark.createDataFrame([(*store, "s.csv", 2), (*store, "s.csv", 3)], STORES_RAW),
        countries,
        AT,
    )
    assert [r["_line_number"] for r in silver.collect()] == [3]
    assert [r["_line_number"] for r in duplicates.collect()] == [2]
    assert quarantine.count() == 0


def test_cleansers_are_registered_with_their_lookups():
    from retail_lake.registry import CLEANSERS as REGISTERED

    geo = [(c.source, c.bronze, c.lookups) for c in REGISTERED if c in CLEANSERS]
    assert geo == [
        ("geonames_countries", "bronze.countries_raw", ()),
        ("geonames_places", "bronze.places_raw", ("bronze.countries_raw",)),
        ("store_locations", "bronze.store_locations_raw", ("bronze.countries_raw",)),
    ]


# ----------------------------------------------------------------------------- real data
@pytest.mark.slow
def test_real_geography_files_end_to_end(spark, real_geography_lake):
    """Expected numbers were derived from the raw files with Python's csv module (one
    physical line per record, as ingest reads them), independently of this code. The lake is
    built beside the other tests (conftest's `real_geography_lake`)."""
    from retail_lake.lake import Lake
    from retail_lake.runner import job_runs

    cfg = real_geography_lake.cfg
    lake = Lake(spark, cfg.root)
    runs = real_geography_lake.runs
    bronze = {t: lake.read(t).count() for t in (
        "bronze.places_raw", "bronze.countries_raw", "bronze.store_locations_raw")}  # fmt: skip
    assert bronze == {
        "bronze.places_raw": 170391,
        "bronze.countries_raw": 252,
        "bronze.store_locations_raw": 25600,
    }
    # The Wembley address holds a line break inside quotes: one record on lines 6089-6090,
    # kept with its first line's number. The shifted Heraklion line still has 13 fields:
    # ingest keeps it, cleanse quarantines it.
    ingest_run = job_runs(spark, cfg).where(F.col("run_id") == runs["ingest"]).first()
    assert {
        c["name"].split(":")[0]: c["outputs"]["quarantined"]
        for c in json.loads(ingest_run["conservation"])
    } == {
        "ingest geonames_countries": 0,
        "ingest geonames_places": 0,
        "ingest store_locations": 0,
    }
    wembley = (
        lake.read("bronze.store_locations_raw")
        .where(F.col("store_number") == "22021-216985")
        .collect()
    )
    assert [(r["_line_number"], "\n" in r["street_address"]) for r in wembley] == [(6089, True)]
    assert (
        lake.read("bronze.store_locations_raw")
        .where(F.col("store_number") == "31791-108572")
        .count()
        == 1
    )

    places = lake.read("silver.places")
    assert places.count() == 170391
    assert lake.read("silver.countries").count() == 252
    assert lake.read("silver.store_locations").count() == 25598
    at_cleanse = lake.read("silver.quarantine").where(F.col("stage") == "cleanse")
    assert sorted((r["source"], r["_line_number"], r["rule"]) for r in at_cleanse.collect()) == [
        ("store_locations", 6270, "invalid_ownership_type"),
        ("store_locations", 8031, "missing_latitude"),
    ]
    run = job_runs(spark, cfg).where(F.col("run_id") == runs["cleanse"]).first()
    assert run["status"] == "succeeded"
    checks = {c["name"].split(":")[0]: c for c in json.loads(run["conservation"])}
    assert {name: (c["inputs"], c["outputs"], c["holds"]) for name, c in checks.items()} == {
        "cleanse geonames_countries": (
            {"bronze_rows": 252},
            {"silver.countries_rows": 252, "quarantined": 0, "duplicates_removed": 0},
            True,
        ),
        "cleanse geonames_places": (
            {"bronze_rows": 170391},
            {"silver.places_rows": 170391, "quarantined": 0, "duplicates_removed": 0},
            True,
        ),
        "cleanse store_locations": (
            {"bronze_rows": 25600},
            {"silver.store_locations_rows": 25598, "quarantined": 2, "duplicates_removed": 0},
            True,
        ),
    }
    # NA is Namibia (80 places) and North America (42 countries), never a null.
    assert places.where(F.col("country_code") == "NA").count() == 80
    assert {r["country_name"] for r in places.where(F.col("country_code") == "NA").collect()} == {
        "Namibia"
    }
    assert lake.read("silver.countries").where(F.col("continent_code") == "NA").count() == 42
    facts = places.agg(
        F.sum(F.when(~F.col("population_known"), 1).otherwise(0)).alias("unknown"),
        F.sum("demand_population").alias("demand"),
        F.sum(F.when(F.col("admin1_code").isNull(), 1).otherwise(0)).alias("no_admin1"),
    ).first()
    assert facts.asDict() == {"unknown": 11933, "demand": 4437073460, "no_admin1": 99}
    stores = lake.read("silver.store_locations")
    yoido = stores.where(F.col("store_number") == "19773-160973").collect()
    assert [(r["longitude"], r["latitude"], r["_line_number"]) for r in yoido] == [
        (126.92, 37.53, 8162)
    ]
    assert stores.where(F.col("utc_offset_minutes").isNull()).count() == 767
    assert stores.where(F.col("country_code") == "US").count() == 13608

    # Cleanse re-run with nothing new: every source's bronze is unchanged, each unit skipped.
    again = real_geography_lake.again["cleanse"]
    assert again["versions_after"] == again["versions_before"]
    assert again["writes"] == []
    assert (
        job_runs(spark, cfg).where(F.col("run_id") == again["run_id"]).first()["versions_written"]
        is None
    )

    # Location scoring on the real geography, on a scope of four neighbouring countries to fit
    # the CI budget (the whole 73-country run and its numbers are in bench/RESULTS.md).
    check_real_location_scoring(spark, real_geography_lake)


def check_real_location_scoring(spark, built) -> None:
    import numpy as np

    from retail_lake.lake import Lake
    from retail_lake.locations.geometry import EARTH_RADIUS_KM
    from tests.lake_builds import GEOGRAPHY_SCOPE

    scope = list(GEOGRAPHY_SCOPE)
    lake = Lake(spark, built.cfg.root)
    score_run = built.runs["score_locations"]

    # Candidates: exactly the places in scope with no store in scope within 2 km, found here
    # with numpy from the silver tables.
    places = (
        lake.read("silver.places")
        .where(F.col("country_code").isin(scope))
        .select("geonameid", "latitude", "longitude")
        .toPandas()
    )
    stores = (
        lake.read("silver.store_locations")
        .where(F.col("country_code").isin(scope))
        .select("latitude", "longitude")
        .toPandas()
    )
    p = np.radians(places[["latitude", "longitude"]].to_numpy())
    s = np.radians(stores[["latitude", "longitude"]].to_numpy())
    nearest = np.full(len(p), np.inf)
    for lo in range(0, len(s), 256):
        block = s[lo : lo + 256]
        a = (
            np.sin((block[None, :, 0] - p[:, None, 0]) / 2) ** 2
            + np.cos(p[:, None, 0])
            * np.cos(block[None, :, 0])
            * np.sin((block[None, :, 1] - p[:, None, 1]) / 2) ** 2
        )
        d = 2 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(a, 1.0)))
        nearest = np.minimum(nearest, d.min(axis=1))
    expected = {f"place-{g}" for g in places["geonameid"][nearest > 2.0]}
    candidates = lake.read("gold.location_candidates")
    ids = [r[0] for r in candidates.select("candidate_id").collect()]
    assert len(ids) == len(set(ids)) and set(ids) == expected
    assert len(places) // 2 < len(expected) < len(places)

    # Every candidate scored exactly once, ranked 1..n by net gain.
    scores = lake.read("gold.location_scores")
    scored = scores.groupBy("candidate_id").count()
    assert scored.where("count != 1").count() == 0
    assert scores.join(candidates, on="candidate_id", how="left_anti").count() == 0
    assert scored.count() == len(expected)
    ranks = scores.agg(F.min("rank_overall"), F.max("rank_overall")).first()
    assert tuple(ranks) == (1, len(expected))

    # The held-out check ran on the reported seed: real store sites rank high.
    metrics = {
        r["metric"]: r["value"]
        for r in lake.read("ops.model_metrics")
        .where((F.col("run_id") == score_run) & (F.col("split") == "holdout_seed_2017"))
        .collect()
    }
    print(f"held-out check ({', '.join(scope)}): {json.dumps(metrics, sort_keys=True)}")
    # A tenth of the scope's store sites (stores closer than about 1 km share a site).
    assert 0.05 * len(stores) < metrics["holdout_sites"] < 0.15 * len(stores)
    assert metrics["auc_net_gain"] > 0.75 and metrics["auc_captured_demand"] > 0.75

    # A re-run with the same inputs is skipped: nothing read, written or recorded twice.
    again = built.again["score_locations"]
    assert again["writes"] == []
    assert again["versions_after"] == again["versions_before"]
    recorded = lake.read("ops.model_metrics").where(F.col("model_name") == "huff")
    assert {r["run_id"] for r in recorded.select("run_id").collect()} == {score_run}
    states = lake.read("ops.unit_states").where(F.col("run_id") == again["run_id"]).collect()
    assert [(s["unit"], s["status"]) for s in states] == [("score_locations", "unchanged")]

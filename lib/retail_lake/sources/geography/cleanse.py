"""Geography bronze -> silver: countries, populated places (demand) and store locations.

Rules, decided from the data (../shared/data/geonames_cities/SOURCE.md,
../shared/data/starbucks_stores/SOURCE.md) and documented in the table catalog through the
contracts (`retail_lake.sources.geography.tables`):

- Text is trimmed; empty optional text becomes null. Codes are never read through a null
  marker: `NA` is Namibia (country) and North America (continent), and stays text.
- Numbers are typed with `try_cast`; a value that does not parse quarantines the row
  naming the column.
- Coordinates (places and stores): latitude must lie in -90..90, longitude in -180..180
  (NaN and Infinity fail this), and the pair 0/0 is a missing position ("null island"),
  not a place: each quarantines the row naming the column. A single 0 is legitimate
  (5 places lie on the equator or the Greenwich meridian).
- Country codes of places and stores must be in the country table (typed here from
  `bronze.countries_raw`, the same rows as `silver.countries`): a pattern would accept
  codes that do not exist. All 246 place countries and 73 store countries are there.
- Countries: iso two upper-case letters, iso3 three, continent one of the seven codes;
  `languages` and `neighbours` become arrays.
- Places: population is a whole number >= 0. Population 0 (11,933 rows) means GeoNames has
  no figure for an administrative seat, not that nobody lives there: the row is kept,
  `population_known` is false and `demand_population` counts it as 1000, the cities1000
  inclusion threshold (about the 9th percentile of known populations).
- Duplicates: two lines with the same key (countries: iso; places: geonameid; stores:
  store number): identical ones are removed and counted, differing ones quarantine all
  but the latest line. A place listed twice under two geonameids (same name, country,
  admin1 and coordinates) would count its demand twice: the first line is kept, a copy
  with the same population and time zone is removed and counted, one that differs is
  quarantined (`duplicate_place`). The real file has neither (near-duplicates such as the
  two Lifau, TL, 0.6 km apart, differ in coordinates and are kept).
- Stores: coordinates are required (a store without them cannot be scored): this
  quarantines the copy of store 19773-160973 that has none, its only duplicate. Ownership
  type must be Company Owned, Licensed, Joint Venture or Franchise. The shifted Heraklion
  line (31791-108572: a stray field `4` after the name, one field lost further on, so still
  13 fields and not caught by ingest) breaks both the ownership and the country rule.
  The timezone text `GMT<offset> <zone>` is split into the zone name (as listed) and the
  offset in minutes; the placeholder `GMT+000000` gives a null offset. Casing of cities is
  left as listed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from retail_lake.cleansing import (
    Cleansed,
    CleanseEnv,
    Cleanser,
    Rule,
    arrivals,
    conflict_errors,
    deduplicate,
    parse_rule,
    quarantine_rows,
    required_rule,
    split_valid,
    with_errors,
)
from retail_lake.sources.geography.tables import (
    COUNTRIES,
    COUNTRIES_COLUMNS,
    COUNTRIES_RAW,
    PLACES,
    PLACES_COLUMNS,
    PLACES_RAW,
    STORE_LOCATIONS,
    STORE_LOCATIONS_COLUMNS,
    STORE_LOCATIONS_RAW,
)

PLACES_SOURCE = "geonames_places"
COUNTRIES_SOURCE = "geonames_countries"
STORES_SOURCE = "store_locations"

CONTINENTS = {
    "AF": "Africa",
    "AN": "Antarctica",
    "AS": "Asia",
    "EU": "Europe",
    "NA": "North America",
    "OC": "Oceania",
    "SA": "South America",
}
OWNERSHIP_TYPES = ("Company Owned", "Licensed", "Joint Venture", "Franchise")
# Demand counted for a place listed without a population (see the module docstring).
UNKNOWN_POPULATION_DEMAND = 1000
# `GMT+1:00 Europe/Vienna`, `GMT-05:00 America/New_York`, `GMT+000000 Asia/Saigon`.
TIMEZONE_PATTERN = r"^GMT([+-])([0-9]{1,2}):?([0-9]{2})([0-9]{2})?\s+(\S+)$"
TIMEZONE_PLACEHOLDER = r"^GMT[+-]0{6}\s"

LINEAGE = ("_source_file", "_line_number")
COUNTRIES_RAW_COLS = tuple(c for c, _ in COUNTRIES_COLUMNS)
PLACES_RAW_COLS = tuple(c for c, _ in PLACES_COLUMNS)
STORES_RAW_COLS = tuple(c for c, _ in STORE_LOCATIONS_COLUMNS)


# ----------------------------------------------------------------------------- typing
def _text(raw: str) -> Column:
    """Trimmed text; empty becomes null."""
    value = F.trim(F.col(raw))
    return F.when(value != "", value)


def _number(raw: str, spark_type: str) -> Column:
    return F.trim(F.col(raw)).try_cast(spark_type)


def _text_list(raw: str) -> Column:
    """'ES,FR' -> ['ES', 'FR']; empty text -> []."""
    parts = F.transform(F.split(F.coalesce(F.col(raw), F.lit("")), ","), F.trim)
    return F.filter(parts, lambda p: p != "")


def coordinate_rules(latitude: str, longitude: str, required: bool) -> list[Rule]:
    """Parse, range and 0/0 rules of a raw latitude/longitude pair."""
    lat, lon = _number(latitude, "double"), _number(longitude, "double")
    rules = [
        required_rule("missing_latitude", "latitude", latitude),
        required_rule("missing_longitude", "longitude", longitude),
    ]
    return [
        *(rules if required else []),
        parse_rule("unparseable_latitude", "latitude", latitude, lat, "a number"),
        parse_rule("unparseable_longitude", "longitude", longitude, lon, "a number"),
        Rule(
            "latitude_out_of_range",
            "latitude",
            ~lat.between(-90.0, 90.0),
            "latitude: {value} is not in -90..90",
        ),
        Rule(
            "longitude_out_of_range",
            "longitude",
            ~lon.between(-180.0, 180.0),
            "longitude: {value} is not in -180..180",
        ),
        Rule(
            "zero_coordinates",
            "latitude,longitude",
            (lat == 0.0) & (lon == 0.0),
            "latitude,longitude: 0/0 is a missing position, not a place",
        ),
    ]


def country_rule(name: str, raw: str, known: Column) -> Rule:
    """A country code present in `raw` that the country table does not hold (`known` null);
    `name` a literal at the call (`"unknown_country_code"`)."""
    value = F.trim(F.col(raw))
    return Rule(
        name,
        "country_code",
        (value != "") & known.isNull(),
        "country_code: {value} is not a country code of the country table",
    )


def with_country(df: DataFrame, countries: DataFrame, code: str) -> DataFrame:
    """Adds the country (`c_iso`, `c_name`, `c_continent_code`, `c_continent`) of `code`.

    `countries` holds one row per iso code (silver.countries rows), so no row is multiplied;
    `c_iso` is null when the code is unknown.
    """
    lookup = countries.select(
        F.col("iso").alias("c_iso"),
        F.col("name").alias("c_name"),
        F.col("continent_code").alias("c_continent_code"),
        F.col("continent").alias("c_continent"),
    )
    return df.join(F.broadcast(lookup), on=F.col(code) == F.col("c_iso"), how="left")


def _quarantine(
    rejected: DataFrame,
    conflicts: DataFrame,
    keys: Sequence[str],
    source: str,
    raw: Sequence[str],
    at: datetime,
) -> DataFrame:
    return quarantine_rows(rejected, source, raw, at).unionByName(
        quarantine_rows(conflict_errors(conflicts, keys), source, raw, at)
    )


def _renamed(df: DataFrame, columns: Sequence[str]) -> DataFrame:
    """The typed `t_<column>` columns as `<column>`, then lineage: the silver schema."""
    return df.select(*[F.col(f"t_{c}").alias(c) for c in columns], *LINEAGE)


# ----------------------------------------------------------------------------- countries
COUNTRY_COLUMNS = (
    "iso",
    "iso3",
    "iso_numeric",
    "fips",
    "name",
    "capital",
    "area_km2",
    "population",
    "continent_code",
    "continent",
    "tld",
    "currency_code",
    "currency_name",
    "phone",
    "postal_code_regex",
    "languages",
    "geonameid",
    "neighbours",
)


def _country_rules() -> list[Rule]:
    iso, iso3 = F.trim(F.col("iso")), F.trim(F.col("iso3"))
    numeric = _number("iso_numeric", "int")
    return [
        required_rule("missing_iso", "iso", "iso"),
        required_rule("missing_iso3", "iso3", "iso3"),
        required_rule("missing_iso_numeric", "iso_numeric", "iso_numeric"),
        required_rule("missing_name", "name", "name"),
        required_rule("missing_continent_code", "continent_code", "continent_code"),
        required_rule("missing_geonameid", "geonameid", "geonameid"),
        Rule("invalid_iso", "iso", ~iso.rlike("^[A-Z]{2}$"), "iso: {value} is not 2 letters"),
        Rule("invalid_iso3", "iso3", ~iso3.rlike("^[A-Z]{3}$"), "iso3: {value} is not 3 letters"),
        parse_rule("unparseable_iso_numeric", "iso_numeric", "iso_numeric", numeric, "an integer"),
        Rule(
            "invalid_iso_numeric",
            "iso_numeric",
            ~numeric.between(0, 999),
            "iso_numeric: {value} is not 0..999",
        ),
        parse_rule(
            "unparseable_area_km2",
            "area_km2",
            "area_km2",
            _number("area_km2", "double"),
            "a number",
        ),
        parse_rule(
            "unparseable_population",
            "population",
            "population",
            _number("population", "bigint"),
            "an integer",
        ),
        parse_rule(
            "unparseable_geonameid",
            "geonameid",
            "geonameid",
            _number("geonameid", "bigint"),
            "an integer",
        ),
        Rule(
            "negative_area_km2",
            "area_km2",
            _number("area_km2", "double") < 0,
            "area_km2: {value} is negative",
        ),
        Rule(
            "negative_population",
            "population",
            _number("population", "bigint") < 0,
            "population: {value} is negative",
        ),
        Rule(
            "invalid_continent_code",
            "continent_code",
            ~F.trim(F.col("continent_code")).isin(*CONTINENTS),
            f"continent_code: {{value}} is not one of {', '.join(CONTINENTS)}",
        ),
    ]


def cleanse_countries(bronze: DataFrame, at: datetime) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(silver.countries rows, quarantine rows, exact duplicates removed)."""
    continent_code = F.trim(F.col("continent_code"))
    names = F.create_map(*[F.lit(x) for kv in CONTINENTS.items() for x in kv])
    typed = bronze.select(
        *COUNTRIES_RAW_COLS,
        *LINEAGE,
        F.trim(F.col("iso")).alias("t_iso"),
        F.trim(F.col("iso3")).alias("t_iso3"),
        F.lpad(_number("iso_numeric", "int").cast("string"), 3, "0").alias("t_iso_numeric"),
        _text("fips").alias("t_fips"),
        F.trim(F.col("name")).alias("t_name"),
        _text("capital").alias("t_capital"),
        _number("area_km2", "double").alias("t_area_km2"),
        _number("population", "bigint").alias("t_population"),
        continent_code.alias("t_continent_code"),
        F.try_element_at(names, continent_code).alias("t_continent"),
        _text("tld").alias("t_tld"),
        _text("currency_code").alias("t_currency_code"),
        _text("currency_name").alias("t_currency_name"),
        _text("phone").alias("t_phone"),
        _text("postal_code_regex").alias("t_postal_code_regex"),
        _text_list("languages").alias("t_languages"),
        _number("geonameid", "bigint").alias("t_geonameid"),
        _text_list("neighbours").alias("t_neighbours"),
    )
    raw_of = {c: c for c in COUNTRIES_RAW_COLS}
    valid, rejected = split_valid(with_errors(typed, _country_rules(), raw_of))
    content = [f"t_{c}" for c in COUNTRY_COLUMNS]
    kept, exact, conflict = deduplicate(valid, ("t_iso",), content, arrived=arrivals(bronze))
    quarantine = _quarantine(rejected, conflict, ("iso",), COUNTRIES_SOURCE, COUNTRIES_RAW_COLS, at)
    return _renamed(kept, COUNTRY_COLUMNS), quarantine, exact


# ----------------------------------------------------------------------------- places
PLACE_COLUMNS = (
    "geonameid",
    "name",
    "latitude",
    "longitude",
    "country_code",
    "country_name",
    "continent_code",
    "continent",
    "admin1_code",
    "population",
    "population_known",
    "demand_population",
    "timezone",
)
# The same place under two ids: what makes it the same, and what must then agree.
PLACE_IDENTITY = ("t_name", "t_country_code", "t_admin1_code", "t_latitude", "t_longitude")
PLACE_FACTS = ("t_population", "t_timezone")


def with_demand(df: DataFrame, population: str = "t_population") -> DataFrame:
    """Adds `t_population_known` and `t_demand_population` from the population column."""
    known = F.col(population) > 0
    return df.withColumn("t_population_known", known).withColumn(
        "t_demand_population",
        F.when(known, F.col(population)).otherwise(F.lit(UNKNOWN_POPULATION_DEMAND).cast("bigint")),
    )


def _place_rules() -> list[Rule]:
    population = _number("population", "bigint")
    return [
        required_rule("missing_geonameid", "geonameid", "geonameid"),
        required_rule("missing_name", "name", "name"),
        required_rule("missing_country_code", "country_code", "country_code"),
        required_rule("missing_population", "population", "population"),
        parse_rule(
            "unparseable_geonameid",
            "geonameid",
            "geonameid",
            _number("geonameid", "bigint"),
            "an integer",
        ),
        *coordinate_rules("latitude", "longitude", required=True),
        parse_rule("unparseable_population", "population", "population", population, "an integer"),
        Rule(
            "negative_population",
            "population",
            population < 0,
            "population: {value} is negative",
        ),
        country_rule("unknown_country_code", "country_code", F.col("c_iso")),
    ]


def _same_place_errors(duplicates: DataFrame) -> DataFrame:
    keys = ",".join(c.removeprefix("t_") for c in PLACE_IDENTITY)
    rule = Rule(
        "duplicate_place",
        keys,
        F.lit(True),
        f"another geonameid has the same {keys.replace(',', ', ')} with a different "
        "population or time zone; the first line was kept",
    )
    return with_errors(duplicates, [rule], {})


def cleanse_places(
    bronze: DataFrame, countries: DataFrame, at: datetime
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(silver.places rows, quarantine rows, duplicates removed).

    `countries` are silver.countries rows (see `cleanse_countries`).
    """
    typed = with_country(
        bronze.select(
            *PLACES_RAW_COLS,
            *LINEAGE,
            _number("geonameid", "bigint").alias("t_geonameid"),
            F.trim(F.col("name")).alias("t_name"),
            _number("latitude", "double").alias("t_latitude"),
            _number("longitude", "double").alias("t_longitude"),
            F.trim(F.col("country_code")).alias("t_country_code"),
            _text("admin1_code").alias("t_admin1_code"),
            _number("population", "bigint").alias("t_population"),
            _text("timezone").alias("t_timezone"),
        ),
        countries,
        "t_country_code",
    ).select(
        "*",
        F.col("c_name").alias("t_country_name"),
        F.col("c_continent_code").alias("t_continent_code"),
        F.col("c_continent").alias("t_continent"),
    )
    raw_of = {c: c for c in PLACES_RAW_COLS}
    valid, rejected = split_valid(with_errors(typed, _place_rules(), raw_of))
    valid = with_demand(valid)
    content = [f"t_{c}" for c in PLACE_COLUMNS]
    arrived = arrivals(bronze)
    by_id, exact_id, conflict_id = deduplicate(valid, ("t_geonameid",), content, arrived=arrived)
    kept, exact_place, conflict_place = deduplicate(
        by_id, PLACE_IDENTITY, PLACE_FACTS, keep="first", arrived=arrived
    )
    quarantine = _quarantine(
        rejected, conflict_id, ("geonameid",), PLACES_SOURCE, PLACES_RAW_COLS, at
    ).unionByName(
        quarantine_rows(_same_place_errors(conflict_place), PLACES_SOURCE, PLACES_RAW_COLS, at)
    )
    duplicates = exact_id.unionByName(exact_place)
    return _renamed(kept, PLACE_COLUMNS), quarantine, duplicates


# ----------------------------------------------------------------------------- stores
STORE_COLUMNS = (
    "store_number",
    "brand",
    "store_name",
    "ownership_type",
    "street_address",
    "city",
    "state_province",
    "country_code",
    "postcode",
    "phone_number",
    "timezone",
    "utc_offset_minutes",
    "longitude",
    "latitude",
)


def timezone_parts(raw: Column) -> tuple[Column, Column]:
    """('GMT-05:00 America/New_York') -> (zone name, UTC offset in minutes); null when the
    text does not match, and a null offset for the placeholder `GMT+000000`."""
    text = F.trim(raw)
    matches = text.rlike(TIMEZONE_PATTERN)
    sign = F.when(F.regexp_extract(text, TIMEZONE_PATTERN, 1) == "-", -1).otherwise(1)
    hours = F.regexp_extract(text, TIMEZONE_PATTERN, 2).try_cast("int")
    minutes = F.regexp_extract(text, TIMEZONE_PATTERN, 3).try_cast("int")
    zone = F.when(matches, F.regexp_extract(text, TIMEZONE_PATTERN, 5))
    offset = F.when(matches & ~text.rlike(TIMEZONE_PLACEHOLDER), sign * (hours * 60 + minutes))
    return zone, offset.cast("int")


def _store_rules() -> list[Rule]:
    timezone = F.trim(F.col("timezone"))
    return [
        required_rule("missing_store_number", "store_number", "store_number"),
        required_rule("missing_brand", "brand", "brand"),
        required_rule("missing_store_name", "store_name", "store_name"),
        required_rule("missing_ownership_type", "ownership_type", "ownership_type"),
        required_rule("missing_state_province", "state_province", "state_province"),
        required_rule("missing_country_code", "country_code", "country"),
        *coordinate_rules("latitude", "longitude", required=True),
        Rule(
            "invalid_ownership_type",
            "ownership_type",
            ~F.trim(F.col("ownership_type")).isin(*OWNERSHIP_TYPES),
            f"ownership_type: {{value}} is not one of {', '.join(OWNERSHIP_TYPES)}",
        ),
        country_rule("unknown_country_code", "country", F.col("c_iso")),
        Rule(
            "unparseable_timezone",
            "timezone",
            (timezone != "") & ~timezone.rlike(TIMEZONE_PATTERN),
            "timezone: {value} is not 'GMT<offset> <zone>'",
        ),
    ]


def cleanse_stores(
    bronze: DataFrame, countries: DataFrame, at: datetime
) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(silver.store_locations rows, quarantine rows, exact duplicates removed).

    `countries` are silver.countries rows (see `cleanse_countries`).
    """
    zone, offset = timezone_parts(F.col("timezone"))
    typed = with_country(
        bronze.select(
            *STORES_RAW_COLS,
            *LINEAGE,
            F.trim(F.col("store_number")).alias("t_store_number"),
            F.trim(F.col("brand")).alias("t_brand"),
            F.trim(F.col("store_name")).alias("t_store_name"),
            F.trim(F.col("ownership_type")).alias("t_ownership_type"),
            _text("street_address").alias("t_street_address"),
            _text("city").alias("t_city"),
            F.trim(F.col("state_province")).alias("t_state_province"),
            F.trim(F.col("country")).alias("t_country_code"),
            _text("postcode").alias("t_postcode"),
            _text("phone_number").alias("t_phone_number"),
            zone.alias("t_timezone"),
            offset.alias("t_utc_offset_minutes"),
            _number("longitude", "double").alias("t_longitude"),
            _number("latitude", "double").alias("t_latitude"),
        ),
        countries,
        "t_country_code",
    )
    raw_of = {c: c for c in STORES_RAW_COLS} | {"country_code": "country"}
    valid, rejected = split_valid(with_errors(typed, _store_rules(), raw_of))
    content = [f"t_{c}" for c in STORE_COLUMNS]
    kept, exact, conflict = deduplicate(
        valid, ("t_store_number",), content, arrived=arrivals(bronze)
    )
    quarantine = _quarantine(
        rejected, conflict, ("store_number",), STORES_SOURCE, STORES_RAW_COLS, at
    )
    return _renamed(kept, STORE_COLUMNS), quarantine, exact


# ----------------------------------------------------------------------------- cleansers
def _countries(frames: Mapping[str, DataFrame], env: CleanseEnv) -> Cleansed:
    kept, quarantine, duplicates = cleanse_countries(frames[COUNTRIES_RAW], env.at)
    return Cleansed({COUNTRIES: kept}, quarantine, duplicates)


def _places(frames: Mapping[str, DataFrame], env: CleanseEnv) -> Cleansed:
    countries, _, _ = cleanse_countries(frames[COUNTRIES_RAW], env.at)
    kept, quarantine, duplicates = cleanse_places(frames[PLACES_RAW], countries, env.at)
    return Cleansed({PLACES: kept}, quarantine, duplicates)


def _stores(frames: Mapping[str, DataFrame], env: CleanseEnv) -> Cleansed:
    countries, _, _ = cleanse_countries(frames[COUNTRIES_RAW], env.at)
    kept, quarantine, duplicates = cleanse_stores(frames[STORE_LOCATIONS_RAW], countries, env.at)
    return Cleansed({STORE_LOCATIONS: kept}, quarantine, duplicates)


# Countries first: places and stores look their codes up in the same rows.
CLEANSERS: list[Cleanser] = [
    Cleanser(COUNTRIES_SOURCE, COUNTRIES_RAW, _countries),
    Cleanser(PLACES_SOURCE, PLACES_RAW, _places, lookups=(COUNTRIES_RAW,)),
    Cleanser(STORES_SOURCE, STORE_LOCATIONS_RAW, _stores, lookups=(COUNTRIES_RAW,)),
]

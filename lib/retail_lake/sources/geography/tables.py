"""Geography's table contracts (bronze and silver) and the names they share.

GeoNames populated places and countries (demand) and the Starbucks store directory
(existing stores). The rules behind each silver column are in `cleanse.py` beside this.
"""

from __future__ import annotations

from retail_lake.contracts import LINEAGE, Col, TableContract, meta_columns, raw_table

PLACES_RAW = "bronze.places_raw"
COUNTRIES_RAW = "bronze.countries_raw"
STORE_LOCATIONS_RAW = "bronze.store_locations_raw"
PLACES = "silver.places"
COUNTRIES = "silver.countries"
STORE_LOCATIONS = "silver.store_locations"

# (bronze column, header in the landing file), in file order.
PLACES_COLUMNS = (
    ("geonameid", "geonameid"),
    ("name", "name"),
    ("latitude", "latitude"),
    ("longitude", "longitude"),
    ("country_code", "countrycode"),
    ("admin1_code", "admin1code"),
    ("population", "population"),
    ("timezone", "timezone"),
)
COUNTRIES_COLUMNS = (
    ("iso", "iso"),
    ("iso3", "iso3"),
    ("iso_numeric", "isonumeric"),
    ("fips", "fips"),
    ("name", "name"),
    ("capital", "capital"),
    ("area_km2", "areakm2"),
    ("population", "population"),
    ("continent_code", "continentcode"),
    ("tld", "tld"),
    ("currency_code", "currencycode"),
    ("currency_name", "currencyname"),
    ("phone", "phone"),
    ("postal_code_regex", "postalcoderegex"),
    ("languages", "languages"),
    ("geonameid", "geonameid"),
    ("neighbours", "neighbours"),
)
STORE_LOCATIONS_COLUMNS = (
    ("brand", "Brand"),
    ("store_number", "Store Number"),
    ("store_name", "Store Name"),
    ("ownership_type", "Ownership Type"),
    ("street_address", "Street Address"),
    ("city", "City"),
    ("state_province", "State/Province"),
    ("country", "Country"),
    ("postcode", "Postcode"),
    ("phone_number", "Phone Number"),
    ("timezone", "Timezone"),
    ("longitude", "Longitude"),
    ("latitude", "Latitude"),
)

BRONZE = [
    raw_table(
        PLACES_RAW,
        "geonames_cities/cities1000.csv.gz",
        list(PLACES_COLUMNS),
        "GeoNames populated places (cities1000: population above 1000 or administrative "
        "seats), every field as text, with provenance. The country code NA (Namibia) is text.",
    ),
    raw_table(
        COUNTRIES_RAW,
        "geonames_cities/countries.csv.gz",
        list(COUNTRIES_COLUMNS),
        "GeoNames country info table, every field as text, with provenance. The continent "
        "code NA (North America) and the iso code NA (Namibia) are text.",
    ),
    raw_table(
        STORE_LOCATIONS_RAW,
        "starbucks_stores/directory.csv.gz",
        list(STORE_LOCATIONS_COLUMNS),
        "Starbucks-group store directory (February 2017), every field as text, with "
        "provenance. Test data only: not to be redistributed.",
    ),
]

COORDINATE_RULE = "; a value that does not parse, is out of range or a 0/0 pair quarantines the row"

SILVER = [
    TableContract(
        name=COUNTRIES,
        description="One row per country of the GeoNames country table, typed. Rules: iso "
        "must be two upper-case letters and iso3 three; a number that does not parse "
        "quarantines the row naming the column; two lines with the same iso code: identical "
        "ones are removed and counted, differing ones quarantine all but the latest line.",
        columns=(
            Col("iso", "string", "ISO 3166-1 alpha-2 code (NA is Namibia, never null)", False),
            Col("iso3", "string", "ISO 3166-1 alpha-3 code", False),
            Col(
                "iso_numeric",
                "string",
                "ISO 3166-1 numeric code, zero-padded to 3 digits as ISO writes it (004)",
                False,
            ),
            Col("fips", "string", "FIPS 10-4 code; null when the source has none"),
            Col("name", "string", "country name (English)", False),
            Col("capital", "string", "capital; null when the source has none"),
            Col("area_km2", "double", "area in square kilometres (0 for UM and VA as listed)"),
            Col("population", "bigint", "population as listed (0 for uninhabited AQ, BV, HM, UM)"),
            Col(
                "continent_code",
                "string",
                "AF, AN, AS, EU, NA (North America, never null), OC or SA",
                False,
            ),
            Col("continent", "string", "continent name from continent_code", False),
            Col("tld", "string", "internet top-level domain, e.g. .ad; null when none"),
            Col("currency_code", "string", "ISO 4217 currency code; null when none"),
            Col("currency_name", "string", "currency name; null when none"),
            Col("phone", "string", "international dialling prefix as listed; null when none"),
            Col(
                "postal_code_regex",
                "string",
                "regular expression of the country's postcodes; null when none",
            ),
            Col(
                "languages",
                "array<string>",
                "language tags, most used first (from the comma-separated list); empty if none",
                False,
            ),
            Col("geonameid", "bigint", "GeoNames id of the country feature", False),
            Col(
                "neighbours",
                "array<string>",
                "iso codes of the bordering countries; empty for islands and when none",
                False,
            ),
            *LINEAGE,
            *meta_columns(),
        ),
        keys=("iso",),
        source=COUNTRIES_RAW,
    ),
    TableContract(
        name=PLACES,
        description="One row per GeoNames populated place (cities1000), typed, with its "
        "country. Rules: coordinates must parse, lie in range and not be 0/0; the country "
        "code must be in the country table; population must be a whole number >= 0 (0 means "
        "GeoNames has no figure: the place is kept and demand_population imputes it); two "
        "lines with the same geonameid: identical ones are removed and counted, differing "
        "ones quarantine all but the latest; the same place twice under two ids (same name, "
        "country, admin1 and coordinates): the first line is kept, a copy with the same "
        "population and time zone is removed and counted, one that differs is quarantined.",
        columns=(
            Col("geonameid", "bigint", "GeoNames id of the place", False),
            Col("name", "string", "name in its local form (non-ASCII kept), trimmed", False),
            Col("latitude", "double", "WGS84 latitude, -90..90" + COORDINATE_RULE, False),
            Col("longitude", "double", "WGS84 longitude, -180..180" + COORDINATE_RULE, False),
            Col(
                "country_code",
                "string",
                "ISO 3166-1 alpha-2 code, present in silver.countries (NA is Namibia)",
                False,
            ),
            Col("country_name", "string", "the country's name from silver.countries", False),
            Col(
                "continent_code",
                "string",
                "the country's continent code (NA: North America)",
                False,
            ),
            Col("continent", "string", "the country's continent name", False),
            Col(
                "admin1_code",
                "string",
                "first-level administrative division code (GeoNames); null when empty (99 rows)",
            ),
            Col(
                "population",
                "bigint",
                "population as listed; 0 means GeoNames has no figure (administrative seats "
                "are listed whatever their size)",
                False,
            ),
            Col(
                "population_known",
                "boolean",
                "population > 0; false for the seats listed with population 0",
                False,
            ),
            Col(
                "demand_population",
                "bigint",
                "population to count as demand: the population when known, else 1000 (the "
                "cities1000 inclusion threshold, about the 9th percentile of known "
                "populations): a seat is a settlement, so it adds some demand, but never "
                "more than a place with a known figure above the threshold",
                False,
            ),
            Col("timezone", "string", "IANA time zone id; null when empty"),
            *LINEAGE,
            *meta_columns(),
        ),
        keys=("geonameid",),
        source=f"{PLACES_RAW}, {COUNTRIES_RAW}",
    ),
    TableContract(
        name=STORE_LOCATIONS,
        description="One row per Starbucks-group store (February 2017), typed. Rules: "
        "coordinates are required (a store without them cannot be scored), must parse, lie "
        "in range and not be 0/0; ownership type must be one of the four known; the country "
        "code must be in the country table (this also catches the shifted Heraklion row, "
        "whose country reads M); two lines with the same store number: identical ones are "
        "removed and counted, differing ones quarantine all but the latest. Text is trimmed, "
        "empty text is null, casing is left as listed (PARAMUS and Paramus).",
        columns=(
            Col("store_number", "string", "store number as listed, e.g. 47370-257954", False),
            Col(
                "brand",
                "string",
                "Starbucks, Teavana, Evolution Fresh or Coffee House Holdings",
                False,
            ),
            Col("store_name", "string", "store name as listed, trimmed", False),
            Col(
                "ownership_type",
                "string",
                "Company Owned, Licensed, Joint Venture or Franchise",
                False,
            ),
            Col("street_address", "string", "street address as listed; null when empty"),
            Col("city", "string", "city as listed (casing not normalised); null when empty"),
            Col(
                "state_province",
                "string",
                "state/province code as listed (format varies by country)",
                False,
            ),
            Col(
                "country_code",
                "string",
                "ISO 3166-1 alpha-2 code, present in silver.countries",
                False,
            ),
            Col(
                "postcode",
                "string",
                "postcode as listed (mixed formats, e.g. US ZIP+4 without dash, leading "
                "zeros lost); null when empty",
            ),
            Col("phone_number", "string", "store phone as listed (mixed formats); null when empty"),
            Col(
                "timezone",
                "string",
                "zone name as listed; not always an IANA id (cut at 20 characters, e.g. "
                "America/Argentina/Bu, or made up, e.g. Asia/Beijing)",
            ),
            Col(
                "utc_offset_minutes",
                "int",
                "UTC offset listed before the zone name, in minutes (a standard offset, "
                "whatever the season); null for the placeholder GMT+000000, which the source "
                "also gives to zones not at UTC (e.g. America/Phoenix)",
            ),
            Col("longitude", "double", "WGS84 longitude, -180..180" + COORDINATE_RULE, False),
            Col("latitude", "double", "WGS84 latitude, -90..90" + COORDINATE_RULE, False),
            *LINEAGE,
            *meta_columns(),
        ),
        keys=("store_number",),
        source=f"{STORE_LOCATIONS_RAW}, {COUNTRIES_RAW}",
    ),
]

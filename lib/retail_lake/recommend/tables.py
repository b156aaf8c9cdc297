"""Table contracts of the recommendation features (gold).

Both feature tables describe one snapshot (`recommend.as_of`, end of that day): only sales
and returns up to it count, so nothing that happened later leaks into them. They are
rebuilt whole for each snapshot (`overwrite`); a re-run on the same inputs writes the same
rows, which the lake detects and skips. Guests (no customer id) and non-product lines
(postage, fees, ...) are excluded from the customer features; guests count towards a
product's popularity and units but not its buyers.
"""

from __future__ import annotations

from retail_lake.contracts import Col, TableContract, meta_columns
from retail_lake.sources.online_retail.tables import (
    CUSTOMER_TOKEN,
    CUSTOMER_TOKEN_COL,
    PRODUCTS,
    RETURNS,
    STOCK_CODE,
    TRANSACTIONS,
)

CUSTOMER_FEATURES = "gold.customer_features"
PRODUCT_FEATURES = "gold.product_features"

INPUT_VERSIONS = Col(
    "input_versions",
    "map<string,bigint>",
    "Delta version of every input table the row was computed from",
    False,
)
AS_OF_DATE = Col(
    "as_of_date",
    "date",
    "snapshot day (recommend.as_of): only lines on or before it count",
    False,
)

FEATURE_TABLES = [
    TableContract(
        name=CUSTOMER_FEATURES,
        description="One row per known customer with at least one product sales line up to "
        "the snapshot day: recency, frequency and monetary value, basket and return "
        "behaviour, RFM quantile scores with a readable segment, and a k-means cluster. "
        "`segment` holds the labelling chosen by recommend.segments.method.",
        columns=(
            CUSTOMER_TOKEN_COL,
            AS_OF_DATE,
            Col(
                "country",
                "string",
                "the country on most of the customer's lines (ties: the latest line's)",
                False,
            ),
            Col("first_purchase_at", "timestamp", "first product sales line", False),
            Col("last_purchase_at", "timestamp", "last product sales line", False),
            Col("recency_days", "int", "days from the last purchase day to as_of_date", False),
            Col("frequency", "bigint", "distinct invoices with a product", False),
            Col(
                "monetary",
                "decimal(18,3)",
                "GBP: sales line totals minus the value returned (may be negative: returns "
                "of goods bought before the data starts)",
                False,
            ),
            Col("tenure_days", "int", "days from the first purchase day to as_of_date", False),
            Col("avg_basket_size", "double", "units bought per invoice", False),
            Col("avg_basket_value", "double", "GBP of sales per invoice (before returns)", False),
            Col(
                "return_rate",
                "double",
                "units returned / units bought (0 when nothing returned; can exceed 1 when "
                "goods bought before the data starts come back)",
                False,
            ),
            Col(
                "r_score",
                "int",
                "recency quantile score 1..rfm_bins over the snapshot's customers "
                "(high = bought recently)",
                False,
            ),
            Col("f_score", "int", "frequency quantile score 1..rfm_bins (high = often)", False),
            Col("m_score", "int", "monetary quantile score 1..rfm_bins (high = spent most)", False),
            Col(
                "rfm_segment",
                "string",
                "readable segment from the R score and the rounded mean of F and M: "
                "champions, loyal, potential_loyalists, new, promising, need_attention, "
                "about_to_sleep, at_risk, cant_lose, hibernating or lost",
                False,
            ),
            Col(
                "kmeans_cluster",
                "int",
                "k-means cluster (0..k-1) on the scaled features (recommend.segments)",
                False,
            ),
            Col(
                "kmeans_segment",
                "string",
                "heavy_returners when the cluster's centroid returns at least half the units "
                "it buys, else the rfm_segment a customer at the centroid would get (clusters "
                "may share a label; kmeans_cluster tells them apart)",
                False,
            ),
            Col(
                "segment",
                "string",
                "rfm_segment or kmeans_segment, as chosen by recommend.segments.method",
                False,
            ),
            Col("segment_method", "string", "rfm or kmeans: the method behind `segment`", False),
            INPUT_VERSIONS,
            *meta_columns(),
        ),
        keys=(CUSTOMER_TOKEN,),
        write_mode="overwrite",
        source=f"{TRANSACTIONS}, {RETURNS}",
    ),
    TableContract(
        name=PRODUCT_FEATURES,
        description="One row per product with at least one sales line up to the snapshot "
        "day: popularity, units, revenue, prices and returns. Guest sales count for "
        "invoices, units and revenue, not for buyers.",
        columns=(
            Col(STOCK_CODE, "string", "upper-cased product stock code", False),
            Col(
                "description",
                "string",
                "canonical description (silver.products); null if never described",
            ),
            AS_OF_DATE,
            Col("invoices", "bigint", "distinct invoices with the product (popularity)", False),
            Col("buyers", "bigint", "distinct known customers who bought it", False),
            Col("units_sold", "bigint", "units sold", False),
            Col("revenue", "decimal(18,3)", "GBP of sales line totals (before returns)", False),
            Col("min_price", "decimal(12,3)", "lowest unit price on a sales line", False),
            Col("avg_price", "double", "revenue / units_sold: the unit-weighted price", False),
            Col("max_price", "decimal(12,3)", "highest unit price on a sales line", False),
            Col(
                "price_stddev",
                "double",
                "population standard deviation of the lines' unit prices (0 for one line)",
                False,
            ),
            Col("units_returned", "bigint", "units returned (positive)", False),
            Col(
                "return_rate",
                "double",
                "units_returned / units_sold (can exceed 1 when goods sold before the data "
                "starts come back)",
                False,
            ),
            Col("first_sold_at", "timestamp", "first sales line up to the snapshot", False),
            Col("last_sold_at", "timestamp", "last sales line up to the snapshot", False),
            INPUT_VERSIONS,
            *meta_columns(),
        ),
        keys=(STOCK_CODE,),
        write_mode="overwrite",
        source=f"{TRANSACTIONS}, {RETURNS}, {PRODUCTS}",
    ),
]

"""Table contracts of the recommender: indices, interactions, recommendations, similar
products (gold)."""

from __future__ import annotations

from dataclasses import replace

from retail_lake.contracts import Col, TableContract, meta_columns
from retail_lake.sources.online_retail.tables import (
    CUSTOMER_TOKEN,
    CUSTOMER_TOKEN_COL,
    RETURNS,
    STOCK_CODE,
    TRANSACTIONS,
)

CUSTOMER_INDEX = "gold.customer_index"
PRODUCT_INDEX = "gold.product_index"
INTERACTIONS = "gold.interactions"
RECOMMENDATIONS = "gold.recommendations"
SIMILAR_PRODUCTS = "gold.similar_products"
AB_ASSIGNMENTS = "gold.recommendation_assignments"
AB_RESULTS = "gold.recommendation_ab_results"

INPUT_VERSIONS = Col(
    "input_versions",
    "map<string,bigint>",
    "Delta version of every input table the row was computed from",
    False,
)
MODEL = (
    Col("model_name", "string", "MLflow registered model name", False),
    Col(
        "model_version",
        "string",
        "registered model version that produced the row (popularity rows: the version they "
        "were published with)",
        False,
    ),
    INPUT_VERSIONS,
)

MODEL_TABLES = [
    TableContract(
        name=CUSTOMER_INDEX,
        description="The integer index ALS knows each customer by. Append-only: a customer "
        "keeps their index across runs; a new customer gets the next number, in order of "
        "first purchase then token.",
        columns=(
            replace(CUSTOMER_TOKEN_COL, comment="customer pseudonym (silver.customers)"),
            Col("customer_idx", "int", "ALS user index: 0, 1, 2, ... never reused", False),
            Col("first_purchase_at", "timestamp", "first product purchase (sets the order)", False),
            *meta_columns(),
        ),
        keys=(CUSTOMER_TOKEN,),
        write_mode="append",
        source=TRANSACTIONS,
    ),
    TableContract(
        name=PRODUCT_INDEX,
        description="The integer index ALS knows each product by. Append-only, like "
        "gold.customer_index.",
        columns=(
            Col(STOCK_CODE, "string", "product stock code (silver.products)", False),
            Col("product_idx", "int", "ALS item index: 0, 1, 2, ... never reused", False),
            Col(
                "first_purchase_at",
                "timestamp",
                "first purchase by a known customer (sets the order)",
                False,
            ),
            *meta_columns(),
        ),
        keys=(STOCK_CODE,),
        write_mode="append",
        source=TRANSACTIONS,
    ),
    TableContract(
        name=INTERACTIONS,
        description="Implicit feedback: what each known customer bought of each product up "
        "to the snapshot (recommend.as_of). Guest sales and non-product codes are excluded; "
        "returns are counted, not subtracted (a returned product was still chosen). From "
        "recommend.incremental_min_pairs rows on, updated incrementally from silver's Change "
        "Data Feed (only the (customer, product) pairs with new or changed lines are "
        "recomputed); smaller, rebuilt.",
        columns=(
            replace(CUSTOMER_TOKEN_COL, comment="customer pseudonym"),
            Col(STOCK_CODE, "string", "product stock code", False),
            Col("customer_idx", "int", "gold.customer_index.customer_idx", False),
            Col("product_idx", "int", "gold.product_index.product_idx", False),
            Col("invoices", "bigint", "distinct invoices with the product", False),
            Col("units", "bigint", "units bought", False),
            Col("units_returned", "bigint", "units returned (silver.returns), >= 0", False),
            Col("first_purchase_at", "timestamp", "first purchase", False),
            Col("last_purchase_at", "timestamp", "last purchase", False),
            Col(
                "preference",
                "double",
                "implicit preference given to ALS (recommend.preference; log_invoices: 1 + "
                "ln(invoices)); ALS's confidence weight is 1 + alpha * preference",
                False,
            ),
            Col(
                "through_day",
                "date",
                "last day of the lines counted when recommend.as_of was set; null: every line "
                "(the default, kept up to date incrementally)",
            ),
            INPUT_VERSIONS,
            *meta_columns(),
        ),
        keys=(CUSTOMER_TOKEN, STOCK_CODE),
        write_mode="merge",
        source=f"{TRANSACTIONS}, {RETURNS}",
    ),
    TableContract(
        name=RECOMMENDATIONS,
        description="Top-N products per customer from the published ALS model, past "
        "purchases excluded (recommend.exclude_purchased). Customers the model does not "
        "know (no product purchase by the snapshot) get the popularity list; `source` says "
        "which. Rebuilt whole by each published model.",
        columns=(
            replace(CUSTOMER_TOKEN_COL, comment="customer pseudonym"),
            Col("rank", "int", "1 = best", False),
            Col(STOCK_CODE, "string", "recommended product", False),
            Col("description", "string", "its canonical description (silver.products)"),
            Col(
                "score",
                "double",
                "als: the factor dot product (higher is better); popularity: distinct buyers",
                False,
            ),
            Col("source", "string", "als or popularity (fallback)", False),
            Col(
                "variant",
                "string",
                "the customer's A/B variant (gold.recommendation_assignments): als or "
                "popularity; als for everyone when no test runs",
                False,
            ),
            *MODEL,
            *meta_columns(),
        ),
        keys=(CUSTOMER_TOKEN, "rank"),
        write_mode="overwrite",
        source=f"{INTERACTIONS} + the ALS recommender",
        zorder_by=("stock_code",),  # who is recommended a product
    ),
    TableContract(
        name=SIMILAR_PRODUCTS,
        description="Top-K most similar products per product by the cosine of their ALS "
        "item factors (bought by the same customers): 'customers also bought'.",
        columns=(
            Col(STOCK_CODE, "string", "product", False),
            Col("rank", "int", "1 = most similar", False),
            Col("similar_stock_code", "string", "a similar product (never the product)", False),
            Col("similar_description", "string", "its canonical description"),
            Col("similarity", "double", "cosine of the two item factor vectors, -1..1", False),
            *MODEL,
            *meta_columns(),
        ),
        keys=(STOCK_CODE, "rank"),
        write_mode="overwrite",
        source="the ALS recommender's item factors",
    ),
    TableContract(
        name=AB_ASSIGNMENTS,
        description="Which A/B variant each customer seen by the snapshot is served "
        "(recommend.ab_test): a bucket 0..9999 from a hash of the token with the salt, cut "
        "into the variants by their shares. Rebuilt with gold.recommendations.",
        columns=(
            replace(CUSTOMER_TOKEN_COL, comment="customer pseudonym"),
            Col("bucket", "int", "pmod(xxhash64(salt || ':' || token), 10000)", False),
            Col("variant", "string", "als or popularity", False),
            Col("salt", "string", "recommend.ab_test.salt of the split", False),
            Col("as_of_date", "date", "the snapshot day the recommendations were made for", False),
            *MODEL,
            *meta_columns(),
        ),
        keys=(CUSTOMER_TOKEN,),
        write_mode="overwrite",
        source=f"{INTERACTIONS} + recommend.ab_test",
    ),
    TableContract(
        name=AB_RESULTS,
        description="What each A/B variant's customers bought in the days after the "
        "snapshot (evaluate_recommendations): hit rate, precision@k and revenue of "
        "recommended products bought per customer, and the share who bought anything, with "
        "95% intervals and a two-sided test against the popularity control.",
        columns=(
            Col("salt", "string", "the split (recommend.ab_test.salt)", False),
            Col("as_of_date", "date", "snapshot the recommendations were made for", False),
            Col("window_start", "date", "first day of purchases counted", False),
            Col("window_end", "date", "last day counted (at most window_days later)", False),
            Col("variant", "string", "als or popularity", False),
            Col(
                "metric",
                "string",
                "hit_rate (bought >= 1 of their top-k), precision_at_k (recommended top-k "
                "products bought / k), revenue_per_customer (GBP of recommended top-k products "
                "bought), active_rate (bought anything: should not differ)",
                False,
            ),
            Col("k", "int", "the cut-off (recommend.k)", False),
            Col("customers", "bigint", "customers assigned to the variant", False),
            Col("value", "double", "the metric over the variant's customers", False),
            Col("ci_low", "double", "95% interval: low (Wilson for rates, normal for means)"),
            Col("ci_high", "double", "95% interval: high"),
            Col("control", "string", "the variant compared with (popularity)"),
            Col("difference", "double", "value minus the control's; null for the control"),
            Col(
                "p_value",
                "double",
                "two-sided p-value against the control (two proportions or Welch); null for "
                "the control",
            ),
            *meta_columns(),
        ),
        keys=("salt", "as_of_date", "window_end", "variant", "metric"),
        write_mode="merge",
        source=f"{AB_ASSIGNMENTS}, {RECOMMENDATIONS}, {TRANSACTIONS}",
    ),
]

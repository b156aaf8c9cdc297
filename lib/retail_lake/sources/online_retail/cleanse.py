"""Online Retail bronze -> silver: sales lines, returns, customers and products.

Rules, decided from the data (../shared/data/online_retail/SOURCE.md) and documented in the
table catalog through the contracts:
- every field is typed with a `try_*` function; a value that does not parse quarantines the
  row naming the column (the customer id is never quoted in a reason or payload);
- invoices starting with `A` are bad-debt adjustments, not sales: quarantined;
- invoices starting with `C` are cancellations: they go to `silver.returns` (quantity
  negative, as exported), linked to the sale they reverse where one can be found;
- any other line with quantity <= 0 (stock adjustments such as `damaged`, `check`) or
  unit price <= 0 (free lines, price 0) is quarantined with the reason;
- exact duplicate lines (same raw fields) among the valid ones are removed and counted; the
  first occurrence (by its file's arrival, then file, then line) is kept, so a later file
  repeating a line changes nothing already in silver. Duplicates among quarantined lines
  are all quarantined;
- stock codes are upper-cased (85123a is 85123A); codes matching the configured
  `online_retail.non_product_codes` are flagged with their kind and kept out of
  `silver.products`;
- descriptions are trimmed, inner whitespace collapsed and upper-cased; a blank one is null;
  `silver.products` keeps the most frequent description per code;
- lines without a customer id are guest sales (kept, `is_guest`); the customer id is
  replaced by its HMAC-SHA256 token (`privacy`), here and in the quarantine's payload.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from retail_lake.cleansing import (
    Cleansed,
    CleanseEnv,
    Cleanser,
    Persist,
    Rule,
    arrivals,
    deduplicate,
    no_persist,
    parse_rule,
    quarantine_rows,
    required_rule,
    split_valid,
    with_errors,
)
from retail_lake.privacy import Pseudonymiser
from retail_lake.sources.online_retail.tables import (
    CUSTOMERS,
    ONLINE_RETAIL_RAW,
    PRODUCTS,
    RAW_COLUMNS,
    RETURNS,
    TRANSACTIONS,
)

SOURCE = "online_retail"

RAW = tuple(c for c, _ in RAW_COLUMNS)
TIMESTAMP_FORMAT = "yyyy-MM-dd HH:mm:ss"
LINE_COLUMNS = (
    "line_id",
    "invoice_no",
    "stock_code",
    "description",
    "quantity",
    "invoice_date",
    "invoice_day",
    "unit_price",
    "line_total",
    "customer_token",
    "is_guest",
    "country",
    "is_product",
    "non_product_kind",
)
LINEAGE = ("_source_file", "_line_number")


def normalise_description(raw: Column) -> Column:
    """Trimmed, inner whitespace collapsed, upper-cased; blank -> null."""
    text = F.upper(F.regexp_replace(F.trim(raw), r"\s+", " "))
    return F.when(text != "", text)


def non_product_kind(stock_code: Column, codes: Sequence[Mapping[str, str]]) -> Column:
    """The kind of the first configured pattern the (upper-cased) code matches, else null."""
    kind = F.lit(None).cast("string")
    for entry in reversed(codes):
        kind = F.when(stock_code.rlike(entry["pattern"]), F.lit(entry["kind"])).otherwise(kind)
    return kind


def _int(raw: str) -> Column:
    return F.expr(f"try_cast(trim(`{raw}`) AS INT)")


def _price(raw: str) -> Column:
    return F.expr(f"try_cast(trim(`{raw}`) AS DECIMAL(12,3))")


def _timestamp(raw: str) -> Column:
    return F.expr(f"try_to_timestamp(trim(`{raw}`), '{TIMESTAMP_FORMAT}')")


def _rules() -> list[Rule]:
    invoice = F.upper(F.trim(F.col("invoice_no")))
    quantity, price = _int("quantity"), _price("unit_price")
    cancellation = invoice.startswith("C")
    adjustment = invoice.startswith("A")
    customer = F.trim(F.col("customer_id"))
    rules = [
        # Description and customer id are optional (a blank description, a guest line).
        required_rule("missing_invoice_no", "invoice_no", "invoice_no"),
        required_rule("missing_stock_code", "stock_code", "stock_code"),
        required_rule("missing_quantity", "quantity", "quantity"),
        required_rule("missing_invoice_date", "invoice_date", "invoice_date"),
        required_rule("missing_unit_price", "unit_price", "unit_price"),
        required_rule("missing_country", "country", "country"),
        parse_rule("unparseable_quantity", "quantity", "quantity", quantity, "an integer"),
        parse_rule(
            "unparseable_invoice_date",
            "invoice_date",
            "invoice_date",
            _timestamp("invoice_date"),
            "a timestamp",
        ),
        parse_rule("unparseable_unit_price", "unit_price", "unit_price", price, "a decimal number"),
        # No {value}: the reason must not carry the raw customer id.
        Rule(
            "unparseable_customer_id",
            "customer_id",
            (customer != "") & ~customer.rlike(r"^[0-9]+(\.0+)?$"),
            "customer_id: the value is not an integer id",
        ),
        Rule(
            "invalid_invoice_no",
            "invoice_no",
            ~invoice.rlike(r"^[CA]?[0-9]+$"),
            "invoice_no: {value} is not a number with an optional C or A prefix",
        ),
        Rule(
            "bad_debt_adjustment",
            "invoice_no",
            adjustment,
            "invoice_no: {value} is a bad-debt adjustment (A...), not a sale",
        ),
        Rule(
            "cancellation_with_positive_quantity",
            "quantity",
            cancellation & (quantity > 0),
            "quantity: {value} is positive on a cancellation",
        ),
        Rule(
            "non_positive_quantity",
            "quantity",
            ~cancellation & ~adjustment & (quantity <= 0),
            "quantity: {value} is not positive on a sales line (stock adjustment)",
        ),
        Rule(
            "non_positive_price",
            "unit_price",
            ~adjustment & (price <= 0),
            "unit_price: {value} is not positive",
        ),
    ]
    return rules


def typed_lines(
    bronze: DataFrame,
    pseudonymise: Pseudonymiser,
    non_product_codes: Sequence[Mapping[str, str]],
) -> DataFrame:
    """Bronze rows with their typed line columns and `_errors` (one entry per broken rule)."""
    stock_code = F.upper(F.trim(F.col("stock_code")))
    kind = non_product_kind(stock_code, non_product_codes)
    quantity, price = _int("quantity"), _price("unit_price")
    invoice_date = _timestamp("invoice_date")
    token = pseudonymise(F.col("customer_id"))
    line_total = F.when(quantity.isNotNull() & price.isNotNull(), quantity * price)
    typed = pseudonymise.keyed(bronze).select(  # the key's pads: data, dropped here
        *RAW,
        *LINEAGE,
        "_row_hash",
        F.concat_ws("#", "_source_file", F.col("_line_number").cast("string")).alias("line_id"),
        F.upper(F.trim(F.col("invoice_no"))).alias("t_invoice_no"),
        stock_code.alias("t_stock_code"),
        normalise_description(F.col("description")).alias("t_description"),
        quantity.alias("t_quantity"),
        invoice_date.alias("t_invoice_date"),
        F.to_date(invoice_date).alias("t_invoice_day"),
        price.alias("t_unit_price"),
        line_total.cast("decimal(18,3)").alias("t_line_total"),
        token.alias("t_customer_token"),
        token.isNull().alias("t_is_guest"),
        F.trim(F.col("country")).alias("t_country"),
        kind.isNull().alias("t_is_product"),
        kind.alias("t_non_product_kind"),
    )
    raw_of = {c: c for c in RAW if c != "customer_id"}
    return with_errors(typed, _rules(), raw_of)


def _lines(valid: DataFrame) -> DataFrame:
    return valid.select(
        "line_id",
        *[F.col(f"t_{c}").alias(c) for c in LINE_COLUMNS if c != "line_id"],
        *LINEAGE,
        "_row_hash",
    )


def link_returns(returns: DataFrame, sales: DataFrame) -> DataFrame:
    """Each return with the latest earlier sale of the product to the customer that had at
    least the returned quantity (`original_*`), and its `link_status`."""
    candidates = sales.where(F.col("customer_token").isNotNull()).select(
        F.col("customer_token").alias("s_customer"),
        F.col("stock_code").alias("s_stock_code"),
        F.col("invoice_date").alias("s_date"),
        F.col("quantity").alias("s_quantity"),
        F.col("line_id").alias("original_line_id"),
        F.col("invoice_no").alias("original_invoice_no"),
    )
    matches = (F.col("customer_token") == F.col("s_customer")) & (
        F.col("stock_code") == F.col("s_stock_code")
    )
    earlier = (F.col("s_date") <= F.col("invoice_date")) & (
        F.col("s_quantity") >= -F.col("quantity")
    )
    latest_first = Window.partitionBy("line_id").orderBy(
        F.col("s_date").desc_nulls_last(), F.col("original_line_id").desc_nulls_last()
    )
    linked = (
        returns.join(candidates, on=matches & earlier, how="left")
        .withColumn("_rank", F.row_number().over(latest_first))
        .where(F.col("_rank") == 1)
    )
    status = (
        F.when(F.col("customer_token").isNull(), F.lit("guest"))
        .when(F.col("original_line_id").isNull(), F.lit("not_found"))
        .otherwise(F.lit("linked"))
    )
    return linked.select(
        *LINE_COLUMNS,
        "original_line_id",
        "original_invoice_no",
        status.alias("link_status"),
        *LINEAGE,
    )


def customers(sales: DataFrame, returns: DataFrame) -> DataFrame:
    """silver.customers from the known customers' sales and return lines."""
    lines = (
        sales.select("customer_token", "country", "invoice_date", F.lit(1).alias("is_sale"))
        .unionByName(
            returns.select("customer_token", "country", "invoice_date", F.lit(0).alias("is_sale"))
        )
        .where(F.col("customer_token").isNotNull())
    )
    per_country = lines.groupBy("customer_token", "country").agg(
        F.count(F.lit(1)).alias("n"), F.max("invoice_date").alias("last")
    )
    main_country = (
        per_country.withColumn(
            "_rank",
            F.row_number().over(
                Window.partitionBy("customer_token").orderBy(
                    F.col("n").desc(), F.col("last").desc(), F.col("country")
                )
            ),
        )
        .where(F.col("_rank") == 1)
        .select("customer_token", "country")
    )
    totals = lines.groupBy("customer_token").agg(
        F.countDistinct("country").cast("int").alias("countries"),
        F.min("invoice_date").alias("first_seen_at"),
        F.max("invoice_date").alias("last_seen_at"),
        F.sum("is_sale").cast("bigint").alias("sales_lines"),
        F.sum(1 - F.col("is_sale")).cast("bigint").alias("return_lines"),
    )
    return totals.join(main_country, on="customer_token", how="inner").select(
        "customer_token",
        "country",
        "countries",
        "first_seen_at",
        "last_seen_at",
        "sales_lines",
        "return_lines",
    )


def products(sales: DataFrame) -> DataFrame:
    """silver.products: product codes of the sales lines with a canonical description."""
    lines = sales.where(F.col("is_product"))
    described = lines.where(F.col("description").isNotNull())
    canonical = (
        described.groupBy("stock_code", "description")
        .agg(F.count(F.lit(1)).alias("n"))
        .withColumn(
            "_rank",
            F.row_number().over(
                Window.partitionBy("stock_code").orderBy(F.col("n").desc(), F.col("description"))
            ),
        )
        .where(F.col("_rank") == 1)
        .select("stock_code", "description")
    )
    totals = lines.groupBy("stock_code").agg(
        F.countDistinct("description").cast("int").alias("description_variants"),
        F.min("invoice_date").alias("first_sold_at"),
        F.max("invoice_date").alias("last_sold_at"),
    )
    return totals.join(canonical, on="stock_code", how="left").select(
        "stock_code", "description", "description_variants", "first_sold_at", "last_sold_at"
    )


def cleanse_lines(
    bronze: DataFrame,
    at,
    pseudonymise: Pseudonymiser,
    non_product_codes: Sequence[Mapping[str, str]],
    persist: Persist = no_persist,
) -> tuple[DataFrame, DataFrame, DataFrame, DataFrame]:
    """(sales lines, returns, quarantine rows, exact duplicates removed).

    `persist` is applied to the typed lines and to the ranking of duplicates, which every
    output is computed from (the job passes one that caches them for its counts and gates).
    """
    typed = persist(typed_lines(bronze, pseudonymise, non_product_codes))
    valid, rejected = split_valid(typed)
    kept, exact, _ = deduplicate(
        _lines(valid),
        ("_row_hash",),
        ("_row_hash",),
        keep="first",
        persist=persist,
        arrived=arrivals(bronze),
    )
    kept = kept.drop("_row_hash")
    cancellation = F.col("invoice_no").startswith("C")
    sales = kept.where(~cancellation)
    returns = link_returns(kept.where(cancellation), sales)
    payload = [pseudonymise(F.col(c)).alias(c) if c == "customer_id" else F.col(c) for c in RAW]
    quarantine = quarantine_rows(pseudonymise.keyed(rejected), SOURCE, payload, at)
    return sales.select(*LINE_COLUMNS, *LINEAGE), returns, quarantine, exact.drop("_row_hash")


def cleanse(frames: Mapping[str, DataFrame], env: CleanseEnv) -> Cleansed:
    """The Online Retail cleanser (see `retail_lake.cleansing.Cleanser`)."""
    sales, returns, quarantine, duplicates = cleanse_lines(
        frames[ONLINE_RETAIL_RAW],
        env.at,
        env.pseudonymise,
        env.cfg.get("online_retail.non_product_codes"),
        env.persist,
    )
    return Cleansed(
        outputs={TRANSACTIONS: sales, RETURNS: returns},
        quarantine=quarantine,
        duplicates=duplicates,
        derived={CUSTOMERS: customers(sales, returns), PRODUCTS: products(sales)},
    )


CLEANSERS: list[Cleanser] = [Cleanser(SOURCE, ONLINE_RETAIL_RAW, cleanse)]

"""Table contracts of the Online Retail source (bronze and silver)."""

from __future__ import annotations

from retail_lake.contracts import LINEAGE, Col, TableContract, meta_columns, raw_table

ONLINE_RETAIL_RAW = "bronze.online_retail_raw"
TRANSACTIONS = "silver.transactions"
RETURNS = "silver.returns"
CUSTOMERS = "silver.customers"
PRODUCTS = "silver.products"

# Keys other packages read (recommend): the customer pseudonym and the product.
CUSTOMER_TOKEN = "customer_token"
# The customer pseudonym as every table that holds it declares it (erased and re-tokenised
# by `retail-lake privacy`; no Delta statistics).
CUSTOMER_TOKEN_COL = Col(
    CUSTOMER_TOKEN, "string", "HMAC-SHA256 pseudonym of the customer id", False, pseudonym=True
)
STOCK_CODE = "stock_code"

RAW_COLUMNS = (
    ("invoice_no", "InvoiceNo"),
    ("stock_code", "StockCode"),
    ("description", "Description"),
    ("quantity", "Quantity"),
    ("invoice_date", "InvoiceDate"),
    ("unit_price", "UnitPrice"),
    ("customer_id", "CustomerID"),
    ("country", "Country"),
)


def _line_columns(quantity_comment: str, total_comment: str) -> tuple[Col, ...]:
    """The typed columns sales lines and returns share."""
    return (
        Col(
            "line_id",
            "string",
            "stable id of the line: <landing file>#<line number> of its first occurrence",
            False,
        ),
        Col("invoice_no", "string", "invoice number as issued (returns start with C)", False),
        Col(
            STOCK_CODE,
            "string",
            "stock code, upper-cased (85123a and 85123A are one product)",
            False,
        ),
        Col(
            "description",
            "string",
            "the line's description: trimmed, inner whitespace collapsed, upper-cased; null "
            "when blank (silver.products holds one canonical description per product)",
        ),
        Col("quantity", "int", quantity_comment, False),
        Col("invoice_date", "timestamp", "invoice time (UTC as exported)", False),
        Col("invoice_day", "date", "calendar day of the invoice", False),
        Col("unit_price", "decimal(12,3)", "price per unit in GBP", False),
        Col("line_total", "decimal(18,3)", total_comment, False),
        Col(
            CUSTOMER_TOKEN,
            "string",
            "HMAC-SHA256 pseudonym of the customer id; null for guest sales",
            pseudonym=True,
        ),
        Col(
            "is_guest",
            "boolean",
            "no customer id on the line: kept in sales totals, excluded from personalisation",
            False,
        ),
        Col(
            "country",
            "string",
            "customer country as exported (includes Unspecified, EIRE, European Community)",
            False,
        ),
        Col(
            "is_product",
            "boolean",
            "stock code is a product (false for postage, fees, manual lines, ...)",
            False,
        ),
        Col(
            "non_product_kind",
            "string",
            "kind of a non-product code (postage, carriage, manual, discount, samples, "
            "bank_charges, marketplace_fee, commission, sundry, gift_voucher, "
            "marketplace_listing, other); null for products",
        ),
    )


BRONZE = [
    raw_table(
        ONLINE_RETAIL_RAW,
        "online_retail/online_retail.csv.gz",
        list(RAW_COLUMNS),
        "Online Retail invoice lines (UCI), every field as text, with provenance. Holds the "
        "raw CustomerID: bronze is not for analysts.",
    ),
]

SILVER = [
    TableContract(
        name=TRANSACTIONS,
        description="Online Retail sales lines, typed. Rules: cancellations (invoice C...) "
        "go to silver.returns; a sales line with quantity <= 0 or unit price <= 0 and the "
        "bad-debt adjustments (invoice A...) are quarantined with the reason; exact duplicate "
        "lines are removed and counted (the first is kept); non-product stock codes are kept "
        "and flagged; lines without a customer are guest sales.",
        columns=(
            *_line_columns("units sold (> 0)", "quantity * unit_price (GBP)"),
            *LINEAGE,
            *meta_columns(),
        ),
        keys=("line_id",),
        source=ONLINE_RETAIL_RAW,
        zorder_by=("stock_code", "invoice_day"),  # a product's sales over time
    ),
    TableContract(
        name=RETURNS,
        description="Online Retail cancellations (invoice numbers starting with C), linked "
        "to the sale they reverse where one is found: the latest earlier sales line of the "
        "same product to the same customer with at least the returned quantity.",
        columns=(
            *_line_columns(
                "units returned, negative as exported",
                "quantity * unit_price (GBP, negative: money given back)",
            ),
            Col(
                "original_line_id",
                "string",
                "silver.transactions.line_id of the sale reversed; null when not linked",
            ),
            Col("original_invoice_no", "string", "invoice of that sale; null when not linked"),
            Col(
                "link_status",
                "string",
                "linked; guest (no customer to match on); not_found (no earlier sale of the "
                "product to the customer with enough units, e.g. bought before the data starts)",
                False,
            ),
            *LINEAGE,
            *meta_columns(),
        ),
        keys=("line_id",),
        source=ONLINE_RETAIL_RAW,
    ),
    TableContract(
        name=CUSTOMERS,
        description="One row per known customer (guests have no row), by pseudonym.",
        columns=(
            CUSTOMER_TOKEN_COL,
            Col(
                "country",
                "string",
                "the country on most of the customer's lines (ties: the latest line's)",
                False,
            ),
            Col("countries", "int", "distinct countries on the customer's lines", False),
            Col("first_seen_at", "timestamp", "first sales or return line", False),
            Col("last_seen_at", "timestamp", "last sales or return line", False),
            Col("sales_lines", "bigint", "sales lines in silver.transactions", False),
            Col("return_lines", "bigint", "lines in silver.returns", False),
            *meta_columns(),
        ),
        keys=(CUSTOMER_TOKEN,),
        source=f"{TRANSACTIONS}, {RETURNS}",
    ),
    TableContract(
        name=PRODUCTS,
        description="The product catalogue: one row per product stock code (non-product "
        "codes excluded) with one canonical description.",
        columns=(
            Col(STOCK_CODE, "string", "upper-cased stock code", False),
            Col(
                "description",
                "string",
                "canonical description: the most frequent normalised description on the "
                "product's sales lines (ties: alphabetically first); null if never described",
            ),
            Col(
                "description_variants",
                "int",
                "distinct normalised descriptions seen for the code",
                False,
            ),
            Col("first_sold_at", "timestamp", "first sales line", False),
            Col("last_sold_at", "timestamp", "last sales line", False),
            *meta_columns(),
        ),
        keys=(STOCK_CODE,),
        source=TRANSACTIONS,
    ),
]

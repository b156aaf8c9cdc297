"""Implicit feedback per (customer, product), and the stable integer indices ALS needs.

An interaction is what a known customer bought of a product in a period: distinct invoices,
units, first and last purchase, and the implicit preference ALS is given
(`recommend.preference`: `invoices`, or `log_invoices` = 1 + ln(invoices)). ALS turns it
into the confidence 1 + alpha * preference. Guest sales (no customer) and non-product codes
(postage, fees, ...) are not interactions; returns do not remove a purchase (a returned
product was still chosen), they are counted in `units_returned`.

Customers and products get integer indices (ALS takes ints) kept in gold.customer_index and
gold.product_index: a key keeps its index for ever; a new key gets the next free number, in
order of first appearance then key, so the assignment is the same whoever runs it.
"""

from __future__ import annotations

import math
from datetime import date

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from retail_lake.sources.online_retail.tables import CUSTOMER_TOKEN, STOCK_CODE

PREFERENCES = ("invoices", "log_invoices")

# The keys of an interaction: silver's customer pseudonym and product stock code.
CUSTOMER = CUSTOMER_TOKEN
PRODUCT = STOCK_CODE
CUSTOMER_IDX = "customer_idx"
PRODUCT_IDX = "product_idx"


def preference(invoices: Column, kind: str) -> Column:
    """The implicit preference of `invoices` distinct invoices (see the module docstring)."""
    if kind == "invoices":
        return invoices.cast("double")
    if kind == "log_invoices":
        return F.lit(1.0) + F.log(invoices.cast("double"))
    raise ValueError(f"recommend.preference must be one of {PREFERENCES}, got {kind!r}")


def preference_py(invoices: int, kind: str) -> float:
    """`preference` in plain Python (tests, benchmarks)."""
    return float(invoices) if kind == "invoices" else 1.0 + math.log(invoices)


def personal_lines(lines: DataFrame, start: date | None, end: date | None) -> DataFrame:
    """Known customers' product lines with invoice_day in [start, end] (None: open)."""
    out = lines.where(F.col("is_product") & F.col(CUSTOMER).isNotNull())
    if start is not None:
        out = out.where(F.col("invoice_day") >= F.lit(start))
    if end is not None:
        out = out.where(F.col("invoice_day") <= F.lit(end))
    return out


def interactions(
    sales: DataFrame,
    returns: DataFrame,
    start: date | None,
    end: date | None,
    kind: str = "log_invoices",
) -> DataFrame:
    """(customer_token, stock_code, invoices, units, units_returned, first_purchase_at,
    last_purchase_at, preference) from the sales and returns in [start, end]."""
    bought = (
        personal_lines(sales, start, end)
        .groupBy(CUSTOMER, PRODUCT)
        .agg(
            F.countDistinct("invoice_no").alias("invoices"),
            F.sum("quantity").cast("bigint").alias("units"),
            F.min("invoice_date").alias("first_purchase_at"),
            F.max("invoice_date").alias("last_purchase_at"),
        )
    )
    returned = (
        personal_lines(returns, start, end)
        .groupBy(CUSTOMER, PRODUCT)
        .agg((-F.sum("quantity")).cast("bigint").alias("units_returned"))
    )
    return (
        bought.join(returned, on=[CUSTOMER, PRODUCT], how="left")
        .withColumn("units_returned", F.coalesce("units_returned", F.lit(0)).cast("bigint"))
        .withColumn("preference", preference(F.col("invoices"), kind))
        .select(
            CUSTOMER,
            PRODUCT,
            "invoices",
            "units",
            "units_returned",
            "first_purchase_at",
            "last_purchase_at",
            "preference",
        )
    )


def new_indices(
    current: DataFrame | None, seen: DataFrame, key: str, idx: str, first_seen: str
) -> DataFrame:
    """Index rows (key, idx, first_seen) for the keys of `seen` that `current` lacks.

    `seen` holds (key, first_seen); `current` the index so far (None: empty). New keys are
    numbered from max(current idx) + 1 in order of first_seen, then key.
    """
    firsts = seen.groupBy(key).agg(F.min(first_seen).alias(first_seen))
    start = 0
    if current is not None:
        firsts = firsts.join(current.select(key), on=key, how="left_anti")
        start = current.agg(F.max(idx)).first()[0]
        start = 0 if start is None else int(start) + 1
    # One ordered window over the new keys only: a few thousand a run (every key on the first).
    order = Window.orderBy(F.col(first_seen), F.col(key))
    return firsts.select(
        key,
        (F.row_number().over(order) - 1 + F.lit(start)).cast("int").alias(idx),
        first_seen,
    )


def with_indices(rows: DataFrame, customers: DataFrame, products: DataFrame) -> DataFrame:
    """Adds customer_idx and product_idx (inner joins: every key must be indexed)."""
    return rows.join(customers.select(CUSTOMER, CUSTOMER_IDX), on=CUSTOMER, how="inner").join(
        products.select(PRODUCT, PRODUCT_IDX), on=PRODUCT, how="inner"
    )

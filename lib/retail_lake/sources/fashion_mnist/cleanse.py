"""Fashion-MNIST bronze -> silver.product_images: validated images with their class name.

Rules (documented in the table catalog through the contract's comments):
- image_id, split, image_index, label and pixels are required;
- an image has exactly 784 pixels, each 0..255 (a null pixel counts as out of range);
- the label is 0..9 and becomes its category (0 T-shirt/top .. 9 Ankle boot);
- the split is train or test;
- a row breaking a rule is quarantined naming the column; its payload is small (id, split,
  index, label, pixel count and range), not the 784 values;
- one image_id seen twice (a file ingested under two names): identical images are removed
  and counted, differing ones quarantine all but the latest line (by arrival, then file, then line).
"""

from __future__ import annotations

from collections.abc import Mapping
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
    quarantine_rows,
    split_valid,
    with_errors,
)
from retail_lake.sources.fashion_mnist.tables import (
    BRONZE_TABLE,
    CATEGORIES,
    PIXEL_TYPE,
    PIXELS,
    SILVER_TABLE,
    SPLITS,
)

SOURCE = "fashion_mnist"
KEYS = ("image_id",)
CONTENT = ("image_id", "split", "image_index", "label", "category", "pixels")
REQUIRED = ("image_id", "split", "image_index", "label", "pixels")
# Helper column: how a rejected image's pixels looked, for reasons and the payload.
PIXELS_SEEN = "_pixels_seen"


def category(label: Column) -> Column:
    """The class name of a label 0..9; null for any other value."""
    names = F.create_map(*[x for i, name in enumerate(CATEGORIES) for x in (F.lit(i), F.lit(name))])
    return F.try_element_at(names, label)


def _out_of_range(pixel: Column) -> Column:
    return pixel.isNull() | (pixel < 0) | (pixel > 255)


def rules() -> list[Rule]:
    """The validation rules of a bronze image row; none of them yields null."""
    found = [
        # Not `required_rule`: these bronze columns are typed (no text to trim).
        Rule(
            "missing_image_id",
            "image_id",
            F.col("image_id").isNull(),
            "image_id: required value is missing",
        ),
        Rule("missing_split", "split", F.col("split").isNull(), "split: required value is missing"),
        Rule(
            "missing_image_index",
            "image_index",
            F.col("image_index").isNull(),
            "image_index: required value is missing",
        ),
        Rule("missing_label", "label", F.col("label").isNull(), "label: required value is missing"),
        Rule(
            "missing_pixels",
            "pixels",
            F.col("pixels").isNull(),
            "pixels: required value is missing",
        ),
        Rule(
            "invalid_pixel_count",
            "pixels",
            F.size("pixels") != PIXELS,
            f"pixels: {{value}}, expected {PIXELS} values",
        ),
        Rule(
            "invalid_pixel_value",
            "pixels",
            F.exists("pixels", _out_of_range),
            "pixels: {value}, expected every value in 0..255",
        ),
        Rule("invalid_label", "label", ~F.col("label").between(0, 9), "label: {value} is not 0..9"),
        Rule(
            "invalid_split",
            "split",
            ~F.col("split").isin(*SPLITS),
            f"split: {{value}} is not one of {', '.join(SPLITS)}",
        ),
        Rule(
            "invalid_image_index",
            "image_index",
            F.col("image_index") < 0,
            "image_index: {value} is negative",
        ),
    ]
    return found


def with_pixels_seen(df: DataFrame) -> DataFrame:
    """Adds `_pixels_seen`: '<n> values in <min>..<max>' (nulls counted as such)."""
    return df.withColumn(
        PIXELS_SEEN,
        F.format_string(
            "%s values in %s..%s%s",
            F.size("pixels").cast("string"),
            F.array_min("pixels").cast("string"),
            F.array_max("pixels").cast("string"),
            F.when(F.exists("pixels", lambda p: p.isNull()), F.lit(" and nulls")).otherwise(""),
        ),
    )


def _payload() -> list[str | Column]:
    return [
        "image_id",
        "split",
        "image_index",
        "label",
        F.size("pixels").alias("pixel_count"),
        F.array_min("pixels").alias("pixel_min"),
        F.array_max("pixels").alias("pixel_max"),
    ]


def cleanse_images(bronze: DataFrame, at: datetime) -> tuple[DataFrame, DataFrame, DataFrame]:
    """(silver.product_images rows, quarantine rows, exact duplicates removed)."""
    raw_of = {c: c for c in REQUIRED} | {"pixels": PIXELS_SEEN}
    typed = bronze.select(*REQUIRED, "_source_file", "_line_number").transform(with_pixels_seen)
    valid, rejected = split_valid(with_errors(typed, rules(), raw_of))
    silver = valid.select(
        "image_id",
        "split",
        "image_index",
        "label",
        category(F.col("label")).alias("category"),
        F.col("pixels").cast(PIXEL_TYPE).alias("pixels"),
        "_source_file",
        "_line_number",
    )
    kept, exact, conflict = deduplicate(silver, KEYS, CONTENT, arrived=arrivals(bronze))
    quarantine = quarantine_rows(rejected, SOURCE, _payload(), at).unionByName(
        quarantine_rows(conflict_errors(conflict, KEYS), SOURCE, _payload(), at)
    )
    return kept, quarantine, exact


def _cleanse(frames: Mapping[str, DataFrame], env: CleanseEnv) -> Cleansed:
    rows, quarantine, duplicates = cleanse_images(frames[BRONZE_TABLE], env.at)
    return Cleansed({SILVER_TABLE: rows}, quarantine, duplicates)


CLEANSERS: list[Cleanser] = [Cleanser(SOURCE, BRONZE_TABLE, _cleanse)]

"""Fashion-MNIST's table contracts (bronze and silver) and the names they share.

Pixels are `array<smallint>`: Spark has no unsigned byte type (`tinyint` stops at 127), and
Petastorm reads a fixed-length list column as one `(rows, 784)` int16 matrix, which torch
takes as it is.
"""

from __future__ import annotations

from retail_lake.contracts import LINEAGE, PROVENANCE, Col, TableContract, meta_columns

BRONZE_TABLE = "bronze.fashion_mnist_raw"
SILVER_TABLE = "silver.product_images"

ROWS = COLS = 28
PIXELS = ROWS * COLS
PIXEL_TYPE = "array<smallint>"
# Fashion-MNIST classes, by label (the data set's own names).
CATEGORIES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
SPLITS = ("train", "test")

# Bronze content columns, in order (sources.fashion_mnist.columns lists the same).
RAW_COLUMNS = ("image_id", "split", "image_index", "label", "pixels", "labels_file")

_IDX_PROVENANCE = {
    "_source_file": "images file, relative to the landing folder",
    "_line_number": "record index in the images file + 1 (identity stays file + line)",
    "_row_hash": "SHA-256 of the record's bytes as they arrived: the label byte, then the "
    "784 pixel bytes; detects change, not identity",
}

BRONZE: list[TableContract] = [
    TableContract(
        name=BRONZE_TABLE,
        description="Fashion-MNIST as it arrived: one row per image of an IDX images file, "
        "with the label from its paired labels file, and provenance.",
        columns=(
            Col(
                "image_id",
                "string",
                "split and 0-based index in the split's file, e.g. train-00042",
                False,
            ),
            Col(
                "split",
                "string",
                "from the images file name: train-* is train, t10k-* is test; another "
                "prefix is kept as it is (cleanse quarantines it)",
                False,
            ),
            Col("image_index", "int", "0-based position of the image in its file", False),
            Col("label", "int", "label byte as it arrived (0..255; the classes are 0..9)", False),
            Col(
                "pixels",
                PIXEL_TYPE,
                "784 pixel bytes as they arrived, row-major 28x28, 0 (background) .. 255",
                False,
            ),
            Col("labels_file", "string", "the paired labels file, relative to the landing folder"),
            *(
                Col(c.name, c.type, _IDX_PROVENANCE.get(c.name, c.comment), c.nullable)
                for c in PROVENANCE
            ),
        ),
        keys=("_source_file", "_line_number"),
        write_mode="append",
        source="fashion_mnist/*-images-idx3-ubyte.gz + *-labels-idx1-ubyte.gz",
        retention_days=90,
    )
]

SILVER: list[TableContract] = [
    TableContract(
        name=SILVER_TABLE,
        description="One row per Fashion-MNIST product image: its class and its 28x28 "
        "grey-level pixels as a fixed-length array (Petastorm feeds it as a (n, 784) matrix). "
        "Images with a label outside 0..9, a pixel outside 0..255, not exactly 784 pixels or "
        "a split other than train/test are quarantined.",
        columns=(
            Col(
                "image_id",
                "string",
                "stable id: split and 0-based index in the split's file, e.g. train-00042",
                False,
            ),
            Col("split", "string", "the data set's split: train (60,000) or test (10,000)", False),
            Col("image_index", "int", "0-based position of the image in its split's file", False),
            Col("label", "int", "class 0..9 (see category)", False),
            Col(
                "category",
                "string",
                "class name: 0 T-shirt/top, 1 Trouser, 2 Pullover, 3 Dress, 4 Coat, 5 Sandal, "
                "6 Shirt, 7 Sneaker, 8 Bag, 9 Ankle boot",
                False,
            ),
            Col(
                "pixels",
                PIXEL_TYPE,
                "exactly 784 grey levels, row-major 28x28, 0 (background) .. 255; smallint "
                "because Spark has no unsigned byte",
                False,
            ),
            *LINEAGE,
            *meta_columns(),
        ),
        keys=("image_id",),
        source=BRONZE_TABLE,
    )
]

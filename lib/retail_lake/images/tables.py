"""The image classifier's gold table: predictions of every product image."""

from __future__ import annotations

from retail_lake.contracts import Col, TableContract, meta_columns
from retail_lake.sources.fashion_mnist.tables import SILVER_TABLE

PREDICTIONS_TABLE = "gold.product_image_predictions"

GOLD: list[TableContract] = [
    TableContract(
        name=PREDICTIONS_TABLE,
        description="The product-image classifier's prediction for every image of "
        "silver.product_images (train and test splits), with its class probabilities, the "
        "registered model version that made it and the Delta versions it came from. One row "
        "per image and model; a re-run with the same model and images changes no row.",
        columns=(
            Col("image_id", "string", "the image (silver.product_images.image_id)", False),
            Col(
                "split",
                "string",
                "train or test; the model was trained on part of train (its validation and "
                "training rows) and evaluated on test, which it never saw",
                False,
            ),
            Col("label", "int", "true class 0..9, from silver.product_images", False),
            Col("predicted_label", "int", "predicted class 0..9 (the most probable)", False),
            Col(
                "predicted_category",
                "string",
                "class name of predicted_label (0 T-shirt/top .. 9 Ankle boot)",
                False,
            ),
            Col("probability", "double", "the model's probability of predicted_label", False),
            Col(
                "probabilities",
                "array<double>",
                "probability of each of the 10 classes, in label order 0..9; sums to 1",
                False,
            ),
            Col("model_name", "string", "registered model name (product_image_classifier)", False),
            Col("model_version", "string", "registered model version that produced the row", False),
            Col(
                "input_versions",
                "map<string,bigint>",
                "Delta version of silver.product_images scored, and (prefixed train:) of the "
                "tables the model was trained on",
                False,
            ),
            *meta_columns(),
        ),
        keys=("image_id", "model_name"),
        source=f"{SILVER_TABLE} + the product image classifier",
    )
]

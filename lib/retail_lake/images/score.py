"""Batch scoring with the product-image classifier, and the `classify_images` job.

The weights travel once as a broadcast; each Python worker builds the network once per
model version (cached in the worker process, which Spark reuses) and applies it to images
with `mapInPandas`. A prediction depends only on its image and the weights (the network has
no batch statistics and runs in fixed chunks on one thread), so scoring the same images
with the same version again yields the same rows, and the MERGE into
gold.product_image_predictions changes nothing.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from retail_lake.images.tables import PREDICTIONS_TABLE
from retail_lake.runner import JobContext, JobError, JobResult, Output
from retail_lake.sources.fashion_mnist.tables import CATEGORIES, SILVER_TABLE

log = logging.getLogger(__name__)

MODEL_NAME = "product_image_classifier"
# What scoring reads from silver.product_images.
IMAGE_COLUMNS = ("image_id", "split", "label", "pixels")
_MODELS: dict[str, Any] = {}  # per Python worker: model key -> network

SCORED = T.StructType(
    [
        T.StructField("image_id", T.StringType(), False),
        T.StructField("split", T.StringType(), False),
        T.StructField("label", T.IntegerType(), False),
        T.StructField("predicted_label", T.IntegerType(), False),
        T.StructField("predicted_category", T.StringType(), False),
        T.StructField("probability", T.DoubleType(), False),
        T.StructField("probabilities", T.ArrayType(T.DoubleType(), False), False),
    ]
)


def state_to_bytes(state: Mapping[str, Any]) -> bytes:
    """A state dict (tensors or numpy arrays) as torch-saved bytes."""
    import torch

    buf = io.BytesIO()
    torch.save({k: torch.as_tensor(v) for k, v in state.items()}, buf)
    return buf.getvalue()


def require_images(ctx: JobContext, job: str) -> None:
    """Raises a JobError naming the table or columns when silver.product_images is unusable."""
    if not ctx.lake.exists(SILVER_TABLE):
        raise JobError(f"{job}: {SILVER_TABLE} does not exist; run ingest and cleanse first")
    columns = ctx.lake.read(SILVER_TABLE).columns
    missing = [c for c in IMAGE_COLUMNS if c not in columns]
    if missing:
        raise JobError(f"{job}: {SILVER_TABLE} lacks the columns {missing}")


def _network(key: str, weights: bytes, shape: Mapping[str, Any]):
    import torch

    from retail_lake.images.model import build_network

    if key not in _MODELS:
        net = build_network(tuple(shape["channels"]), int(shape["hidden"]))
        net.load_state_dict(torch.load(io.BytesIO(weights), weights_only=True))
        net.eval()
        _MODELS[key] = net
    return _MODELS[key]


def score_images(
    spark: SparkSession,
    images: DataFrame,
    weights: bytes,
    key: str,
    shape: Mapping[str, Any],
) -> DataFrame:
    """Predictions (SCORED) for rows with IMAGE_COLUMNS.

    key: identifies the weights (model name and version) in the worker's cache.
    shape: channels and hidden of the network.
    """
    shared = spark.sparkContext.broadcast(weights)
    names = np.array(CATEGORIES)

    def predict(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        import torch

        from retail_lake.images.model import predict_proba

        torch.set_num_threads(1)
        net = _network(key, shared.value, shape)
        for pdf in batches:
            if pdf.empty:
                continue
            proba = predict_proba(net, pdf["pixels"].to_numpy())
            best = proba.argmax(axis=1)
            yield pd.DataFrame(
                {
                    "image_id": pdf["image_id"],
                    "split": pdf["split"],
                    "label": pdf["label"].astype(np.int32),
                    "predicted_label": best.astype(np.int32),
                    "predicted_category": names[best],
                    "probability": proba[np.arange(len(best)), best],
                    "probabilities": list(proba),
                }
            )

    return images.select(*IMAGE_COLUMNS).mapInPandas(predict, SCORED)


def load_registered(cfg, version: str | None = None) -> tuple[str, bytes, dict[str, Any]]:
    """(version, weights, preprocessing) of the registered classifier (its champion by default)."""
    from retail_lake.champions import serving
    from retail_lake.training.tracking import load_registered as load

    return load(
        cfg,
        MODEL_NAME,
        "train_image_classifier",
        version or serving(cfg, MODEL_NAME, "train_image_classifier"),
    )


def run(ctx: JobContext) -> JobResult:
    """The classify_images job: every product image classified by the registered CNN.

    Reads silver.product_images and scores every image with the `product_image_classifier`
    champion (`retail_lake.champions`); merges the predictions into gold.product_image_predictions
    on image and model, so scoring the same images with the same version again changes
    nothing. Skipped as a unit of work (`JobContext.unchanged`) when the champion's version,
    the images' version, the settings and the code are those of its last successful run and
    nobody wrote to the predictions since.

    Args:
        ctx: the run's context, given by the runner.

    Returns:
        The gold.product_image_predictions output, unwritten.

    Raises:
        JobError: silver.product_images is missing or lacks a column, or no model is
            registered (run train_image_classifier first).

    Example:
        From the command line::

            retail-lake run classify_images

        From Python:

        >>> from retail_lake.registry import JOBS, run_job
        >>> ctx, writes = run_job(spark, cfg, "classify_images", JOBS["classify_images"])
        >>> writes["gold.product_image_predictions"].inserted
    """
    require_images(ctx, "classify_images")
    version, weights, prep = load_registered(ctx.cfg)
    unit = "classify_images"
    if ctx.unchanged(unit, (SILVER_TABLE,), {"model_version": version}, dated=False):
        return JobResult()
    images = ctx.read(SILVER_TABLE)
    scored = score_images(ctx.spark, images, weights, f"{MODEL_NAME}:{version}", prep["shape"])
    # The table scored now, and (prefixed train:) the tables the model was trained on.
    inputs = {
        SILVER_TABLE: ctx.versions_read[SILVER_TABLE],
        **{f"train:{k}": int(v) for k, v in prep["input_versions"].items()},
    }
    out = scored.select(
        *SCORED.fieldNames(),
        F.lit(MODEL_NAME).alias("model_name"),
        F.lit(version).alias("model_version"),
        F.create_map(
            *[x for k, v in sorted(inputs.items()) for x in (F.lit(k), F.lit(v).cast("bigint"))]
        ).alias("input_versions"),
    )
    n_images = images.count()
    log.info(
        "[%s] classify_images: %s v%s over %d images of %s (version %d)",
        ctx.run_id,
        MODEL_NAME,
        version,
        n_images,
        SILVER_TABLE,
        ctx.versions_read[SILVER_TABLE],
    )
    return JobResult(
        outputs=[Output(PREDICTIONS_TABLE, out, mode="merge", unit=unit)],
        rows_read={SILVER_TABLE: n_images},
    )

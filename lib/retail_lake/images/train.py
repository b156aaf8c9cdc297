"""The `train_image_classifier` job: silver.product_images at a recorded version ->
Petastorm -> the CNN on the configured backend's ranks -> a registered MLflow model, with
metrics in ops.model_metrics.

Splits: the 10,000 test images are the test set (never trained or validated on). Of the
train images, those whose `image_id` hashes below `image_classifier.validation_fraction`
(`pmod(xxhash64(image_id), 1e6) < fraction * 1e6`: the same images on every run) are the
validation set that early stopping watches; the model trains on the others, optionally a
deterministic sample of `image_classifier.max_train_rows` of them.

On the test set the job reports top-1 accuracy, log loss, accuracy per category (the share
of each true class predicted right) and the confusion matrix (an MLflow artifact). Baselines
on the same test set, computed here from the same training rows: the majority class, and a
nearest-centroid classifier (each class's mean pixels; the nearest in Euclidean distance
wins). The model must beat both on accuracy, or it is not published and the job fails.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from retail_lake import champions
from retail_lake.images.inputs import CLASSES, PIXEL_MEAN, PIXEL_STD, PIXELS
from retail_lake.images.score import (
    MODEL_NAME,
    load_registered,
    require_images,
    score_images,
    state_to_bytes,
)
from retail_lake.publish_rule import Better, Decision, decide, shortfalls
from retail_lake.runner import JobContext, JobError, JobResult
from retail_lake.sources.fashion_mnist.tables import CATEGORIES, SILVER_TABLE
from retail_lake.training import job as training_job
from retail_lake.training.loop import LR_SCHEDULES

log = logging.getLogger(__name__)

# The network's shape (fixed here; recorded with the model so scoring rebuilds it).
CHANNELS = (32, 64)
HIDDEN = 128
VALIDATION_BUCKETS = 1_000_000
# Petastorm row: 784 float32 pixels and the label.
ROW_BYTES = 4 * PIXELS + 8
CONFUSION_ARTIFACT = "confusion_matrix.json"


@dataclass(frozen=True)
class ImageConfig:
    """The `image_classifier` section, checked."""

    epochs: int
    batch_size: int
    learning_rate: float
    patience: int
    validation_fraction: float
    max_train_rows: int
    lr_schedule: str
    flip: bool

    @classmethod
    def from_config(cls, s: dict[str, Any]) -> ImageConfig:
        """Reads `cfg["image_classifier"]`; a JobError for a value out of range."""
        conf = cls(
            epochs=int(s["epochs"]),
            batch_size=int(s["batch_size"]),
            learning_rate=float(s["learning_rate"]),
            patience=int(s["patience"]),
            validation_fraction=float(s["validation_fraction"]),
            max_train_rows=int(s["max_train_rows"]),
            lr_schedule=str(s["lr_schedule"]),
            flip=bool(s["flip"]),
        )
        if conf.lr_schedule not in LR_SCHEDULES:
            raise JobError(
                f"image_classifier.lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
                f"not {conf.lr_schedule!r}"
            )
        if not 0.0 < conf.validation_fraction < 1.0:
            raise JobError(
                "image_classifier.validation_fraction must be between 0 and 1 (exclusive), "
                f"not {conf.validation_fraction}"
            )
        if conf.epochs < 1 or conf.batch_size < 1 or conf.max_train_rows < 0:
            raise JobError(
                "image_classifier: epochs and batch_size must be positive and max_train_rows "
                f"0 or more (got {conf.epochs}, {conf.batch_size}, {conf.max_train_rows})"
            )
        return conf

    @property
    def hyper(self) -> dict[str, Any]:
        """The training loop's hyperparameters, as recorded in MLflow."""
        return {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "learning_rate": self.learning_rate,
            "patience": self.patience,
            "lr_schedule": self.lr_schedule,
            "flip": self.flip,
        }


# ----------------------------------------------------------------------------- splits
def in_validation(fraction: float) -> Column:
    """True for the train images held out for validation: a fixed hash of image_id."""
    bucket = F.pmod(F.xxhash64(F.col("image_id")), F.lit(VALIDATION_BUCKETS))
    return bucket < F.lit(round(fraction * VALIDATION_BUCKETS))


def capped(rows: DataFrame, cap: int, seed: int) -> DataFrame:
    """`cap` rows chosen by a seeded hash of image_id (the same rows on every run); all if 0."""
    if not cap:
        return rows
    key = F.xxhash64(F.col("image_id"), F.lit(seed))
    return rows.withColumn("_k", key).orderBy("_k", "image_id").limit(cap).drop("_k")


def validation_arrays(rows: DataFrame) -> dict[str, np.ndarray]:
    """The validation images as the loop's numpy dict: pixels (n, 784) uint8, label (n,)."""
    pdf = rows.select("image_id", "pixels", "label").orderBy("image_id").toPandas()
    if pdf.empty:
        return {"pixels": np.zeros((0, PIXELS), np.uint8), "label": np.zeros(0, np.int64)}
    return {
        "pixels": np.stack(pdf["pixels"].to_numpy()).astype(np.uint8),
        "label": pdf["label"].to_numpy(dtype=np.int64),
    }


# ----------------------------------------------------------------------------- baselines
def class_sums(rows: DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(images per class (10,), pixel sums per class (10, 784)) of rows with label, pixels:
    partial sums per partition in mapInPandas, added up on the driver."""

    def partial(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        counts = np.zeros(CLASSES, np.int64)
        sums = np.zeros((CLASSES, PIXELS), np.float64)
        for pdf in batches:
            if pdf.empty:
                continue
            x = np.stack(pdf["pixels"].to_numpy()).astype(np.float64)
            y = pdf["label"].to_numpy(dtype=np.int64)
            for c in np.unique(y):
                sums[c] += x[y == c].sum(axis=0)
            counts += np.bincount(y, minlength=CLASSES)
        yield pd.DataFrame(
            {"label": np.arange(CLASSES, dtype=np.int32), "n": counts, "sums": list(sums)}
        )

    parts = (
        rows.select("label", "pixels")
        .mapInPandas(partial, "label int, n bigint, sums array<double>")
        .collect()
    )
    counts = np.zeros(CLASSES, np.int64)
    sums = np.zeros((CLASSES, PIXELS), np.float64)
    for r in parts:
        counts[r["label"]] += r["n"]
        sums[r["label"]] += np.asarray(r["sums"])
    return counts, sums


def nearest_centroid(spark: SparkSession, rows: DataFrame, centroids: np.ndarray) -> DataFrame:
    """(label, predicted_label) per image: the class whose centroid (10, 784; a NaN row for a
    class without training images) is nearest in Euclidean distance."""
    known = ~np.isnan(centroids).any(axis=1)
    shared = spark.sparkContext.broadcast(np.nan_to_num(centroids))
    known_b = spark.sparkContext.broadcast(known)

    def predict(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        c = shared.value
        # ||x - c||^2 = ||x||^2 - 2 x.c + ||c||^2; ||x||^2 is the same for every class.
        c2 = np.where(known_b.value, (c**2).sum(axis=1), np.inf)
        for pdf in batches:
            if pdf.empty:
                continue
            x = np.stack(pdf["pixels"].to_numpy()).astype(np.float64)
            d = c2[None, :] - 2.0 * x @ c.T
            yield pd.DataFrame(
                {
                    "label": pdf["label"].astype(np.int32),
                    "predicted_label": d.argmin(axis=1).astype(np.int32),
                }
            )

    return rows.select("label", "pixels").mapInPandas(predict, "label int, predicted_label int")


def confusion(pairs: DataFrame) -> np.ndarray:
    """(10, 10) counts from rows with label and predicted_label: true class by row."""
    matrix = np.zeros((CLASSES, CLASSES), np.int64)
    for r in pairs.groupBy("label", "predicted_label").count().collect():
        matrix[r["label"], r["predicted_label"]] = r["count"]
    return matrix


def accuracy(matrix: np.ndarray) -> float:
    """Top-1 accuracy from a confusion matrix: its trace over its sum (0 when empty)."""
    return float(np.trace(matrix) / matrix.sum()) if matrix.sum() else 0.0


def per_category(matrix: np.ndarray) -> dict[str, float]:
    """Accuracy per true class (recall): 'accuracy:<category>' -> share predicted right."""
    totals = matrix.sum(axis=1)
    return {
        f"accuracy:{name}": float(matrix[i, i] / totals[i])
        for i, name in enumerate(CATEGORIES)
        if totals[i]
    }


# ----------------------------------------------------------------------------- MLflow
def _confusion_artifact(matrix: np.ndarray) -> dict[str, Any]:
    return {
        "rows": "true label",
        "columns": "predicted label",
        "labels": list(range(CLASSES)),
        "categories": list(CATEGORIES),
        "matrix": matrix.tolist(),
    }


def _log_confusion(ctx: JobContext, mlflow_run: str | None, matrix: np.ndarray) -> None:
    """Adds the test confusion matrix to the job's MLflow run (published or not)."""
    from mlflow import MlflowClient

    from retail_lake.training.tracking import setup_mlflow

    experiment = setup_mlflow(ctx.cfg)
    client = MlflowClient()
    if mlflow_run is None:  # a rejected model: its run is found by the job's run id
        runs = client.search_runs(
            [experiment], filter_string=f"tags.`retail_lake.run_id` = '{ctx.run_id}'"
        )
        if not runs:
            log.warning("[%s] no MLflow run to attach the confusion matrix to", ctx.run_id)
            return
        mlflow_run = runs[0].info.run_id
    client.log_dict(mlflow_run, _confusion_artifact(matrix), CONFUSION_ARTIFACT)


# ----------------------------------------------------------------------------- the job
def _epoch_seconds(trained: training_job.Trained) -> float:
    """Mean seconds of one epoch's training steps on a rank (launch and validation excluded)."""
    per_rank = trained.params.steps * trained.params.batch_size
    times = [per_rank * trained.num_proc / h["samples_per_s"] for h in trained.history]
    return float(np.mean(times)) if times else 0.0


def _champion_metrics(
    ctx: JobContext, current: str, test: DataFrame
) -> tuple[float | None, str, dict[str, float]]:
    """The champion `current` re-evaluated on the same test images, through the same scoring
    code: (its accuracy, "", its accuracy and test image count)."""
    _, weights, prep = load_registered(ctx.cfg, current)
    matrix = confusion(
        score_images(ctx.spark, test, weights, f"{MODEL_NAME}:{current}", prep["shape"])
    )
    value = accuracy(matrix)
    return value, "", {"accuracy": value, "images": float(matrix.sum())}


def run(ctx: JobContext) -> JobResult:
    """Trains the product-image CNN on the configured backend and registers it in MLflow.

    Reads silver.product_images (run ingest and cleanse first). Registers the model
    `product_image_classifier` in MLflow (the confusion matrix as an artifact) and appends
    its test, validation and baseline metrics to ops.model_metrics. A model that does not
    beat the majority-class and nearest-centroid baselines on accuracy is recorded (model
    version null) but not registered, and the job fails. When a registered version was
    trained on the same input version and settings, nothing is trained (`training.force`
    retrains).

    Args:
        ctx: the run's context, given by the runner.

    Returns:
        The ops.model_metrics output, unwritten.

    Raises:
        JobError: silver.product_images is missing or lacks a split, or the model did not
            beat the baselines.

    Example:
        From the command line::

            retail-lake run train_image_classifier
            retail-lake run train_image_classifier --set image_classifier.epochs=2

        From Python:

        >>> from retail_lake.registry import JOBS, run_job
        >>> job = JOBS["train_image_classifier"]
        >>> ctx, writes = run_job(spark, cfg, "train_image_classifier", job)
    """
    cfg = ctx.cfg
    conf = ImageConfig.from_config(cfg["image_classifier"])
    require_images(ctx, "train_image_classifier")
    images = ctx.read(SILVER_TABLE)
    print_ = training_job.fingerprint(
        ctx.data_versions_read(),
        {
            "training": training_job.shaping(cfg["training"]),
            "image_classifier": dict(cfg["image_classifier"]),
            "network": {"channels": list(CHANNELS), "hidden": HIDDEN},
        },
    )
    if training_job.already_trained(ctx, MODEL_NAME, print_):
        return JobResult(rows_read={SILVER_TABLE: 0})

    train_split = images.where(F.col("split") == F.lit("train"))
    test = images.where(F.col("split") == F.lit("test"))
    for split, rows in (("train", train_split), ("test", test)):
        if rows.limit(1).count() == 0:
            raise JobError(
                f"train_image_classifier: {SILVER_TABLE} has no images with split = '{split}'"
            )
    held_out = in_validation(conf.validation_fraction)
    val = validation_arrays(train_split.where(held_out))
    if not len(val["label"]):
        raise JobError(
            f"train_image_classifier: no train image of {SILVER_TABLE} falls into the "
            f"validation fraction {conf.validation_fraction}"
        )
    seed = int(cfg.get("training.seed"))
    train_rows = capped(train_split.where(~held_out), conf.max_train_rows, seed)
    from retail_lake.images.model import ImageTask

    task = ImageTask(CHANNELS, HIDDEN, flip=conf.flip)
    trained = training_job.train(
        ctx,
        MODEL_NAME,
        task,
        train_rows.select(F.col("pixels").cast("array<float>").alias("pixels"), "label"),
        val,
        row_bytes=ROW_BYTES,
        hyper=conf.hyper,
        print_=print_,
    )
    shape = {"channels": list(CHANNELS), "hidden": HIDDEN}

    # The model on the test images, through the same scoring code as classify_images.
    scored = score_images(
        ctx.spark, test, state_to_bytes(trained.state), f"{MODEL_NAME}:{ctx.run_id}", shape
    ).cache()
    matrix = confusion(scored)
    n_test = int(matrix.sum())
    # Probabilities are float64; the floor only keeps a total underflow finite.
    p_true = F.greatest(F.element_at("probabilities", F.col("label") + 1), F.lit(1e-300))
    log_loss = scored.agg(F.avg(-F.log(p_true)).alias("ll")).first()["ll"]
    model = {"accuracy": accuracy(matrix), "log_loss": float(log_loss), **per_category(matrix)}

    # Baselines from the same training rows, on the same test images.
    counts, sums = class_sums(train_rows)
    with np.errstate(invalid="ignore", divide="ignore"):
        centroids = sums / counts[:, None]
    majority = int(np.argmax(counts))
    baselines = {
        "majority_class": {"accuracy": float(matrix[majority].sum() / n_test)},
        "nearest_centroid": {
            "accuracy": accuracy(confusion(nearest_centroid(ctx.spark, test, centroids)))
        },
    }
    best = max(trained.history, key=lambda h: h.get("val_accuracy", -1.0))
    table: dict[str, dict[str, float]] = {
        "test": {**model, "images": float(n_test)},
        "validation": {
            "accuracy": best["val_accuracy"],
            "loss": best["val_loss"],
            "epoch": best["epoch"],
            "images": float(len(val["label"])),
        },
        "train": {
            "loss": trained.history[-1]["train_loss"],
            "images": float(trained.rows),
            "epochs": float(len(trained.history)),
            "seconds": trained.seconds,
            "epoch_seconds": _epoch_seconds(trained),
        },
        **{f"baseline:{name}": m for name, m in baselines.items()},
    }
    log.info(
        "[%s] test accuracy %.4f (log loss %.4f) on %d images | majority class (%s) %.4f | "
        "nearest centroid %.4f",
        ctx.run_id,
        model["accuracy"],
        model["log_loss"],
        n_test,
        CATEGORIES[majority],
        baselines["majority_class"]["accuracy"],
        baselines["nearest_centroid"]["accuracy"],
    )
    prep = {
        "shape": shape,
        "pixel_scaling": {"divide_by": 255.0, "mean": PIXEL_MEAN, "std": PIXEL_STD},
        "categories": list(CATEGORIES),
        "validation_rule": f"pmod(xxhash64(image_id), {VALIDATION_BUCKETS}) < "
        f"{conf.validation_fraction} * {VALIDATION_BUCKETS}",
        "majority_class": majority,
        "input_versions": dict(ctx.versions_read),
    }
    params = {
        **shape,
        "validation_fraction": conf.validation_fraction,
        "max_train_rows": conf.max_train_rows,
        "validation_images": len(val["label"]),
        "test_images": n_test,
    }
    scored.unpersist()
    lost = shortfalls(model, baselines, {"accuracy": Better.HIGHER})
    # No `require_beat_baselines` here: a CNN that loses is never published.
    if decide(lost) is Decision.REFUSE:
        try:
            training_job.reject(
                ctx, MODEL_NAME, print_, trained, table, params, prep, lost, "the test images"
            )
        except JobError:
            _log_confusion(ctx, None, matrix)
            raise
    verdict = champions.challenge(
        ctx,
        MODEL_NAME,
        "accuracy",
        Better.HIGHER,
        model["accuracy"],
        lambda current: _champion_metrics(ctx, current, test),
        table,
    )
    net = training_job.network_from(task, trained.state)
    mlflow_run, version = training_job.record(
        ctx,
        MODEL_NAME,
        print_,
        trained,
        table,
        params,
        prep,
        net=net,
        input_example=np.zeros((1, PIXELS), np.float32),
    )
    _log_confusion(ctx, mlflow_run, matrix)
    log.info(
        "[%s] registered %s version %s (test accuracy %.4f)",
        ctx.run_id,
        MODEL_NAME,
        version,
        model["accuracy"],
    )
    champions.settle(ctx, MODEL_NAME, version, verdict)
    training_job.clear_checkpoints(trained)
    return JobResult(
        outputs=[training_job.metrics_output(ctx, MODEL_NAME, version, mlflow_run, table)],
        rows_read={SILVER_TABLE: trained.rows + len(val["label"]) + n_test},
    )

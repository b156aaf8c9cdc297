"""The product-image CNN: the task on inline tensors (shapes, summed evaluation, learning,
batch-independent predictions), then both jobs on the real Fashion-MNIST images (a short
run, in process as the test profile trains, beating its baselines on the 10,000 real test
images, every image scored once, re-runs writing nothing, a model losing to a baseline not
published). The distributed launch is proven in test_training.py."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from .conftest import copy_lake, shared_data

SILVER = "silver.product_images"
PREDICTIONS = "gold.product_image_predictions"
METRICS = "ops.model_metrics"
MODEL = "product_image_classifier"
# The real files, whole (the session's shared lake): training takes a capped sample of the
# train images (image_classifier.max_train_rows), scoring takes every image.
TRAIN_IMAGES = 60000


def patterned(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n images (uint8, (n, 784)) of 10 classes: class c is a bright 6x6 square at its own
    place on a noisy background; labels cycle 0..9."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 10
    images = rng.integers(0, 60, size=(n, 28, 28))
    for i, c in enumerate(labels):
        row, col = 2 + 12 * (c // 5), 1 + 5 * (c % 5)
        images[i, row : row + 6, col : col + 6] = 230
    return images.reshape(n, 784).astype(np.uint8), labels.astype(np.int64)


# ----------------------------------------------------------------------------- the task
def test_network_takes_raw_pixels_and_names_a_wrong_shape():
    torch = pytest.importorskip("torch")
    from retail_lake.images.model import ImageTask, as_pixels, predict_proba

    torch.manual_seed(0)
    net = ImageTask().build().eval()
    pixels, _ = patterned(5)
    with torch.no_grad():
        logits = net(torch.as_tensor(pixels.astype(np.int16)))
    assert tuple(logits.shape) == (5, 10)
    proba = predict_proba(net, pixels)
    assert proba.shape == (5, 10)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    # A pandas-style column of 784-value rows is accepted as it is.
    column = np.empty(5, dtype=object)
    column[:] = list(pixels)
    assert np.array_equal(predict_proba(net, column), proba)
    with pytest.raises(ValueError, match=r"pixels: expected \(n, 784\) values, got shape"):
        as_pixels(np.zeros((3, 783)))


def test_a_prediction_does_not_depend_on_its_batch():
    # classify_images relies on this: a re-run that splits the images into other batches
    # must produce the same bits, or the MERGE would rewrite rows.
    torch = pytest.importorskip("torch")
    from retail_lake.images.model import ImageTask, predict_proba

    # Scoring runs one torch thread per Python worker (score_images); with several threads
    # the kernels split the work differently by batch size and the last bits can differ.
    # Split into other calls (Spark's batches), an image keeps its bits: predict_proba
    # always runs batches of one size (on AVX-512 the kernels differ by batch size).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(1)
        net = ImageTask().build()
        pixels, _ = patterned(300, seed=3)
        whole = predict_proba(net, pixels)
        parts = [predict_proba(net, pixels[a:b]) for a, b in ((0, 7), (7, 150), (150, 300))]
        assert np.array_equal(np.concatenate(parts), whole)
        assert np.array_equal(predict_proba(net, pixels[11:40]), whole[11:40])
    finally:
        torch.set_num_threads(threads)
    assert net.training  # predict_proba restores the mode it found


def test_evaluate_returns_sums_that_add_up_over_slices():
    torch = pytest.importorskip("torch")
    from retail_lake.images.model import ImageTask

    torch.manual_seed(2)
    task = ImageTask()
    net = task.build().eval()
    pixels, labels = patterned(40, seed=4)
    data = {"pixels": pixels, "label": labels}
    sums = task.evaluate(net, data, "cpu")
    with torch.no_grad():
        logits = net(torch.as_tensor(pixels).float())
    expected_loss = float(
        torch.nn.functional.cross_entropy(logits, torch.as_tensor(labels), reduction="sum")
    )
    expected_correct = float((logits.argmax(1).numpy() == labels).sum())
    assert set(sums) == {"count", "loss", "accuracy"}
    assert sums["count"] == 40.0
    assert sums["loss"] == pytest.approx(expected_loss, rel=1e-5)
    assert sums["accuracy"] == expected_correct
    # The loop sums the ranks' slices [rank::size]: two slices give the whole.
    halves = [task.evaluate(net, {k: v[r::2] for k, v in data.items()}, "cpu") for r in (0, 1)]
    assert halves[0]["count"] + halves[1]["count"] == 40.0
    assert halves[0]["loss"] + halves[1]["loss"] == pytest.approx(sums["loss"], rel=1e-5)
    assert halves[0]["accuracy"] + halves[1]["accuracy"] == sums["accuracy"]


def test_flips_mirror_only_the_chosen_training_images():
    torch = pytest.importorskip("torch")
    from retail_lake.images.model import ImageTask, mirrored

    pixels, labels = patterned(4, seed=1)
    x = torch.as_tensor(pixels.astype(np.float32))
    out = mirrored(x, torch.tensor([True, False, True, False]))
    images = pixels.reshape(4, 28, 28)
    assert np.array_equal(out[0].numpy().reshape(28, 28), images[0][:, ::-1])
    assert np.array_equal(out[1].numpy(), pixels[1].astype(np.float32))
    assert np.array_equal(out[2].numpy().reshape(28, 28), images[2][:, ::-1])
    # Evaluation never flips (the same sums twice); a flipped training batch has a loss.
    task = ImageTask(flip=True)
    net = task.build().eval()
    data = {"pixels": pixels, "label": labels}
    assert task.evaluate(net, data, "cpu") == task.evaluate(net, data, "cpu")
    batch = {"pixels": x, "label": torch.as_tensor(labels)}
    assert torch.isfinite(task.batch_loss(net, batch, "cpu"))


def test_the_task_learns_a_tiny_batch():
    torch = pytest.importorskip("torch")
    from retail_lake.images.model import ImageTask

    torch.manual_seed(3)
    task = ImageTask()
    net = task.build()
    pixels, labels = patterned(60, seed=5)
    # As Petastorm delivers them: float32 pixel matrix, int32 labels.
    batch = {
        "pixels": torch.as_tensor(pixels.astype(np.float32)),
        "label": torch.as_tensor(labels.astype(np.int32)),
    }
    optimizer = torch.optim.Adam(net.parameters(), lr=0.002)
    first = task.batch_loss(net, batch, "cpu").item()
    assert first == pytest.approx(np.log(10), rel=0.2)  # about uniform at the start
    for _ in range(40):
        optimizer.zero_grad()
        loss = task.batch_loss(net, batch, "cpu")
        loss.backward()
        optimizer.step()
    assert loss.item() < first / 10
    unseen_pixels, unseen_labels = patterned(50, seed=6)
    sums = task.evaluate(net.eval(), {"pixels": unseen_pixels, "label": unseen_labels}, "cpu")
    assert sums["accuracy"] / sums["count"] == 1.0


# ----------------------------------------------------------------------------- real data
def _idx(path: Path, header: int) -> np.ndarray:
    return np.frombuffer(gzip.decompress(path.read_bytes()), dtype=np.uint8, offset=header)


@pytest.fixture
def fashion_lake(real_fashion_lake, tmp_path):
    """A private copy of the session's real Fashion-MNIST lake (these tests train and score
    into it); returns a config maker taking extra overrides."""
    from retail_lake.config import load_config

    root = copy_lake(real_fashion_lake.root, tmp_path / "lake")

    def config(*extra: str):
        return load_config("test", [f"paths.root={root}", *extra])

    return config


def _metrics(spark, cfg, run_id: str) -> tuple[dict[tuple[str, str], float], set]:
    from pyspark.sql import functions as F

    from retail_lake.lake import Lake

    rows = Lake(spark, cfg.root).read(METRICS).where(F.col("run_id") == run_id).collect()
    return {(r["split"], r["metric"]): r["value"] for r in rows}, {r["model_version"] for r in rows}


def _confusion_of(cfg, mlflow_run: str) -> np.ndarray:
    import mlflow

    from retail_lake.training.tracking import setup_mlflow

    setup_mlflow(cfg)
    path = mlflow.artifacts.download_artifacts(
        run_id=mlflow_run, artifact_path="confusion_matrix.json"
    )
    return np.array(json.loads(Path(path).read_text())["matrix"])


def _registered(cfg) -> list[str]:
    from mlflow import MlflowClient

    from retail_lake.training.tracking import setup_mlflow

    setup_mlflow(cfg)
    return sorted(str(v.version) for v in MlflowClient().search_model_versions(f"name='{MODEL}'"))


def test_real_images_train_beat_baselines_and_classify_once(spark, fashion_lake):
    from pyspark.sql import functions as F

    from retail_lake.images.score import run as classify
    from retail_lake.images.train import capped, in_validation
    from retail_lake.images.train import run as train
    from retail_lake.lake import Lake
    from retail_lake.registry import run_job

    cfg = fashion_lake()
    lake = Lake(spark, cfg.root)
    silver_version = lake.version(SILVER)
    trained, writes = run_job(spark, cfg, "train_image_classifier", train)
    assert trained.versions_read == {SILVER: silver_version}
    metrics, versions = _metrics(spark, cfg, trained.run_id)
    assert versions == {"1"}
    accuracy = metrics[("test", "accuracy")]
    # The first version is the champion (there was none): recorded, and what the scorer reads.
    decision = lake.read("ops.model_decisions").where(F.col("run_id") == trained.run_id).first()
    assert (decision["action"], decision["version"], decision["champion_before"]) == (
        "promoted",
        "1",
        None,
    )
    assert decision["challenger_value"] == pytest.approx(accuracy)
    majority = metrics[("baseline:majority_class", "accuracy")]
    centroid = metrics[("baseline:nearest_centroid", "accuracy")]
    assert accuracy >= 0.80
    assert accuracy > centroid > majority
    # The test set has 1,000 images per class: the majority class is right on a tenth.
    assert majority == pytest.approx(0.1)
    assert metrics[("test", "images")] == 10000
    assert metrics[("train", "images")] == 12000
    assert metrics[("train", "epochs")] == cfg.get("image_classifier.epochs")
    # Per-category accuracy: ten values whose mean is the accuracy (balanced classes).
    per_category = [v for (s, m), v in metrics.items() if s == "test" and ":" in m]
    assert len(per_category) == 10
    assert np.mean(per_category) == pytest.approx(accuracy)

    # The nearest-centroid baseline recomputed here from the IDX files, on the job's
    # training sample (same validation hash, same seeded cap).
    silver = lake.read(SILVER)
    sample = capped(
        silver.where((F.col("split") == "train") & ~in_validation(0.05)), 12000, 7
    ).select("image_index")
    held_out = silver.where((F.col("split") == "train") & in_validation(0.05)).count()
    assert metrics[("validation", "images")] == held_out
    index = np.array(sorted(r["image_index"] for r in sample.collect()))
    folder = shared_data("fashion_mnist")
    train_x = _idx(folder / "train-images-idx3-ubyte.gz", 16).reshape(-1, 784)[index]
    train_y = _idx(folder / "train-labels-idx1-ubyte.gz", 8)[index]
    test_x = _idx(folder / "t10k-images-idx3-ubyte.gz", 16).reshape(-1, 784).astype(np.float64)
    test_y = _idx(folder / "t10k-labels-idx1-ubyte.gz", 8)
    centroids = np.stack([train_x[train_y == c].mean(axis=0) for c in range(10)])
    nearest = np.concatenate(
        [
            ((chunk[:, None, :] - centroids[None]) ** 2).sum(axis=2).argmin(axis=1)
            for chunk in np.array_split(test_x, 20)
        ]
    )
    assert centroid == pytest.approx(float((nearest == test_y).mean()))

    # The confusion matrix in MLflow agrees with the metrics.
    mlflow_run = lake.read(METRICS).where(F.col("run_id") == trained.run_id).first()
    matrix = _confusion_of(cfg, mlflow_run["mlflow_run_id"])
    assert matrix.shape == (10, 10)
    assert matrix.sum(axis=1).tolist() == [1000] * 10
    assert np.trace(matrix) / 10000 == pytest.approx(accuracy)

    # Same inputs and settings: the model is reused, nothing is trained or written.
    _, writes = run_job(spark, cfg, "train_image_classifier", train)
    assert writes == {}
    assert _registered(cfg) == ["1"]

    scored, writes = run_job(spark, cfg, "classify_images", classify)
    assert writes[PREDICTIONS].inserted == TRAIN_IMAGES + 10000
    predictions = lake.read(PREDICTIONS)
    summary = predictions.agg(
        F.count(F.lit(1)).alias("rows"),
        F.countDistinct("image_id").alias("images"),
        F.collect_set("model_version").alias("versions"),
        F.collect_set(F.to_json("input_versions")).alias("inputs"),
        F.max(F.abs(F.aggregate("probabilities", F.lit(0.0), lambda a, p: a + p) - 1)).alias(
            "sum_error"
        ),
        F.sum(
            (F.col("probability") != F.array_max("probabilities")).cast("int")
            + (
                F.col("probability") != F.element_at("probabilities", F.col("predicted_label") + 1)
            ).cast("int")
        ).alias("inconsistent"),
    ).first()
    assert summary["rows"] == summary["images"] == TRAIN_IMAGES + 10000
    assert summary["versions"] == ["1"]
    assert [json.loads(s) for s in summary["inputs"]] == [
        {SILVER: silver_version, f"train:{SILVER}": silver_version}
    ]
    assert summary["sum_error"] < 1e-9
    assert summary["inconsistent"] == 0
    # The true labels are silver's, and the test rows score as the training job measured.
    joined = predictions.join(
        silver.select("image_id", F.col("label").alias("true")), on="image_id", how="inner"
    )
    assert joined.where(F.col("label") != F.col("true")).count() == 0
    test_rows = predictions.where(F.col("split") == "test")
    right = test_rows.where(F.col("label") == F.col("predicted_label")).count()
    assert right / test_rows.count() == pytest.approx(accuracy)

    # A re-run with the same model and images skips its unit of work and commits nothing
    # (were it made to score again, the rows would be the same: a prediction does not depend
    # on its batch, tested above).
    version = lake.version(PREDICTIONS)
    again, writes = run_job(spark, cfg, "classify_images", classify)
    assert writes == {}
    state = lake.read("ops.unit_states").where(F.col("run_id") == again.run_id).first()
    assert (state["unit"], state["status"]) == ("classify_images", "unchanged")
    assert lake.version(PREDICTIONS) == version


def test_a_model_losing_to_a_baseline_is_recorded_not_published(spark, fashion_lake):
    from retail_lake.images.train import run as train
    from retail_lake.registry import run_job
    from retail_lake.runner import JobError, job_runs

    # A learning rate of 0 leaves the network at its random start: about chance accuracy,
    # far below the nearest centroid.
    cfg = fashion_lake(
        "image_classifier.learning_rate=0.0",
        "image_classifier.max_train_rows=400",
        "image_classifier.epochs=1",
    )
    before = _registered(cfg)
    with pytest.raises(JobError, match=r"does not beat its baselines on the test images: .*"):
        run_job(spark, cfg, "train_image_classifier", train)
    assert _registered(cfg) == before
    # No checkpoint is left to resume: the next run trains afresh, not to the same refusal.
    checkpoints = Path(cfg.root) / "checkpoints" / "product_image_classifier"
    assert checkpoints.is_dir() and not any(checkpoints.iterdir())
    failed = job_runs(spark, cfg).orderBy("started_at").collect()[-1]
    assert (failed["job"], failed["status"]) == ("train_image_classifier", "failed")
    assert "accuracy" in failed["error"] and "vs nearest_centroid" in failed["error"]
    metrics, versions = _metrics(spark, cfg, failed["run_id"])
    assert versions == {None}
    assert metrics[("test", "accuracy")] < metrics[("baseline:nearest_centroid", "accuracy")]
    assert metrics[("train", "images")] == 400
    from pyspark.sql import functions as F

    from retail_lake.lake import Lake

    row = Lake(spark, cfg.root).read(METRICS).where(F.col("run_id") == failed["run_id"]).first()
    matrix = _confusion_of(cfg, row["mlflow_run_id"])
    assert np.trace(matrix) / 10000 == pytest.approx(metrics[("test", "accuracy")])

"""The product-image CNN at full size: ingest + cleanse of the Fashion-MNIST files, then
`train_image_classifier` on all training images (2 Horovod ranks) and `classify_images`
over all 70,000 images; then the same training on 1 rank and on 2 ranks for a few epochs,
side by side, for the time per epoch.

    python bench/bench_image_classifier.py                          # full size (~30 min)
    python bench/bench_image_classifier.py --max-train-rows 6000 --epochs 2 --compare-epochs 1
                                                                    # smoke run (~5 min)

Prints: test accuracy, the baselines', per-category accuracy, each epoch's seconds and
validation accuracy, total training time (launch and Petastorm conversion included), the
scoring time; then seconds per epoch on 1 and 2 ranks and their ratio (1.0 would be no
gain; 0.5 a perfect split of the work over two ranks). An epoch's seconds are its training
steps on a rank (`steps x batch_size / rank's samples per second`), validation excluded.

Everything runs through the jobs themselves (`run_job`), in one Spark session, on a lake
under `--root` (default: a temporary folder) with the `local` profile unless `--profile`
says otherwise. The comparison runs train into the same lake with `training.force=true`
(they register further versions of the model; the scored table keeps the first).
"""

from __future__ import annotations

import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pyspark.sql import functions as F

from retail_lake.config import load_config
from retail_lake.lake import Lake
from retail_lake.registry import run_job
from retail_lake.session import build_session

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data"
PREDICTIONS = "gold.product_image_predictions"


def epochs_of(cfg, mlflow_run: str) -> list[dict[str, float]]:
    """Per epoch: seconds of the training steps on a rank and validation accuracy."""
    from mlflow import MlflowClient

    from retail_lake.training.tracking import setup_mlflow

    setup_mlflow(cfg)
    client = MlflowClient()
    run = client.get_run(mlflow_run)
    per_rank = int(run.data.params["steps_per_epoch"]) * int(run.data.params["batch_size"])
    ranks = int(run.data.params["num_proc"])
    speed = client.get_metric_history(mlflow_run, "samples_per_s")
    accuracy = {m.step: m.value for m in client.get_metric_history(mlflow_run, "val_accuracy")}
    return [
        {
            "epoch": m.step,
            "seconds": per_rank * ranks / m.value,
            "val_accuracy": accuracy.get(m.step, float("nan")),
        }
        for m in sorted(speed, key=lambda m: m.step)
    ]


def train(spark, cfg) -> tuple[dict[tuple[str, str], float], str, float]:
    """Runs train_image_classifier: (metrics of the run, its MLflow run id, wall seconds)."""
    from retail_lake.images.train import run as train_job

    t0 = time.perf_counter()
    ctx, _ = run_job(spark, cfg, "train_image_classifier", train_job)
    seconds = time.perf_counter() - t0
    rows = Lake(spark, cfg.root).read("ops.model_metrics").where(F.col("run_id") == ctx.run_id)
    collected = rows.collect()
    metrics = {(r["split"], r["metric"]): r["value"] for r in collected}
    return metrics, collected[0]["mlflow_run_id"], seconds


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="folder with fashion_mnist/")
    parser.add_argument("--root", help="lake root (default: a new temporary folder)")
    parser.add_argument("--profile", default="local")
    parser.add_argument("--epochs", type=int, default=15, help="epochs at most (full run)")
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--max-train-rows", type=int, default=0, help="0: all training images")
    parser.add_argument(
        "--compare-epochs", type=int, default=2, help="epochs of each 1- vs 2-rank run (0: skip)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="K=V")
    args = parser.parse_args()

    root = Path(args.root or tempfile.mkdtemp(prefix="bench_images_")) / "lake"
    landing = Path(tempfile.mkdtemp(prefix="bench_images_landing_"))
    source = Path(args.data) / "fashion_mnist"
    if not source.is_dir():
        sys.exit(f"{source} is missing: pass --data with the folder holding fashion_mnist/")
    (landing / "fashion_mnist").symlink_to(source.resolve(), target_is_directory=True)

    def config(*extra: str):
        return load_config(
            args.profile,
            [
                f"paths.root={root}",
                f"paths.landing={landing}",
                f"image_classifier.epochs={args.epochs}",
                f"image_classifier.patience={args.patience}",
                f"image_classifier.max_train_rows={args.max_train_rows}",
                *args.overrides,
                *extra,
            ],
        )

    cfg = config()
    print("command: python", shlex.join(sys.argv), flush=True)
    spark = build_session(cfg, "bench image classifier")
    from retail_lake.cleanse import run as cleanse
    from retail_lake.images.score import run as classify
    from retail_lake.ingest import run as ingest

    t0 = time.perf_counter()
    run_job(spark, cfg, "ingest", ingest)
    run_job(spark, cfg, "cleanse", cleanse)
    print(f"ingest + cleanse: {time.perf_counter() - t0:.1f}s", flush=True)

    ranks = int(cfg.get("training.num_proc"))
    metrics, mlflow_run, seconds = train(spark, cfg)
    epochs = epochs_of(cfg, mlflow_run)
    print(f"\n## full run: {ranks} ranks, {metrics[('train', 'images')]:.0f} training images")
    print("| epoch | seconds (training steps) | validation accuracy |\n|---|---|---|")
    for e in epochs:
        print(f"| {e['epoch']} | {e['seconds']:.1f} | {e['val_accuracy']:.4f} |")
    print(
        f"\ntest accuracy {metrics[('test', 'accuracy')]:.4f} (log loss "
        f"{metrics[('test', 'log_loss')]:.4f}); baselines: majority class "
        f"{metrics[('baseline:majority_class', 'accuracy')]:.4f}, nearest centroid "
        f"{metrics[('baseline:nearest_centroid', 'accuracy')]:.4f}"
    )
    per_category = {
        m.split(":", 1)[1]: v for (s, m), v in metrics.items() if s == "test" and ":" in m
    }
    print("per category: " + ", ".join(f"{k} {v:.3f}" for k, v in per_category.items()))
    print(
        f"best validation accuracy {metrics[('validation', 'accuracy')]:.4f} at epoch "
        f"{metrics[('validation', 'epoch')]:.0f} of {metrics[('train', 'epochs')]:.0f}; "
        f"training {metrics[('train', 'seconds')]:.1f}s (launch + epochs), "
        f"job {seconds:.1f}s (with evaluation, baselines, MLflow)"
    )
    t0 = time.perf_counter()
    _, writes = run_job(spark, cfg, "classify_images", classify)
    print(
        f"classify_images: {writes[PREDICTIONS].inserted} rows inserted, "
        f"{writes[PREDICTIONS].updated} updated in {time.perf_counter() - t0:.1f}s",
        flush=True,
    )

    if args.compare_epochs:
        times: dict[int, Any] = {}
        for n in (1, 2):
            m, run, wall = train(
                spark,
                config(
                    f"training.num_proc={n}",
                    "training.force=true",
                    f"image_classifier.epochs={args.compare_epochs}",
                    "image_classifier.patience=0",
                ),
            )
            per_epoch = [e["seconds"] for e in epochs_of(cfg, run)]
            times[n] = (per_epoch, m[("train", "seconds")], wall)
        print(f"\n## 1 vs 2 ranks, {args.compare_epochs} epoch(s) each, same data")
        print("| ranks | seconds per epoch (each) | median | training (s) |\n|---|---|---|---|")
        for n, (per_epoch, training, _) in times.items():
            shown = ", ".join(f"{s:.1f}" for s in per_epoch)
            print(f"| {n} | {shown} | {median(per_epoch):.1f} | {training:.1f} |")
        ratio = median(times[2][0]) / median(times[1][0])
        print(f"\n2-rank / 1-rank time per epoch: {ratio:.2f}")
    spark.stop()


if __name__ == "__main__":
    main()

"""The `train_forecaster` job: gold.store_day_features at a recorded version -> Petastorm ->
Horovod ranks -> a registered MLflow model, with metrics in ops.model_metrics.

Test period: the last `forecast.test_days` days of the data; the model trains on the days
before it (open days with sales). Rank 0 checkpoints every epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import functions as F

from retail_lake.forecasting.model import (
    FEATURE_NAMES,
    N_FEATURES,
    store_levels,
    with_features,
)
from retail_lake.forecasting.network import build_network
from retail_lake.forecasting.score import (
    FEATURES,
    MODEL_NAME,
    error_metrics,
    score,
    state_to_bytes,
)
from retail_lake.runner import JobContext, JobError, JobResult, Output
from retail_lake.training.data import make_converter, steps_per_epoch
from retail_lake.training.launcher import run_horovod
from retail_lake.training.tracking import metric_rows, registered_with, setup_mlflow

log = logging.getLogger(__name__)

MODEL_METRICS = "ops.model_metrics"


def train_rank(converter, params: dict[str, Any]) -> dict[str, Any]:
    """One Horovod rank: reads its Petastorm shard, trains, returns weights (rank 0)."""
    import horovod.torch as hvd
    import torch

    from retail_lake.training.devices import select_device

    hvd.init()
    torch.set_num_threads(params["threads"])
    torch.manual_seed(params["seed"])
    device = select_device(hvd.local_rank())
    net = build_network(N_FEATURES).to(device)
    # Learning rate scaled with the number of ranks (the summed gradient is averaged).
    optimizer = torch.optim.Adam(net.parameters(), lr=params["lr"] * hvd.size())
    optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=net.named_parameters())
    hvd.broadcast_parameters(net.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(optimizer, root_rank=0)
    loss_fn = torch.nn.MSELoss()
    history = []
    rows_seen = 0
    with converter.make_torch_dataloader(
        batch_size=params["batch_size"],
        num_epochs=None,
        cur_shard=hvd.rank(),
        shard_count=hvd.size(),
        workers_count=1,
    ) as loader:
        batches = iter(loader)
        for epoch in range(1, params["epochs"] + 1):
            started = time.monotonic()
            total = 0.0
            for _ in range(params["steps"]):
                batch = next(batches)
                x = batch["features"].to(device)
                y = batch["label"].to(device).view(-1, 1)
                optimizer.zero_grad()
                loss = loss_fn(net(x), y)
                loss.backward()
                optimizer.step()
                total += float(loss.item())
                rows_seen += len(y)
            mean_loss = hvd.allreduce(torch.tensor(total / params["steps"]), name="loss").item()
            seconds = time.monotonic() - started
            rate = hvd.allreduce(
                torch.tensor(params["steps"] * params["batch_size"] / seconds),
                op=hvd.Sum,
                name="rate",
            ).item()
            history.append({"epoch": epoch, "loss": mean_loss, "samples_per_s": rate})
            if hvd.rank() == 0:
                print(
                    f"epoch {epoch}/{params['epochs']}: loss {mean_loss:.5f}, {rate:.0f} samples/s",
                    flush=True,
                )
                ckpt = Path(params["checkpoint_dir"])
                ckpt.mkdir(parents=True, exist_ok=True)
                torch.save(
                    {
                        "epoch": epoch,
                        "model": net.state_dict(),
                        "optimizer": optimizer.state_dict(),
                    },
                    ckpt / "last.pt",
                )
    result: dict[str, Any] = {"rank": hvd.rank(), "rows_seen": rows_seen}
    if hvd.rank() == 0:
        result["state"] = {k: v.detach().cpu().numpy() for k, v in net.state_dict().items()}
        result["history"] = history
    return result


def _checkpoint_dir(ctx: JobContext) -> str:
    if "://" in ctx.cfg.root:
        return tempfile.mkdtemp(prefix="retail-lake-ckpt-")
    return str(Path(ctx.cfg.root) / "checkpoints" / MODEL_NAME / ctx.run_id)


def _fingerprint(versions: dict[str, int], training: dict[str, Any], test_days: int) -> str:
    """Identifies a training: input table versions and every parameter that shapes it."""
    keep = {k: v for k, v in training.items() if k not in ("force", "petastorm_cache")}
    blob = json.dumps(
        {"inputs": versions, "training": keep, "test_days": test_days}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def run(ctx: JobContext) -> JobResult:
    """Trains the forecaster on Horovod ranks and registers it in MLflow."""
    import mlflow
    import torch

    cfg = ctx.cfg
    training = cfg["training"]
    days = ctx.read(FEATURES)
    fingerprint = _fingerprint(ctx.versions_read, training, cfg.get("forecast.test_days"))
    if not training["force"]:
        existing = registered_with(cfg, MODEL_NAME, fingerprint)
        if existing:
            log.info(
                "%s version %s was trained on the same inputs and parameters; not "
                "retraining (set training.force=true to retrain)",
                MODEL_NAME,
                existing,
            )
            return JobResult(rows_read={FEATURES: 0})
    last = days.agg(F.max("date")).first()[0]
    if last is None:
        raise JobError(f"{FEATURES} is empty: run features first")
    test_days = cfg.get("forecast.test_days")
    test_start = last - timedelta(days=test_days - 1)
    train_days = days.where(F.col("date") < F.lit(test_start))
    levels = store_levels(train_days).cache()
    global_level = levels.agg(F.avg("store_level")).first()[0]
    if global_level is None:
        raise JobError(f"no open days with sales before {test_start} to train on")

    train_rows = with_features(
        train_days.where(F.col("open") & (F.col("sales") > 0)), levels, global_level
    ).select("features", (F.log1p("sales") - F.lit(global_level)).cast("float").alias("label"))
    if training["max_rows"]:
        train_rows = (
            train_rows.withColumn("_k", F.xxhash64("features", F.lit(training["seed"])))
            .orderBy("_k")
            .limit(training["max_rows"])
            .drop("_k")
        )
    cache_dir = training["petastorm_cache"] or f"{cfg.root}/petastorm_cache"
    converter, n_rows = make_converter(
        ctx.spark, train_rows, training["num_proc"], cache_dir, row_bytes=4 * (N_FEATURES + 1) + 16
    )
    params = {
        "epochs": training["epochs"],
        "batch_size": training["batch_size"],
        "lr": training["learning_rate"],
        "seed": training["seed"],
        "threads": training["threads_per_rank"],
        "steps": steps_per_epoch(n_rows, training["batch_size"], training["num_proc"]),
        "checkpoint_dir": _checkpoint_dir(ctx),
    }
    log.info(
        "training %s on %d rows, %d ranks x %d steps x %d epochs",
        MODEL_NAME,
        n_rows,
        training["num_proc"],
        params["steps"],
        params["epochs"],
    )
    try:
        results = run_horovod(train_rank, (converter, params), training["num_proc"])
    finally:
        converter.delete()
    chief = next(r for r in results if r["rank"] == 0)
    weights = state_to_bytes(chief["state"])

    key = f"{MODEL_NAME}:{ctx.run_id}"
    test_rows = with_features(days.where(F.col("date") >= F.lit(test_start)), levels, global_level)
    metrics = {
        "test": error_metrics(score(ctx.spark, test_rows, weights, global_level, key)),
        "train": {"loss": chief["history"][-1]["loss"], "rows": float(n_rows)},
    }
    input_versions = dict(ctx.versions_read)

    experiment = setup_mlflow(cfg)
    net = build_network(N_FEATURES)
    net.load_state_dict({k: torch.as_tensor(v) for k, v in chief["state"].items()})
    prep = {
        "global_level": global_level,
        "test_start": test_start.isoformat(),
        "test_days": test_days,
        "feature_names": list(FEATURE_NAMES),
        "store_levels": {str(r["store"]): r["store_level"] for r in levels.collect()},
        "input_versions": input_versions,
    }
    with mlflow.start_run(experiment_id=experiment, run_name=ctx.run_id) as mlrun:
        mlflow.log_params(
            {
                **{k: v for k, v in params.items() if k != "checkpoint_dir"},
                "num_proc": training["num_proc"],
                "backend": training["backend"],
                "rows": n_rows,
                "test_start": test_start.isoformat(),
            }
        )
        mlflow.set_tags(
            {
                "retail_lake.run_id": ctx.run_id,
                "retail_lake.fingerprint": fingerprint,
                **{f"input_version.{k}": v for k, v in input_versions.items()},
            }
        )
        for h in chief["history"]:
            mlflow.log_metrics(
                {"train_loss": h["loss"], "samples_per_s": h["samples_per_s"]}, step=h["epoch"]
            )
        mlflow.log_metrics({f"test_{k}": v for k, v in metrics["test"].items()})
        mlflow.log_dict(prep, "preprocessing.json")
        # pickle: a plain nn.Sequential loads back as itself (pt2 would need tracing).
        info = mlflow.pytorch.log_model(
            net,
            name="model",
            registered_model_name=MODEL_NAME,
            serialization_format="pickle",
            input_example=np.zeros((1, N_FEATURES), dtype=np.float32),
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
        version = str(info.registered_model_version)
    log.info(
        "registered %s version %s (test RMSPE %.4f, MAPE %.4f)",
        MODEL_NAME,
        version,
        metrics["test"]["rmspe"],
        metrics["test"]["mape"],
    )
    rows = metric_rows(ctx.run_id, MODEL_NAME, version, mlrun.info.run_id, metrics, input_versions)
    metrics_df = ctx.spark.createDataFrame(rows, ctx.registry[MODEL_METRICS].spark_schema())
    return JobResult(
        outputs=[Output(MODEL_METRICS, metrics_df, mode="append")], rows_read={FEATURES: n_rows}
    )

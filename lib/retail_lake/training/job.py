"""What every training job does around the loop: skip a repeat, convert, launch, gate, track.

1. A fingerprint of the input Delta versions and every setting that shapes the model; when a
   registered version carries it, the job reuses that model (`training.force` retrains).
2. The training rows go through Petastorm (`training.data`) and the configured backend runs
   the shared loop (`training.loop`) on `training.num_proc` ranks (one for `in_process`,
   which runs in the driver). Checkpoints live under
   `<checkpoint root>/<model>/<fingerprint>`: a re-launch after a crash resumes there.
3. The job evaluates the model and its baselines on the test period and applies the publish
   rule (`retail_lake.publish_rule`). A losing model is recorded (MLflow and
   ops.model_metrics, model version null) and the job fails (`reject`); a winning one is
   registered in MLflow with its metrics, and its checkpoints are removed.
4. The registered version replaces the champion the scorers read only when it also beats it
   on the same test data (`retail_lake.champions`); otherwise it stays a challenger.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pyspark.sql import DataFrame

from retail_lake.lake import local_frame
from retail_lake.ops import MODEL_METRICS
from retail_lake.publish_rule import Shortfall
from retail_lake.runner import JobContext, JobError, Output
from retail_lake.training.data import make_converter, steps_per_epoch
from retail_lake.training.launcher import launch, world_size
from retail_lake.training.loop import LoopParams
from retail_lake.training.tracking import (
    metric_rows,
    quiet_registration,
    registered_with,
    setup_mlflow,
)

log = logging.getLogger(__name__)

# Settings that never change the model: left out of the fingerprint.
_NOT_SHAPING = ("force", "petastorm_cache", "checkpoint_dir")


def fingerprint(versions: Mapping[str, int], settings: Mapping[str, Any]) -> str:
    """Identifies a training: its input versions and every setting that shapes it."""
    blob = json.dumps(
        {"inputs": dict(versions), "settings": dict(settings)}, sort_keys=True, default=str
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def shaping(training: Mapping[str, Any]) -> dict[str, Any]:
    """The `training` section without the keys that do not shape the model."""
    return {k: v for k, v in training.items() if k not in _NOT_SHAPING}


def already_trained(ctx: JobContext, model_name: str, print_: str) -> str | None:
    """The registered version trained on the same inputs and settings, unless forced."""
    if ctx.cfg.get("training.force"):
        return None
    version = registered_with(ctx.cfg, model_name, print_)
    if version:
        log.info(
            "[%s] %s version %s was trained on the same inputs and settings; not retraining "
            "(set training.force=true to retrain)",
            ctx.run_id,
            model_name,
            version,
        )
    return version


def checkpoint_dir(ctx: JobContext, model_name: str, print_: str) -> str:
    """Where rank 0 checkpoints: must be a path rank 0 can write and a re-launch can read
    (a shared filesystem on a cluster: `training.checkpoint_dir`)."""
    base = ctx.cfg.get("training.checkpoint_dir") or ""
    if not base:
        if "://" in ctx.cfg.root:
            base = str(Path(tempfile.gettempdir()) / "retail-lake-checkpoints")
            log.warning(
                "training.checkpoint_dir is not set and paths.root is a URI: checkpoints go "
                "to %s on the host of rank 0 (a lost executor cannot resume)",
                base,
            )
        else:
            base = str(Path(ctx.cfg.root) / "checkpoints")
    return str(Path(base) / model_name / print_)


@dataclass
class Trained:
    """A finished distributed training."""

    chief: dict[str, Any]  # rank 0's result: state, history, resumed_after, stopped_early
    ranks: list[dict[str, Any]]  # every rank's result the backend returned
    params: LoopParams
    rows: int
    backend: str
    num_proc: int  # ranks that ran (1 for in_process, whatever was configured)
    seconds: float
    checkpoint_dir: str

    @property
    def state(self) -> dict[str, np.ndarray]:
        return self.chief["state"]

    @property
    def history(self) -> list[dict[str, float]]:
        return self.chief["history"]


def train(
    ctx: JobContext,
    model_name: str,
    task,
    rows: DataFrame,
    validation: Mapping[str, np.ndarray],
    row_bytes: int,
    hyper: Mapping[str, Any],
    print_: str,
) -> Trained:
    """Converts `rows` with Petastorm and trains `task` on the configured backend.

    hyper: epochs, batch_size, learning_rate, patience and optionally weight_decay,
    lr_schedule (`training.loop.LR_SCHEDULES`) and keep_from (`training.loop.LoopParams`).
    """
    training = ctx.cfg["training"]
    backend, num_proc = training["backend"], int(training["num_proc"])
    ranks = world_size(backend, num_proc)
    cache = training["petastorm_cache"] or f"{ctx.cfg.root}/petastorm_cache"
    converter, n_rows = make_converter(ctx.spark, rows, ranks, cache, row_bytes=row_bytes)
    folder = checkpoint_dir(ctx, model_name, print_)
    params = LoopParams(
        epochs=int(hyper["epochs"]),
        steps=steps_per_epoch(n_rows, int(hyper["batch_size"]), ranks),
        batch_size=int(hyper["batch_size"]),
        learning_rate=float(hyper["learning_rate"]),
        seed=int(training["seed"]),
        threads=int(training["threads_per_rank"]),
        patience=int(hyper.get("patience", 0)),
        weight_decay=float(hyper.get("weight_decay", 0.0)),
        lr_schedule=str(hyper.get("lr_schedule", "constant")),
        keep_from=int(hyper.get("keep_from", 1)),
        checkpoint_dir=folder,
    )
    log.info(
        "[%s] training %s on %d rows: %s, %d ranks x %d steps x up to %d epochs "
        "(checkpoints in %s)",
        ctx.run_id,
        model_name,
        n_rows,
        backend,
        ranks,
        params.steps,
        params.epochs,
        folder,
    )
    started = time.monotonic()
    try:
        chief, every_rank = launch(backend, task, converter, dict(validation), params, num_proc)
    finally:
        converter.delete()
    seconds = time.monotonic() - started
    if chief.get("resumed_after"):
        log.info(
            "[%s] %s resumed after epoch %d from its checkpoint",
            ctx.run_id,
            model_name,
            chief["resumed_after"],
        )
    return Trained(chief, every_rank, params, n_rows, backend, ranks, seconds, folder)


def describe(lost: Sequence[Shortfall]) -> list[str]:
    """What the model fails to beat, as the job's messages say it: '<metric> <model> vs
    <baseline> <value>'."""
    return [f"{s.metric} {s.model:.4f} vs {s.baseline} {s.value:.4f}" for s in lost]


def _metric_name(split: str, metric: str) -> str:
    safe = f"{split}.{metric}"
    for ch in "[]:=,@ ":
        safe = safe.replace(ch, "_")
    return safe


def record(
    ctx: JobContext,
    model_name: str,
    print_: str,
    trained: Trained,
    table: Mapping[str, Mapping[str, float]],
    params: Mapping[str, Any],
    prep: Mapping[str, Any],
    net=None,
    input_example: Any = None,
) -> tuple[str, str | None]:
    """Tracks the run in MLflow (registers `net` when given); (MLflow run id, version)."""
    import mlflow
    import mlflow.pytorch
    import torch

    experiment = setup_mlflow(ctx.cfg)
    version = None
    with mlflow.start_run(experiment_id=experiment, run_name=ctx.run_id) as run:
        mlflow.log_params(
            {
                **dict(params),
                "backend": trained.backend,
                "num_proc": trained.num_proc,
                "rows": trained.rows,
                "steps_per_epoch": trained.params.steps,
                "epochs_max": trained.params.epochs,
                "batch_size": trained.params.batch_size,
                "learning_rate_per_rank": trained.params.learning_rate,
                "patience": trained.params.patience,
            }
        )
        mlflow.set_tags(
            {
                "retail_lake.run_id": ctx.run_id,
                "retail_lake.fingerprint": print_,
                "retail_lake.published": str(net is not None).lower(),
                "retail_lake.resumed_after_epoch": str(trained.chief.get("resumed_after", 0)),
                **{f"input_version.{k}": v for k, v in ctx.versions_read.items()},
            }
        )
        for h in trained.history:
            mlflow.log_metrics({k: v for k, v in h.items() if k != "epoch"}, step=int(h["epoch"]))
        mlflow.log_metrics(
            {_metric_name(s, m): float(v) for s, values in table.items() for m, v in values.items()}
        )
        mlflow.log_dict(dict(prep), "preprocessing.json")
        if net is not None:
            with quiet_registration():
                info = mlflow.pytorch.log_model(
                    net,
                    name="model",
                    registered_model_name=model_name,
                    serialization_format="pickle",
                    input_example=input_example,
                    pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
                )
            version = str(info.registered_model_version)
    return run.info.run_id, version


def metrics_output(
    ctx: JobContext,
    model_name: str,
    version: str | None,
    mlflow_run: str,
    table: Mapping[str, Mapping[str, float]],
) -> Output:
    rows = metric_rows(ctx.run_id, model_name, version, mlflow_run, table, ctx.versions_read)
    df = local_frame(ctx.spark, rows, ctx.registry[MODEL_METRICS].spark_schema())
    return Output(MODEL_METRICS, df, mode="append")


def reject(
    ctx: JobContext,
    model_name: str,
    print_: str,
    trained: Trained,
    table: Mapping[str, Mapping[str, float]],
    params: Mapping[str, Any],
    prep: Mapping[str, Any],
    lost: Sequence[Shortfall],
    period: str,
) -> None:
    """Records a model that lost to a baseline (no version), removes its checkpoints and
    fails the job.

    The checkpoints are there to resume a training that died; one that finished and lost
    would only be resumed to the same refusal, so the next run trains afresh (training is
    not bit-reproducible: a new run may win)."""
    mlflow_run, _ = record(ctx, model_name, print_, trained, table, params, prep)
    out = metrics_output(ctx, model_name, None, mlflow_run, table)
    ctx.lake.write(out.df, ctx.registry[MODEL_METRICS], ctx.run_id, mode="append")
    clear_checkpoints(trained)
    raise JobError(
        f"{model_name}: the model does not beat its baselines on {period}: "
        + "; ".join(describe(lost))
        + f". Not published; the numbers are in {MODEL_METRICS} (run {ctx.run_id}) and MLflow;"
        " the next run trains afresh."
    )


def network_from(task, state: Mapping[str, np.ndarray]):
    """The task's network with `state` loaded, on the CPU, in eval mode."""
    import torch

    net = task.build()
    net.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    return net.eval()


def clear_checkpoints(trained: Trained) -> None:
    """After publication the checkpoints are no longer needed (the model is in MLflow)."""
    shutil.rmtree(trained.checkpoint_dir, ignore_errors=True)

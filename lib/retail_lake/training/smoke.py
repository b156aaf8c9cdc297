"""A training smoke test: a linear model on generated data through the whole machinery.

`smoke_train(spark, backend, ...)` converts generated rows with Petastorm, launches the
shared loop on `num_proc` ranks with the chosen backend and returns rank 0's result and every
rank's. On a new cluster it shows in seconds that a backend works before a real model is
trained on it; the tests use it to compare the backends and to kill and resume a run. It lives
in the library (not the tests) because TorchDistributor re-pickles the task inside the
executors, where only importable modules can be found.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

WEIGHTS = (1.0, -2.0, 0.5)
BIAS = 0.3
NOISE = 0.1


class LinearTask:
    """y = x . w + b + noise: the converged validation MSE is NOISE**2 (0.01)."""

    name = "linear"
    monitor = "mse"
    higher_is_better = False

    def build(self):
        import torch

        return torch.nn.Linear(len(WEIGHTS), 1)

    def batch_loss(self, net, batch, device):
        x, y = batch["x"].to(device), batch["y"].to(device)
        return ((net(x).squeeze(-1) - y) ** 2).mean()

    def evaluate(self, net, data, device) -> dict[str, float]:
        import torch

        x, y = torch.as_tensor(data["x"]).to(device), torch.as_tensor(data["y"]).to(device)
        return {"count": float(len(y)), "mse": float(((net(x).squeeze(-1) - y) ** 2).sum())}


def generated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(WEIGHTS))).astype(np.float32)
    y = x @ np.array(WEIGHTS, np.float32) + BIAS + rng.normal(0, NOISE, n)
    return x, y.astype(np.float32)


def smoke_train(
    spark: SparkSession,
    backend: str,
    cache_dir: str,
    rows: int = 4000,
    epochs: int = 4,
    num_proc: int = 2,
    batch_size: int = 50,
    learning_rate: float = 0.02,
    checkpoint_dir: str = "",
    patience: int = 0,
    lr_schedule: str = "constant",
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Trains LinearTask on `rows` generated rows; (rank 0's result, every rank's)."""
    from retail_lake.training.data import make_converter, steps_per_epoch
    from retail_lake.training.launcher import launch
    from retail_lake.training.loop import LoopParams

    x, y = generated(rows, seed=3)
    df = spark.createDataFrame(
        [(x[i].tolist(), float(y[i])) for i in range(rows)], "x array<float>, y float"
    ).withColumn("y", F.col("y").cast("float"))
    vx, vy = generated(500, seed=4)
    converter, n = make_converter(spark, df, num_proc, cache_dir, row_bytes=16)
    params = LoopParams(
        epochs=epochs,
        steps=steps_per_epoch(n, batch_size, num_proc),
        batch_size=batch_size,
        learning_rate=learning_rate,
        checkpoint_dir=checkpoint_dir,
        patience=patience,
        lr_schedule=lr_schedule,
    )
    try:
        return launch(backend, LinearTask(), converter, {"x": vx, "y": vy}, params, num_proc)
    finally:
        converter.delete()

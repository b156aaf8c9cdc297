"""A training smoke test: a linear model on generated data through the whole machinery.

`smoke_train(spark, backend, ...)` converts generated rows with Petastorm, launches the
shared loop with the chosen backend and returns rank 0's result and every rank's; each rank's
result also says which rows it read and the weights it ended with, so a caller sees that the
ranks read disjoint shards and that their allreduced updates kept them identical. On a new
cluster it shows in seconds that a backend works before a real model is trained on it; the
tests use it to compare the backends and to kill and resume a run. It lives in the library
(not the tests) because TorchDistributor re-pickles the task inside the executors, where only
importable modules can be found.
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
    """y = x . w + b + noise: the converged validation MSE is NOISE**2 (0.01).

    Each copy of the task (one per rank) remembers the row ids its rank trained on and the
    weights it last evaluated.
    """

    name = "linear"
    monitor = "mse"
    higher_is_better = False

    def __init__(self) -> None:
        self.ids_read: set[int] = set()
        self.weights: dict[str, np.ndarray] = {}

    def build(self):
        import torch

        return torch.nn.Linear(len(WEIGHTS), 1)

    def batch_loss(self, net, batch, device):
        if "id" in batch:
            self.ids_read.update(batch["id"].tolist())
        x, y = batch["x"].to(device), batch["y"].to(device)
        return ((net(x).squeeze(-1) - y) ** 2).mean()

    def evaluate(self, net, data, device) -> dict[str, float]:
        import torch

        self.weights = {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}
        x, y = torch.as_tensor(data["x"]).to(device), torch.as_tensor(data["y"]).to(device)
        return {"count": float(len(y)), "mse": float(((net(x).squeeze(-1) - y) ** 2).sum())}


def generated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, len(WEIGHTS))).astype(np.float32)
    y = x @ np.array(WEIGHTS, np.float32) + BIAS + rng.normal(0, NOISE, n)
    return x, y.astype(np.float32)


def validation_set() -> dict[str, np.ndarray]:
    """500 generated rows, drawn apart from the training rows."""
    vx, vy = generated(500, seed=4)
    return {"x": vx, "y": vy}


def smoke_converter(spark: SparkSession, cache_dir: str, rows: int, ranks: int):
    """Petastorm converter of `rows` generated training rows (`id`, `x`, `y`) sharded for
    `ranks` ranks; (converter, row count). The caller deletes it."""
    from retail_lake.training.data import make_converter

    x, y = generated(rows, seed=3)
    df = spark.createDataFrame(
        [(i, x[i].tolist(), float(y[i])) for i in range(rows)], "id int, x array<float>, y float"
    ).withColumn("y", F.col("y").cast("float"))
    return make_converter(spark, df, ranks, cache_dir, row_bytes=20)


def smoke_rank(backend: str, task: LinearTask, converter, validation, params) -> dict[str, Any]:
    """What every rank runs: the shared loop, then what this rank read and ended with."""
    from retail_lake.training.launcher import rank_main

    result = rank_main(backend, task, converter, validation, params)
    return {**result, "ids_read": sorted(task.ids_read), "final_weights": task.weights}


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
    """Trains LinearTask on `rows` generated rows; (rank 0's result, every rank's).

    Besides `fit`'s result, each rank's has `ids_read` (the sorted ids of the training rows
    it read) and `final_weights` (its network's weights at its last evaluation).
    """
    from retail_lake.training.data import steps_per_epoch
    from retail_lake.training.launcher import launch, world_size
    from retail_lake.training.loop import LoopParams

    ranks = world_size(backend, num_proc)
    converter, n = smoke_converter(spark, cache_dir, rows, ranks)
    params = LoopParams(
        epochs=epochs,
        steps=steps_per_epoch(n, batch_size, ranks),
        batch_size=batch_size,
        learning_rate=learning_rate,
        checkpoint_dir=checkpoint_dir,
        patience=patience,
        lr_schedule=lr_schedule,
    )
    try:
        return launch(
            backend, LinearTask(), converter, validation_set(), params, num_proc, smoke_rank
        )
    finally:
        converter.delete()

"""The shared training loop over Petastorm.

In process (one rank, `LocalComm`, no launch): the loop converges and checkpoints every
epoch; a run interrupted by a lost rank resumes from its checkpoint on the same learning-rate
curve, and a finished run launched again does nothing; early stopping stops after `patience`
epochs without improvement, counted from the first epoch that may be kept; the cosine
schedule's rates; config accepts every backend. (The publish gate is tested in
test_publish_rule.py.)

Launched on 2 ranks (marked `horovod` and `slow`): Horovod and Spark's TorchDistributor
train the same model to the same metric, Horovod's ranks read disjoint shards and end with
identical weights; a Horovod run killed after an epoch resumes from its last checkpoint.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import numpy as np
import pytest

from retail_lake.training import loop
from retail_lake.training.data import steps_per_epoch
from retail_lake.training.launcher import run_in_process
from retail_lake.training.loop import (
    FAULT_ENV,
    LocalComm,
    LoopParams,
    epoch_learning_rate,
    fit,
    load_checkpoint,
)
from retail_lake.training.smoke import (
    BIAS,
    WEIGHTS,
    LinearTask,
    smoke_converter,
    smoke_train,
    validation_set,
)

# petastorm 0.13 calls pyarrow's legacy dataset API; in process its warnings reach pytest.
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning:petastorm")

ROWS = 4000
BATCH = 50
LEARNING_RATE = 0.02  # smoke_train's rate per rank
STEPS = ROWS // BATCH  # one rank's steps per epoch


def _train(spark, root, backend: str, epochs: int, checkpoint_dir: str = "", **kw):
    return smoke_train(
        spark,
        backend,
        str(root / "petastorm"),
        rows=ROWS,
        epochs=epochs,
        checkpoint_dir=checkpoint_dir,
        **kw,
    )


def _assert_converged(chief) -> None:
    # The noise variance is 0.01: training gets there from an initial MSE of about 6.
    assert chief["history"][-1]["val_mse"] < 0.02, chief["history"]
    assert np.allclose(chief["state"]["weight"].ravel(), WEIGHTS, atol=0.05)
    assert abs(chief["state"]["bias"][0] - BIAS) < 0.05


# ----------------------------------------------------------------------------- in process
class RankLostError(RuntimeError):
    """What a collective raises when another rank is gone."""


class LosesARankAt(LocalComm):
    """A single rank whose epoch-end allreduce fails at `epoch`: that epoch has trained but
    was never checkpointed, as when a rank dies mid-epoch."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def sum(self, values: np.ndarray, name: str) -> np.ndarray:
        if name == f"epoch{self.epoch}":
            raise RankLostError(f"a rank was lost in epoch {self.epoch}")
        return super().sum(values, name)


@pytest.fixture(scope="module")
def converted(spark, tmp_path_factory):
    """The generated training rows converted once for the in-process tests (one shard)."""
    converter, n = smoke_converter(spark, str(tmp_path_factory.mktemp("petastorm")), ROWS, 1)
    yield converter, n
    converter.delete()


def _fit(comm, converted, **settings) -> dict:
    """`fit` on one rank in this process, with smoke_train's settings unless overridden."""
    converter, n = converted
    params = LoopParams(
        **{
            "epochs": 4,
            "steps": steps_per_epoch(n, BATCH, 1),
            "batch_size": BATCH,
            "learning_rate": LEARNING_RATE,
            **settings,
        }
    )
    return run_in_process(fit, (comm, LinearTask(), converter, validation_set(), params))


def test_in_process_trains_one_rank_in_the_driver_and_checkpoints_every_epoch(
    spark, root, monkeypatch, caplog
):
    folder = str(root / "checkpoints")
    saved_epochs = []
    save = loop.save_checkpoint

    def recording_save(where, state):
        saved_epochs.append(state["epoch"])
        save(where, state)

    def refuse_kill(pid, sig):
        raise AssertionError(f"an in-process run sent signal {sig} to process {pid}")

    monkeypatch.setattr(loop, "save_checkpoint", recording_save)
    # The kill hook is for rank processes: in process it would kill the driver.
    monkeypatch.setenv(FAULT_ENV, "2")
    monkeypatch.setattr(os, "kill", refuse_kill)
    with caplog.at_level(logging.WARNING, logger="retail_lake.training.launcher"):
        chief, ranks = _train(spark, root, "in_process", epochs=4, checkpoint_dir=folder)
    assert "training.num_proc=2 is ignored" in caplog.text
    assert len(ranks) == 1 and ranks[0] is chief
    assert (chief["backend"], chief["rank"], chief["size"]) == ("in_process", 0, 1)
    # num_proc=2 was asked for; the steps are one rank's: every row once per epoch.
    assert chief["steps"] == 4 * STEPS and chief["rows"] == 4 * ROWS
    assert chief["ids_read"] == list(range(ROWS))
    assert [h["epoch"] for h in chief["history"]] == [1.0, 2.0, 3.0, 4.0]
    # One rank: the rate is not scaled.
    assert [h["learning_rate"] for h in chief["history"]] == [LEARNING_RATE] * 4
    assert chief["resumed_after"] == 0 and chief["stopped_early"] is False
    _assert_converged(chief)
    assert saved_epochs == [1, 2, 3, 4]
    saved = load_checkpoint(folder)
    assert saved["epoch"] == 4 and saved["history"] == chief["history"]


def test_an_interrupted_run_resumes_from_its_checkpoint_and_a_finished_one_does_nothing(
    converted, tmp_path
):
    folder = str(tmp_path / "checkpoints")
    # A cosine schedule: the resumed epochs continue on the curve, not from its start.
    settings = {"checkpoint_dir": folder, "lr_schedule": "cosine"}
    with pytest.raises(RankLostError):
        _fit(LosesARankAt(3), converted, **settings)
    saved = load_checkpoint(folder)
    assert saved["epoch"] == 2 and [h["epoch"] for h in saved["history"]] == [1.0, 2.0]

    chief = _fit(LocalComm(), converted, **settings)
    assert chief["resumed_after"] == 2
    # Epochs 1-2 come from the checkpoint, 3-4 ran now: four in all, none repeated.
    assert chief["steps"] == 2 * STEPS
    assert [h["epoch"] for h in chief["history"]] == [1.0, 2.0, 3.0, 4.0]
    assert chief["history"][:2] == saved["history"]
    # 0.02 (1 + cos(pi (e - 1) / 4)) / 2 for e = 1..4.
    cosine = [0.02, 0.01 + 0.01 * math.sqrt(0.5), 0.01, 0.01 - 0.01 * math.sqrt(0.5)]
    rates = [h["learning_rate"] for h in chief["history"]]
    assert rates == pytest.approx(cosine)
    assert rates == [epoch_learning_rate(LEARNING_RATE, e, 4, "cosine") for e in (1, 2, 3, 4)]
    _assert_converged(chief)
    assert load_checkpoint(folder)["epoch"] == 4

    again = _fit(LocalComm(), converted, **settings)
    assert (again["steps"], again["rows"], again["resumed_after"]) == (0, 0, 4)
    assert again["history"] == chief["history"]
    assert np.array_equal(again["state"]["weight"], chief["state"]["weight"])


def test_early_stopping_stops_after_patience_epochs_without_improvement(converted, tmp_path):
    folder = str(tmp_path / "checkpoints")
    # A rate of 0 never moves the weights: the validation MSE of epoch 1 is never beaten,
    # so with a patience of 2 the run stops after epoch 3 of 8.
    settings = {"epochs": 8, "learning_rate": 0.0, "patience": 2, "checkpoint_dir": folder}
    chief = _fit(LocalComm(), converted, **settings)
    assert [h["epoch"] for h in chief["history"]] == [1.0, 2.0, 3.0]
    assert chief["stopped_early"] is True and chief["steps"] == 3 * STEPS
    assert len({h["val_mse"] for h in chief["history"]}) == 1
    assert chief["best"] == chief["history"][0]["val_mse"]
    saved = load_checkpoint(folder)
    assert saved["epoch"] == 3 and saved["stopped_early"] is True
    # Launched again, a run that stopped early stays stopped.
    again = _fit(LocalComm(), converted, **settings)
    assert again["steps"] == 0 and again["stopped_early"] is True
    assert again["history"] == chief["history"]


def test_epochs_before_keep_from_are_never_kept_and_patience_counts_from_it(converted):
    # The same frozen run as above, with keep_from 3: epochs 1 and 2 are not candidates, so
    # epoch 3 is the first best and the patience of 2 ends the run after epoch 5.
    settings = {"epochs": 8, "learning_rate": 0.0, "patience": 2, "keep_from": 3}
    chief = _fit(LocalComm(), converted, **settings)
    assert [h["epoch"] for h in chief["history"]] == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert chief["stopped_early"] is True and chief["steps"] == 5 * STEPS
    # Past the last epoch it means the last epoch: that one is kept.
    params = LoopParams(epochs=3, steps=1, batch_size=1, learning_rate=0.0, keep_from=7)
    assert loop.keep_from(params) == 3


def test_the_cosine_schedule_decays_from_the_base_rate_over_the_epochs():
    rates = [epoch_learning_rate(0.01, e, 4, "cosine") for e in range(1, 5)]
    assert rates == pytest.approx([0.01, 0.01 * (2 + 2**0.5) / 4, 0.005, 0.01 * (2 - 2**0.5) / 4])
    assert [epoch_learning_rate(0.01, e, 4, "constant") for e in (1, 4)] == [0.01, 0.01]
    with pytest.raises(ValueError, match="lr_schedule must be one of constant, cosine"):
        epoch_learning_rate(0.01, 1, 4, "linear")


def test_config_accepts_every_backend_the_launcher_runs():
    from retail_lake.config import TRAINING_BACKENDS, ConfigError, load_config
    from retail_lake.training.launcher import BACKENDS

    assert TRAINING_BACKENDS == BACKENDS
    conf = Path(__file__).resolve().parents[1] / "conf"
    for backend in BACKENDS:
        cfg = load_config("test", [f"training.backend={backend}"], conf_dir=conf, environ={})
        assert cfg.get("training.backend") == backend
    with pytest.raises(ConfigError, match="training.backend must be one of"):
        load_config("test", ["training.backend=mpi"], conf_dir=conf, environ={})


# ----------------------------------------------------------------------------- launched
@pytest.mark.horovod
@pytest.mark.slow
def test_both_backends_train_the_same_model_to_the_same_metric(spark, root):
    results, every_rank = {}, {}
    for backend in ("horovod", "torch_distributor"):
        chief, ranks = _train(spark, root, backend, epochs=4)
        assert chief["backend"] == backend and chief["size"] == 2
        assert [h["epoch"] for h in chief["history"]] == [1.0, 2.0, 3.0, 4.0]
        results[backend], every_rank[backend] = chief, ranks
    # Horovod returns every rank: both ran the same number of steps (4 epochs of their own
    # shard's 40 batches of 50).
    hvd_ranks = every_rank["horovod"]
    assert [r["rank"] for r in hvd_ranks] == [0, 1]
    assert hvd_ranks[0]["steps"] == hvd_ranks[1]["steps"] == 4 * ROWS // (BATCH * 2)
    assert hvd_ranks[0]["rows"] == hvd_ranks[1]["rows"] == 4 * ROWS // 2
    # The ranks read disjoint shards that together hold every row.
    first, second = (set(r["ids_read"]) for r in hvd_ranks)
    assert first and second, "every rank must get data"
    assert not first & second, "shards must be disjoint"
    assert first | second == set(range(ROWS))
    # The allreduced gradients kept the ranks' networks identical.
    for name, value in hvd_ranks[0]["final_weights"].items():
        assert np.allclose(value, hvd_ranks[1]["final_weights"][name], rtol=0, atol=1e-6)
    for chief in results.values():
        _assert_converged(chief)
    a, b = (results[k]["history"][-1]["val_mse"] for k in ("horovod", "torch_distributor"))
    assert abs(a - b) < 0.005


@pytest.mark.horovod
@pytest.mark.slow
def test_a_killed_run_resumes_from_its_last_checkpoint(spark, root, monkeypatch):
    folder = str(root / "checkpoints" / "linear")
    monkeypatch.setenv(FAULT_ENV, "2")
    # A cosine schedule: the resumed epochs continue on the curve, not from its start.
    cosine = {"lr_schedule": "cosine"}
    with pytest.raises(Exception):  # noqa: B017 - whatever the backend raises for a lost rank
        _train(spark, root, "horovod", epochs=4, checkpoint_dir=folder, **cosine)
    saved = load_checkpoint(folder)
    assert saved["epoch"] == 2 and [h["epoch"] for h in saved["history"]] == [1.0, 2.0]
    monkeypatch.delenv(FAULT_ENV)
    chief, _ = _train(spark, root, "horovod", epochs=4, checkpoint_dir=folder, **cosine)
    assert chief["resumed_after"] == 2
    # 2 ranks: the base rate is twice the per-rank 0.02 of smoke_train.
    assert [h["learning_rate"] for h in chief["history"]] == pytest.approx(
        [epoch_learning_rate(0.04, e, 4, "cosine") for e in (1, 2, 3, 4)]
    )
    # Epochs 1-2 come from the checkpoint, 3-4 ran now: four in all, none repeated.
    assert [h["epoch"] for h in chief["history"]] == [1.0, 2.0, 3.0, 4.0]
    assert chief["history"][:2] == saved["history"]
    assert chief["history"][-1]["val_mse"] < 0.02
    assert load_checkpoint(folder)["epoch"] == 4

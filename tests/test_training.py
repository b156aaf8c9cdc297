"""The shared training loop on 2 ranks over Petastorm: both backends (Horovod and Spark's
TorchDistributor) train the same model to the same metric; every rank runs the same steps;
a run killed after an epoch resumes from its checkpoint and ends at the same epoch count."""

from __future__ import annotations

import numpy as np
import pytest

from retail_lake.training.smoke import BIAS, WEIGHTS, smoke_train

pytestmark = pytest.mark.horovod

ROWS = 4000


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


def test_the_cosine_schedule_decays_from_the_base_rate_over_the_epochs():
    from retail_lake.training.loop import epoch_learning_rate

    rates = [epoch_learning_rate(0.01, e, 4, "cosine") for e in range(1, 5)]
    assert rates == pytest.approx([0.01, 0.01 * (2 + 2**0.5) / 4, 0.005, 0.01 * (2 - 2**0.5) / 4])
    assert [epoch_learning_rate(0.01, e, 4, "constant") for e in (1, 4)] == [0.01, 0.01]
    with pytest.raises(ValueError, match="lr_schedule must be one of constant, cosine"):
        epoch_learning_rate(0.01, 1, 4, "linear")


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
    assert hvd_ranks[0]["steps"] == hvd_ranks[1]["steps"] == 4 * ROWS // (50 * 2)
    assert hvd_ranks[0]["rows"] == hvd_ranks[1]["rows"] == 4 * ROWS // 2
    for backend, chief in results.items():
        mse = chief["history"][-1]["val_mse"]
        # The noise variance is 0.01: both converge to it from an initial MSE of about 6.
        assert mse < 0.02, (backend, chief["history"])
        w = chief["state"]["weight"].ravel()
        assert np.allclose(w, WEIGHTS, atol=0.05) and abs(chief["state"]["bias"][0] - BIAS) < 0.05
    a, b = (results[k]["history"][-1]["val_mse"] for k in ("horovod", "torch_distributor"))
    assert abs(a - b) < 0.005


def test_a_killed_run_resumes_from_its_last_checkpoint(spark, root, monkeypatch):
    from retail_lake.training.loop import FAULT_ENV, epoch_learning_rate, load_checkpoint

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
    # A finished run re-launched has nothing left to do.
    again, ranks = _train(spark, root, "horovod", epochs=4, checkpoint_dir=folder, **cosine)
    assert again["resumed_after"] == 4 and len(again["history"]) == 4
    assert {r["steps"] for r in ranks} == {0}

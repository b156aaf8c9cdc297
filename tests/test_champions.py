"""Champion and challenger (`retail_lake.champions`): the rule on plain numbers, then the
forecaster end to end on a copy of the demo lake: a first version becomes the champion, a
retrained one that does not beat it stays a challenger (the champion re-evaluated on the same
test windows), the scorer reads the champion, and `retail-lake models promote|rollback`
moves it, recorded."""

from __future__ import annotations

import math

import pytest

from retail_lake.champions import judge
from retail_lake.publish_rule import Better, PublishRuleError

from .conftest import copy_lake

MODEL = "sales_forecaster"
DECISIONS = "ops.model_decisions"
FORECASTS = "gold.sales_forecasts"


def test_a_challenger_must_beat_the_champion_by_the_margin():
    # Lower is better: with a margin of 0.01 of 0.12 the challenger needs below 0.1188.
    assert judge("rmspe", Better.LOWER, 0.1187, "3", 0.12, 0.01).promote
    assert not judge("rmspe", Better.LOWER, 0.1189, "3", 0.12, 0.01).promote
    assert not judge("rmspe", Better.LOWER, 0.12, "3", 0.12, 0.0).promote  # a tie keeps it
    assert judge("rmspe", Better.LOWER, 0.1199, "3", 0.12, 0.0).promote
    # Higher is better: 0.90 + 1% needs above 0.909.
    assert judge("accuracy", Better.HIGHER, 0.9095, "1", 0.90, 0.01).promote
    assert not judge("accuracy", Better.HIGHER, 0.9085, "1", 0.90, 0.01).promote
    verdict = judge("accuracy", Better.HIGHER, 0.9085, "1", 0.90, 0.01)
    assert verdict.reason == "accuracy 0.9085 vs champion 1 0.9000 (needs > 0.9090: margin 0.01)"
    # No champion, or one that cannot be scored on this data: the challenger takes it.
    first = judge("rmspe", Better.LOWER, 0.5, None, None, 0.01)
    assert first.promote and first.reason == "no champion yet"
    blind = judge("rmspe", Better.LOWER, 0.5, "2", None, 0.01, "its lookback is 28 days")
    assert blind.promote and "champion 2 cannot be evaluated" in blind.reason
    with pytest.raises(PublishRuleError, match="challenger is not a number"):
        judge("rmspe", Better.LOWER, math.nan, "2", 0.12, 0.01)


def _decisions(lake, skip: int = 0) -> list[dict]:
    """ops.model_decisions' rows in order, the first `skip` left out."""
    if not lake.exists(DECISIONS):
        return []
    return [r.asDict() for r in lake.read(DECISIONS).orderBy("decided_at").collect()][skip:]


def _served(lake) -> set[str]:
    return {r["model_version"] for r in lake.read(FORECASTS).select("model_version").collect()}


@pytest.mark.slow  # two trainings and three scorings: the full suite only
def test_forecaster_champion_challenger_promote_and_rollback(spark, demo_lake, tmp_path, run_cli):
    from mlflow import MlflowClient
    from pyspark.sql import functions as F

    from retail_lake.config import load_config
    from retail_lake.forecasting.score import run as forecast
    from retail_lake.forecasting.train import run as train
    from retail_lake.lake import Lake
    from retail_lake.registry import run_job

    # The demo lake without its MLflow store: no model registered yet (the demo pipeline's
    # own decision rows are left out below).
    root = copy_lake(demo_lake.root, tmp_path / "lake")
    lake = Lake(spark, str(root))
    demo = len(_decisions(lake))
    cfg = load_config("test", [f"paths.root={root}"])
    first, _ = run_job(spark, cfg, "train_forecaster", train)
    [decision] = _decisions(lake, demo)
    assert decision["run_id"] == first.run_id
    assert (decision["action"], decision["version"]) == ("promoted", "1")
    assert (decision["champion_before"], decision["champion_after"]) == (None, "1")
    assert decision["reason"] == "no champion yet"
    metrics = lake.read("ops.model_metrics")
    v1_rmspe = (
        metrics.where((F.col("run_id") == first.run_id) & (F.col("split") == "test"))
        .where(F.col("metric") == "rmspe")
        .first()["value"]
    )
    assert decision["challenger_value"] == pytest.approx(v1_rmspe)

    # Retrained for one epoch, with a margin no retraining can reach: registered as
    # version 2, a challenger. The champion was scored again on the same test windows, with
    # the store levels it was trained with: the value its own run measured.
    weaker = load_config(
        "test",
        [
            f"paths.root={root}",
            "training.force=true",
            "forecast.epochs=1",
            "forecast.require_beat_baselines=false",
            "models.promotion_margin=0.5",
        ],
    )
    second, _ = run_job(spark, weaker, "train_forecaster", train)
    kept = _decisions(lake)[-1]
    assert (kept["run_id"], kept["action"], kept["version"]) == (second.run_id, "kept", "2")
    assert (kept["champion_before"], kept["champion_after"]) == ("1", "1")
    assert kept["champion_value"] == pytest.approx(v1_rmspe, rel=1e-6)
    assert kept["margin"] == 0.5
    recomputed = {
        r["metric"]: r["value"]
        for r in metrics.where(
            (F.col("run_id") == second.run_id) & (F.col("split") == "champion:1")
        ).collect()
    }
    assert recomputed["rmspe"] == pytest.approx(v1_rmspe, rel=1e-6)
    assert recomputed["days"] > 0
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(MODEL, "champion").version) == "1"
    assert client.get_model_version(MODEL, "2").tags["retail_lake.role"] == "challenger"

    # The scorer reads the champion, not the latest version.
    run_job(spark, cfg, "forecast", forecast)
    assert _served(lake) == {"1"}

    common = ("--profile", "test", "--root", str(root))
    code, out, err = run_cli(
        "models", "promote", MODEL, "2", "--reason", "new promo calendar", *common
    )
    assert code == 0, err[-2000:]
    run_job(spark, cfg, "forecast", forecast)
    assert _served(lake) == {"2"}
    # A rollback goes back only; to an older version it is the scorers' next run.
    code, _, err = run_cli("models", "rollback", MODEL, "3", "--reason", "x", *common)
    assert code == 1 and "has no version '3'" in err
    code, _, err = run_cli("models", "rollback", MODEL, "1", "--reason", "", *common)
    assert code == 1 and "give a --reason" in err
    code, out, err = run_cli(
        "models", "rollback", MODEL, "1", "--reason", "v2 over-forecasts", *common
    )
    assert code == 0, err[-2000:]
    code, _, err = run_cli("models", "rollback", MODEL, "2", "--reason", "x", *common)
    assert code == 1 and "newer than the champion 1" in err
    run_job(spark, cfg, "forecast", forecast)
    assert _served(lake) == {"1"}

    moves = [
        (d["action"], d["version"], d["champion_before"], d["reason"])
        for d in _decisions(lake, demo + 2)
    ]
    assert moves == [
        ("promote", "2", "1", "new promo calendar"),
        ("rollback", "1", "2", "v2 over-forecasts"),
    ]
    # Each move is a recorded run of its own.
    runs = lake.read("ops.job_runs").where(F.col("job").startswith("models_"))
    assert sorted(
        (r["job"], r["status"]) for r in runs.collect() if r["status"] == "succeeded"
    ) == [
        ("models_promote", "succeeded"),
        ("models_rollback", "succeeded"),
    ]

    code, out, err = run_cli("models", *common)
    assert code == 0, err[-2000:]
    listed = {line.split()[1]: line.split()[2] for line in out.splitlines()[2:]}
    assert listed == {"2": "rolled", "1": "champion"}  # "rolled back"
    assert "rmspe" in out


@pytest.mark.slow  # two recommend runs: the full suite only
def test_the_recommender_keeps_the_champions_configuration_when_it_wins(spark, demo_lake, tmp_path):
    """The recommender is refitted on every snapshot, so its champion is a configuration:
    a search that picks a worse one (the challenger) is fitted beside the champion's on the
    same split, loses, and the champion's configuration is refitted and published."""
    from mlflow import MlflowClient
    from pyspark.sql import functions as F

    from retail_lake.config import load_config
    from retail_lake.lake import Lake
    from retail_lake.recommend.job import MODEL_NAME as RECOMMENDER
    from retail_lake.recommend.job import run as recommend
    from retail_lake.registry import run_job

    root = copy_lake(demo_lake.root, tmp_path / "lake")
    lake = Lake(spark, str(root))
    demo = len(_decisions(lake))

    def config(rank: int, alpha: float, *extra: str):
        return load_config(
            "test",
            [
                f"paths.root={root}",
                f"recommend.als.search.rank=[{rank}]",
                "recommend.als.search.reg_param=[0.1]",
                f"recommend.als.search.alpha=[{alpha}]",
                *extra,
            ],
        )

    first, _ = run_job(spark, config(48, 5.0), "recommend", recommend)
    [promoted] = _decisions(lake, demo)
    assert (promoted["action"], promoted["version"], promoted["reason"]) == (
        "promoted",
        "1",
        "no champion yet",
    )
    # A search offering only a small model, and a margin no search could clear.
    second, _ = run_job(
        spark,
        config(4, 2.0, "recommend.require_beat_baselines=false", "models.promotion_margin=0.5"),
        "recommend",
        recommend,
    )
    kept = _decisions(lake, demo + 1)[-1]
    assert (kept["run_id"], kept["action"], kept["version"]) == (second.run_id, "kept", "2")
    assert (kept["champion_before"], kept["champion_after"]) == ("1", "2")
    assert (
        "configuration (rank=48,reg_param=0.1,alpha=5) is refitted and published"
        in (kept["reason"])
    )
    metrics = {
        (r["split"], r["metric"]): r["value"]
        for r in lake.read("ops.model_metrics").where(F.col("run_id") == second.run_id).collect()
    }
    k = 10
    # What was published is the champion's configuration, with its numbers as `test`; the
    # search's choice is the challenger, both fitted and scored on the same split.
    assert metrics[("chosen", "rank")] == 48 and metrics[("challenger", "rank")] == 4
    assert metrics[("test", f"map@{k}")] == metrics[("champion:1", f"map@{k}")]
    assert kept["champion_value"] == pytest.approx(metrics[("test", f"map@{k}")])
    assert kept["challenger_value"] == pytest.approx(metrics[("challenger", f"map@{k}")])
    run = MlflowClient().get_run(MlflowClient().get_model_version(RECOMMENDER, "2").run_id)
    assert run.data.params["chosen_rank"] == "48"
    served = {r["model_version"] for r in lake.read("gold.recommendations").collect()}
    assert served == {"2"}

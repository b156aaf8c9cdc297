"""The publish rule (retail_lake.publish_rule) on made-up metrics: no Spark, no torch."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from retail_lake.publish_rule import (
    Better,
    Decision,
    PublishRuleError,
    Shortfall,
    decide,
    shortfalls,
)

RANKING = {"map": Better.HIGHER, "ndcg": Better.HIGHER}


def test_a_model_that_beats_every_baseline_publishes():
    model = {"map": 0.30, "ndcg": 0.40, "users": 120.0}
    baselines = {
        "global_popularity": {"map": 0.10, "ndcg": 0.20},
        "recent_popularity": {"map": 0.29, "ndcg": 0.39},
    }
    lost = shortfalls(model, baselines, RANKING)
    assert lost == []
    assert decide(lost, require_beat_baselines=True) is Decision.PUBLISH
    assert decide(lost, require_beat_baselines=False) is Decision.PUBLISH


def test_a_tie_loses():
    lost = shortfalls({"accuracy": 0.5}, {"majority": {"accuracy": 0.5}}, {"accuracy": "higher"})
    assert lost == [Shortfall("majority", "accuracy", 0.5, 0.5)]
    lost = shortfalls({"rmspe": 0.2}, {"naive": {"rmspe": 0.2}}, {"rmspe": Better.LOWER})
    assert lost == [Shortfall("naive", "rmspe", 0.2, 0.2)]
    assert decide(lost) is Decision.REFUSE


def test_lower_is_better():
    metrics = {"rmspe": Better.LOWER}
    assert shortfalls({"rmspe": 0.10}, {"naive": {"rmspe": 0.11}}, metrics) == []
    assert shortfalls({"rmspe": 0.12}, {"naive": {"rmspe": 0.11}}, metrics) == [
        Shortfall("naive", "rmspe", 0.12, 0.11)
    ]


def test_higher_is_better():
    metrics = {"accuracy": Better.HIGHER}
    assert shortfalls({"accuracy": 0.91}, {"centroid": {"accuracy": 0.90}}, metrics) == []
    assert shortfalls({"accuracy": 0.89}, {"centroid": {"accuracy": 0.90}}, metrics) == [
        Shortfall("centroid", "accuracy", 0.89, 0.90)
    ]


def test_every_failure_is_listed_by_baseline_then_metric():
    model = {"rmspe": 0.20, "mape": 0.15, "accuracy": 0.70}
    baselines = {
        "seasonal_naive": {"rmspe": 0.25, "mape": 0.15, "accuracy": 0.80},
        "median": {"rmspe": 0.18, "mape": 0.10, "accuracy": 0.60},
    }
    metrics = {"rmspe": Better.LOWER, "mape": Better.LOWER, "accuracy": Better.HIGHER}
    assert shortfalls(model, baselines, metrics) == [
        Shortfall("seasonal_naive", "mape", 0.15, 0.15),
        Shortfall("seasonal_naive", "accuracy", 0.70, 0.80),
        Shortfall("median", "rmspe", 0.20, 0.18),
        Shortfall("median", "mape", 0.15, 0.10),
    ]


def test_metrics_that_do_not_count_are_ignored():
    model = {"map": 0.3, "ndcg": 0.4, "coverage": 0.01}
    baselines = {"global_popularity": {"map": 0.1, "ndcg": 0.2, "coverage": 0.5}}
    assert shortfalls(model, baselines, RANKING) == []


def test_a_missing_metric_is_an_error_naming_it():
    with pytest.raises(PublishRuleError, match=r"the model has no 'ndcg'"):
        shortfalls({"map": 0.3}, {"global_popularity": {"map": 0.1, "ndcg": 0.2}}, RANKING)
    with pytest.raises(PublishRuleError, match=r"baseline 'recent_popularity' has no 'map'"):
        shortfalls(
            {"map": 0.3, "ndcg": 0.4},
            {"global_popularity": {"map": 0.1, "ndcg": 0.2}, "recent_popularity": {"ndcg": 0.2}},
            RANKING,
        )


def test_nan_is_an_error_naming_it_never_a_pass_or_a_loss():
    nan = math.nan
    with pytest.raises(PublishRuleError, match=r"the model 'rmspe' is NaN"):
        shortfalls({"rmspe": nan}, {"naive": {"rmspe": 0.2}}, {"rmspe": Better.LOWER})
    with pytest.raises(PublishRuleError, match=r"baseline 'naive' 'rmspe' is NaN"):
        shortfalls({"rmspe": 0.1}, {"naive": {"rmspe": nan}}, {"rmspe": Better.LOWER})
    # Every problem is named at once.
    with pytest.raises(PublishRuleError) as err:
        shortfalls({"map": nan}, {"global_popularity": {"map": nan}}, RANKING)
    assert str(err.value) == (
        "cannot judge the model against its baselines: the model 'map' is NaN; "
        "the model has no 'ndcg'; baseline 'global_popularity' 'map' is NaN; "
        "baseline 'global_popularity' has no 'ndcg'"
    )


def test_nothing_to_judge_by_is_an_error():
    with pytest.raises(PublishRuleError, match="at least one metric"):
        shortfalls({"map": 0.3}, {"global_popularity": {"map": 0.1}}, {})
    with pytest.raises(PublishRuleError, match="at least one baseline"):
        shortfalls({"map": 0.3}, {}, RANKING)
    with pytest.raises(ValueError, match="True"):
        shortfalls({"map": 0.3}, {"global_popularity": {"map": 0.1}}, {"map": True})


def test_a_losing_model_with_require_beat_baselines_off_publishes_with_a_warning():
    lost = [Shortfall("recent_popularity", "map", 0.1, 0.2)]
    assert decide(lost, require_beat_baselines=True) is Decision.REFUSE
    assert decide(lost, require_beat_baselines=False) is Decision.PUBLISH_WITH_WARNING
    assert decide([], require_beat_baselines=False) is Decision.PUBLISH


def test_the_rule_imports_without_spark_or_torch():
    code = (
        "import sys, retail_lake.publish_rule; "
        "print(sorted(m for m in ('pyspark', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

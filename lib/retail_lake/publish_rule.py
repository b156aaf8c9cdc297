"""The publish rule: a model must beat its baselines, on every metric that counts.

Every job that trains a model (ALS, the forecaster, the CNN) evaluates it and its baselines
on the same held-out data, then asks `shortfalls` what the model fails to beat and `decide`
what to do about it. The rule is strict: a tie loses. A metric that is missing or NaN, for
the model or a baseline, cannot be judged, so it is an error naming it, never a pass (NaN
compares false both ways, which would otherwise read as a win or a loss by accident).

Plain Python on plain numbers: no Spark, no torch.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import Enum


class PublishRuleError(ValueError):
    """The model cannot be judged against its baselines (a metric missing or NaN, ...)."""


class Better(Enum):
    """Which way a metric improves."""

    HIGHER = "higher"
    LOWER = "lower"


class Decision(Enum):
    """What a job does with a model once it is judged."""

    PUBLISH = "publish"
    REFUSE = "refuse"
    # `require_beat_baselines` is off and the model lost: published, with a warning.
    PUBLISH_WITH_WARNING = "publish_with_warning"


@dataclass(frozen=True)
class Shortfall:
    """One (baseline, metric) the model does not strictly beat."""

    baseline: str
    metric: str
    model: float
    value: float  # the baseline's


def shortfalls(
    model: Mapping[str, float],
    baselines: Mapping[str, Mapping[str, float]],
    metrics: Mapping[str, Better],
) -> list[Shortfall]:
    """Every (baseline, metric) the model does not strictly beat, baseline by baseline in
    the order given, metrics in the order given; empty when the model wins everywhere.

    Args:
        model: the model's metrics (extra keys are ignored).
        baselines: baseline name -> its metrics, on the same data as the model's.
        metrics: the metrics that count -> which way each improves.

    Raises:
        PublishRuleError: no metric or no baseline to judge by, or a metric that counts is
            missing or NaN for the model or a baseline (all such are named).
    """
    if not metrics:
        raise PublishRuleError("the publish rule needs at least one metric to judge by")
    if not baselines:
        raise PublishRuleError("the publish rule needs at least one baseline to beat")
    directions = {metric: Better(direction) for metric, direction in metrics.items()}
    _require_numbers(model, baselines, list(directions))
    out = []
    for name, values in baselines.items():
        for metric, direction in directions.items():
            ours, theirs = float(model[metric]), float(values[metric])
            wins = ours > theirs if direction is Better.HIGHER else ours < theirs
            if not wins:
                out.append(Shortfall(name, metric, ours, theirs))
    return out


def decide(lost: Sequence[Shortfall], require_beat_baselines: bool = True) -> Decision:
    """Publish a model that lost nothing; otherwise refuse it, or publish it with a warning
    when the job does not require beating the baselines."""
    if not lost:
        return Decision.PUBLISH
    return Decision.REFUSE if require_beat_baselines else Decision.PUBLISH_WITH_WARNING


def _require_numbers(
    model: Mapping[str, float],
    baselines: Mapping[str, Mapping[str, float]],
    metrics: Sequence[str],
) -> None:
    problems = _problems("the model", model, metrics)
    for name, values in baselines.items():
        problems += _problems(f"baseline {name!r}", values, metrics)
    if problems:
        raise PublishRuleError(
            "cannot judge the model against its baselines: " + "; ".join(problems)
        )


def _problems(whose: str, values: Mapping[str, float], metrics: Sequence[str]) -> list[str]:
    out = []
    for metric in metrics:
        if values.get(metric) is None:
            out.append(f"{whose} has no {metric!r}")
        elif math.isnan(float(values[metric])):
            out.append(f"{whose} {metric!r} is NaN")
    return out

"""Champion and challenger: which registered version of a model the scoring jobs use.

Each model has at most one **champion**: the version its MLflow registered-model alias
`champion` points to. Scoring jobs (`forecast`, `classify_images`) read the champion, and the
rows they write carry its version. A training job registers every model that beats its
baselines, as a **challenger**; it becomes the champion only when it also beats the current
champion, both evaluated by the training job on the same test data (the champion's metrics
are recomputed, never read from its old run), by at least `models.promotion_margin` of the
champion's value. A tie keeps the champion. A model with no champion yet (its first version,
or a lake registered before champions existed and whose latest version acts as one) takes the
challenger.

The recommender is refitted on every snapshot: there the champion is a configuration, and
`recommend` publishes whichever of the search's choice and the champion's configuration
wins on the same split (`settle(..., serve=True)`).

Every decision is a row of `ops.model_decisions` (who, what, the two values, why) and tags on
the MLflow version (`retail_lake.role`, `retail_lake.reason`); the champion's re-computed
metrics land in `ops.model_metrics` under the split `champion:<version>` beside the
challenger's. An operator moves the alias with `retail-lake models promote|rollback NAME
VERSION --reason TEXT` (a recorded run): scorers use that version on their next run.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from retail_lake.config import Config
from retail_lake.ops import MODEL_DECISIONS
from retail_lake.publish_rule import Better, PublishRuleError
from retail_lake.quality import utc_now
from retail_lake.runner import JobContext, JobError, JobResult, append_ops_rows

log = logging.getLogger(__name__)

ALIAS = "champion"
ROLE_TAG = "retail_lake.role"
REASON_TAG = "retail_lake.reason"

# What a decision did (ops.model_decisions.action).
PROMOTED = "promoted"  # a trained challenger took the alias (or there was no champion)
KEPT = "kept"  # a trained challenger lost to the champion: it stays a challenger
PROMOTE = "promote"  # an operator moved the alias to a version (`retail-lake models promote`)
ROLLBACK = "rollback"  # an operator moved it back to an older version


class ModelsError(JobError):
    """A promotion or rollback that cannot be made (unknown model or version, ...)."""


def _client(cfg: Config):
    from mlflow import MlflowClient

    from retail_lake.training.tracking import setup_mlflow

    setup_mlflow(cfg)
    return MlflowClient()


def _versions(client, model_name: str) -> list[Any]:
    from mlflow.exceptions import MlflowException

    try:
        return list(client.search_model_versions(f"name='{model_name}'"))
    except MlflowException:
        return []


def champion(cfg: Config, model_name: str) -> str | None:
    """The version scorers use: the `champion` alias; with no alias (a lake registered before
    champions existed) the latest registered version; None when nothing is registered."""
    return _champion_of(_client(cfg), model_name)


def _champion_of(client, model_name: str, versions: list[Any] | None = None) -> str | None:
    """`champion` with a client at hand (and the model's versions, when already listed)."""
    from mlflow.exceptions import MlflowException

    try:
        return str(client.get_model_version_by_alias(model_name, ALIAS).version)
    except MlflowException:
        pass
    versions = _versions(client, model_name) if versions is None else versions
    if not versions:
        return None
    latest = str(max(int(v.version) for v in versions))
    log.info("%s has no champion alias: its latest version %s serves", model_name, latest)
    return latest


def run_params(cfg: Config, model_name: str, version: str) -> dict[str, str]:
    """The MLflow parameters of the run that registered `version` of `model_name`."""
    client = _client(cfg)
    run_id = client.get_model_version(model_name, version).run_id
    return dict(client.get_run(run_id).data.params) if run_id else {}


def serving(cfg: Config, model_name: str, trained_by: str) -> str:
    """The champion a scorer loads.

    Raises:
        JobError: nothing of `model_name` is registered (run `trained_by` first).
    """
    version = champion(cfg, model_name)
    if version is None:
        raise JobError(f"no registered {model_name} model: run {trained_by} first")
    return version


@dataclass(frozen=True)
class Verdict:
    """A challenger judged against the champion on the same evaluation data."""

    promote: bool
    champion: str | None  # the champion it was judged against (None: there was none)
    metric: str
    challenger_value: float
    champion_value: float | None  # None: no champion, or it could not be evaluated
    margin: float
    reason: str


def judge(
    metric: str,
    better: Better,
    challenger_value: float,
    current: str | None,
    champion_value: float | None,
    margin: float,
    unevaluable: str = "",
) -> Verdict:
    """Whether the challenger replaces the champion `current` on `metric`.

    It must beat the champion's value by at least `margin` (a fraction of the champion's
    value) strictly: with margin 0.01 an RMSPE of 0.1200 needs below 0.1188. No champion, or
    one that cannot be evaluated on this data (`unevaluable` says why), promotes it.

    Raises:
        PublishRuleError: a value to compare is NaN (it cannot be judged either way).
    """
    if current is None:
        return Verdict(True, None, metric, challenger_value, None, margin, "no champion yet")
    if champion_value is None:
        return Verdict(
            True,
            current,
            metric,
            challenger_value,
            None,
            margin,
            f"champion {current} cannot be evaluated on this data ({unevaluable})",
        )
    for who, value in (("challenger", challenger_value), (f"champion {current}", champion_value)):
        if value is None or math.isnan(value):
            raise PublishRuleError(f"{metric} of the {who} is not a number: cannot judge")
    step = abs(champion_value) * margin
    if better is Better.LOWER:
        needed, wins, sign = champion_value - step, challenger_value < champion_value - step, "<"
    else:
        needed, wins, sign = champion_value + step, challenger_value > champion_value + step, ">"
    return Verdict(
        wins,
        current,
        metric,
        challenger_value,
        champion_value,
        margin,
        f"{metric} {challenger_value:.4f} vs champion {current} {champion_value:.4f} "
        f"(needs {sign} {needed:.4f}: margin {margin:g})",
    )


def challenge(
    ctx: JobContext,
    model_name: str,
    metric: str,
    better: Better,
    challenger_value: float,
    evaluate: Callable[[str], tuple[float | None, str, dict[str, float]]],
    table: dict[str, dict[str, float]],
) -> Verdict:
    """Judges a trained model (it beat its baselines) against the current champion.

    `evaluate(version)` recomputes the champion's metrics on the challenger's test data:
    (value of `metric` or None when it cannot be evaluated, why not, every metric). Those
    metrics are added to `table` under `champion:<version>` (so they land in
    ops.model_metrics beside the challenger's). When the champion could score only part of
    the test data, its metrics carry the challenger's on that part as `challenger_<metric>`,
    and the two are judged on it.
    """
    margin = float(ctx.cfg.get("models.promotion_margin"))
    current = champion(ctx.cfg, model_name)
    value, why = None, ""
    if current is not None:
        value, why, metrics = evaluate(current)
        if metrics:
            table[f"champion:{current}"] = metrics
            challenger_value = metrics.get(f"challenger_{metric}", challenger_value)
    verdict = judge(metric, better, challenger_value, current, value, margin, why)
    log.info(
        "[%s] %s challenger %s the champion: %s",
        ctx.run_id,
        model_name,
        "replaces" if verdict.promote else "does not replace",
        verdict.reason,
    )
    return verdict


def settle(
    ctx: JobContext, model_name: str, version: str, verdict: Verdict, serve: bool = False
) -> None:
    """Tags the new version with its role, moves the alias when it won (or `serve`: a model
    refitted on every snapshot, whose published version is the winning configuration's),
    and records the decision in ops.model_decisions."""
    client = _client(ctx.cfg)
    serving = verdict.promote or serve
    role = ALIAS if serving else "challenger"
    client.set_model_version_tag(model_name, version, ROLE_TAG, role)
    client.set_model_version_tag(model_name, version, REASON_TAG, verdict.reason)
    if serving:
        client.set_registered_model_alias(model_name, ALIAS, version)
        log.info("[%s] %s version %s is the champion", ctx.run_id, model_name, version)
    else:
        log.info(
            "[%s] %s version %s is registered as a challenger; version %s stays the champion",
            ctx.run_id,
            model_name,
            version,
            verdict.champion,
        )
    _record(
        ctx,
        model_name,
        version,
        PROMOTED if verdict.promote else KEPT,
        verdict.champion,
        version if serving else verdict.champion,
        verdict.reason,
        verdict,
    )


def _record(
    ctx: JobContext,
    model_name: str,
    version: str,
    action: str,
    before: str | None,
    after: str | None,
    reason: str,
    verdict: Verdict | None = None,
) -> None:
    row = {
        "run_id": ctx.run_id,
        "model_name": model_name,
        "action": action,
        "version": version,
        "champion_before": before,
        "champion_after": after,
        "metric": verdict.metric if verdict else None,
        "challenger_value": verdict.challenger_value if verdict else None,
        "champion_value": verdict.champion_value if verdict else None,
        "margin": verdict.margin if verdict else None,
        "reason": reason,
        "decided_at": utc_now(),
    }
    append_ops_rows(ctx.lake, MODEL_DECISIONS, [row], ctx.run_id)


def move(model_name: str, version: str, reason: str, rollback: bool) -> Callable[..., JobResult]:
    """The job behind `retail-lake models promote|rollback`: points the alias at `version`
    (a registered version; for a rollback one older than the champion) and records why."""
    action = ROLLBACK if rollback else PROMOTE

    def run(ctx: JobContext) -> JobResult:
        if not reason.strip():
            raise ModelsError(f"models {action}: give a --reason (it is recorded)")
        client = _client(ctx.cfg)
        versions = _versions(client, model_name)
        known = {str(v.version) for v in versions}
        if not known:
            raise ModelsError(f"models {action}: no registered model named {model_name!r}")
        if version not in known:
            raise ModelsError(
                f"models {action}: {model_name} has no version {version!r} (registered: "
                f"{', '.join(sorted(known, key=int))})"
            )
        current = _champion_of(client, model_name, versions)
        if version == current:
            raise ModelsError(f"models {action}: version {version} already is the champion")
        if rollback and current is not None and int(version) > int(current):
            raise ModelsError(
                f"models rollback: version {version} is newer than the champion {current}; "
                f"use `retail-lake models promote` to move forward"
            )
        client.set_registered_model_alias(model_name, ALIAS, version)
        client.set_model_version_tag(model_name, version, ROLE_TAG, ALIAS)
        client.set_model_version_tag(model_name, version, REASON_TAG, f"{action}: {reason}")
        if current is not None:
            client.set_model_version_tag(
                model_name, current, ROLE_TAG, "challenger" if not rollback else "rolled back"
            )
        _record(ctx, model_name, version, action, current, version, reason)
        log.info(
            "[%s] %s: %s champion %s -> %s (%s); scorers use it on their next run",
            ctx.run_id,
            action,
            model_name,
            current,
            version,
            reason,
        )
        return JobResult()

    return run


def listing(cfg: Config, model_name: str | None = None) -> list[dict[str, Any]]:
    """Every registered version (newest first per model): role, test metrics, reason."""
    client = _client(cfg)
    names = (
        [model_name] if model_name else sorted(m.name for m in client.search_registered_models())
    )
    out = []
    for name in names:
        versions = _versions(client, name)
        if model_name and not versions:
            raise ModelsError(f"no registered model named {model_name!r}")
        current = _champion_of(client, name, versions) if versions else None
        for mv in sorted(versions, key=lambda v: -int(v.version)):
            metrics = client.get_run(mv.run_id).data.metrics if mv.run_id else {}
            role = mv.tags.get(ROLE_TAG) or "-"
            if str(mv.version) == current:
                role = ALIAS
            elif role == ALIAS:
                role = "former champion"
            out.append(
                {
                    "model": name,
                    "version": str(mv.version),
                    "role": role,
                    "registered": mv.creation_timestamp,
                    "test": {
                        k.removeprefix("test."): v
                        for k, v in sorted(metrics.items())
                        if k.startswith("test.") and k.count(".") == 1
                    },
                    "reason": mv.tags.get(REASON_TAG, ""),
                }
            )
    return out

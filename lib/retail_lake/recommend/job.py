"""Jobs: the Online Retail gold features (part of `features`) and `recommend`.

`features` builds, from silver.transactions / silver.returns / silver.products at recorded
versions and for the snapshot day (recommend.as_of, default the data's last day):
gold.customer_index and gold.product_index (new keys appended), gold.interactions
(incremental, see `interaction_outputs`), gold.customer_features and gold.product_features
(rebuilt: recency, quantile scores and segments move with every snapshot).

`recommend` evaluates ALS on a time split against the popularity baselines, after a
hyperparameter search on a validation period carved from training (`retail_lake.recommend.
als`). A model that does not beat every baseline on MAP@k and NDCG@k is not published: its
numbers go to ops.model_metrics and MLflow and the job fails saying so. Otherwise ALS is
refitted with the chosen values on every interaction up to the snapshot, registered in MLflow,
and gold.recommendations and gold.similar_products are rebuilt from it. A re-run on the same
input versions and settings finds the registered model and changes nothing.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import tempfile
import time
from datetime import date, timedelta
from typing import Any

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from retail_lake import champions
from retail_lake.lake import local_frame
from retail_lake.ops import MODEL_METRICS
from retail_lake.publish_rule import Better, Decision, decide, shortfalls
from retail_lake.recommend import features as feats
from retail_lake.recommend.abtest import ABTest, assign
from retail_lake.recommend.als import (
    BASELINES,
    Params,
    RecommendConfig,
    Split,
    als_top_n,
    decayed,
    evaluate_als,
    evaluate_baselines,
    fit,
    popularity_top_n,
    search,
    split_at,
)
from retail_lake.recommend.interactions import (
    CUSTOMER,
    CUSTOMER_IDX,
    PRODUCT,
    PRODUCT_IDX,
    interactions,
    new_indices,
    personal_lines,
    with_indices,
)
from retail_lake.recommend.model_tables import (
    AB_ASSIGNMENTS,
    CUSTOMER_INDEX,
    INTERACTIONS,
    PRODUCT_INDEX,
    RECOMMENDATIONS,
    SIMILAR_PRODUCTS,
)
from retail_lake.recommend.tables import CUSTOMER_FEATURES, PRODUCT_FEATURES
from retail_lake.recommend.topn import ITEM, RANK, SCORE, USER, top_n
from retail_lake.runner import JobContext, JobError, JobResult, Output
from retail_lake.sources.online_retail.tables import CUSTOMERS, PRODUCTS, RETURNS, TRANSACTIONS
from retail_lake.training.tracking import (
    metric_rows,
    quiet_registration,
    registered_with,
    setup_mlflow,
)

log = logging.getLogger(__name__)

MODEL_NAME = "product_recommender"


def _config(ctx: JobContext) -> RecommendConfig:
    """recommend.* with the snapshot: recommend.as_of, else the run date, else empty (the
    data's last day)."""
    conf = RecommendConfig.from_config(ctx.cfg["recommend"])
    if not conf.as_of and ctx.run_date is not None:
        conf = dataclasses.replace(conf, as_of=ctx.run_date.isoformat())
    return conf


def _versions(ctx: JobContext, tables: tuple[str, ...]) -> F.Column:
    return F.create_map(
        *[x for t in tables for x in (F.lit(t), F.lit(ctx.versions_read[t]).cast("long"))]
    )


# ----------------------------------------------------------------------------- features
def _index_output(
    ctx: JobContext, table: str, seen: DataFrame, key: str, idx: str, cached: list[DataFrame]
) -> tuple[list[Output], DataFrame]:
    """(the append of new keys, the whole index including them)."""
    current = (
        ctx.read(table).select(key, idx, "first_purchase_at") if ctx.lake.exists(table) else None
    )
    fresh = new_indices(current, seen, key, idx, "first_purchase_at").persist()
    cached.append(fresh)
    added = fresh.count()
    log.info("[%s] %s: %d new keys", ctx.run_id, table, added)
    whole = fresh if current is None else current.unionByName(fresh)
    return ([Output(table, fresh, mode="append")] if added else []), whole


def interaction_outputs(
    ctx: JobContext,
    sales: DataFrame,
    returns: DataFrame,
    as_of: date,
    conf: RecommendConfig,
    customers: DataFrame,
    products: DataFrame,
    cached: list[DataFrame] | None = None,
) -> list[Output]:
    """gold.interactions: incremental when it can be, else rebuilt.

    Incremental: the table holds every line (recommend.as_of empty), has at least
    recommend.incremental_min_pairs rows (below that a rebuild is cheaper: bench/RESULTS.md),
    and silver's Change Data Feed since the versions the table last recorded is readable. The
    (customer, product) pairs named by any changed sales or return line (before and after
    images) are recomputed from silver and merged; every other pair cannot have changed. A
    rebuild happens on the first run, with an explicit as_of, when the feed cannot be read,
    or when a pair lost all its lines (a merge cannot delete it).
    """
    versions = _versions(ctx, (TRANSACTIONS, RETURNS)).alias("input_versions")
    through = F.lit(as_of if conf.as_of else None).cast("date").alias("through_day")

    def shaped(rows: DataFrame) -> DataFrame:
        return with_indices(rows, customers, products).select(
            CUSTOMER,
            PRODUCT,
            CUSTOMER_IDX,
            PRODUCT_IDX,
            "invoices",
            "units",
            "units_returned",
            "first_purchase_at",
            "last_purchase_at",
            "preference",
            through,
            versions,
        )

    end = as_of if conf.as_of else None
    rebuild = Output(
        INTERACTIONS, shaped(interactions(sales, returns, None, end, conf.preference)), "overwrite"
    )
    if conf.as_of or not ctx.lake.exists(INTERACTIONS):
        return [rebuild]
    current = ctx.lake.read(INTERACTIONS)
    state = current.agg(
        F.count(F.lit(1)).alias("pairs"),
        F.max(F.col("through_day").isNotNull().cast("int")).alias("dated"),
        F.max(F.col("input_versions")[TRANSACTIONS]).alias(TRANSACTIONS),
        F.max(F.col("input_versions")[RETURNS]).alias(RETURNS),
    ).first()
    if state["dated"]:
        log.info("[%s] %s was built for an as_of day: rebuilt", ctx.run_id, INTERACTIONS)
        return [rebuild]
    if state["pairs"] < conf.incremental_min_pairs:
        log.info(
            "[%s] %s: %d pairs, below recommend.incremental_min_pairs (%d): a rebuild is cheaper",
            ctx.run_id,
            INTERACTIONS,
            state["pairs"],
            conf.incremental_min_pairs,
        )
        return [rebuild]
    changed = []
    for table in (TRANSACTIONS, RETURNS):
        since = state[table]
        if since is None:
            return [rebuild]
        if since >= ctx.versions_read[table]:
            continue
        try:
            feed = ctx.lake.changes(table, since + 1, ctx.versions_read[table])
        except Exception as exc:  # vacuumed history, feed not enabled: rebuild
            log.warning("[%s] %s change feed unreadable (%s): rebuilt", ctx.run_id, table, exc)
            return [rebuild]
        changed.append(
            feed.where(F.col(CUSTOMER).isNotNull() & F.col("is_product")).select(CUSTOMER, PRODUCT)
        )
    if not changed:
        log.info("[%s] %s: silver unchanged since the last build", ctx.run_id, INTERACTIONS)
        return []
    keys = changed[0]
    for more in changed[1:]:
        keys = keys.unionByName(more)
    keys = keys.distinct().persist()
    cached = [] if cached is None else cached
    cached.append(keys)
    n_keys = keys.count()
    recomputed = interactions(
        sales.join(keys, on=[CUSTOMER, PRODUCT], how="left_semi"),
        returns.join(keys, on=[CUSTOMER, PRODUCT], how="left_semi"),
        None,
        None,
        conf.preference,
    ).persist()
    cached.append(recomputed)
    # A pair the table holds whose lines all went (a return-only pair never had a row).
    vanished = (
        current.select(CUSTOMER, PRODUCT)
        .join(keys, on=[CUSTOMER, PRODUCT], how="left_semi")
        .join(recomputed.select(CUSTOMER, PRODUCT), on=[CUSTOMER, PRODUCT], how="left_anti")
        .count()
    )
    if vanished:
        log.info(
            "[%s] %s: %d changed pairs lost every line: rebuilt", ctx.run_id, INTERACTIONS, vanished
        )
        return [rebuild]
    log.info("[%s] %s: %d pairs recomputed from the change feed", ctx.run_id, INTERACTIONS, n_keys)
    return [Output(INTERACTIONS, shaped(recomputed), mode="merge")]


def feature_outputs(ctx: JobContext, cached: list[DataFrame]) -> list[Output]:
    """The Online Retail gold tables, or nothing when silver was never loaded. Frames it
    persists are added to `cached` (the runner unpersists them when the run ends)."""
    if not all(ctx.lake.exists(t) for t in (TRANSACTIONS, RETURNS, PRODUCTS)):
        log.warning(
            "[%s] features: %s, %s, %s, %s and %s skipped: %s, %s and %s are needed (land "
            "the Online Retail file, then run ingest and cleanse)",
            ctx.run_id,
            CUSTOMER_INDEX,
            PRODUCT_INDEX,
            INTERACTIONS,
            CUSTOMER_FEATURES,
            PRODUCT_FEATURES,
            TRANSACTIONS,
            RETURNS,
            PRODUCTS,
        )
        return []
    unit = "features online_retail"
    if ctx.unchanged(unit, (TRANSACTIONS, RETURNS, PRODUCTS)):
        return []
    conf = _config(ctx)
    sales, returns, products = ctx.read(TRANSACTIONS), ctx.read(RETURNS), ctx.read(PRODUCTS)
    try:
        as_of = feats.snapshot_day(sales, conf.as_of or None)
    except ValueError as exc:
        raise JobError(f"features: {exc}") from exc
    lines = personal_lines(sales, None, as_of)
    outputs, customers = _index_output(
        ctx,
        CUSTOMER_INDEX,
        lines.select(CUSTOMER, F.col("invoice_date").alias("first_purchase_at")),
        CUSTOMER,
        CUSTOMER_IDX,
        cached,
    )
    more, items = _index_output(
        ctx,
        PRODUCT_INDEX,
        lines.select(PRODUCT, F.col("invoice_date").alias("first_purchase_at")),
        PRODUCT,
        PRODUCT_IDX,
        cached,
    )
    outputs += more
    outputs += interaction_outputs(ctx, sales, returns, as_of, conf, customers, items, cached)
    versions = _versions(ctx, (TRANSACTIONS, RETURNS, PRODUCTS)).alias("input_versions")
    outputs.append(
        Output(
            CUSTOMER_FEATURES,
            feats.customer_features(sales, returns, as_of, conf.segments).withColumn(
                "input_versions", versions
            ),
        )
    )
    outputs.append(
        Output(
            PRODUCT_FEATURES,
            feats.product_features(sales, returns, products, as_of).withColumn(
                "input_versions", versions
            ),
        )
    )
    return [dataclasses.replace(o, unit=unit) for o in outputs]


# ----------------------------------------------------------------------------- recommend
def _fingerprint(versions: dict[str, int], section: dict[str, Any]) -> str:
    blob = json.dumps({"inputs": versions, "recommend": section}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _metric_table(
    search_results: dict[str, dict[str, float]],
    test: dict[str, float],
    baselines: dict[str, dict[str, float]],
    chosen: dict[str, float],
    k: int,
) -> dict[str, dict[str, float]]:
    """{split: {metric: value}} for ops.model_metrics; ranking metrics named <metric>@k."""

    def at_k(values: dict[str, float]) -> dict[str, float]:
        return {(m if m == "users" else f"{m}@{k}"): v for m, v in values.items()}

    out = {f"validation[{label}]": at_k(v) for label, v in search_results.items()}
    out["test"] = at_k(test)
    out.update({f"baseline:{name}": at_k(v) for name, v in baselines.items()})
    out["chosen"] = dict(chosen)
    return out


def _log_mlflow(
    ctx: JobContext,
    conf: RecommendConfig,
    fingerprint: str,
    table: dict[str, dict[str, float]],
    model=None,
) -> tuple[str, str | None]:
    """Logs the run (and registers `model` when given); (MLflow run id, version)."""
    import mlflow

    experiment = setup_mlflow(ctx.cfg)
    version = None
    with mlflow.start_run(experiment_id=experiment, run_name=ctx.run_id) as run:
        mlflow.log_params(
            {
                **{f"chosen_{k}": v for k, v in table["chosen"].items()},
                "max_iter": conf.max_iter,
                "preference": conf.preference,
                "test_days": conf.test_days,
                "validation_days": conf.validation_days,
                "repeats": conf.repeats,
                "k": conf.k,
                "search": ";".join(p.label() for p in conf.search),
            }
        )
        mlflow.set_tags(
            {
                "retail_lake.run_id": ctx.run_id,
                "retail_lake.fingerprint": fingerprint,
                "retail_lake.published": str(model is not None).lower(),
                **{f"input_version.{k}": v for k, v in ctx.versions_read.items()},
            }
        )
        mlflow.log_metrics(
            {
                f"{split}.{metric}".replace("[", "_")
                .replace("]", "")
                .replace(",", "_")
                .replace("=", "_")
                .replace(":", "_")
                .replace("@", "_at_"): value
                for split, values in table.items()
                for metric, value in values.items()
            }
        )
        if model is not None:
            import mlflow.spark

            with (
                quiet_registration(),
                tempfile.TemporaryDirectory(prefix="retail-lake-als-") as tmp,
            ):
                info = mlflow.spark.log_model(
                    model,
                    artifact_path="model",
                    registered_model_name=MODEL_NAME,
                    dfs_tmpdir=tmp,
                    pip_requirements=model_requirements(),
                )
            version = str(info.registered_model_version)
    return run.info.run_id, version


def model_requirements() -> list[str]:
    """What serving the ALS model needs (pyspark, mlflow, numpy), named rather than inferred:
    MLflow infers them by reloading the model in a child process with a Spark session of its
    own, 20-25 s per registration (bench/bench_model_logging.py)."""
    import mlflow.spark
    import numpy

    return sorted({*mlflow.spark.get_default_pip_requirements(), f"numpy=={numpy.__version__}"})


def _metrics_output(
    ctx: JobContext, version: str | None, mlflow_run: str, table: dict[str, dict[str, float]]
) -> Output:
    rows = metric_rows(ctx.run_id, MODEL_NAME, version, mlflow_run, table, ctx.versions_read)
    df = local_frame(ctx.spark, rows, ctx.registry[MODEL_METRICS].spark_schema())
    return Output(MODEL_METRICS, df, mode="append")


def _final_train(interaction_rows: DataFrame, conf: RecommendConfig, as_of: date) -> DataFrame:
    return interaction_rows.select(
        F.col(CUSTOMER_IDX).alias(USER),
        F.col(PRODUCT_IDX).alias(ITEM),
        decayed(conf, as_of + timedelta(days=1)).alias("preference"),
    )


def similar_products(item_factors: DataFrame, k: int, batch_size: int) -> DataFrame:
    """(user=product, item=similar product, score=cosine, rank) from ALS item factors."""
    norm = F.sqrt(F.aggregate("features", F.lit(0.0), lambda acc, x: acc + x * x))
    unit = item_factors.select(
        F.col("id"),
        F.when(norm > 0, F.transform("features", lambda x: x / norm))
        .otherwise(F.col("features"))
        .alias("features"),
    )
    selves = unit.select(F.col("id").alias(USER), F.col("id").alias(ITEM))
    return top_n(unit, unit, k, exclude=selves, batch_size=batch_size, user_col="id", item_col="id")


def run(ctx: JobContext) -> JobResult:
    """The recommend job: ALS evaluated against the baselines, then published.

    Reads silver.transactions, silver.returns, silver.customers, silver.products,
    gold.interactions, gold.customer_index and gold.product_index (run features first).
    Searches ALS's hyperparameters on a validation period, evaluates the chosen model on
    the test period against the popularity baselines and appends the numbers to
    ops.model_metrics (and MLflow). A model that beats every baseline on MAP@k and NDCG@k
    is refitted on every interaction up to the snapshot day (`recommend.as_of`, else the run
    date, else the data's last day), registered in MLflow as `product_recommender`, and
    gold.recommendations and gold.similar_products are rebuilt from it. A re-run on the
    same input versions and settings finds the registered model and changes nothing.

    Args:
        ctx: the run's context, given by the runner.

    Returns:
        The gold.recommendations, gold.similar_products and ops.model_metrics outputs,
        unwritten (none when the model was registered already).

    Raises:
        JobError: an input table is missing, a period has no users, or the model did not
            beat the baselines (its metrics are written all the same).

    Example:
        From the command line::

            retail-lake run recommend
            retail-lake run recommend --run-date 2011-12-09

        From Python:

        >>> from retail_lake.registry import JOBS, run_job
        >>> ctx, writes = run_job(spark, cfg, "recommend", JOBS["recommend"])
        >>> ctx.lake.read("gold.recommendations").where("rank <= 3").show()
    """
    conf = _config(ctx)
    needed = (
        TRANSACTIONS,
        RETURNS,
        CUSTOMERS,
        PRODUCTS,
        INTERACTIONS,
        CUSTOMER_INDEX,
        PRODUCT_INDEX,
    )
    missing = [t for t in needed if not ctx.lake.exists(t)]
    if missing:
        raise JobError(f"recommend: {', '.join(missing)} missing; run ingest, cleanse, features")
    sales, returns = ctx.read(TRANSACTIONS), ctx.read(RETURNS)
    customers, products = ctx.read(CUSTOMERS), ctx.read(PRODUCTS)
    inter = ctx.read(INTERACTIONS)
    cidx, pidx = ctx.read(CUSTOMER_INDEX), ctx.read(PRODUCT_INDEX)
    ab = ABTest.from_config(ctx.cfg["recommend"].get("ab_test") or {})
    shaping = {k: v for k, v in ctx.cfg["recommend"].items() if k != "ab_test"}
    served = {"salt": ab.salt, "shares": list(ab.shares)}  # not the evaluation's window
    fingerprint = _fingerprint(
        ctx.data_versions_read(), {**shaping, "as_of": conf.as_of, "ab_test": served}
    )
    existing = registered_with(ctx.cfg, MODEL_NAME, fingerprint)
    if existing:
        log.info(
            "[%s] %s version %s was trained on the same inputs and settings: nothing to do",
            ctx.run_id,
            MODEL_NAME,
            existing,
        )
        return JobResult()
    try:
        as_of = feats.snapshot_day(sales, conf.as_of or None)
    except ValueError as exc:
        raise JobError(f"recommend: {exc}") from exc
    test_start = as_of - timedelta(days=conf.test_days - 1)
    val_start = test_start - timedelta(days=conf.validation_days)
    started = time.monotonic()

    validation = split_at(
        sales, returns, cidx, pidx, val_start, test_start - timedelta(days=1), conf
    )
    _require_users(validation, "validation")
    validation.cache()
    chosen, results = search(validation, conf)
    validation.unpersist()
    log.info("[%s] chosen %s on the validation period", ctx.run_id, chosen.label())

    test = split_at(sales, returns, cidx, pidx, test_start, as_of, conf)
    _require_users(test, "test")
    test.cache()
    model = fit(test.train, chosen, conf)
    test_metrics = evaluate_als(model, test, conf)
    baselines = evaluate_baselines(test, conf)
    table = _metric_table(results, test_metrics, baselines, chosen.as_dict(), conf.k)
    _log_comparison(ctx, conf, test_metrics, baselines)
    lost = shortfalls(test_metrics, baselines, {"map": Better.HIGHER, "ndcg": Better.HIGHER})
    failures = [
        f"{s.baseline} {s.metric}: model {s.model:.4f} <= baseline {s.value:.4f}" for s in lost
    ]
    decision = decide(lost, conf.require_beat_baselines)
    if decision is Decision.REFUSE:
        test.unpersist()
        mlflow_run, _ = _log_mlflow(ctx, conf, fingerprint, table)
        out = _metrics_output(ctx, None, mlflow_run, table)
        ctx.lake.write(out.df, ctx.registry[MODEL_METRICS], ctx.run_id, mode="append")
        raise JobError(
            f"recommend: the ALS model ({chosen.label()}) does not beat the baselines on the "
            f"test period {test_start}..{as_of}: " + "; ".join(failures) + ". Not published; "
            f"the numbers are in {MODEL_METRICS} (run {ctx.run_id}) and MLflow."
        )
    if decision is Decision.PUBLISH_WITH_WARNING:
        log.warning("[%s] publishing a model that loses to a baseline: %s", ctx.run_id, failures)

    verdict, published = _challenge(ctx, conf, chosen, test_metrics, test, baselines, table)
    test.unpersist()
    final = fit(_final_train(inter, conf, as_of), published, conf)
    mlflow_run, version = _log_mlflow(ctx, conf, fingerprint, table, final)
    champions.settle(ctx, MODEL_NAME, version, verdict, serve=True)
    log.info(
        "[%s] registered %s version %s (evaluation %.0fs)",
        ctx.run_id,
        MODEL_NAME,
        version,
        time.monotonic() - started,
    )
    lineage = {
        "model_name": F.lit(MODEL_NAME),
        "model_version": F.lit(version),
        "input_versions": _versions(ctx, needed),
    }
    recs, assigned = recommendations(
        ctx, conf, final, inter, customers, cidx, pidx, products, as_of, ab
    )
    similar = _named_similar(
        similar_products(final.itemFactors, conf.similar_k, conf.batch_size), pidx, products
    )
    return JobResult(
        outputs=[
            Output(RECOMMENDATIONS, recs.withColumns(lineage)),
            Output(
                AB_ASSIGNMENTS,
                assigned.withColumns(
                    {"salt": F.lit(ab.salt), "as_of_date": F.lit(as_of), **lineage}
                ),
            ),
            Output(SIMILAR_PRODUCTS, similar.withColumns(lineage)),
            _metrics_output(ctx, version, mlflow_run, table),
        ],
        rows_read={INTERACTIONS: inter.count()},
        cached=[assigned],
    )


def _champion_params(ctx: JobContext, current: str) -> Params | None:
    """The configuration the champion version was fitted with (its MLflow run's chosen_*
    parameters); None when its run does not record them."""
    params = champions.run_params(ctx.cfg, MODEL_NAME, current)
    try:
        return Params(
            int(params["chosen_rank"]),
            float(params["chosen_reg_param"]),
            float(params["chosen_alpha"]),
        )
    except (KeyError, ValueError):
        return None


def _challenge(
    ctx: JobContext,
    conf: RecommendConfig,
    chosen: Params,
    test_metrics: dict[str, float],
    test: Split,
    baselines: dict[str, dict[str, float]],
    table: dict[str, dict[str, float]],
) -> tuple[champions.Verdict, Params]:
    """Champion and challenger for a model refitted on every snapshot: the champion is a
    configuration. The search's choice (the challenger) and the champion's configuration
    are fitted on the same training lines and scored on the same test period; the
    challenger is published when it beats the champion's MAP@k by `models.promotion_margin`
    (or there is no champion, or it is the champion's configuration again); otherwise the
    champion's configuration is refitted and published (it must beat the baselines too).
    Returns the verdict and the configuration to publish; `table` gains the champion's
    metrics (`champion:<version>`), and when the champion's configuration wins its numbers
    become `test` and `chosen` (the challenger's go to `challenger`)."""
    k = conf.k
    found: dict[str, Params] = {}  # the champion's configuration, once read

    def evaluate(current: str) -> tuple[float | None, str, dict[str, float]]:
        theirs = _champion_params(ctx, current)
        if theirs is None:
            return None, "its run records no configuration", {}
        found["params"] = theirs
        if theirs == chosen:
            return test_metrics["map"], "", {}
        metrics = evaluate_als(fit(test.train, theirs, conf), test, conf)
        return (
            metrics["map"],
            "",
            {(m if m == "users" else f"{m}@{k}"): v for m, v in metrics.items()},
        )

    verdict = champions.challenge(
        ctx, MODEL_NAME, "map", Better.HIGHER, test_metrics["map"], evaluate, table
    )
    theirs = found.get("params")
    if theirs == chosen:
        # The champion's configuration again: the same model refitted on the newer lines.
        verdict = dataclasses.replace(
            verdict,
            promote=True,
            reason=f"the champion {verdict.champion}'s configuration ({chosen.label()}) "
            "again, refitted on the newer data",
        )
    if verdict.promote or theirs is None:
        return verdict, chosen
    champion_metrics = table[f"champion:{verdict.champion}"]
    plain = {m.removesuffix(f"@{k}"): v for m, v in champion_metrics.items()}
    lost = shortfalls(plain, baselines, {"map": Better.HIGHER, "ndcg": Better.HIGHER})
    if lost:
        verdict = dataclasses.replace(
            verdict,
            promote=True,
            reason=verdict.reason + f"; but the champion's configuration ({theirs.label()}) "
            f"no longer beats {lost[0].baseline}: the challenger is published",
        )
        return verdict, chosen
    table["challenger"] = {**table["test"], **chosen.as_dict()}
    table["test"] = champion_metrics
    table["chosen"] = theirs.as_dict()
    verdict = dataclasses.replace(
        verdict,
        reason=verdict.reason + f"; the champion's configuration ({theirs.label()}) is "
        "refitted and published",
    )
    log.info(
        "[%s] the champion's configuration (%s) is refitted and published; the search's "
        "choice (%s) is recorded as the challenger",
        ctx.run_id,
        theirs.label(),
        chosen.label(),
    )
    return verdict, theirs


def _require_users(split: Split, what: str) -> None:
    n = split.users.count()
    if n == 0:
        raise JobError(
            f"recommend: no customer to evaluate in the {what} period {split.start}..{split.end}:"
            " none bought a new product then after buying before it (more history is needed, "
            "or shorter recommend.split periods)"
        )


def _log_comparison(
    ctx: JobContext,
    conf: RecommendConfig,
    model: dict[str, float],
    baselines: dict[str, dict[str, float]],
) -> None:
    k = conf.k
    log.info(
        "[%s] test, %d customers: ALS MAP@%d %.4f NDCG@%d %.4f | %s",
        ctx.run_id,
        int(model["users"]),
        k,
        model["map"],
        k,
        model["ndcg"],
        " | ".join(f"{n} {baselines[n]['map']:.4f} {baselines[n]['ndcg']:.4f}" for n in BASELINES),
    )


def recommendations(
    ctx: JobContext,
    conf: RecommendConfig,
    model,
    inter: DataFrame,
    customers: DataFrame,
    cidx: DataFrame,
    pidx: DataFrame,
    products: DataFrame,
    as_of: date,
    ab: ABTest,
) -> tuple[DataFrame, DataFrame]:
    """gold.recommendations rows and gold.recommendation_assignments' (customer, bucket,
    variant): ALS for the customers in the interactions who are in the `als` variant, the
    popularity list (their purchases masked) for those in the `popularity` variant, and the
    popularity list for the other customers seen by the snapshot, whatever their variant."""
    end = F.lit(as_of + timedelta(days=1)).cast("timestamp")
    seen = (
        customers.where(F.col("first_seen_at") < end)
        .select(CUSTOMER)
        .unionByName(inter.select(CUSTOMER))
        .distinct()
    )
    assigned = assign(seen, ab).persist()
    users = (
        inter.select(CUSTOMER, F.col(CUSTOMER_IDX).alias(USER))
        .distinct()
        .join(assigned.select(CUSTOMER, "variant"), on=CUSTOMER, how="inner")
    )
    known = users.where(F.col("variant") == "als").select(USER)
    control = users.where(F.col("variant") == "popularity").select(USER)
    exclude = (
        inter.select(F.col(CUSTOMER_IDX).alias(USER), F.col(PRODUCT_IDX).alias(ITEM))
        if conf.exclude_purchased
        else None
    )
    als = als_top_n(model, known, conf.top_n, exclude, conf.batch_size).withColumn(
        "source", F.lit("als")
    )
    others = seen.join(inter.select(CUSTOMER), on=CUSTOMER, how="left_anti")
    # Customers outside the index get negative stand-in ids (only for the top-N call).
    stand_in = others.select(
        CUSTOMER,
        (-F.row_number().over(Window.orderBy(CUSTOMER))).cast("int").alias(USER),
    ).persist()
    popularity = inter.groupBy(F.col(PRODUCT_IDX).alias(ITEM)).agg(
        F.count(F.lit(1)).cast("double").alias("score")
    )
    fallback = popularity_top_n(
        popularity, stand_in.select(USER), conf.top_n, None, conf.batch_size
    )
    fallback = fallback.join(stand_in, on=USER, how="inner").withColumn(
        "source", F.lit("popularity")
    )
    if ab.active:
        # The control: the same popularity list, each customer's own purchases masked.
        als = als.unionByName(
            popularity_top_n(popularity, control, conf.top_n, exclude, conf.batch_size)
            .withColumn("source", F.lit("popularity"))
            .select(*als.columns)
        )
    named_als = als.join(
        cidx.select(F.col(CUSTOMER_IDX).alias(USER), CUSTOMER), on=USER, how="inner"
    )
    both = named_als.unionByName(fallback.select(*named_als.columns))
    recs = (
        both.join(pidx.select(F.col(PRODUCT_IDX).alias(ITEM), PRODUCT), on=ITEM, how="inner")
        .join(products.select(PRODUCT, "description"), on=PRODUCT, how="left")
        .join(assigned.select(CUSTOMER, "variant"), on=CUSTOMER, how="inner")
        .select(
            CUSTOMER,
            F.col(RANK).alias("rank"),
            PRODUCT,
            "description",
            F.col(SCORE).cast("double").alias("score"),
            "source",
            "variant",
        )
    )
    return recs, assigned


def _named_similar(similar: DataFrame, pidx: DataFrame, products: DataFrame) -> DataFrame:
    names = pidx.select(PRODUCT_IDX, PRODUCT).join(
        products.select(PRODUCT, "description"), on=PRODUCT, how="left"
    )
    left = names.select(F.col(PRODUCT_IDX).alias(USER), PRODUCT)
    right = names.select(
        F.col(PRODUCT_IDX).alias(ITEM),
        F.col(PRODUCT).alias("similar_stock_code"),
        F.col("description").alias("similar_description"),
    )
    return (
        similar.join(left, on=USER, how="inner")
        .join(right, on=ITEM, how="inner")
        .select(
            PRODUCT,
            F.col(RANK).alias("rank"),
            "similar_stock_code",
            "similar_description",
            F.col(SCORE).cast("double").alias("similarity"),
        )
    )

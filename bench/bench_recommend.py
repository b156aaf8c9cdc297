"""ALS recommendations (issue 4): Spark MLlib against the `implicit` library, ALS training time
at 10x the interactions, and the blocked top-N against `ALSModel.recommendForAllUsers`.

    python bench/bench_recommend.py --root /tmp/real_lake --part implicit
    python bench/bench_recommend.py --root /tmp/real_lake --part scale --scale 10
    python bench/bench_recommend.py --root /tmp/real_lake --part topn --user-scale 100
    python bench/bench_recommend.py --root /tmp/real_lake --part all --json /tmp/rec.json

Every part starts from the test split of the `recommend` job on a lake with silver Online
Retail and gold.customer_index / gold.product_index (the indices are numbered in memory with
`new_indices`, as the job does, when the gold tables are missing): test_start = the last day
- (test_days - 1), `split_at` with `recommend` from conf/base.yaml, ALS at `--rank`,
`--reg-param`, `--alpha` and the configured max_iter and seed.

`implicit` is not a project dependency. For parts `implicit` and `scale` install it into the
venv first (`pip install implicit`: the PyPI wheels are the CPU build); without it those
comparisons are skipped and the Spark side still runs.

(implicit) Both libraries on the same (user, item, preference) matrix. implicit (>= 0.5)
    takes the confidence itself: its solver adds (C - 1) y y^T to Y^T Y and C y to the
    right-hand side for a stored value C (times its `alpha`), i.e. C *is* Hu et al.'s
    c_ui and nothing is added to it. Spark's implicit ALS uses c_ui = 1 + alpha * r. So
    implicit is given C = 1 + alpha * r with its own alpha = 1 ("equal"); the row fed
    alpha * r (c_ui = alpha * r) shows what the common recipe changes. Regularisation
    differs too: Spark adds reg * n_u I for a user with n_u ratings (and reg * n_i for an
    item: "ALS-WR"), implicit adds reg * I whatever the count, so equal `reg` is not equal
    regularisation. implicit is also run at a sweep of regs, the best picked by MAP@k on the
    job's validation split (never the test period), then reported on the test split. Both
    libraries' lists (top-k, training items excluded) are scored by the same
    `ranking_metrics` on the same relevant items. Times: implicit's `fit` alone (2 threads,
    BLAS 1 thread); Spark's `fit` (cached input: the whole `ALS.fit` with its fixed costs),
    and Spark's fixed cost estimated from a 1-iteration fit: fixed = t1 - (t10 - t1) / 9.
(scale) `--scale` x the real training interactions, generated: copy c of every customer gets
    the id user + c * (max user + 1) and the same basket, except that each of its
    interactions has its product replaced, with probability `--jitter`, by a product drawn
    from the real interactions (so popularity is kept); a repeated (user, item) pair keeps
    its first preference. Spark's fit at `--blocks` user/item block counts and at 1 and
    max_iter iterations, with the input in shuffle-partitions and in as many partitions as
    cores; implicit's fit on the same matrix.
(topn) `top_n` (blocked, `mapInPandas`) against `recommendForAllUsers` on the factors of a
    Spark model fitted on the real split: all its users, then `--user-scale` x as many users
    made by sampling real user factors (with replacement) plus Gaussian noise of `--noise`
    times each component's standard deviation; the same item factors. Each run is forced to
    completion by a write to the `noop` sink. At the real size the lists are compared: the
    same items per user, where the differing items tie (to float32 precision) with the
    n-th score. `top_n` without exclusions is the like-for-like case (recommendForAllUsers
    cannot exclude); with exclusions (training items; a generated user excludes those of
    the real user it was sampled from) it is timed too.

Prints progress, then markdown tables; `--json` also writes the numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import statistics
import sys
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pyspark.ml.recommendation import ALSModel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from scipy.sparse import csr_matrix

from retail_lake.config import load_config
from retail_lake.lake import Lake
from retail_lake.recommend.als import (
    Params,
    RecommendConfig,
    Split,
    evaluate,
    evaluate_als,
    fit,
    split_at,
)
from retail_lake.recommend.features import snapshot_day
from retail_lake.recommend.interactions import (
    CUSTOMER,
    CUSTOMER_IDX,
    PRODUCT,
    PRODUCT_IDX,
    interactions,
    new_indices,
)
from retail_lake.recommend.topn import ITEM, RANK, USER, top_n
from retail_lake.session import build_session

INSTALL_IMPLICIT = "~/.cache/retail-lake/venv/bin/pip install implicit"


# ----------------------------------------------------------------------------- inputs
def load_split(spark: SparkSession, root: str, conf: RecommendConfig, test: bool) -> Split:
    """The recommend job's test split (or its validation split), cached and counted."""
    lake = Lake(spark, root)
    sales, returns = lake.read("silver.transactions"), lake.read("silver.returns")
    as_of = snapshot_day(sales, conf.as_of or None)
    if lake.exists("gold.customer_index") and lake.exists("gold.product_index"):
        cidx, pidx = lake.read("gold.customer_index"), lake.read("gold.product_index")
    else:
        print("  gold indices missing: numbered in memory with new_indices")
        seen = interactions(sales, returns, None, as_of, conf.preference)
        cidx = new_indices(None, seen, CUSTOMER, CUSTOMER_IDX, "first_purchase_at").cache()
        pidx = new_indices(None, seen, PRODUCT, PRODUCT_IDX, "first_purchase_at").cache()
    test_start = as_of - timedelta(days=conf.test_days - 1)
    if test:
        start, end = test_start, as_of
    else:
        start, end = test_start - timedelta(days=conf.validation_days), test_start - timedelta(1)
    split = split_at(sales, returns, cidx, pidx, start, end, conf).cache()
    print(
        f"  split {start}..{end}: {split.train.count():,} training pairs, "
        f"{split.users.count():,} evaluated users, {split.relevant.count():,} relevant pairs, "
        f"{split.catalogue:,} products"
    )
    return split


def train_frame(split: Split) -> pd.DataFrame:
    """(user, item, preference) of the training interactions, in pandas."""
    return split.train.select(USER, ITEM, "preference").toPandas()


def replicate(train: pd.DataFrame, scale: int, jitter: float, seed: int) -> pd.DataFrame:
    """`scale` copies of every customer (see the module docstring, part scale)."""
    rng = np.random.default_rng(seed)
    users = train[USER].to_numpy(np.int64)
    items = train[ITEM].to_numpy(np.int64)
    prefs = train["preference"].to_numpy(np.float64)
    step = int(users.max()) + 1
    parts_u, parts_i, parts_p = [users], [items], [prefs]
    for copy in range(1, scale):
        moved = rng.random(len(items)) < jitter
        new_items = items.copy()
        new_items[moved] = items[rng.integers(0, len(items), int(moved.sum()))]
        parts_u.append(users + copy * step)
        parts_i.append(new_items)
        parts_p.append(prefs)
    u, i, p = (np.concatenate(x) for x in (parts_u, parts_i, parts_p))
    _, first = np.unique(u * (int(items.max()) + 1) + i, return_index=True)
    first.sort()
    return pd.DataFrame(
        {USER: u[first].astype(np.int32), ITEM: i[first].astype(np.int32), "preference": p[first]}
    )


def to_spark(spark: SparkSession, train: pd.DataFrame, partitions: int) -> DataFrame:
    df = spark.createDataFrame(train, "user int, item int, preference double")
    df = df.repartition(partitions).cache()
    df.count()
    return df


# ----------------------------------------------------------------------------- implicit
def import_implicit() -> Any | None:
    try:
        from implicit.cpu.als import AlternatingLeastSquares
    except ImportError:
        return None
    return AlternatingLeastSquares


class ImplicitMatrix:
    """The training pairs as implicit's user x item CSR, on dense (compact) indices."""

    def __init__(self, train: pd.DataFrame) -> None:
        self.users, rows = np.unique(train[USER].to_numpy(), return_inverse=True)
        self.items, cols = np.unique(train[ITEM].to_numpy(), return_inverse=True)
        self.rows, self.cols = rows, cols
        self.preference = train["preference"].to_numpy(np.float32)
        self.shape = (len(self.users), len(self.items))

    def confidence(self, alpha: float, equal: bool) -> csr_matrix:
        """1 + alpha * r (Spark's c_ui, `equal`) or alpha * r."""
        data = (1.0 if equal else 0.0) + alpha * self.preference
        return csr_matrix((data.astype(np.float32), (self.rows, self.cols)), shape=self.shape)


def implicit_fit(
    als_class: Any, matrix: csr_matrix, factors: int, reg: float, iters: int, seed: int, cg: bool
) -> tuple[Any, float]:
    """(model, seconds of `fit` alone) with 2 threads and single-threaded BLAS."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):  # implicit warns otherwise
        model = als_class(
            factors=factors,
            regularization=reg,
            alpha=1.0,
            iterations=iters,
            num_threads=2,
            random_state=seed,
            use_cg=cg,
        )
        t0 = time.perf_counter()
        model.fit(matrix, show_progress=False)
        return model, time.perf_counter() - t0


def implicit_lists(
    spark: SparkSession, model: Any, im: ImplicitMatrix, matrix: csr_matrix, users: list, k: int
) -> DataFrame:
    """(user, item, rank) top-k of `users`, training items filtered, as a Spark DataFrame."""
    rows = np.searchsorted(im.users, users)
    ids, _ = model.recommend(rows, matrix[rows], N=k, filter_already_liked_items=True)
    keep = ids >= 0
    ranks = np.broadcast_to(np.arange(1, ids.shape[1] + 1), ids.shape)
    pdf = pd.DataFrame(
        {
            USER: np.repeat(np.asarray(users), keep.sum(axis=1)).astype(np.int32),
            ITEM: im.items[ids[keep]].astype(np.int32),
            RANK: ranks[keep].astype(np.int32),
        }
    )
    return spark.createDataFrame(pdf, "user int, item int, rank int")


# ----------------------------------------------------------------------------- spark
def spark_fit(train: DataFrame, params: Params, conf: RecommendConfig, blocks: int | None = None):
    t0 = time.perf_counter()
    model = fit(train, params, conf, blocks)
    return model, time.perf_counter() - t0


def warm_up(train: DataFrame, params: Params, conf: RecommendConfig) -> None:
    """One untimed 1-iteration fit: JIT, codegen and the first jobs' start-up."""
    fit(train, params, dataclasses.replace(conf, max_iter=1))


def noop(df: DataFrame) -> None:
    df.write.format("noop").mode("overwrite").save()


def timed(spark: SparkSession, run: Callable[[], None], timeout: float | None) -> float | None:
    """Seconds of `run`; None when its Spark jobs were cancelled at `timeout`."""
    sc = spark.sparkContext
    group = f"bench-{time.monotonic_ns()}"
    sc.setJobGroup(group, group, interruptOnCancel=True)
    timer = threading.Timer(timeout, sc.cancelJobGroup, args=(group,)) if timeout else None
    if timer:
        timer.start()
    t0 = time.perf_counter()
    try:
        run()
        return time.perf_counter() - t0
    except Exception as exc:
        if timer and not timer.is_alive():
            print(f"  cancelled after {time.perf_counter() - t0:.0f}s ({type(exc).__name__})")
            return None
        raise
    finally:
        if timer:
            timer.cancel()
        sc.setLocalProperty("spark.jobGroup.id", None)


def fixed_cost(t1: float, tn: float, iters: int) -> dict[str, float]:
    per_iter = (tn - t1) / (iters - 1)
    return {"per_iteration_s": per_iter, "fixed_s": t1 - per_iter}


def median(xs: list[float]) -> float:
    return statistics.median(xs)


# ----------------------------------------------------------------------------- parts
def part_implicit(spark, args, conf: RecommendConfig, params: Params) -> dict:
    out: dict[str, Any] = {"params": params.as_dict(), "max_iter": conf.max_iter}
    print("(implicit) test split")
    test = load_split(spark, args.root, conf, test=True)
    train = train_frame(test)
    per_user = train.groupby(USER).size()
    per_item = train.groupby(ITEM).size()
    out["ratings_per_user"] = {"mean": per_user.mean(), "median": float(per_user.median())}
    out["ratings_per_item"] = {"mean": per_item.mean(), "median": float(per_item.median())}

    rows = []
    spark_times = []
    model = None
    warm_up(test.train, params, conf)
    for _ in range(args.repeats):
        model, secs = spark_fit(test.train, params, conf)
        spark_times.append(secs)
        print(f"  spark fit {secs:.1f}s")
    _, t1 = spark_fit(test.train, params, dataclasses.replace(conf, max_iter=1))
    print(f"  spark fit, 1 iteration {t1:.1f}s")
    t0 = time.perf_counter()
    metrics = evaluate_als(model, test, conf)
    eval_s = time.perf_counter() - t0
    spark_row = {"library": "Spark MLlib", "reg": params.reg_param, "fit_s": median(spark_times)}
    spark_row |= {"fit_runs_s": spark_times, "fit_1_iter_s": t1, "eval_s": eval_s}
    spark_row |= fixed_cost(t1, median(spark_times), conf.max_iter) | metrics
    rows.append(spark_row)
    print(f"  spark MAP@{conf.k} {metrics['map']:.4f} NDCG@{conf.k} {metrics['ndcg']:.4f}")
    out["spark"] = spark_row

    als_class = import_implicit()
    if als_class is None:
        print(f"  implicit is not installed: skipped ({INSTALL_IMPLICIT})")
        out["implicit"] = None
        return out
    import implicit

    out["implicit_version"] = implicit.__version__
    t0 = time.perf_counter()
    im = ImplicitMatrix(train_frame(test))  # collected from Spark and indexed
    build_s = time.perf_counter() - t0
    users = [r[0] for r in test.users.collect()]

    def run(reg: float, equal: bool, cg: bool, split: Split, mat: ImplicitMatrix, users_: list):
        matrix = mat.confidence(params.alpha, equal)
        times = []
        for _ in range(args.repeats):
            model, secs = implicit_fit(
                als_class, matrix, params.rank, reg, conf.max_iter, conf.seed, cg
            )
            times.append(secs)
        recs = implicit_lists(spark, model, mat, matrix, users_, conf.k)
        return {"fit_s": median(times), "fit_runs_s": times} | evaluate(recs, split, conf.k)

    variants = [
        ("c = 1 + alpha r, CG (implicit's default solver)", params.reg_param, True, True),
        ("c = 1 + alpha r, Cholesky (Spark's solver)", params.reg_param, True, False),
        ("c = alpha r (data alpha * r), CG", params.reg_param, False, True),
    ]
    for label, reg, equal, cg in variants:
        row = {"library": f"implicit {label}", "reg": reg} | run(reg, equal, cg, test, im, users)
        row["csr_build_s"] = build_s
        rows.append(row)
        print(f"  {row['library']}: fit {row['fit_s']:.2f}s MAP {row['map']:.4f}")

    # ALS-WR vs plain reg: a sweep on the validation split, the best reported on test.
    regs = sorted(set(args.implicit_regs) | {round(params.reg_param * per_user.mean(), 2)})
    print(f"(implicit) reg sweep on the validation split: {regs}")
    val = load_split(spark, args.root, conf, test=False)
    vim = ImplicitMatrix(train_frame(val))
    vusers = [r[0] for r in val.users.collect()]
    sweep = []
    vmodel, _ = spark_fit(val.train, params, conf)
    spark_val = evaluate_als(vmodel, val, conf)
    sweep.append({"library": "Spark MLlib", "reg": params.reg_param} | spark_val)
    for reg in regs:
        sweep.append({"library": "implicit", "reg": reg} | run(reg, True, True, val, vim, vusers))
        print(f"  reg {reg:g}: MAP {sweep[-1]['map']:.4f} NDCG {sweep[-1]['ndcg']:.4f}")
    val.unpersist()
    tried = [r for r in sweep if r["library"] == "implicit"]
    best = max(tried, key=lambda r: (r["map"], r["ndcg"]))
    row = {"library": "implicit c = 1 + alpha r, CG, reg chosen on validation", "reg": best["reg"]}
    row |= run(best["reg"], True, True, test, im, users)
    rows.append(row)
    print(f"  chosen reg {best['reg']:g}: test MAP {row['map']:.4f}")
    out |= {"rows": rows, "validation_sweep": sweep}
    test.unpersist()
    return out


def blas_in_use(spark: SparkSession) -> str:
    """The BLAS Spark ML's ALS calls (`BLAS.nativeBLAS`): JNIBLAS when the JVM found a
    system libblas.so.3 (e.g. OpenBLAS), else a Java fallback (VectorBLAS / JavaBLAS)."""
    netlib = spark.sparkContext._jvm.dev.ludovic.netlib.blas
    try:
        return str(netlib.NativeBLAS.getInstance().getClass().getSimpleName())
    except Exception:  # no native library: the fallback Spark uses instead
        try:
            return str(netlib.BLAS.getInstance().getClass().getSimpleName())
        except Exception as exc:  # a label for the report, not a failure
            return f"unknown ({type(exc).__name__})"


def part_scale(spark, args, conf: RecommendConfig, params: Params) -> dict:
    print("(scale) test split")
    test = load_split(spark, args.root, conf, test=True)
    real = train_frame(test)
    warm_up(test.train, params, conf)
    test.unpersist()
    cores = spark.sparkContext.defaultParallelism
    shuffle = int(spark.conf.get("spark.sql.shuffle.partitions"))
    out: dict[str, Any] = {"cores": cores, "shuffle_partitions": shuffle, "sizes": []}
    als_class = import_implicit()
    if als_class is None:
        print(f"  implicit is not installed: its side skipped ({INSTALL_IMPLICIT})")
    for scale in args.scale:
        gen = real if scale == 1 else replicate(real, scale, args.jitter, args.seed)
        print(f"(scale) {scale}x: {len(gen):,} interactions, {gen[USER].nunique():,} users")
        size: dict[str, Any] = {"scale": scale, "interactions": len(gen), "spark": []}
        size["users"] = int(gen[USER].nunique())
        size["items"] = int(gen[ITEM].nunique())
        if als_class is not None:
            im = ImplicitMatrix(gen)
            matrix = im.confidence(params.alpha, True)
            times = [
                implicit_fit(
                    als_class, matrix, params.rank, params.reg_param, conf.max_iter, conf.seed, True
                )[1]
                for _ in range(args.repeats)
            ]
            size["implicit_fit_s"] = median(times)
            size["implicit_runs_s"] = times
            print(f"  implicit fit {median(times):.1f}s {times}")
            # The same model with Spark's solver (exact normal equations, Cholesky): what
            # separates the libraries' algorithms from Spark's own costs.
            exact = [
                implicit_fit(
                    als_class,
                    matrix,
                    params.rank,
                    params.reg_param,
                    conf.max_iter,
                    conf.seed,
                    False,
                )[1]
                for _ in range(args.repeats)
            ]
            size["implicit_cholesky_fit_s"] = median(exact)
            print(f"  implicit fit, Cholesky {median(exact):.1f}s {exact}")
        for parts in (shuffle, cores):
            df = to_spark(spark, gen, parts)
            for blocks in args.blocks:
                row: dict[str, Any] = {"input_partitions": parts, "blocks": blocks}
                for iters in (1, conf.max_iter):
                    c = dataclasses.replace(conf, max_iter=iters)
                    row[f"fit_{iters}_iter_s"] = spark_fit(df, params, c, blocks)[1]
                row["fit_s"] = row[f"fit_{conf.max_iter}_iter_s"]
                row |= fixed_cost(row["fit_1_iter_s"], row["fit_s"], conf.max_iter)
                size["spark"].append(row)
                print(f"  spark {row}")
            df.unpersist()
            if not args.partition_variants:
                break
        out["sizes"].append(size)
    return out


def als_model(spark: SparkSession, users: DataFrame, items: DataFrame, rank: int) -> ALSModel:
    """An ALSModel over given factors (id int, features array<float>), for recommendForAll."""
    jvm = spark.sparkContext._jvm
    java = jvm.org.apache.spark.ml.recommendation.ALSModel(
        "bench_als", rank, users._jdf, items._jdf
    )
    return ALSModel(java.setUserCol(USER).setItemCol(ITEM))


def agreement(
    mllib: pd.DataFrame, ours: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame, n: int
) -> dict[str, int]:
    """Per user: the same items, or only items tied (float32) with the n-th best score."""
    item_ids = items["id"].to_numpy()
    item_matrix = np.stack(items["features"].to_numpy()).astype(np.float64)
    position = pd.Index(item_ids)
    vectors = dict(zip(users["id"], users["features"], strict=True))
    a = mllib.groupby(USER)[ITEM].apply(set).to_dict()
    b = ours.groupby(USER)[ITEM].apply(set).to_dict()
    same = tied = other = 0
    for user in set(a) | set(b):
        left, right = a.get(user, set()), b.get(user, set())
        if left == right:
            same += 1
            continue
        scores = item_matrix @ np.asarray(vectors[user], dtype=np.float64)
        nth = np.sort(scores)[-n]
        diff = position.get_indexer(list(left ^ right))
        tol = 1e-5 * max(abs(nth), 1e-3)
        if len(left) == len(right) == n and np.all(np.abs(scores[diff] - nth) <= tol):
            tied += 1
        else:
            other += 1
    return {
        "users": same + tied + other,
        "same_items": same,
        "differ_at_ties": tied,
        "differ": other,
    }


def part_topn(spark, args, conf: RecommendConfig, params: Params) -> dict:
    print("(topn) test split and the model")
    test = load_split(spark, args.root, conf, test=True)
    model, _ = spark_fit(test.train, params, conf)
    uf = model.userFactors.cache()
    itf = model.itemFactors.cache()
    n_users, n_items = uf.count(), itf.count()
    n = args.n
    exclude = test.train.select(USER, ITEM)
    out: dict[str, Any] = {"n": n, "items": n_items, "rank": params.rank, "sizes": []}
    # warm-up (Python workers, Arrow, codegen): untimed
    noop(top_n(uf.limit(200), itf, n, user_col="id", item_col="id"))
    noop(model.recommendForUserSubset(test.users.limit(200), n))

    def measure(label: str, users: DataFrame, m: ALSModel, excl: DataFrame | None) -> dict:
        row: dict[str, Any] = {"size": label, "users": users.count()}
        runs = {
            "topn_s": lambda: noop(
                top_n(users, itf, n, user_col="id", item_col="id", batch_size=conf.batch_size)
            ),
            "topn_excl_s": lambda: noop(
                top_n(
                    users,
                    itf,
                    n,
                    exclude=excl,
                    user_col="id",
                    item_col="id",
                    batch_size=conf.batch_size,
                )
            ),
            "mllib_s": lambda: noop(m.recommendForAllUsers(n)),
        }
        for key, run in runs.items():
            times = [timed(spark, run, args.timeout) for _ in range(args.repeats)]
            row[key] = None if None in times else median(times)
            row[key.replace("_s", "_runs_s")] = times
            print(f"  {label} {key}: {times}")
            if None in times:
                break
        if row.get("mllib_s") and row.get("topn_s"):
            row["ratio"] = row["mllib_s"] / row["topn_s"]
        return row

    real = measure("real", uf, model, exclude)
    mllib = (
        model.recommendForAllUsers(n)
        .select(F.col("user").alias(USER), F.explode("recommendations").alias("r"))
        .select(USER, F.col("r.item").alias(ITEM))
        .toPandas()
    )
    ours = top_n(uf, itf, n, user_col="id", item_col="id").toPandas()
    real["agreement"] = agreement(mllib, ours, uf.toPandas(), itf.toPandas(), n)
    print(f"  agreement {real['agreement']}")
    out["sizes"].append(real)

    if args.user_scale > 1:
        base = uf.toPandas()
        matrix = np.stack(base["features"].to_numpy())
        rng = np.random.default_rng(args.seed)
        total = n_users * args.user_scale
        source = rng.integers(0, len(base), total)
        noise = rng.normal(0.0, 1.0, (total, matrix.shape[1])) * (args.noise * matrix.std(axis=0))
        made = (matrix[source] + noise).astype(np.float32)
        parts = int(spark.conf.get("spark.sql.shuffle.partitions"))
        gen = (
            spark.createDataFrame(
                pd.DataFrame({"id": np.arange(total, dtype=np.int32), "features": list(made)}),
                "id int, features array<float>",
            )
            .repartition(parts)
            .cache()
        )
        sources = spark.createDataFrame(
            pd.DataFrame(
                {
                    USER: np.arange(total, dtype=np.int32),
                    "src": base["id"].to_numpy()[source].astype(np.int32),
                }
            ),
            "user int, src int",
        )
        gen_exclude = (
            sources.join(exclude.withColumnRenamed(USER, "src"), on="src", how="inner")
            .select(USER, ITEM)
            .cache()
        )
        print(
            f"  {total:,} generated users, {gen.count():,} rows; "
            f"{gen_exclude.count():,} exclusion pairs"
        )
        big = measure(
            f"{args.user_scale}x", gen, als_model(spark, gen, itf, params.rank), gen_exclude
        )
        out["sizes"].append(big)
        gen.unpersist()
        gen_exclude.unpersist()
    test.unpersist()
    return out


# ----------------------------------------------------------------------------- report
def fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def print_tables(results: dict) -> None:
    print(f"\n$ {results['command']}")
    print(" ".join(f"{k}={v}" for k, v in results["settings"].items()))
    imp = results.get("implicit")
    if imp:
        print(f"\n(implicit) test split, max_iter {imp['max_iter']}, {imp['params']}\n")
        print("| library / feed | reg | MAP@10 | NDCG@10 | recall@10 | coverage | fit (s) |")
        print("|---|---|---|---|---|---|---|")
        for r in imp.get("rows", [imp["spark"]]):
            print(
                f"| {r['library']} | {r['reg']:g} | {r['map']:.4f} | {r['ndcg']:.4f} | "
                f"{r['recall']:.4f} | {r['coverage']:.3f} | {r['fit_s']:.2f} |"
            )
        s = imp["spark"]
        print(
            f"\nSpark: fit {s['fit_s']:.1f}s (runs {', '.join(fmt(t) for t in s['fit_runs_s'])}),"
            f" 1 iteration {s['fit_1_iter_s']:.1f}s -> fixed {s['fixed_s']:.1f}s + "
            f"{s['per_iteration_s']:.2f}s/iteration; evaluation {s['eval_s']:.1f}s"
        )
        if imp.get("validation_sweep"):
            print("\nvalidation split sweep (implicit c = 1 + alpha r, CG)\n")
            print("| library | reg | MAP@10 | NDCG@10 |")
            print("|---|---|---|---|")
            for r in imp["validation_sweep"]:
                print(f"| {r['library']} | {r['reg']:g} | {r['map']:.4f} | {r['ndcg']:.4f} |")
    sc = results.get("scale")
    if sc:
        print(f"\n(scale) cores {sc['cores']}, shuffle partitions {sc['shuffle_partitions']}\n")
        print(
            "| size | interactions | users | input partitions | blocks | Spark fit 1 iter (s) "
            "| Spark fit (s) | Spark fixed (s) | s/iteration | implicit fit (s) "
            "| Spark / implicit | implicit Cholesky fit (s) | Spark / implicit Cholesky |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for size in sc["sizes"]:
            imp_s = size.get("implicit_fit_s")
            exact_s = size.get("implicit_cholesky_fit_s")
            for r in size["spark"]:
                full = r["fit_s"]
                ratio = f"{full / imp_s:.1f}" if imp_s else "-"
                exact_ratio = f"{full / exact_s:.1f}" if exact_s else "-"
                print(
                    f"| {size['scale']}x | {size['interactions']:,} | {size['users']:,} | "
                    f"{r['input_partitions']} | {r['blocks']} | {r['fit_1_iter_s']:.1f} | "
                    f"{full:.1f} | {r['fixed_s']:.1f} | {r['per_iteration_s']:.2f} | "
                    f"{fmt(imp_s, 2)} | {ratio} | {fmt(exact_s, 2)} | {exact_ratio} |"
                )
    tn = results.get("topn")
    if tn:
        print(f"\n(topn) top {tn['n']} over {tn['items']:,} items, rank {tn['rank']}\n")
        print(
            "| users | recommendForAllUsers (s) | top_n (s) | ratio | top_n with exclusions (s) |"
        )
        print("|---|---|---|---|---|")
        for r in tn["sizes"]:
            ratio = f"{r['ratio']:.1f}" if r.get("ratio") else "-"
            print(
                f"| {r['users']:,} ({r['size']}) | {fmt(r.get('mllib_s'))} | "
                f"{fmt(r.get('topn_s'))} | {ratio} | {fmt(r.get('topn_excl_s'))} |"
            )
        agree = tn["sizes"][0].get("agreement")
        if agree:
            print(f"\nagreement at the real size: {agree}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True, help="lake with silver Online Retail")
    parser.add_argument("--part", choices=("implicit", "scale", "topn", "all"), default="all")
    parser.add_argument("--rank", type=int, default=48)
    parser.add_argument("--reg-param", type=float, default=0.1)
    parser.add_argument("--alpha", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of each fit / top-N")
    parser.add_argument(
        "--implicit-regs",
        type=float,
        nargs="*",
        default=[0.1, 1, 3, 10, 30],
        help="(implicit) regs swept on the validation split "
        "(reg-param x mean ratings per user is added)",
    )
    parser.add_argument(
        "--scale",
        type=int,
        nargs="*",
        default=[1, 10],
        help="(scale) sizes, multiples of the real interactions",
    )
    parser.add_argument("--jitter", type=float, default=0.2, help="(scale) share of items moved")
    parser.add_argument("--blocks", type=int, nargs="*", default=[2, 8, 10])
    parser.add_argument(
        "--partition-variants",
        action="store_true",
        help="(scale) also fit from an input in as many partitions as cores",
    )
    parser.add_argument("--n", type=int, default=20, help="(topn) recommendations per user")
    parser.add_argument("--user-scale", type=int, default=100, help="(topn) generated users x")
    parser.add_argument("--noise", type=float, default=0.1, help="(topn) noise / factor std")
    parser.add_argument("--timeout", type=float, default=900, help="(topn) cancel a run after")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--shuffle-partitions", type=int, default=8)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    command = shlex.join(["python", "bench/bench_recommend.py", *sys.argv[1:]])

    cfg = load_config(
        "test",
        [
            f"paths.root={args.root}",
            f"spark.master={args.master}",
            f"spark.driver_memory={args.driver_memory}",
            f"spark.shuffle_partitions={args.shuffle_partitions}",
        ],
    )
    spark = build_session(cfg, "bench recommend")
    conf = RecommendConfig.from_config(cfg["recommend"])
    params = Params(args.rank, args.reg_param, args.alpha)
    settings = {
        "master": args.master,
        "cores": spark.sparkContext.defaultParallelism,
        "driver_memory": args.driver_memory,
        "shuffle_partitions": args.shuffle_partitions,
        "params": params.label(),
        "max_iter": conf.max_iter,
        "preference": conf.preference,
        "blas": blas_in_use(spark),
    }
    print(f"$ {command}")
    print(" ".join(f"{k}={v}" for k, v in settings.items()))
    results: dict[str, Any] = {"command": command, "settings": settings}
    parts = {"implicit": part_implicit, "scale": part_scale, "topn": part_topn}
    for name, run in parts.items():
        if args.part in (name, "all"):
            started = time.perf_counter()
            results[name] = run(spark, args, conf, params)
            print(f"({name}) done in {time.perf_counter() - started:.0f}s")
            if args.json:
                args.json.write_text(json.dumps(results, indent=2, default=float) + "\n")
    spark.stop()
    print_tables(results)


if __name__ == "__main__":
    main()

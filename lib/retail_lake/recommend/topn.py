"""Blocked top-N recommendation for every user from ALS factors, without a cross join.

`top_n(user_factors, item_factors, n)` scores every (user, item) pair as the dot product of
their factor vectors and keeps each user's best `n` items:

- The item factors are collected on the driver, sorted by item id and broadcast as one
  numpy matrix `I` (items x rank). They must fit in memory, as they do for ALS catalogues.
- The user factors stay distributed. `mapInPandas` stacks up to `batch_size` user vectors
  into a matrix `U` and computes the block of scores `U @ I.T` in one product.
- With an `exclude` DataFrame (user, item), each user's excluded items are collected into an
  array column joined onto its factor row before `mapInPandas`. Their scores are set to
  -inf, so they are never recommended. Excluded items that are not in the catalogue are
  ignored.
- `torch.topk` (np.argpartition without torch) finds each row's best `n` scores. These are
  sorted by score descending, ties broken by item id ascending. Ties at the n-th place are
  settled the same way, so the result does not depend on partitioning or batch size.

Scores are computed in float32, as MLlib's blocked `recommendForAll` computes them, and
returned as float. Order and ties are decided on the returned values, so the output is
sorted exactly as it reads.
A user with fewer than `n` candidate items (after exclusions) gets fewer rows, and a user
with none gets no row. A NaN score (from a NaN factor) counts as no candidate.

The output is long form, one row per recommendation: `user`, `item`, `score`, `rank`
(1..n). This is the `recommended` input of `retail_lake.recommend.metrics`.

`ALSModel.userFactors` and `itemFactors` name their columns `id` and `features`. Pass
`user_col="id", item_col="id"` to read them as they are; the output is still named
`user` and `item`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

if TYPE_CHECKING:
    from pyspark.broadcast import Broadcast

log = logging.getLogger(__name__)

USER = "user"
ITEM = "item"
SCORE = "score"
RANK = "rank"
FEATURES = "features"
_EXCLUDED = "_excluded"

_INTEGRAL = (T.ByteType, T.ShortType, T.IntegerType, T.LongType)


class TopNError(ValueError):
    """Invalid factors, exclusions or parameters for top-N recommendation."""


def _check_positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise TopNError(f"{name} must be a positive integer, got {value!r}")
    return value


def _check_columns(df: DataFrame, what: str, columns: tuple[str, ...]) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise TopNError(f"{what} lacks column(s) {missing}; it has {df.columns}")


def _check_features(df: DataFrame, what: str, features_col: str) -> None:
    dtype = df.schema[features_col].dataType
    numeric = (T.FloatType, T.DoubleType)
    if not (isinstance(dtype, T.ArrayType) and isinstance(dtype.elementType, numeric)):
        raise TopNError(
            f"{what}.{features_col} must be array<float> or array<double>, "
            f"got {dtype.simpleString()}"
        )


def _same_key_type(left: T.DataType, right: T.DataType) -> bool:
    both_integral = isinstance(left, _INTEGRAL) and isinstance(right, _INTEGRAL)
    return both_integral or left == right


def _collect_items(
    item_factors: DataFrame, item_col: str, features_col: str
) -> tuple[np.ndarray, np.ndarray]:
    """Item ids sorted ascending and their factor matrix (items x rank), float32."""
    rows = item_factors.select(item_col, features_col).collect()
    if not rows:
        raise TopNError("item_factors is empty: there is nothing to recommend")
    ids = [r[0] for r in rows]
    if any(i is None for i in ids) or len(set(ids)) != len(ids):
        raise TopNError(f"item_factors.{item_col} must be unique and not null")
    rows.sort(key=lambda r: r[0])
    ids = [r[0] for r in rows]
    ranks = {len(r[1]) if r[1] is not None else -1 for r in rows}
    if len(ranks) != 1 or min(ranks) <= 0:
        raise TopNError(f"item factors must all have the same rank > 0, found {sorted(ranks)}")
    matrix = np.asarray([r[1] for r in rows], dtype=np.float32)
    return np.asarray(ids), matrix


def _check_user_ranks(user_factors: DataFrame, features_col: str, rank: int) -> None:
    size = F.size(F.col(features_col))  # -1 for a null vector
    low, high = user_factors.agg(F.min(size), F.max(size)).first()
    if low is not None and (low != rank or high != rank):
        raise TopNError(
            f"user factors must all have the item factors' rank {rank}, "
            f"found ranks from {low} to {high} (-1: a null vector)"
        )


def _select(s: np.ndarray, k: int) -> np.ndarray:
    """Column indices of some `k` largest values of each row (any order; ties at the k-th
    value are settled by the caller). torch.topk when torch is installed (it is: the
    forecaster needs it) is several times faster than np.argpartition on score blocks."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return np.argpartition(-s, k - 1, axis=1)[:, :k]
    return torch.topk(torch.from_numpy(s), k, dim=1, sorted=False).indices.numpy()


def top_n_of_scores(
    scores: np.ndarray, n: int, may_have_nan: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """The best `n` columns of each row of a score matrix.

    Args:
        scores: (users x items) scores; -inf or NaN marks an item that is no candidate.
        n: how many items to keep per row.
        may_have_nan: False when the caller knows there is no NaN (saves a pass).

    Returns:
        `(index, value)`, both (users x min(n, items)): column indices and their float32
        scores, each row sorted by score descending, ties by index ascending. A row with
        fewer candidates than that ends in -inf values, which are no recommendation.
    """
    s = scores if scores.dtype == np.float32 else scores.astype(np.float32)
    if may_have_nan:
        if s is scores:
            s = s.copy()
        s[np.isnan(s)] = -np.inf
    rows, items = s.shape
    k = min(n, items)
    # One more than needed: where the (k+1)-th score is below the k-th, the best k are
    # settled; where it equals it, the tie at the k-th place is redone below.
    kk = min(k + 1, items)
    part = _select(s, kk) if kk < items else np.broadcast_to(np.arange(items), (rows, items)).copy()
    values = np.take_along_axis(s, part, axis=1)
    order = np.lexsort((part, -values), axis=1)
    index = np.take_along_axis(part, order, axis=1)
    top = np.take_along_axis(values, order, axis=1)
    if k < items:
        kth = top[:, k - 1]
        tied = np.flatnonzero(np.isfinite(kth) & (top[:, k] == kth))
        index, top = index[:, :k].copy(), top[:, :k].copy()
        # topk picks arbitrarily among the items tied with the k-th score: redo those
        # rows from every item scoring at least that much.
        for r in tied:
            candidates = np.flatnonzero(s[r] >= kth[r])
            best = candidates[np.lexsort((candidates, -s[r, candidates]))[:k]]
            index[r] = best
            top[r] = s[r, best]
    return index, top


def _mask_excluded(scores: np.ndarray, excluded: pd.Series, item_positions: pd.Index) -> None:
    """Sets the scores of each row's excluded items to -inf, in place."""
    lists = [np.asarray(v) if v is not None else np.empty(0) for v in excluded]
    lengths = np.fromiter((len(v) for v in lists), dtype=np.int64, count=len(lists))
    if not lengths.sum():
        return
    columns = item_positions.get_indexer(np.concatenate(lists))
    rows = np.repeat(np.arange(len(lists)), lengths)
    known = columns >= 0
    scores[rows[known], columns[known]] = -np.inf


def _recommend_block(
    block: pd.DataFrame,
    item_ids: np.ndarray,
    item_matrix: np.ndarray,
    item_positions: pd.Index,
    n: int,
    items_finite: bool = False,
) -> pd.DataFrame:
    users = np.stack(block[FEATURES].to_numpy()).astype(np.float32)
    # float32 products, as MLlib's blocked recommendForAll computes them (sgemm).
    scores = users @ item_matrix.T
    if _EXCLUDED in block.columns:
        _mask_excluded(scores, block[_EXCLUDED], item_positions)
    finite = items_finite and bool(np.isfinite(users).all())
    index, top = top_n_of_scores(scores, n, may_have_nan=not finite)
    keep = np.isfinite(top)  # a prefix of each row: -inf sorts last
    ranks = np.nonzero(keep)[1] + 1
    return pd.DataFrame(
        {
            USER: np.repeat(block[USER].to_numpy(), keep.sum(axis=1)),
            ITEM: item_ids[index[keep]],
            SCORE: top[keep],
            RANK: ranks.astype(np.int32),
        }
    )


def _scorer(
    items: Broadcast[tuple[np.ndarray, np.ndarray]], n: int, batch_size: int
) -> Callable[[Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]:
    def score(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        item_ids, item_matrix = items.value
        item_positions = pd.Index(item_ids)
        finite = bool(np.isfinite(item_matrix).all())
        for batch in batches:
            for start in range(0, len(batch), batch_size):
                block = batch.iloc[start : start + batch_size]
                yield _recommend_block(block, item_ids, item_matrix, item_positions, n, finite)

    return score


def top_n(
    user_factors: DataFrame,
    item_factors: DataFrame,
    n: int,
    exclude: DataFrame | None = None,
    batch_size: int = 1024,
    *,
    user_col: str = USER,
    item_col: str = ITEM,
    features_col: str = FEATURES,
) -> DataFrame:
    """Each user's `n` best items by factor dot product (see the module docstring).

    Args:
        user_factors: one row per user: `user_col` and `features_col` (the factor vector).
        item_factors: one row per item: `item_col` and `features_col`; collected and
            broadcast, so it must fit in driver memory.
        n: recommendations per user.
        exclude: optional (user, item) pairs never to recommend, e.g. past interactions.
            Its columns are always named `user` and `item`; repeated pairs are harmless.
        batch_size: most users scored in one matrix product.
        user_col: the user id column of `user_factors` (`"id"` for `ALSModel.userFactors`).
        item_col: the item id column of `item_factors` (`"id"` for `ALSModel.itemFactors`).
        features_col: the factor column of both factor DataFrames.

    Returns:
        `user`, `item`, `score` (float), `rank` (int, 1..n), up to `n` rows per user.

    Raises:
        TopNError: `n` or `batch_size` not a positive integer, a missing column, factors
            that are not numeric arrays, unequal or empty factor ranks, duplicate item ids,
            no item at all, or `exclude` keys whose types do not match the factor ids.
    """
    n = _check_positive_int("n", n)
    batch_size = _check_positive_int("batch_size", batch_size)
    _check_columns(user_factors, "user_factors", (user_col, features_col))
    _check_columns(item_factors, "item_factors", (item_col, features_col))
    _check_features(user_factors, "user_factors", features_col)
    _check_features(item_factors, "item_factors", features_col)
    user_type = user_factors.schema[user_col].dataType
    item_type = item_factors.schema[item_col].dataType
    if exclude is not None:
        _check_columns(exclude, "exclude", (USER, ITEM))
        for key, factor_type in ((USER, user_type), (ITEM, item_type)):
            if not _same_key_type(exclude.schema[key].dataType, factor_type):
                raise TopNError(
                    f"exclude.{key} is {exclude.schema[key].dataType.simpleString()} but "
                    f"the factor ids are {factor_type.simpleString()}"
                )

    item_ids, item_matrix = _collect_items(item_factors, item_col, features_col)
    rank = item_matrix.shape[1]
    _check_user_ranks(user_factors, features_col, rank)
    log.info(
        "top-%d over %d items of rank %d, up to %d users per block%s",
        n,
        len(item_ids),
        rank,
        batch_size,
        " with exclusions" if exclude is not None else "",
    )

    users = user_factors.select(F.col(user_col).alias(USER), F.col(features_col).alias(FEATURES))
    if exclude is not None:
        excluded = exclude.groupBy(USER).agg(F.collect_set(ITEM).alias(_EXCLUDED))
        users = users.join(excluded, on=USER, how="left")  # one exclusion row per user

    items = user_factors.sparkSession.sparkContext.broadcast((item_ids, item_matrix))
    schema = T.StructType(
        [
            T.StructField(USER, user_type),
            T.StructField(ITEM, item_type),
            T.StructField(SCORE, T.FloatType(), nullable=False),
            T.StructField(RANK, T.IntegerType(), nullable=False),
        ]
    )
    return users.mapInPandas(_scorer(items, n, batch_size), schema)

"""Horovod on Spark with Petastorm: 2 Gloo ranks read disjoint shards, run equal steps, and
their allreduce agrees."""

from __future__ import annotations

import sys

import cloudpickle
import pytest
from pyspark.sql import functions as F

pytestmark = pytest.mark.horovod

ROWS = 2000


def rank_probe(converter, steps: int) -> dict:
    """Runs in each rank: `steps` batches of its shard's endless stream, as training reads."""
    import horovod.torch as hvd
    import torch

    hvd.init()
    torch.set_num_threads(1)
    ids: list[int] = []
    ran = 0
    with converter.make_torch_dataloader(
        batch_size=50,
        num_epochs=None,
        cur_shard=hvd.rank(),
        shard_count=hvd.size(),
        workers_count=1,
    ) as loader:
        stream = iter(loader)
        for _ in range(steps):
            ids.extend(int(i) for i in next(stream)["id"])
            ran += 1
    total = hvd.allreduce(torch.tensor(float(len(ids))), op=hvd.Sum, name="rows").item()
    id_sum = hvd.allreduce(torch.tensor(float(sum(ids))), op=hvd.Sum, name="ids").item()
    return {
        "rank": hvd.rank(),
        "size": hvd.size(),
        "ids": ids,
        "steps": ran,
        "total": total,
        "id_sum": id_sum,
    }


def test_two_ranks_read_disjoint_shards_and_allreduce_agrees(spark, root):
    from retail_lake.training.data import make_converter, steps_per_epoch
    from retail_lake.training.launcher import run_horovod

    cloudpickle.register_pickle_by_value(sys.modules[__name__])
    df = spark.range(ROWS).select(
        F.col("id").cast("int").alias("id"),
        F.array(*[(F.col("id") * k).cast("float") for k in (1, 2, 3)]).alias("features"),
    )
    converter, n = make_converter(
        spark, df, num_proc=2, cache_dir=str(root / "petastorm"), row_bytes=24
    )
    try:
        steps = steps_per_epoch(n, 50, 2)
        results = sorted(
            run_horovod(rank_probe, (converter, steps), num_proc=2), key=lambda r: r["rank"]
        )
    finally:
        converter.delete()
    assert n == ROWS and steps == 20
    assert [r["rank"] for r in results] == [0, 1] and {r["size"] for r in results} == {2}
    first, second = (set(r["ids"]) for r in results)
    shape = [(r["rank"], len(r["ids"]), r["steps"], r["total"]) for r in results]
    assert first and second, f"every rank must get data: {shape}"
    # One epoch's steps read each rank's shard exactly once: no row twice, none missing.
    assert [len(r["ids"]) for r in results] == [len(first), len(second)]
    assert not first & second, "shards must be disjoint"
    assert first | second == set(range(ROWS))
    assert [r["steps"] for r in results] == [steps, steps]
    # The allreduce agrees on every rank and with what the ranks read.
    assert {r["total"] for r in results} == {float(ROWS)}
    assert {r["id_sum"] for r in results} == {float(sum(range(ROWS)))}

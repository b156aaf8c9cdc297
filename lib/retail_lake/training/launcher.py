"""Launching the training loop on the configured backend (`training.backend`).

- `horovod`: `horovod.spark.run` starts one Spark task per rank; the ranks rendezvous over
  Gloo (CPU) or NCCL (GPU, when horovod was built with it) and each returns a value to the
  driver.
- `torch_distributor`: Spark's `TorchDistributor` runs torchrun in barrier tasks; rank 0's
  value comes back.
- `in_process`: one rank in the driver process itself, whatever `num_proc` says: no Spark
  tasks and no native build, for debugging and single machines without Horovod. It uses
  none of the executors, so it is not the way to train on a cluster.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


def run_horovod(
    fn: Callable[..., Any], args: tuple = (), num_proc: int = 2, env: dict[str, str] | None = None
) -> list[Any]:
    """Runs `fn(*args)` on `num_proc` ranks; returns the per-rank results, rank order.

    Raises:
        RuntimeError: when horovod is not installed (run setup_cluster.sh install).
    """
    try:
        import horovod.spark
    except ImportError as exc:
        raise RuntimeError(
            "horovod is not installed: run './setup_cluster.sh install' (it builds horovod "
            "with PyTorch and Gloo)"
        ) from exc
    started = time.monotonic()
    ranks_env = dict(os.environ) if env is None else {**os.environ, **env}
    # One thread per rank on a shared machine: ranks otherwise fight over the cores.
    ranks_env.setdefault("OMP_NUM_THREADS", "1")
    # petastorm 0.13 uses pyarrow's legacy dataset API: one FutureWarning per call.
    ranks_env.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    results = horovod.spark.run(
        fn, args=args, num_proc=num_proc, env=ranks_env, use_gloo=True, verbose=0
    )
    log.info("horovod: %d ranks finished in %.1fs", num_proc, time.monotonic() - started)
    return results


BACKENDS = ("horovod", "torch_distributor", "in_process")


def world_size(backend: str, num_proc: int) -> int:
    """How many ranks `backend` runs when `num_proc` are configured: the number the steps
    per epoch and the Petastorm shards must be computed for (`in_process` runs one)."""
    return 1 if backend == "in_process" else num_proc


def rank_main(backend: str, task, converter, validation, params) -> dict[str, Any]:
    """What every rank runs: the shared loop under the backend's communication."""
    from retail_lake.training.loop import HorovodComm, LocalComm, TorchComm, fit

    comms = {"horovod": HorovodComm, "torch_distributor": TorchComm, "in_process": LocalComm}
    comm = comms[backend]()
    try:
        return fit(comm, task, converter, validation, params)
    finally:
        comm.close()


def run_torch_distributor(
    fn: Callable[..., Any], args: tuple = (), num_proc: int = 2, use_gpu: bool | None = None
) -> Any:
    """Runs `fn(*args)` on `num_proc` torchrun processes in Spark barrier tasks (Spark's
    `TorchDistributor`, gloo on CPU, nccl on GPU); returns rank 0's result."""
    import torch
    from pyspark.ml.torch.distributor import TorchDistributor

    started = time.monotonic()
    gpu = torch.cuda.is_available() if use_gpu is None else use_gpu
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    result = TorchDistributor(num_processes=num_proc, local_mode=False, use_gpu=gpu).run(fn, *args)
    log.info(
        "torch_distributor: %d processes finished in %.1fs", num_proc, time.monotonic() - started
    )
    return result


def run_in_process(fn: Callable[..., Any], args: tuple = ()) -> Any:
    """Runs `fn(*args)` as the only rank, in this (the driver's) process.

    The loop sets torch's thread count for its rank; the driver's is restored afterwards.
    """
    import torch

    threads = torch.get_num_threads()
    started = time.monotonic()
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(threads)
        log.info("in_process: 1 rank finished in %.1fs", time.monotonic() - started)


def launch(
    backend: str,
    task,
    converter,
    validation,
    params,
    num_proc: int,
    rank_fn: Callable[..., Any] = rank_main,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Trains `task` on `num_proc` ranks with the configured backend.

    `params.steps` must be computed for `world_size(backend, num_proc)` ranks. `rank_fn`
    (picklable, `rank_main`'s arguments) is what each rank runs; it defaults to the shared
    loop, and the smoke test wraps it to report what each rank read.

    Returns rank 0's result and every rank's (horovod returns them all; TorchDistributor
    returns rank 0's only, and in_process has only rank 0, so the list holds that one).
    """
    if backend not in BACKENDS:
        raise ValueError(f"training.backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    args = (backend, task, converter, validation, params)
    if backend == "horovod":
        results = run_horovod(rank_fn, args, num_proc)
    elif backend == "torch_distributor":
        results = [run_torch_distributor(rank_fn, args, num_proc)]
    else:
        if num_proc > 1:
            log.warning(
                "training.backend=in_process runs one rank in the driver: training.num_proc=%d "
                "is ignored",
                num_proc,
            )
        results = [run_in_process(rank_fn, args)]
    chief = next(r for r in results if r["rank"] == 0)
    return chief, sorted(results, key=lambda r: r["rank"])

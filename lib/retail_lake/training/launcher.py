"""Launching a training function on `num_proc` Horovod ranks inside Spark tasks.

`horovod.spark.run` starts one Spark task per rank; the ranks rendezvous over Gloo (CPU) or
NCCL (GPU, when horovod was built with it) and each returns a value to the driver.
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

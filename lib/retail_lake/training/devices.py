"""Device selection: CUDA when present (one GPU per local rank), CPU otherwise."""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def select_device(local_rank: int = 0):
    """The torch device for this rank: `cuda:<local_rank % gpus>` if CUDA works, else CPU."""
    import torch

    if torch.cuda.is_available() and torch.cuda.device_count() > 0:
        index = local_rank % torch.cuda.device_count()
        torch.cuda.set_device(index)
        return torch.device("cuda", index)
    return torch.device("cpu")


def horovod_gpu_ops() -> bool:
    """True when horovod was built with NCCL (GPU allreduce)."""
    try:
        import horovod.torch as hvd
    except ImportError:
        return False
    return bool(hvd.nccl_built())

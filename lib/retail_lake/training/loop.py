"""The training loop every rank runs, whichever backend launched it.

A `Task` (the model's code: network, loss on a batch, evaluation) is trained on the rank's
Petastorm shard with the same loop under every backend; only `Comm` differs:

- `HorovodComm`: `horovod.torch` (Gloo on CPU, NCCL on GPU when horovod was built with it):
  `DistributedOptimizer`, initial broadcast of parameters and optimizer state.
- `TorchComm`: `torch.distributed` as started by torchrun under Spark's `TorchDistributor`
  (gloo on CPU, nccl on GPU): `DistributedDataParallel`, which broadcasts the parameters
  when it wraps the network.
- `LocalComm`: one rank in the calling process, no communication (backend `in_process`:
  debugging, a machine without Horovod, and the tests of the loop itself).

Every rank runs the same number of steps per epoch (ranks that run different numbers of
batches hang in the next allreduce). The learning rate is scaled with the number of ranks.
Validation metrics are summed over the ranks' slices of the validation set, so every rank
takes the same early-stopping decision. Rank 0 checkpoints every epoch; a re-launched run
with the same checkpoint folder resumes after the last finished epoch and stops at the same
total number of epochs.
"""

from __future__ import annotations

import io
import math
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

CHECKPOINT = "last.pt"
# Test hook: rank 0 kills its own process (SIGKILL) right after checkpointing this epoch,
# as a lost executor would; the re-launched run must resume from that checkpoint. Ignored
# under `LocalComm`, whose rank is the driver: killing it would end the whole application.
FAULT_ENV = "RETAIL_LAKE_KILL_AFTER_EPOCH"


class Task(Protocol):
    """The model-specific part of a training run (picklable: it travels to the ranks)."""

    name: str
    # The validation metric early stopping watches and whether higher is better.
    monitor: str
    higher_is_better: bool

    def build(self):
        """A fresh torch network."""

    def batch_loss(self, net, batch: Mapping[str, Any], device):
        """Mean loss of one Petastorm batch (a dict of tensors) as a scalar tensor."""

    def evaluate(self, net, data: Mapping[str, np.ndarray], device) -> dict[str, float]:
        """Sums over `data` (a slice of the validation set): {'count': n, metric: sum, ...}.
        Summed over the ranks and divided by the total count, they give the metrics."""


@dataclass
class LoopParams:
    """Everything the loop needs besides the task and the data (picklable)."""

    epochs: int
    steps: int  # batches per rank per epoch
    batch_size: int
    learning_rate: float  # for one rank; scaled by the number of ranks
    seed: int = 7
    threads: int = 1
    patience: int = 0  # epochs without improvement before stopping early; 0: never
    checkpoint_dir: str = ""
    weight_decay: float = 0.0
    # "constant", or "cosine": the rate of epoch e (1-based) is the base rate times
    # (1 + cos(pi (e - 1) / epochs)) / 2, a function of the epoch alone, so a resumed run
    # continues on the same curve.
    lr_schedule: str = "constant"
    # The first epoch whose weights may be kept as the best (at most `epochs`): under a
    # decaying rate the early epochs swing too much for one validation period to choose
    # among them. Patience counts from it too.
    keep_from: int = 1
    extra: dict[str, Any] = field(default_factory=dict)


LR_SCHEDULES = ("constant", "cosine")


def epoch_learning_rate(base: float, epoch: int, epochs: int, schedule: str) -> float:
    """The learning rate of `epoch` (1-based) out of `epochs` under `schedule`."""
    if schedule == "constant":
        return base
    if schedule == "cosine":
        return base * 0.5 * (1.0 + math.cos(math.pi * (epoch - 1) / epochs))
    raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, not {schedule!r}")


# ----------------------------------------------------------------------------- communication
class HorovodComm:
    """horovod.torch: one process per Spark task, started by horovod.spark.run."""

    backend = "horovod"

    def __init__(self) -> None:
        import horovod.torch as hvd

        hvd.init()
        self.hvd = hvd
        self.rank, self.size, self.local_rank = hvd.rank(), hvd.size(), hvd.local_rank()

    def wrap(self, net, optimizer):
        hvd = self.hvd
        optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=net.named_parameters())
        hvd.broadcast_parameters(net.state_dict(), root_rank=0)
        hvd.broadcast_optimizer_state(optimizer, root_rank=0)
        return net, optimizer

    def sum(self, values: np.ndarray, name: str) -> np.ndarray:
        import torch

        t = torch.as_tensor(values, dtype=torch.float64)
        return self.hvd.allreduce(t, op=self.hvd.Sum, name=name).numpy()

    def broadcast_object(self, obj: Any, name: str) -> Any:
        return self.hvd.broadcast_object(obj, root_rank=0, name=name)

    def unwrap(self, net):
        return net

    def close(self) -> None:
        pass


class TorchComm:
    """torch.distributed, as torchrun (under TorchDistributor) sets it up from the environment."""

    backend = "torch_distributor"

    def __init__(self) -> None:
        import torch
        import torch.distributed as dist

        self.dist = dist
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        self.rank, self.size = dist.get_rank(), dist.get_world_size()
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))

    def wrap(self, net, optimizer):
        from torch.nn.parallel import DistributedDataParallel

        # DDP broadcasts rank 0's parameters when it wraps the network; the optimizer state
        # (empty, or the checkpoint's on every rank) needs no broadcast.
        return DistributedDataParallel(net), optimizer

    def sum(self, values: np.ndarray, name: str) -> np.ndarray:
        import torch

        t = torch.as_tensor(values, dtype=torch.float64)
        self.dist.all_reduce(t, op=self.dist.ReduceOp.SUM)
        return t.numpy()

    def broadcast_object(self, obj: Any, name: str) -> Any:
        box = [obj]
        self.dist.broadcast_object_list(box, src=0)
        return box[0]

    def unwrap(self, net):
        return net.module

    def close(self) -> None:
        self.dist.destroy_process_group()


class LocalComm:
    """One rank in the calling process: every collective is the identity.

    An exception raised from `sum` or `broadcast_object` interrupts `fit` as a lost rank
    would, without killing the process: the tests interrupt in-process runs that way.
    """

    backend = "in_process"
    rank, size, local_rank = 0, 1, 0

    def wrap(self, net, optimizer):
        return net, optimizer

    def sum(self, values: np.ndarray, name: str) -> np.ndarray:
        return np.asarray(values, dtype=np.float64)

    def broadcast_object(self, obj: Any, name: str) -> Any:
        return obj

    def unwrap(self, net):
        return net

    def close(self) -> None:
        pass


# ----------------------------------------------------------------------------- checkpoints
def _to_bytes(obj: Any) -> bytes:
    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _from_bytes(blob: bytes) -> Any:
    import torch

    return torch.load(io.BytesIO(blob), weights_only=False)


def load_checkpoint(folder: str) -> dict[str, Any] | None:
    """The last checkpoint in `folder`, or None."""
    path = Path(folder) / CHECKPOINT
    if not folder or not path.exists():
        return None
    return _from_bytes(path.read_bytes())


def save_checkpoint(folder: str, state: dict[str, Any]) -> None:
    """Writes atomically (a crash mid-write leaves the previous checkpoint)."""
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    tmp = path / f".{CHECKPOINT}.{os.getpid()}"
    tmp.write_bytes(_to_bytes(state))
    os.replace(tmp, path / CHECKPOINT)


def _state_numpy(net) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in net.state_dict().items()}


def keep_from(params: LoopParams) -> int:
    """The first epoch that may be kept as the best: `keep_from`, at most the last."""
    return max(1, min(params.keep_from, params.epochs))


def _improved(value: float, best: float | None, higher: bool) -> bool:
    if best is None:
        return True
    return value > best if higher else value < best


# ----------------------------------------------------------------------------- the loop
def fit(
    comm,
    task: Task,
    converter,
    validation: Mapping[str, np.ndarray],
    params: LoopParams,
) -> dict[str, Any]:
    """Trains `task` on this rank's shard of `converter`; every rank calls it.

    Returns (every rank): rank, size, steps run and rows seen this launch; rank 0 adds the
    best epoch's weights (numpy), the per-epoch history, the epoch it resumed after (0 when
    it started fresh) and whether it stopped early.
    """
    import torch

    from retail_lake.training.devices import select_device

    torch.set_num_threads(params.threads)
    torch.manual_seed(params.seed)
    device = select_device(comm.local_rank)
    net = task.build().to(device)
    base_lr = params.learning_rate * comm.size
    optimizer = torch.optim.Adam(net.parameters(), lr=base_lr, weight_decay=params.weight_decay)

    # Resume: rank 0 reads the checkpoint and every rank gets it (no shared disk needed).
    state = None
    if comm.rank == 0 and params.checkpoint_dir:
        found = load_checkpoint(params.checkpoint_dir)
        state = _to_bytes(found) if found is not None else None
    state = comm.broadcast_object(state, name="checkpoint")
    resumed = _from_bytes(state) if state is not None else None
    history: list[dict[str, float]] = []
    best: float | None = None
    best_state: dict[str, np.ndarray] | None = None
    stale = 0
    start = 1
    if resumed is not None:
        net.load_state_dict({k: torch.as_tensor(v) for k, v in resumed["model"].items()})
        optimizer.load_state_dict(resumed["optimizer"])
        history, best, best_state, stale = (
            resumed["history"],
            resumed["best"],
            resumed["best_state"],
            resumed["stale"],
        )
        start = resumed["epoch"] + 1
    net, optimizer = comm.wrap(net, optimizer)
    plain = comm.unwrap(net)

    # Each rank evaluates its own slice of the validation set.
    n_val = len(next(iter(validation.values()))) if validation else 0
    mine = {k: v[comm.rank :: comm.size] for k, v in validation.items()}
    # A run that had already stopped early has nothing left to do.
    stopped_early = bool(resumed is not None and resumed.get("stopped_early"))
    if stopped_early:
        start = params.epochs + 1
    kill_after = 0 if isinstance(comm, LocalComm) else int(os.environ.get(FAULT_ENV, "0") or 0)
    steps_run = rows = 0
    torch.manual_seed(params.seed + 1000 * comm.rank + start)
    with converter.make_torch_dataloader(
        batch_size=params.batch_size,
        num_epochs=None,
        cur_shard=comm.rank,
        shard_count=comm.size,
        workers_count=1,
    ) as loader:
        batches = iter(loader) if start <= params.epochs else iter(())
        for epoch in range(start, params.epochs + 1):
            began = time.monotonic()
            lr = epoch_learning_rate(base_lr, epoch, params.epochs, params.lr_schedule)
            for group in optimizer.param_groups:
                group["lr"] = lr
            net.train()
            total = 0.0
            for _ in range(params.steps):
                batch = next(batches)
                optimizer.zero_grad()
                loss = task.batch_loss(net, batch, device)
                loss.backward()
                optimizer.step()
                total += float(loss.item())
                steps_run += 1
                rows += len(next(iter(batch.values())))
            seconds = time.monotonic() - began
            net.eval()
            with torch.no_grad():
                sums = task.evaluate(plain, mine, device) if n_val else {"count": 0.0}
            keys = sorted(sums)
            reduced = comm.sum(
                np.array(
                    [total / params.steps, params.steps * params.batch_size / seconds]
                    + [sums[k] for k in keys]
                ),
                name=f"epoch{epoch}",
            )
            count = reduced[2 + keys.index("count")]
            metrics = {
                "epoch": float(epoch),
                "train_loss": float(reduced[0] / comm.size),
                "samples_per_s": float(reduced[1]),
                "learning_rate": lr,
                **{
                    f"val_{k}": float(reduced[2 + i] / count)
                    for i, k in enumerate(keys)
                    if k != "count" and count
                },
            }
            history.append(metrics)
            watched = metrics.get(f"val_{task.monitor}", metrics["train_loss"])
            if epoch < keep_from(params):
                pass
            elif _improved(watched, best, task.higher_is_better):
                best, stale = watched, 0
                best_state = _state_numpy(plain) if comm.rank == 0 else None
            else:
                stale += 1
            stop = bool(params.patience) and stale >= params.patience
            if comm.rank == 0:
                shown = ", ".join(
                    f"{k} {v:.4f}" for k, v in metrics.items() if k.startswith("val_")
                )
                print(
                    f"[{task.name}] epoch {epoch}/{params.epochs}: train loss "
                    f"{metrics['train_loss']:.4f}, {shown}, "
                    f"{metrics['samples_per_s']:.0f} samples/s",
                    flush=True,
                )
                if params.checkpoint_dir:
                    save_checkpoint(
                        params.checkpoint_dir,
                        {
                            "epoch": epoch,
                            "model": _state_numpy(plain),
                            "optimizer": optimizer.state_dict(),
                            "history": history,
                            "best": best,
                            "best_state": best_state,
                            "stale": stale,
                            "stopped_early": stop,
                        },
                    )
                if kill_after and epoch == kill_after:
                    os.kill(os.getpid(), signal.SIGKILL)
            if stop:
                stopped_early = True
                break
    result: dict[str, Any] = {
        "rank": comm.rank,
        "size": comm.size,
        "steps": steps_run,
        "rows": rows,
        "backend": comm.backend,
    }
    if comm.rank == 0:
        result.update(
            state=best_state if best_state is not None else _state_numpy(plain),
            history=history,
            resumed_after=start - 1 if resumed is not None else 0,
            stopped_early=stopped_early,
            best=best,
        )
    return result

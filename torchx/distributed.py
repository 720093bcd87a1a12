"""Several processes: how train_pl.py sets up DDP beyond what pl.Trainer does by itself.

- `distributed.timeout_s` reaches the strategy as its process-group timeout: how long a collective waits
  for a peer that neither answers nor closes its connection (a hung node, a cut network). A peer whose
  process died closes its sockets, and the others stop at once; a silent one is waited for this long.
- Under srun, Lightning's SLURM environment without its own requeue (see `slurm_plugin`).
- `ExactAllReduce`: gradients all-reduced one tensor at a time, so that a resumed run sums them in the
  same order as an uninterrupted one (see its docstring).
- `launch_record`: how the processes were started, for provenance.json.
- `children_watched`: on one node without a launcher, the ranks Lightning starts as children of this
  process are watched by torchx, so a rank that dies ends the run with torchx's one message and exit 1.
"""

from __future__ import annotations

import contextlib
import datetime
import inspect
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl
import torch

DEFAULT_TIMEOUT_S = 1800.0  # torch.distributed's default for gloo and NCCL process groups (30 minutes)


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the number of processes in the default group (0, 1 without one)."""
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather_per_rank(obj: Any) -> list | None:
    """Every rank's `obj`, in rank order, when several processes run (all of them must call it at
    once, as all ranks do when saving a checkpoint); None for a single process."""
    _, world = rank_and_world()
    if world == 1:
        return None
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, obj)
    return gathered


def with_timeout(cfg: dict, params: dict) -> dict:
    """trainer_params with `distributed.timeout_s` given to a strategy that starts a process group (ddp and
    its variants, fsdp, ...); other strategies have no group to time out."""
    timeout = (cfg.get("distributed") or {}).get("timeout_s")
    if timeout is None:
        return params
    from pytorch_lightning.strategies import StrategyRegistry

    name = params.get("strategy", "auto")
    if name == "auto" and processes(params) > 1:
        name = "ddp"  # what pl.Trainer picks for several devices or nodes outside a notebook
    if not isinstance(name, str) or name not in StrategyRegistry:
        return params
    entry = StrategyRegistry[name]
    if "timeout" not in inspect.signature(entry["strategy"].__init__).parameters:
        return params
    strategy = entry["strategy"](**{**entry["init_params"], "timeout": datetime.timedelta(seconds=timeout)})
    return {**params, "strategy": strategy}


def processes(params: dict) -> int:
    """How many processes trainer_params ask for (devices per node x nodes)."""
    devices, nodes = params.get("devices", "auto"), params.get("num_nodes", 1) or 1
    per_node = len(devices) if isinstance(devices, (list, tuple)) else devices if isinstance(devices, int) else 1
    return max(per_node, 1) * nodes


PEER_LOST = "another DDP process died or stopped answering, so this one stops too"
# what gloo and NCCL say when a peer is gone or silent past the process-group timeout (lower case)
PEER_FAILURE = ("connection reset by peer", "connection closed by peer", "nccl communicator was aborted",
                "socket timeout", "timed out waiting", "collective operation timeout", "application timeout",
                "pair closure", "processgroupnccl", "broken pipe")
CHILD_GRACE_S = 20.0  # how long a dead rank's peers get to stop by themselves, saying why
_peer_lost_said = threading.Event()


def is_peer_failure(e: BaseException) -> bool:
    """Whether a collective failed because another process died, hung or was cut off. Which words
    come depends on the backend and on which side met the loss first: with gloo, the rank whose
    timeout fires first reads "Timed out waiting ...", the others "Application timeout caused pair
    closure" (or, on a loaded machine, every rank reads the latter). The words are the backends' own, so
    a user's error that merely says "timed out" (a DataLoader's, an HTTP client's) keeps its traceback."""
    text = str(e).lower()
    return any(w in text for w in PEER_FAILURE)


def peer_lost(prog: str, run_hint: str, detail: str) -> None:
    """torchx's one message for a run that lost a DDP process (said once per process), on stderr."""
    if not _peer_lost_said.is_set():
        _peer_lost_said.set()
        print(f"{prog}: error: {PEER_LOST} (its own output above says why). Continue with {run_hint} --resume. "
              f"[{detail}]", file=sys.stderr, flush=True)


class ChildWatch(threading.Thread):
    """Watches the ranks that Lightning started as children of this process (several devices on one
    node, no torchrun or srun), in place of Lightning's own watcher.

    Lightning's kills the whole job with SIGKILL, this process included, within 5 s of a child's death,
    often before this process has met the dead peer in a collective, and so before it could say what
    happened: the user saw Lightning's line, no torchx message, and exit status -9. This one also stops
    the other children at once (a peer blocked in a collective with a dead rank may never return), but
    gives this process CHILD_GRACE_S to stop by itself (the next collective fails at once when the dead
    rank's sockets closed) and only then ends it, with the same message and exit status 1. A child that
    exits 75 was preempted, as this process is then too: it is left to save last.ckpt and exit 75.

    `run_over` is set when this process's training returns (see `children_watched`): the watch ends
    then, and a process that stopped by itself within the grace is left to finish (its trackers, its
    exit status) rather than ended under it."""

    def __init__(self, children: list[subprocess.Popen], prog: str, run_hint: str, every_s: float = 0.5,
                 grace_s: float = CHILD_GRACE_S, run_over: threading.Event | None = None) -> None:
        super().__init__(daemon=True, name="torchx-child-watch")  # ends with this process
        self.children, self.prog, self.run_hint = children, prog, run_hint
        self.every_s, self.grace_s = every_s, grace_s
        self.run_over = run_over or threading.Event()

    def run(self) -> None:
        from torchx.checkpoint import EXIT_PREEMPTED

        while True:
            over = self.run_over.wait(self.every_s)
            codes = [c.poll() for c in self.children]
            dead = [(rank, c.pid, code) for rank, (c, code) in enumerate(zip(self.children, codes), 1)
                    if code not in (None, 0, EXIT_PREEMPTED)]
            if dead:
                break
            if over or None not in codes or EXIT_PREEMPTED in codes:  # run over, all ended well, or preempted
                return
        for c in self.children:
            if c.poll() is None:
                c.send_signal(signal.SIGKILL)
        stopped_by_itself = self.run_over.wait(self.grace_s)
        rank, pid, code = dead[0]
        peer_lost(self.prog, self.run_hint, f"rank {rank} (process {pid}) ended with status {code}")
        if not stopped_by_itself:
            os._exit(1)


@contextlib.contextmanager
def children_watched(prog: str, run_hint: str) -> Iterator[None]:
    """While training: ChildWatch in place of Lightning's watcher for the children its launcher starts in
    this process (pytorch-lightning 2.6's launcher calls `_launch_process_observer(procs)` right after
    starting them; if a later release names it otherwise, Lightning's own watcher stays). The peer-lost
    message may be said once in this run; Lightning's watcher is back afterwards."""
    from pytorch_lightning.strategies.launchers import subprocess_script

    _peer_lost_said.clear()
    lightnings = getattr(subprocess_script, "_launch_process_observer", None)
    if lightnings is None:
        yield
        return
    run_over = threading.Event()
    subprocess_script._launch_process_observer = lambda procs: ChildWatch(procs, prog, run_hint,
                                                                          run_over=run_over).start()
    try:
        yield
    finally:
        run_over.set()
        subprocess_script._launch_process_observer = lightnings


def slurm_plugin() -> list:
    """Under srun, Lightning's SLURM environment without its own requeue: on SIGUSR1 torchx saves last.ckpt
    at a step boundary and exits 75, and the job script requeues (see the README); Lightning's handler
    would also write an hpc checkpoint into the working directory and call scontrol itself."""
    from lightning_fabric.plugins.environments import SLURMEnvironment

    return [SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else []


def launch_record(cfg: dict, trainer: pl.Trainer) -> dict:
    """How this run's processes were started, for provenance.json."""
    env = getattr(trainer.strategy, "cluster_environment", None)
    timeout = (cfg.get("distributed") or {}).get("timeout_s") or DEFAULT_TIMEOUT_S
    return {"strategy": type(trainer.strategy).__name__,
            "environment": type(env).__name__ if env is not None else None,
            "world_size": trainer.world_size, "num_nodes": trainer.num_nodes,
            "process_group_timeout_s": float(timeout) if trainer.world_size > 1 else None}


def exact(cfg: dict, params: dict) -> bool:
    """Whether gradients are all-reduced tensor by tensor: on the CPU, and wherever the run asks for
    deterministic results; elsewhere DDP's buckets (faster on GPUs) are left as they are."""
    return params.get("accelerator") == "cpu" or bool(params.get("deterministic"))


def exact_allreduce(state: Any, bucket: Any) -> torch.futures.Future:
    """A DDP communication hook: the mean of each gradient over the ranks, one all_reduce per tensor.

    DDP sums gradients in buckets whose layout it chooses at construction and changes once, after the
    first backward pass, to the order the gradients became ready. The ring all_reduce sums each part of a
    bucket starting at another rank, so where a gradient sits in its bucket decides the order its values
    are added in, and a resumed run (whose first step uses the first layout) rounds differently from an
    uninterrupted one at that step. Reduced on its own, a gradient is summed the same way wherever DDP
    put it."""
    group = state if state is not None else torch.distributed.group.WORLD
    world = torch.distributed.get_world_size(group)
    buffer = bucket.buffer()
    works, offset = [], 0
    for grad in bucket.gradients():  # views of the buffer, in its order
        if grad.untyped_storage().data_ptr() == buffer.untyped_storage().data_ptr():
            offset = (grad.data_ptr() - buffer.data_ptr()) // buffer.element_size()
        part = buffer[offset:offset + grad.numel()]
        offset += grad.numel()
        works.append(torch.distributed.all_reduce(part, group=group, async_op=True).get_future())

    def mean(_: Any) -> torch.Tensor:
        return buffer.div_(world)

    return torch.futures.collect_all(works).then(mean)


# DDP checks a hook's annotations as objects; this module's are strings (postponed evaluation)
exact_allreduce.__annotations__ = {"state": object, "bucket": torch.distributed.GradBucket,
                                   "return": torch.futures.Future[torch.Tensor]}


class ExactAllReduce(pl.Callback):
    """Registers `exact_allreduce` on the DDP-wrapped model before the first training step."""

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        from torch.nn.parallel import DistributedDataParallel

        model = getattr(trainer.strategy, "model", None)
        if isinstance(model, DistributedDataParallel):
            try:
                model.register_comm_hook(None, exact_allreduce)
            except RuntimeError:  # the run registered a hook of its own (ddp_comm_hook): it stays
                pass

"""Checkpoint safety shared by both loops: atomic writes, RNG state, what a checkpoint must hold.

A checkpoint is written to a temporary file in the same folder, flushed and fsynced, then
renamed over the old one (and the folder fsynced), so a crash or `kill -9` leaves either the
old file or the new one, never a torn one. The RNG states of Python, NumPy and torch ride in
the checkpoint so that a resumed run draws the same random numbers (dropout, noise) as an
uninterrupted one.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO
from pytorch_lightning.callbacks import ModelCheckpoint

from torchx.run import atomic_write

STATE_KEY = "torchx"  # ckpt["callbacks"]["torchx"] in checkpoints of both loops


def atomic_save(obj: Any, path: str | os.PathLike) -> None:
    """torch.save, atomically (run.atomic_write)."""
    atomic_write(path, lambda f: torch.save(obj, f))


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, with atomic_save's fsync before the rename."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        atomic_save(checkpoint, path)


class FinalCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, except that when training ends last.ckpt holds the final state.

    Lightning 2.6 writes last.ckpt at the end only if it never wrote one, so with
    `every_n_train_steps: 50` and 860 steps a finished run's last.ckpt is at step 850, while a run
    killed after step 850 and resumed writes one at 860. Here both end at 860."""

    @property
    def state_key(self) -> str:  # ModelCheckpoint's, so checkpoints of either loop restore its state
        return super().state_key.replace(type(self).__qualname__, ModelCheckpoint.__qualname__, 1)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.save_last and self._last_global_step_saved != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            return
        super().on_train_end(trainer, pl_module)


def rng_state() -> dict[str, Any]:
    """Every RNG a training step may draw from, as tensors and plain lists (weights_only-loadable)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"python": _listify(random.getstate()), "torch": torch.get_rng_state(),
             "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                       "has_gauss": int(has_gauss), "cached": float(cached)}}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_tupleify(state["python"]))
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _listify(x: Any) -> Any:
    return [_listify(i) for i in x] if isinstance(x, tuple) else x


def _tupleify(x: Any) -> Any:
    return tuple(_tupleify(i) for i in x) if isinstance(x, list) else x


def torchx_state(config: dict | None = None) -> dict[str, Any]:
    """torchx's part of a checkpoint: its version, the RNG states and the run's resolved config, so
    that a checkpoint file alone rebuilds its model (torchx.load_model)."""
    import torchx

    state = {"version": torchx.__version__, "rng": rng_state()}
    if config is not None:
        state["config"] = config
    return state


def restore_torchx_state(state: dict[str, Any] | None) -> None:
    if state and "rng" in state:
        set_rng_state(state["rng"])


class TorchxState(pl.Callback):
    """Puts torchx's version, the RNG states and the config into every checkpoint and restores the
    RNGs on resume.

    Under DDP every process draws its own random numbers (dropout on its own shard), so the checkpoint,
    which rank 0 writes, carries every rank's RNG states (`rng_per_rank`, gathered when all ranks save)
    and each rank of a resumed run takes its own: a resume with the same number of processes is exact."""

    def __init__(self, config: dict | None = None) -> None:
        self.config = config

    @property
    def state_key(self) -> str:
        return STATE_KEY

    def state_dict(self) -> dict[str, Any]:
        from torchx.distributed import gather_per_rank

        state = torchx_state(self.config)
        per_rank = gather_per_rank(state["rng"])  # every rank is saving now (Lightning's dump_checkpoint)
        if per_rank is not None:
            state["rng_per_rank"] = per_rank
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        from torchx.distributed import rank_and_world

        per_rank = state_dict.get("rng_per_rank")
        rank, world = rank_and_world()
        if per_rank and len(per_rank) == world:
            set_rng_state(per_rank[rank])
        else:  # one process, or another process count than the run saved with: rank 0's states
            restore_torchx_state(state_dict)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        mark_epoch_started(checkpoint)


def mark_epoch_started(checkpoint: dict) -> None:
    """Repair pl.Trainer's epoch counters in a mid-epoch checkpoint.

    After a resume from a checkpoint taken on an epoch's last batch (before validation),
    Lightning 2.6 runs the next epoch without counting it as started, so that epoch's mid-epoch
    checkpoints look like end-of-epoch ones and a resume from them replays its batches. A
    checkpoint inside an epoch (batches done, not the last one) always has its epoch started
    but not yet processed; set the counters so.
    """
    fit_loop = (checkpoint.get("loops") or {}).get("fit_loop") or {}
    batches, epochs = fit_loop.get("epoch_loop.batch_progress"), fit_loop.get("epoch_progress")
    if not batches or not epochs or batches.get("is_last_batch") or not batches["current"].get("ready"):
        return
    for part in ("total", "current"):
        counts = epochs[part]
        if counts["started"] <= counts["processed"]:
            counts["ready"] = counts["started"] = counts["processed"] + 1


# ---------------------------------------------------------------- preemption

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: "try again" — a job script requeues on it
EXIT_NONFINITE = 3  # the loss became NaN/inf and the run stopped; ckpt/ holds the last good state
PREEMPT_SIGNALS = ("SIGTERM", "SIGUSR1")  # SIGUSR1: what SLURM sends before the time limit (--signal)


class Preempted(Exception):
    """Raised at a step boundary after the preemption checkpoint is written."""

    def __init__(self, signame: str, step: int, path: Path) -> None:
        super().__init__(f"{signame} received: saved {path} at step {step}; continue with --resume")
        self.signame, self.step, self.path = signame, step, path


class SignalFlag:
    """Remembers the first preemption signal; handlers only set a flag, the loop acts on it."""

    def __init__(self) -> None:
        self.received: str | None = None
        self._previous: dict[int, Any] = {}
        self._depth = 0  # installs not yet undone: nested scopes (a whole run, its training) share one flag

    def install(self) -> None:
        """Take the signals (again: a framework may have set its own handlers meanwhile); the handlers
        from before the first install are what the last uninstall puts back."""
        import signal
        import threading

        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread
        self._depth += 1
        for name in PREEMPT_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                previous = signal.signal(sig, self._handle)
                self._previous.setdefault(sig, previous)

    def uninstall(self) -> None:
        import signal

        self._depth = max(self._depth - 1, 0)
        if self._depth:
            return
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: Any) -> None:
        import signal

        self.received = self.received or signal.Signals(signum).name


class PreemptionCheckpoint(pl.Callback):
    """On SIGTERM/SIGUSR1: write ckpt/last.ckpt at the next step boundary, then stop the run."""

    def __init__(self, ckpt_dir: Path) -> None:
        self.ckpt_dir, self.flag = Path(ckpt_dir), SignalFlag()

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.flag.install()  # after Lightning's own handlers, so these win while training runs

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.flag.uninstall()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        received = self.flag.received is not None
        loop = trainer.fit_loop
        # A validation due after this batch would be skipped by a resume from here: let it run
        # (and its checkpoints) and stop at the next batch. Every rank gets the same answer, so
        # under DDP they all skip the all-reduce below together.
        if (received or trainer.world_size > 1) and loop.epoch_loop._should_check_val_fx(loop._data_fetcher):
            return
        if trainer.world_size > 1:  # every rank stops at the same step, whichever got the signal
            received = trainer.strategy.reduce_boolean_decision(received, all=False)
        if received:
            path = self.ckpt_dir / "last.ckpt"
            trainer.save_checkpoint(path)
            self.flag.uninstall()
            raise Preempted(self.flag.received or "signal", trainer.global_step, path)

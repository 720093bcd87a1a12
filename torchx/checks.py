"""Checks that need built objects, run by both loops (and --dry-run, and a session for every
experiment) before the run directory exists.

Everything here is a trial: the optimizers and schedulers are built once and thrown away, one
training batch goes through the wrapper's `check_batch`, and a wrapper that does not declare
what it logs (a user's LightningModule) takes one trial step on a copy when a monitor names
one of its metrics. The random generators are put back afterwards, so a run with the checks
draws the same numbers as one without them.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import warnings
from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl

from torchx import build
from torchx.checkpoint import rng_state, set_rng_state
from torchx.datasets.base import TensorDataModule
from torchx.errors import ConfigError
from torchx.registry import close_matches
from torchx.run import is_rank_zero


def dry(args: Any, run: Any, loop: Any, data_cache: dict | None = None) -> tuple[Any, Any, bool]:
    """What --dry-run builds and checks, for a run or each experiment of a session: every component,
    what the loop (`loop.dry_check`) alone needs, and the preflight checks on the data, which is read
    (set up) unless it would be downloaded. `data_cache` shares one set-up data module between
    experiments with the same data_module spec. Returns (data, wrapper, whether the data was read)."""
    cfg = run.config
    data, wrapper = build.data_module(cfg), build.wrapper(cfg)
    loop.dry_check(args, run, data, wrapper)
    build.user_callbacks(cfg)
    read = not getattr(data, "download", False)
    if not read:
        with kept_rng():
            optimizers(wrapper)
        build.check_monitors(cfg, wrapper)
        return data, wrapper, False
    key = json.dumps(cfg["data_module"], sort_keys=True, default=str)
    if data_cache is not None and key in data_cache:
        data = data_cache[key]
    else:
        with kept_rng():
            data.setup("fit")
        if data_cache is not None:
            data_cache[key] = data
    preflight(cfg, data, wrapper)
    return data, wrapper, True


def preflight(cfg: dict, data: pl.LightningDataModule, wrapper: pl.LightningModule) -> None:
    """Every check that needs the built data module (set up for "fit") and wrapper."""
    with kept_rng():
        optimizers(wrapper)
        batch(data, wrapper)
        monitors(cfg, data, wrapper)


@contextlib.contextmanager
def kept_rng() -> Iterator[None]:
    state = rng_state()
    try:
        yield
    finally:
        set_rng_state(state)


def optimizers(wrapper: pl.LightningModule) -> None:
    """Build the optimizers and schedulers once: a value torch refuses (lr: -1) is found now."""
    if callable(getattr(wrapper, "build_optimizers", None)):
        with build.reported_as("train_wrapper (its optimizer and scheduler specs)"):
            build.optimizers_of(wrapper)
        return
    try:  # a user's configure_optimizers may need the trainer (estimated_stepping_batches): not checkable yet
        build.optimizers_of(wrapper)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"train_wrapper: configure_optimizers() failed: {e}") from e
    except Exception:
        pass


def first_batch(data: pl.LightningDataModule) -> Any:
    loader = data.train_dataloader()
    try:
        batch = next(iter(loader))
    except StopIteration:
        raise ConfigError(f"the data module's train_dataloader() gives no batch ({type(data).__name__} has no "
                          f"training data)") from None
    if isinstance(data, TensorDataModule):
        return data.on_after_batch_transfer(batch, 0)  # what the wrapper is given: the transforms finish here
    return batch


def batch(data: pl.LightningDataModule, wrapper: pl.LightningModule) -> None:
    """One training batch through `wrapper.check_batch` (torchx's wrappers), with every label of a
    torchx data module checked against the model's classes."""
    check = getattr(wrapper, "check_batch", None)
    if not callable(check):
        return
    labels = data.labels() if isinstance(data, TensorDataModule) else None
    with build.reported_as("train_wrapper (one training batch)"):
        check(first_batch(data), labels=labels)


def monitors(cfg: dict, data: pl.LightningDataModule, wrapper: pl.LightningModule) -> None:
    """Monitored metrics must be logged: checked against what the wrapper declares, or else against
    what one trial step and one validation batch of it log (for the monitors that would stop the
    run when their metric is missing: checkpoint.monitor, and callbacks and schedulers that are not
    `strict: false`; a metric first logged after the first epoch is refused as ModelCheckpoint
    would refuse it at its first save)."""
    named = [(where, metric) for where, metric, strict in build.named_monitors(cfg) if strict]
    if build.declared_metrics(wrapper) or not named:
        build.check_monitors(cfg, wrapper)
        return
    logged = trial_logged(data, wrapper)
    if logged is None:
        return  # the trial could not run here; a missing metric is reported when it is looked for
    for where, metric in named:
        if metric not in logged:
            known = sorted(logged - {"epoch", "step"})
            raise ConfigError(f"{where}: '{metric}' is not logged by the wrapper{close_matches(str(metric), known)}; "
                              f"one trial training step and validation batch logged: {', '.join(known) or '(nothing)'}")


def trial_logged(data: pl.LightningDataModule, wrapper: pl.LightningModule) -> set[str] | None:
    """The names a copy of `wrapper` logs in one training batch, one validation batch and their
    epoch ends, on one CPU process with no logger, checkpoint or output. None when the copy or
    the trial fails (the real run then reports what goes wrong, with its traceback)."""
    if not is_rank_zero():
        return None  # DDP ranks and launchers' other processes: rank 0 has checked the same config
    try:
        trial = copy.deepcopy(wrapper)
    except Exception:
        return None
    log = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    level = log.level
    log.setLevel(logging.ERROR)
    previous = getattr(data, "trainer", None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = pl.Trainer(accelerator="cpu", devices=1, max_epochs=1, limit_train_batches=1,
                                 limit_val_batches=1, num_sanity_val_steps=0, logger=False,
                                 enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                 use_distributed_sampler=False)
            trainer.fit(trial, datamodule=data)
    except Exception:
        return None
    finally:
        log.setLevel(level)
        data.trainer = previous  # the real Trainer attaches itself again
    return set(trainer.callback_metrics) | {"epoch", "step"}

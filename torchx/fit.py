"""Training with pl.Trainer: what train_pl.py runs once the config is checked."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks.progress.progress_bar import ProgressBar as LightningProgressBar
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.trainer.connectors.data_connector import _parse_num_batches
from pytorch_lightning.trainer.states import RunningStage

from torchx import build, checks, distributed, loggers
from torchx.callbacks.base_logger import BaseLogger, PlainProgress, ProgressBar, interactive, plain_every_s
from torchx.checkpoint import (
    EXIT_NONFINITE,
    EXIT_PREEMPTED,
    AtomicCheckpointIO,
    FinalCheckpoint,
    Preempted,
    PreemptionCheckpoint,
    TorchxState,
)
from torchx.config import check_val_interval
from torchx.datasets.base import TensorDataModule
from torchx.errors import NonFiniteLoss, first_line
from torchx.loggers import system
from torchx.loggers.csvlog import CSVLogger
from torchx.precision import compile_model
from torchx.run import Run, check_fits, claim, is_rank_zero, run_args
from torchx.trial import Trial, from_environment

PROG = "train_pl.py"

_lightning_log = logging.getLogger("pytorch_lightning.utilities.rank_zero")
_lightning_log.addFilter(lambda record: "litlogger" not in record.getMessage())  # an advert, not information


class ReportToTrial(pl.Callback):
    """A search trial's pruning (torchx.trial): after each validation rank 0 reports the metric to the
    study; when its pruner says stop, every rank stops there as EarlyStopping stops them, and
    training ends cleanly (last.ckpt at that step, the logs kept)."""

    def __init__(self, trial: Trial) -> None:
        self.trial = trial

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k == self.trial.metric}
        stop = trainer.is_global_zero and self.trial.report(metrics, trainer.global_step, trainer.current_epoch)
        if trainer.strategy.broadcast(stop, src=0):
            trainer.should_stop = True


def trainer_kwargs(cfg: dict, run: Run, data: pl.LightningDataModule, wrapper: pl.LightningModule,
                   gpus: list[int] | None, trial: Trial | None = None, trackers: list[Any] = ()) -> dict[str, Any]:
    """pl.Trainer arguments: trainer_params plus torchx's loggers (TensorBoard, metrics.csv and the
    config's `loggers:`), checkpointing and callbacks."""
    params = distributed.with_timeout(cfg, build.apply_gpus(cfg, gpus)["trainer_params"])
    logger = BaseLogger(run.dir)
    user = build.user_callbacks(cfg)
    cbs: list[pl.Callback] = [logger, TorchxState(cfg), PreemptionCheckpoint(run.ckpt_dir), *user]
    if distributed.exact(cfg, params):
        cbs.append(distributed.ExactAllReduce())
    if trial is not None:
        cbs.append(ReportToTrial(trial))
    sampler = system.make(cfg)
    if sampler is not None:
        cbs.append(system.lightning_callback(sampler))
    # torchx's bar steps aside for a progress bar of the user's own (Lightning allows one)
    if params.get("enable_progress_bar", True) and not any(isinstance(cb, LightningProgressBar) for cb in user):
        cbs.append(ProgressBar(logger.report) if interactive() else PlainProgress(logger.report, plain_every_s()))
    if params.get("enable_checkpointing", True):
        with build.reported_as(f"checkpoint {cfg.get('checkpoint') or {}}"):
            cbs.append(FinalCheckpoint(dirpath=run.ckpt_dir, **build.checkpoint_args(cfg)))
    # on resume, TensorBoard hides and metrics.csv drops what a killed run logged after its checkpoint
    tensorboard = TensorBoardLogger(save_dir=run.dir, name="default", version=0, default_hp_metric=False,
                                    purge_step=run.resume_step)
    csv = CSVLogger(run.dir / "metrics.csv", build.csv_columns(data, wrapper), drop_from=run.resume_step)
    kwargs = {"logger": [tensorboard, csv, *trackers],
              "log_every_n_steps": 50, **params, "callbacks": cbs,
              "plugins": [AtomicCheckpointIO(), *(params.get("plugins") or []), *distributed.slurm_plugin()]}
    if isinstance(data, TensorDataModule):
        kwargs["use_distributed_sampler"] = False  # torchx's sampler shards by rank itself
    return kwargs


def make_trainer(cfg: dict, kwargs: dict[str, Any]) -> pl.Trainer:
    with build.reported_as(f"trainer_params {cfg.get('trainer_params') or {}}"):
        return pl.Trainer(**kwargs)


@contextlib.contextmanager
def held_lightning_info() -> Iterator[Callable[[], None]]:
    """Hold back what Lightning prints while the Trainer is built ("GPU available: ..."), for the
    function this yields to print once every check has passed: a late refusal is then the only
    output, not a message after Lightning's device lines."""
    held: list[logging.LogRecord] = []

    def hold(record: logging.LogRecord) -> bool:
        held.append(record)
        return False

    _lightning_log.addFilter(hold)
    try:
        yield lambda: [_lightning_log.handle(r) for r in held]
    finally:
        _lightning_log.removeFilter(hold)


def dry_check(args: argparse.Namespace, run: Run, data: pl.LightningDataModule, wrapper: pl.LightningModule) -> None:
    """What --dry-run builds for train_pl.py beyond the shared components: the Trainer itself."""
    level = _lightning_log.level
    _lightning_log.setLevel(logging.WARNING)  # "GPU available: ..." belongs to a real run
    try:
        make_trainer(run.config, trainer_kwargs(run.config, run, data, wrapper, args.gpus))
    finally:
        _lightning_log.setLevel(level)


def check_val_batches(cfg: dict, data: pl.LightningDataModule, trainer: pl.Trainer) -> None:
    """pl.Trainer refuses an int val_check_interval longer than an epoch only once training runs;
    check it before the run directory exists (one process: a DDP rank's share is not known yet)."""
    params = cfg.get("trainer_params") or {}
    if not isinstance(params.get("val_check_interval"), int) or trainer.world_size > 1:
        return
    loader = data.train_dataloader()
    if hasattr(loader, "__len__"):
        with build.reported_as(f"trainer_params {params}"):
            batches = _parse_num_batches(RunningStage.TRAINING, len(loader), trainer.limit_train_batches)
        check_val_interval(params, batches)


def train(args: argparse.Namespace, run: Run) -> int:
    cfg = run.config
    pl.seed_everything(cfg["seed"], workers=True, verbose=False)
    data, wrapper = build.data_module(cfg), build.wrapper(cfg)
    data.prepare_data()
    data.setup("fit")  # missing or broken data files fail here, before the run directory exists
    checks.preflight(cfg, data, wrapper)
    if is_rank_zero():
        run.data_record = build.data_record(cfg, data)
    if run.ckpt is not None:
        check_fits(run.ckpt, wrapper.state_dict(), run.ckpt_path)
    trial = from_environment()
    trackers = loggers.build(cfg)
    with held_lightning_info() as print_info:
        kwargs = trainer_kwargs(cfg, run, data, wrapper, args.gpus, trial, trackers)
        trainer = make_trainer(cfg, kwargs)
    check_val_batches(cfg, data, trainer)
    build.count_each_sample_once(data, trainer)
    run.launch = distributed.launch_record(cfg, trainer)
    compile_model(wrapper, cfg)  # in place: parameter names, and so checkpoints, do not change
    claim(run)
    print_info()
    if is_rank_zero():
        loggers.start(trackers, run, PROG)
    # torchx's SIGTERM/SIGUSR1 handler from here to the end, so a signal before training starts (or
    # during the test) is held for the step boundary, not left to Lightning's handlers or the default
    flag = next(cb.flag for cb in kwargs["callbacks"] if isinstance(cb, PreemptionCheckpoint))
    flag.install()
    status = "FAILED"  # what the trackers are told if anything below raises
    try:
        with distributed.children_watched(PROG, run_args(run.dir)):
            code = fit_and_test(run, data, wrapper, trainer, trial)
        status = "FINISHED" if code == 0 else "KILLED" if code in (EXIT_PREEMPTED, 130) else "FAILED"
        return code
    finally:
        flag.uninstall()
        loggers.finish(trackers, status)


def fit_and_test(run: Run, data: pl.LightningDataModule, wrapper: pl.LightningModule, trainer: pl.Trainer,
                 trial: Trial | None = None) -> int:
    """trainer.fit, then test with the best checkpoint (unless a search's pruner stopped the trial);
    writes results.json. Returns the exit status."""
    for noise in (".*does not have many workers.*", ".*smaller than the logging interval.*", ".*LeafSpec.*",
                  ".*exists and is not empty.*", ".*but have no `validation_step`.*"):
        warnings.filterwarnings("ignore", message=noise)  # advice that does not apply to in-memory data
    try:
        trainer.fit(wrapper, datamodule=data, ckpt_path=str(run.ckpt_path) if run.ckpt_path else None,
                    weights_only=not run.trust_checkpoint)
    except Preempted as e:
        print(f"preempted: {e}", file=sys.stderr)
        return EXIT_PREEMPTED
    except NonFiniteLoss as e:
        print(f"stopped: {e} at step {trainer.global_step} (epoch {trainer.current_epoch}); the checkpoints in "
              f"{run.ckpt_dir} are from before it. Set train_wrapper.args.nonfinite_loss=skip to skip such "
              f"batches", file=sys.stderr)
        return EXIT_NONFINITE
    except RuntimeError as e:
        if trainer.world_size > 1 and distributed.is_peer_failure(e):
            distributed.peer_lost(PROG, run_args(run.dir), first_line(e, 160))
            return 1
        raise
    except MisconfigurationException as e:  # e.g. a monitored metric that a user's wrapper logs only later on
        return stopped_by_config(run, e)
    except ValueError as e:
        if "`val_check_interval`" in str(e):  # longer than a DDP rank's epoch: found only now
            return stopped_by_config(run, e)
        raise
    if trainer.interrupted:
        return 130
    results = {"epochs": trainer.current_epoch, "global_step": trainer.global_step}
    ckpt = trainer.checkpoint_callback
    if ckpt is not None and ckpt.best_model_path:
        results["best_model_path"] = ckpt.best_model_path
        if ckpt.best_model_score is not None:
            results["best_model_score"] = float(ckpt.best_model_score)
    skipped = build.why_untested(data, wrapper)
    if trial is not None and trial.pruned:
        results["pruned"] = trial.pruned
        print(trial.message())
    elif skipped:
        print(f"test: skipped, {skipped}")
    else:
        best = results.get("best_model_path")
        tested = trainer.test(wrapper, datamodule=data, ckpt_path=best, verbose=False)
        results["test"] = {k: float(v) for k, v in (tested[0] if tested else {}).items()}
    if is_rank_zero():
        (run.dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print("final: " + json.dumps(results))
    return 0


def stopped_by_config(run: Run, e: Exception) -> int:
    """A setting that Lightning refuses only once training runs: the run directory exists by now,
    so this is a failed run (exit 1) with the way to go on, not bad input (exit 2)."""
    first = first_line(e, limit=10**6)
    has_ckpt = any(run.ckpt_dir.glob("*.ckpt"))
    how = (f"fix the setting and continue with {run_args(run.dir)} --resume KEY=VALUE" if has_ckpt else
           f"{run.dir} has no checkpoint yet: fix the setting and restart it in place with "
           f"{run_args(run.dir)} --resume KEY=VALUE (its files so far are kept under attempts/)")
    print(f"{PROG}: error: training stopped: {first}; {how}", file=sys.stderr)
    return 1

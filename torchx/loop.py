"""The plain PyTorch loop behind train.py: the same config, wrapper math and run directory.

It reads top to bottom: `train` sets up, `fit` runs epochs, `train_epoch` / `evaluate` run
batches, `Checkpoints` writes Lightning-format checkpoints. It steps optimizers and
schedulers, validates (every epoch, every N batches or a fraction of an epoch) and saves
checkpoints at the points pl.Trainer does, so the same seed gives the same losses, logs and
checkpoint files, and a checkpoint from either loop resumes in the other.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import yaml
from tqdm import tqdm

from torchx import build, checks, loggers
from torchx.callbacks.base_logger import (
    EpochReport,
    Every,
    counts_steps,
    epoch_line_metrics,
    interactive,
    plain_every_s,
    validation_metrics,
)
from torchx.checkpoint import (
    EXIT_NONFINITE,
    EXIT_PREEMPTED,
    STATE_KEY,
    Preempted,
    SignalFlag,
    atomic_save,
    restore_torchx_state,
    torchx_state,
)
from torchx.config import check_val_interval
from torchx.datasets.base import TensorDataModule
from torchx.errors import ConfigError, NonFiniteLoss
from torchx.loggers import system
from torchx.loggers.csvlog import MetricsCSV
from torchx.precision import STATE_KEY as PRECISION_KEY
from torchx.precision import SUPPORTED as PRECISIONS
from torchx.precision import Precision, compile_model, unified
from torchx.run import Run, check_fits, claim
from torchx.trial import Trial, from_environment

# trainer_params the plain loop honours; `IGNORED` ones change nothing about the results here.
SUPPORTED = {"max_epochs", "max_steps", "limit_train_batches", "limit_val_batches", "limit_test_batches",
             "val_check_interval", "check_val_every_n_epoch", "accumulate_grad_batches", "gradient_clip_val",
             "gradient_clip_algorithm", "log_every_n_steps", "deterministic", "enable_progress_bar",
             "enable_checkpointing", "benchmark", "precision"}
IGNORED = {"accelerator", "devices", "strategy", "num_nodes", "enable_model_summary", "num_sanity_val_steps",
           "sync_batchnorm", "use_distributed_sampler"}
CHECKPOINT_KEYS = {"monitor", "mode", "save_last", "save_top_k", "every_n_epochs", "every_n_train_steps", "verbose"}
REQUIRED_METHODS = ("training_loss", "evaluate", "epoch_metrics", "build_optimizers")


@dataclass
class Settings:
    """trainer_params, read once, with Lightning's defaults."""

    max_epochs: int
    max_steps: int
    limits: dict[str, int | float]
    val_interval: int | float  # an int: every N training batches; a float: that fraction of an epoch
    val_every: int | None  # validate in every N-th epoch; None: val_interval counts batches across epochs
    accumulate: int
    clip_val: float | None
    clip_algorithm: str
    log_every: int
    progress_bar: bool
    checkpointing: bool
    precision: Any = None  # the run's torchx.precision.Precision, once its device is known (see `train`)

    @classmethod
    def from_config(cls, params: dict) -> Settings:
        for key in params:
            if key not in SUPPORTED | IGNORED:
                raise ConfigError(f"train.py does not support trainer_params.{key}; run this config with "
                                  f"train_pl.py, or drop the key (train.py supports: {', '.join(sorted(SUPPORTED))})")
        if "precision" in params and unified(params["precision"]) not in PRECISIONS:
            raise ConfigError(f"train.py trains in {', '.join(PRECISIONS)}; trainer_params.precision="
                              f"{params['precision']!r} needs train_pl.py")
        max_steps = params.get("max_steps", -1)
        max_epochs = params.get("max_epochs")
        if max_epochs is None:
            max_epochs = -1 if max_steps != -1 else 1000  # Lightning's default when neither is set
        interval = params.get("val_check_interval")
        return cls(max_epochs=max_epochs, max_steps=max_steps,
                   limits={s: params.get(f"limit_{s}_batches", 1.0) for s in ("train", "val", "test")},
                   val_interval=1.0 if interval is None else interval,
                   val_every=params.get("check_val_every_n_epoch", 1),
                   accumulate=params.get("accumulate_grad_batches", 1),
                   clip_val=params.get("gradient_clip_val"),
                   clip_algorithm=params.get("gradient_clip_algorithm", "norm"),
                   log_every=params.get("log_every_n_steps", 50),
                   progress_bar=params.get("enable_progress_bar", True),
                   checkpointing=params.get("enable_checkpointing", True))

    def batches(self, split: str, available: int) -> int:
        """How many batches of `split` to run, as Lightning's limit_*_batches means it."""
        limit = self.limits[split]
        if isinstance(limit, float):
            return int(available * limit) if limit < 1.0 else available
        return min(int(limit), available)

    @property
    def by_steps(self) -> bool:
        return counts_steps(self.max_epochs, self.val_interval, self.val_every)

    def val_check_batch(self, per_epoch: int) -> int:
        """Validate after every this many training batches (pl.Trainer's `val_check_batch`)."""
        if isinstance(self.val_interval, int):
            return self.val_interval
        return max(1, int(per_epoch * self.val_interval))

    def total_steps(self, per_epoch: int) -> float:
        """The optimizer steps the run will take (pl.Trainer's `estimated_stepping_batches`)."""
        if self.max_epochs == -1:
            return float("inf") if self.max_steps == -1 else self.max_steps
        total = math.ceil(per_epoch / self.accumulate) * max(self.max_epochs, 1)
        return min(total, self.max_steps) if self.max_steps != -1 else total


@dataclass
class State:
    """Where training stands: what a checkpoint must restore."""

    epoch: int = 0  # epochs completed (= index of the epoch running)
    step: int = 0  # optimizer steps taken (Lightning's global_step)
    batches: int = 0  # training batches seen
    in_epoch: int = 0  # batches of the running epoch already done (after a mid-epoch resume, > 0 at start)
    sched_steps: int = 0
    epoch_steps: int = 0  # optimizer steps in the running epoch
    epoch_sched_steps: int = 0  # scheduler steps in the running epoch
    val_batches: int = 0  # validation batches run in the running epoch
    last_val_batches: int = 0  # batches of the latest validation
    last_epoch_batches: int = 0  # batches the latest finished epoch ran
    in_step: bool = False  # after a batch that stepped, until the next one
    resumed_log_step: int | None = None  # the checkpoint's logging step, until a batch runs after resuming
    restarting: bool = False  # resumed from a checkpoint, and its first epoch has not ended yet
    stop: bool = False  # stop training now, as pl.Trainer's should_stop (a search trial pruned)


def dry_check(args: argparse.Namespace, run: Run, data: Any, wrapper: pl.LightningModule) -> None:
    """What --dry-run checks for train.py: its trainer_params, checkpoint keys, device, wrapper."""
    cfg = run.config
    Settings.from_config(cfg.get("trainer_params") or {})
    Checkpoints(run.ckpt_dir, cfg.get("checkpoint") or {})
    Precision((cfg.get("trainer_params") or {}).get("precision"), pick_device(args.gpus))
    check_wrapper(wrapper, cfg["train_wrapper"]["name"])
    refuse_callbacks(cfg)


def refuse_callbacks(cfg: dict) -> None:
    if cfg.get("callbacks"):
        names = ", ".join(str(spec.get("name")) for spec in cfg["callbacks"])
        raise ConfigError(f"train.py does not run Lightning callbacks ({names}); use train_pl.py for this config")


def train(args: argparse.Namespace, run: Run) -> int:
    cfg = run.config
    settings = Settings.from_config(cfg.get("trainer_params") or {})
    device = pick_device(args.gpus)
    settings.precision = Precision((cfg.get("trainer_params") or {}).get("precision"), device)
    pl.seed_everything(cfg["seed"], workers=True, verbose=False)
    if (cfg.get("trainer_params") or {}).get("deterministic"):
        torch.use_deterministic_algorithms(True)
    refuse_callbacks(cfg)
    data, wrapper = build.data_module(cfg), build.wrapper(cfg)
    check_wrapper(wrapper, cfg["train_wrapper"]["name"])
    data.prepare_data()
    data.setup("fit")
    checks.preflight(cfg, data, wrapper)
    run.data_record = build.data_record(cfg, data)
    if isinstance(settings.val_interval, int):  # pl.Trainer refuses one longer than an epoch
        check_val_interval(cfg.get("trainer_params") or {}, settings.batches("train", len(data.train_dataloader())))
    ckpts = Checkpoints(run.ckpt_dir, cfg.get("checkpoint") or {}, enabled=settings.checkpointing)
    ckpts.config, ckpts.precision = cfg, settings.precision
    wrapper.to(device)
    optimizer, scheds = wrapper.build_optimizers()
    state = State()
    if run.ckpt_path:  # before claim(): a checkpoint that does not fit this model changes nothing
        check_fits(run.ckpt, wrapper.state_dict(), run.ckpt_path)
        state = load_checkpoint(run.ckpt_path, wrapper, optimizer, scheds, ckpts, device, run.trust_checkpoint)
        ckpts.resumed_from = Path(run.ckpt_path).absolute()
    compile_model(wrapper, cfg)  # in place, after the weights are in: parameter names do not change
    progress = Progress(EpochReport(run.dir / "log.txt"), settings.progress_bar)
    trackers, sampler = loggers.build(cfg), system.make(cfg)
    claim(run)
    loggers.start(trackers, run, "train.py")
    logs = Logs(run, wrapper, build.csv_columns(data, wrapper), trackers, sampler)
    trial = from_environment()
    status = "FAILED"  # what the trackers are told if anything below raises
    try:
        try:
            fit(wrapper, data, optimizer, scheds, settings, state, ckpts, logs, progress, device, trial)
        except Preempted as e:
            status = "KILLED"
            print(f"preempted: {e}", file=sys.stderr)
            return EXIT_PREEMPTED
        except NonFiniteLoss as e:
            print(f"stopped: {e} at step {state.step} (epoch {state.epoch}); the checkpoints in {ckpts.dir} are "
                  f"from before it. Set train_wrapper.args.nonfinite_loss=skip to skip such batches", file=sys.stderr)
            return EXIT_NONFINITE
        if trial is not None and trial.pruned:
            results = {**fit_results(state, ckpts), "pruned": trial.pruned}
            print(trial.message())
        else:
            results = test(wrapper, data, settings, state, ckpts, logs, device)
        logs.close()
        (run.dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print("final: " + json.dumps(results))
        status = "FINISHED"
        return 0
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        logs.close()
        loggers.finish(trackers, status)


def pick_device(gpus: list[int] | None) -> torch.device:
    if not gpus:
        return torch.device("cpu")
    if len(gpus) > 1:
        raise ConfigError(f"train.py trains on one device, --gpu names {len(gpus)}; use train_pl.py for DDP")
    return torch.device(f"cuda:{gpus[0]}")


def check_wrapper(wrapper: pl.LightningModule, name: str) -> None:
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(wrapper, m, None))]
    if missing:
        raise ConfigError(f"train.py needs the wrapper to provide {', '.join(REQUIRED_METHODS)} (the `base` "
                          f"wrapper does); '{name}' lacks {', '.join(missing)}: run it with train_pl.py")
    if not wrapper.automatic_optimization:
        raise ConfigError(f"wrapper '{name}' uses Lightning's manual optimization; run it with train_pl.py")


def fit(wrapper, data, optimizer, scheds, settings: Settings, state: State, ckpts: Checkpoints,
        logs: Logs, progress: Progress, device: torch.device, trial: Trial | None = None) -> None:
    """Epochs of training batches; after each batch, what pl.Trainer does there: preemption and step
    checkpoints (its callbacks' on_train_batch_end), validation when due (val_check_interval,
    check_val_every_n_epoch), checkpoints after it, ReduceLROnPlateau of interval step. A search
    `trial` gets the metric after each validation; when its pruner says so, training stops there."""
    train_loader = data.train_dataloader()
    per_epoch = settings.batches("train", len(train_loader))
    # a data module of the user's may have no val_dataloader: then there is no validation, as under pl.Trainer
    val_loader = data.val_dataloader() if build.validates(data) else []
    n_val = settings.batches("val", len(val_loader)) if val_loader else 0
    val_batch = settings.val_check_batch(per_epoch)
    if done(settings, state):  # nothing left to train: pl.Trainer skips its train hooks too
        return
    report = progress.report
    report.start(state.step, settings.total_steps(per_epoch), settings.by_steps)
    ckpts.setup(on_epoch_end=saves_on_epoch_end(settings, n_val), per_epoch=per_epoch)
    if callable(getattr(train_loader, "load_state_dict", None)):  # a mid-epoch checkpoint goes on from there
        train_loader.load_state_dict({"epoch": state.epoch, "batches": state.in_epoch})
    seen = logs.latest  # Lightning's callback_metrics: the latest value of everything logged
    validated: dict[str, float] | None = None  # a validation at the epoch's last batch, for the epoch's line

    def validates_this_epoch() -> bool:
        return n_val > 0 and (settings.val_every is None or (state.epoch + 1) % settings.val_every == 0)

    def after_batch(stepped: bool) -> None:
        nonlocal validated
        data.batches_seen = state.in_epoch
        count = state.in_epoch if settings.val_every is not None else state.batches
        validation_due = validates_this_epoch() and count % val_batch == 0
        # preempted: a mid-epoch last.ckpt, then stop; not before a validation due now, which a
        # resume would skip (as pl.Trainer does): that batch's validation runs, the next batch stops
        if flag.received and not validation_due:
            path = ckpts.dir / "last.ckpt"
            ckpts.write(path, wrapper, optimizer, scheds, state, "batch")
            raise Preempted(flag.received, state.step, path)
        last = state.in_epoch == per_epoch
        ckpts.on_train_batch_end(wrapper, optimizer, scheds, state, seen, last, validates_this_epoch())
        if validation_due:
            metrics = evaluate(wrapper, val_loader, "val", settings, device, state, data=data)
            logs.log(metrics, state.epoch, state.step - 1 if stepped else state.step)
            logs.flush()  # on disk before a checkpoint: a kill cannot lose them
            ckpts.on_validation_end(wrapper, optimizer, scheds, state, seen)
            if trial is not None and trial.report(seen, state.step, state.epoch):
                state.stop = True  # this epoch ends after this batch, as pl.Trainer's should_stop ends it
            if last or settings.max_steps != -1 and state.step >= settings.max_steps:
                validated = validation_metrics(seen)  # the epoch ends here: its line shows them
            else:
                report.write(report.line(state.epoch, settings.max_epochs, state.step, validation_metrics(seen)),
                             echo=progress.write)
        if stepped:
            step_plateau(scheds, "step", seen, state, index=state.in_epoch)
        logs.system()

    flag = SignalFlag()
    flag.install()

    try:
        while not done(settings, state):
            validated = None
            train_epoch(wrapper, train_loader, per_epoch, optimizer, scheds, settings, state, logs, progress, device,
                        after_batch, data)
            metrics = {k: float(v) for k, v in wrapper.epoch_metrics("train").items()}
            logs.log(metrics, state.epoch, state.step - 1)
            logs.flush()  # on disk before the checkpoint: a kill cannot lose them
            ckpts.on_train_epoch_end(wrapper, optimizer, scheds, state, seen)
            complete = state.in_epoch == per_epoch
            state.epoch, state.last_epoch_batches, state.in_epoch = state.epoch + 1, state.in_epoch, 0
            if complete and not state.restarting:  # as pl.Trainer: not after a cut-short or the resumed epoch
                step_plateau(scheds, "epoch", seen, state, index=state.epoch)
            state.restarting = False
            line = report.line(state.epoch - 1, settings.max_epochs, state.step, epoch_line_metrics(seen, validated))
            report.write(line, echo=progress.write)
        ckpts.on_train_end(wrapper, optimizer, scheds, state)
    finally:
        flag.uninstall()


def saves_on_epoch_end(settings: Settings, n_val: int) -> bool:
    """ModelCheckpoint's choice: save when a training epoch ends, or after each validation."""
    if settings.val_every != 1:
        return False
    return n_val == 0 or settings.val_interval == 1.0  # as Lightning compares it (an int 1 counts too)


def done(settings: Settings, state: State) -> bool:
    return state.stop or (settings.max_steps != -1 and state.step >= settings.max_steps) or \
        (settings.max_epochs != -1 and state.epoch >= settings.max_epochs)


def train_epoch(wrapper, loader, n_batches: int, optimizer, scheds, settings: Settings, state: State,
                logs: Logs, progress: Progress, device: torch.device, after_batch=lambda stepped: None,
                data: Any = None) -> None:
    """One epoch (or its rest, after a mid-epoch resume), stepping like Lightning's automatic
    optimization: accumulation, clipping, schedulers; `after_batch(stepped)` runs after every batch.
    Leaves `state.in_epoch` at the batches done: fewer than `n_batches` when max_steps cut it short."""
    wrapper.train()
    precision = settings.precision or Precision(None, device)
    sampler = getattr(loader, "sampler", None)  # a user's train_dataloader may return any iterable
    if callable(getattr(sampler, "set_epoch", None)):  # torchx's sampler, DistributedSampler, ...
        sampler.set_epoch(state.epoch)
    if state.in_epoch == 0:  # Lightning's per-epoch counters start again (a resumed epoch keeps its own)
        state.epoch_steps = state.epoch_sched_steps = state.val_batches = 0
    progress.start_epoch(state, settings, n_batches)
    for batch_idx, batch in enumerate(loader, start=state.in_epoch):
        if batch_idx >= n_batches or state.stop or (settings.max_steps != -1 and state.step >= settings.max_steps):
            break
        batch = to_device(batch, device, data, wrapper)
        with precision.autocast():
            loss = wrapper.training_loss(batch)
        state.in_epoch, state.batches = batch_idx + 1, state.batches + 1
        if loss is None:  # a non-finite loss the wrapper skips: no backward; as under Lightning, the step
            optimizer.zero_grad(set_to_none=True)  # still counts but changes nothing (no gradients)
        else:
            precision.backward(loss / settings.accumulate if settings.accumulate > 1 else loss)
        stepping = (batch_idx + 1) % settings.accumulate == 0 or batch_idx + 1 == n_batches
        if stepping:
            precision.step(optimizer, lambda: clip(wrapper, settings), skipped=loss is None)
            optimizer.zero_grad(set_to_none=True)
            step_schedulers(scheds, "step", batch_idx, state)
            if loss is not None and (state.step + 1) % settings.log_every == 0:
                logs.log({"train/loss_step": float(loss.detach())}, state.epoch, state.step)
            state.step += 1
            state.epoch_steps += 1
        if batch_idx + 1 == n_batches:
            step_schedulers(scheds, "epoch", state.epoch, state)
        state.in_step, state.resumed_log_step = stepping, None
        after_batch(stepping)
        state.in_step = False
        progress.batch_done(state)
    progress.end_epoch()


class Progress:
    """train.py's progress, as train_pl.py shows it: on a terminal a tqdm bar refreshed every 20
    batches with the run's ETA, else a plain line every TORCHX_PROGRESS_EVERY seconds."""

    def __init__(self, report: EpochReport, enabled: bool) -> None:
        self.report, self.enabled, self.bar_mode = report, enabled, interactive()
        self.every = Every(plain_every_s() if enabled and not self.bar_mode else 0.0)  # a bad value: before claim()
        self.bar: tqdm | None = None
        self._epoch, self._max_epochs, self._batches = 0, None, 0

    def start_epoch(self, state: State, settings: Settings, n_batches: int) -> None:
        self._epoch, self._max_epochs, self._batches = state.epoch, settings.max_epochs, n_batches
        if self.enabled and self.bar_mode:
            self.bar = tqdm(total=n_batches, initial=state.in_epoch, desc=f"Epoch {state.epoch}", leave=False,
                            dynamic_ncols=True, mininterval=0.5, file=sys.stdout)

    def batch_done(self, state: State) -> None:
        if self.bar is not None:
            if state.in_epoch % 20 == 0:
                self.bar.update(20)
                self.bar.set_postfix(self.report.postfix(state.step), refresh=False)
        elif self.enabled and self.every.due():
            print(self.report.progress(self._epoch, self._max_epochs, state.step, state.in_epoch, self._batches),
                  flush=True)

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def write(self, text: str) -> None:
        """A report line, printed above the bar when there is one."""
        if self.bar is not None:
            tqdm.write(text, file=sys.stdout)
        else:
            print(text, flush=True)


def clip(wrapper, settings: Settings) -> None:
    if settings.clip_val:
        if settings.clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(wrapper.parameters(), settings.clip_val)
        else:
            torch.nn.utils.clip_grad_norm_(wrapper.parameters(), settings.clip_val)


def step_schedulers(scheds: list[dict], interval: str, index: int, state: State) -> None:
    """Non-plateau schedulers of `interval`, when (index + 1) is a multiple of their frequency."""
    for s in scheds:
        if s["interval"] == interval and not is_plateau(s) and (index + 1) % s["frequency"] == 0:
            s["scheduler"].step()
            state.sched_steps += 1
            state.epoch_sched_steps += 1


def step_plateau(scheds: list[dict], interval: str, metrics: dict, state: State, index: int) -> None:
    """ReduceLROnPlateau schedulers of `interval`, fed the latest value of their monitored metric,
    when `index` (batches of the epoch, or epochs, counted from 1) is a multiple of their frequency."""
    for s in scheds:
        if not is_plateau(s) or s["interval"] != interval or index % s["frequency"] != 0:
            continue
        monitor = s.get("monitor")
        if monitor not in metrics:
            if s.get("strict", True):
                raise ConfigError(f"ReduceLROnPlateau monitors '{monitor}', which was not logged; "
                                  f"logged: {', '.join(sorted(metrics)) or '(nothing)'}")
            continue
        s["scheduler"].step(metrics[monitor])
        state.sched_steps += 1
        state.epoch_sched_steps += 1


def is_plateau(s: dict) -> bool:
    return isinstance(s["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)


@torch.no_grad()
def evaluate(wrapper, loader, stage: str, settings: Settings, device: torch.device,
             state: State | None = None, data: Any = None) -> dict[str, float]:
    wrapper.eval()
    n = settings.batches(stage, len(loader))
    precision = settings.precision or Precision(None, device)
    for i, batch in enumerate(loader):
        if i >= n:
            break
        batch = to_device(batch, device, data, wrapper)
        with precision.autocast():
            wrapper.evaluate(batch, stage)
    if state is not None:
        state.last_val_batches, state.val_batches = n, state.val_batches + n
    wrapper.train()
    return {k: float(v) for k, v in wrapper.epoch_metrics(stage).items()}


def to_device(batch: Any, device: torch.device, data: Any = None, wrapper: Any = None) -> Any:
    """A batch's tensors on `device`, inside tuples, lists and dicts, as Lightning moves them, with
    the batch hooks Lightning calls around the move (`on_before_batch_transfer`,
    `on_after_batch_transfer`): the data module's where it overrides them, else the wrapper's."""
    from pytorch_lightning.utilities.model_helpers import is_overridden

    def owner(hook: str) -> Any:
        if data is not None and is_overridden(hook, data, pl.LightningDataModule):
            return data
        if wrapper is not None and is_overridden(hook, wrapper, pl.LightningModule):
            return wrapper
        return None

    if (hook := owner("on_before_batch_transfer")) is not None:
        batch = hook.on_before_batch_transfer(batch, 0)
    if device.type != "cpu":
        from lightning_fabric.utilities.apply_func import move_data_to_device

        batch = move_data_to_device(batch, device)
    if (hook := owner("on_after_batch_transfer")) is not None:
        batch = hook.on_after_batch_transfer(batch, 0)
        if hook is data and isinstance(data, TensorDataModule) and wrapper is not None and \
                is_overridden("on_after_batch_transfer", wrapper, pl.LightningModule):
            batch = wrapper.on_after_batch_transfer(batch, 0)  # torchx's hook hands on to the wrapper's
    return batch


def fit_results(state: State, ckpts: Checkpoints) -> dict[str, Any]:
    """results.json's account of training: epochs, steps, the best checkpoint and its score."""
    results: dict[str, Any] = {"epochs": state.epoch, "global_step": state.step}
    if ckpts.best_path:
        results["best_model_path"] = str(ckpts.best_path)
        if ckpts.best_score is not None:
            results["best_model_score"] = ckpts.best_score
    return results


def test(wrapper, data, settings: Settings, state: State, ckpts: Checkpoints, logs: Logs,
         device: torch.device) -> dict[str, Any]:
    """Test with the best checkpoint (else the last weights) when the data module has a test set."""
    results = fit_results(state, ckpts)
    skipped = build.why_untested(data, wrapper)
    if skipped:
        print(f"test: skipped, {skipped}")
        return results
    loader = data.test_dataloader()
    if not loader:
        print("test: skipped, the data module's test_dataloader() is empty")
        return results
    if ckpts.best_path:
        sd = torch.load(ckpts.best_path, map_location=device, weights_only=True)["state_dict"]
        wrapper.load_state_dict(sd)
    metrics = evaluate(wrapper, loader, "test", settings, device, data=data)
    # at pl.Trainer's logging step: the checkpoint's, when a resumed run had nothing left to train
    logs.epoch_end(metrics, state, step=state.step if state.resumed_log_step is None else state.resumed_log_step)
    results["test"] = metrics
    return results


# ---------------------------------------------------------------- logging


class Logs:
    """TensorBoard events, metrics.csv and the config's trackers, with the tags and steps Lightning
    uses; hardware metrics (`system_metrics`) at the step of the latest training metrics."""

    def __init__(self, run: Run, wrapper, columns: set[str], trackers: list[Any] = (),
                 sampler: system.SystemMetrics | None = None) -> None:
        # torch's writer, as Lightning's TensorBoardLogger uses when tensorboard is installed: its
        # flush() waits for queued events (tensorboardX's does not), so a checkpoint never runs ahead
        from torch.utils.tensorboard import SummaryWriter

        folder = run.dir / "default" / "version_0"
        folder.mkdir(parents=True, exist_ok=True)
        if not (folder / "hparams.yaml").exists():
            (folder / "hparams.yaml").write_text(yaml.safe_dump(dict(wrapper.hparams), sort_keys=False))
        # a new events file per start, named apart even when a resume starts within the same second
        self.tb = SummaryWriter(log_dir=str(folder), flush_secs=30, filename_suffix=f".{os.getpid()}.{run.resumes}",
                                purge_step=run.resume_step)
        self.csv = MetricsCSV(run.dir / "metrics.csv", columns, drop_from=run.resume_step)
        self.latest: dict[str, float] = {}  # what monitors read, as Lightning's callback_metrics
        self.trackers, self.sampler = list(trackers), sampler
        self.last_step: int | None = None
        self.closed = False

    def log(self, metrics: dict[str, float], epoch: int, step: int) -> None:
        self.latest.update(metrics)
        for k, v in metrics.items():
            self.tb.add_scalar(k, v, step)
        self.tb.add_scalar("epoch", epoch, step)
        self.csv.log({**metrics, "epoch": epoch}, step)
        for tracker in self.trackers:  # the dict pl.Trainer gives its loggers: the metrics and the epoch
            tracker.log_metrics({**metrics, "epoch": float(epoch)}, step)
        self.last_step = step

    def system(self) -> None:
        """After a training batch: a hardware sample when one is due, to TensorBoard and the trackers."""
        sample = self.sampler.due(self.last_step) if self.sampler is not None else None
        if sample:
            for k, v in sample.items():
                self.tb.add_scalar(k, v, self.last_step)
            for tracker in self.trackers:
                tracker.log_metrics(sample, self.last_step)

    def flush(self) -> None:
        self.tb.flush()

    def epoch_end(self, metrics: dict[str, float], state: State, step: int | None = None) -> None:
        """Epoch-end scalars at the step of the epoch's last batch, as Lightning's logger writes them."""
        self.log(metrics, state.epoch, state.step - 1 if step is None else step)
        self.tb.flush()

    def close(self) -> None:
        if not self.closed:
            self.tb.close()
            for tracker in self.trackers:
                tracker.finalize("success")  # the last row goes to the tracker's queue
            self.closed = True


# ---------------------------------------------------------------- checkpoints


class Checkpoints:
    """pl ModelCheckpoint, hook for hook, for the plain loop: it saves after a training batch every
    `every_n_train_steps` steps, after a validation or at an epoch's end every `every_n_epochs`
    epochs (which of the two as ModelCheckpoint chooses), keeps the top-k files by `monitor`,
    writes last.ckpt whenever it saves a checkpoint (and at the end, holding the final state),
    never twice at one step, in Lightning's checkpoint format."""

    def __init__(self, dirpath: Path, args: dict, enabled: bool = True) -> None:
        for key in args:
            if key not in CHECKPOINT_KEYS:
                raise ConfigError(f"train.py does not support checkpoint.{key}; it supports "
                                  f"{', '.join(sorted(CHECKPOINT_KEYS))} (use train_pl.py for the rest)")
        self.dir, self.enabled = Path(os.path.realpath(dirpath)), enabled  # as ModelCheckpoint stores it
        self.monitor, self.mode = args.get("monitor"), args.get("mode", "min")
        if self.mode not in ("min", "max"):
            raise ConfigError(f"checkpoint.mode must be 'min' or 'max', got {self.mode!r}")
        self.save_last = args.get("save_last", True)
        self.top_k = args.get("save_top_k", 1)
        steps, epochs = args.get("every_n_train_steps"), args.get("every_n_epochs")
        if steps is None and epochs is None:  # as ModelCheckpoint: every epoch unless a step interval is set
            epochs = 1
        self.every_steps, self.every = steps or 0, epochs or 0
        self.best_k: dict[str, float] = {}  # path -> score
        self.kth_path, self.kth_value = "", float("inf") if self.mode == "min" else float("-inf")
        self.best_path: str = ""
        self.best_score: float | None = None
        self.current_score: float | None = None
        self.last_model_path = ""
        self.last_saved_step = 0  # nothing to save before the first step; never two saves at one step
        self.saved = False  # whether this run saved any checkpoint (else last.ckpt is written at the end)
        self.deferred = False  # a step checkpoint waits for the validation that logs its monitor
        self.validated = False  # whether a validation has run in this process
        self.resumed_from: Path | None = None  # never deleted as a superseded top-k file
        self.on_epoch_end, self.per_epoch = True, 0
        self.config: dict | None = None  # the run's config, carried in every checkpoint (torchx_state)
        self.precision: Precision | None = None  # its GradScaler's state goes into checkpoints (16-mixed)
        from pytorch_lightning.callbacks import ModelCheckpoint

        lightning_args = {k: v for k, v in args.items() if k != "verbose"}
        with build.reported_as(f"checkpoint {args}"):  # the same settings ModelCheckpoint refuses
            self.state_key = ModelCheckpoint(dirpath=None, **lightning_args).state_key

    def setup(self, on_epoch_end: bool, per_epoch: int) -> None:
        """`on_epoch_end`: save at training epoch ends (else after validations), see saves_on_epoch_end."""
        self.on_epoch_end, self.per_epoch = on_epoch_end, per_epoch

    # ---- the hooks, where ModelCheckpoint has them

    def on_train_batch_end(self, wrapper, optimizer, scheds, state: State, seen: dict[str, float],
                           last_batch: bool, validates: bool) -> None:
        if not self.enabled or self.every_steps < 1 or state.step % self.every_steps:
            return
        if self.monitor is not None and (self.monitor not in seen or  # not logged yet, or validation runs
                                         not self.on_epoch_end and last_batch and validates):  # right after
            self.deferred = True
            return
        if self.last_saved_step == state.step:
            return
        self._save_top_k(seen, wrapper, optimizer, scheds, state, "batch")
        self._save_last(wrapper, optimizer, scheds, state, "batch")

    def on_validation_end(self, wrapper, optimizer, scheds, state: State, seen: dict[str, float]) -> None:
        self.validated = True
        if not self.enabled or self.last_saved_step == state.step or self.on_epoch_end:
            return
        if self.deferred:
            self._save_top_k(seen, wrapper, optimizer, scheds, state, "val")
            self._save_last(wrapper, optimizer, scheds, state, "val")
            self.deferred = False
            return
        if self.every and (state.epoch + 1) % self.every == 0:
            self._save_top_k(seen, wrapper, optimizer, scheds, state, "val")
        if self.last_saved_step == state.step:
            self._save_last(wrapper, optimizer, scheds, state, "val")

    def on_train_epoch_end(self, wrapper, optimizer, scheds, state: State, seen: dict[str, float]) -> None:
        """After epoch `state.epoch` (not yet counted as completed) and its train metrics."""
        if not self.enabled or self.last_saved_step == state.step or not self.on_epoch_end:
            return
        if self.every and (state.epoch + 1) % self.every == 0:
            self._save_top_k(seen, wrapper, optimizer, scheds, state, "epoch")
        if self.last_saved_step == state.step:
            self._save_last(wrapper, optimizer, scheds, state, "epoch")

    def on_train_end(self, wrapper, optimizer, scheds, state: State) -> None:
        """last.ckpt holds the final state, as FinalCheckpoint makes pl.Trainer's do."""
        if self.enabled and self.save_last and (not self.saved or self.last_saved_step != state.step):
            self._save_last(wrapper, optimizer, scheds, state, "end")

    # ---- what ModelCheckpoint does there

    def _save_top_k(self, seen: dict[str, float], wrapper, optimizer, scheds, state: State, moment: str) -> None:
        if self.top_k == 0:
            return
        if self.monitor is None:  # the newest (save_top_k 1) or every one (-1)
            path = self._free_name(f"epoch={state.epoch}-step={state.step}", self.best_path)
            previous, self.best_path = self.best_path, path
            self._save(path, wrapper, optimizer, scheds, state, moment)
            if self.top_k == 1 and previous and self._removable(previous, path):
                Path(previous).unlink(missing_ok=True)
            return
        if self.monitor not in seen:
            if self.validated:
                raise ConfigError(f"checkpoint.monitor '{self.monitor}' was not logged; logged: "
                                  f"{', '.join(sorted(seen)) or '(nothing)'}")
            return  # nothing to rank by yet: ModelCheckpoint warns and saves nothing
        current = seen[self.monitor]
        better = current < self.best_k.get(self.kth_path, 0.0) if self.mode == "min" else \
            current > self.best_k.get(self.kth_path, 0.0)
        if not (self.top_k == -1 or len(self.best_k) < self.top_k or better):
            return
        k = len(self.best_k) + 1 if self.top_k == -1 else self.top_k
        delete = None
        if len(self.best_k) == k and k > 0:
            delete = self.kth_path
            self.best_k.pop(delete)
        if math.isnan(current):
            current = float("inf") if self.mode == "min" else float("-inf")
        path = self._free_name(f"epoch={state.epoch}-step={state.step}", delete)
        self.current_score = current
        self.best_k[path] = current
        if len(self.best_k) == k:
            self.kth_path = (max if self.mode == "min" else min)(self.best_k, key=self.best_k.get)
            self.kth_value = self.best_k[self.kth_path]
        self.best_path = (min if self.mode == "min" else max)(self.best_k, key=self.best_k.get)
        self.best_score = self.best_k[self.best_path]
        self._save(path, wrapper, optimizer, scheds, state, moment)
        if delete and self._removable(delete, path):
            Path(delete).unlink(missing_ok=True)

    def _save_last(self, wrapper, optimizer, scheds, state: State, moment: str) -> None:
        if not self.save_last:
            return
        path = self._free_name("last", self.last_model_path)
        previous, self.last_model_path = self.last_model_path, path
        self._save(path, wrapper, optimizer, scheds, state, moment)
        if previous and self._removable(previous, path):
            Path(previous).unlink(missing_ok=True)

    def _free_name(self, stem: str, reusable: str | None) -> str:
        """`dir/stem.ckpt`, or `stem-v1.ckpt`, ... while the name is taken by a file other than `reusable`."""
        path, version = str(self.dir / f"{stem}.ckpt"), 1
        while os.path.exists(path) and path != reusable:
            path, version = str(self.dir / f"{stem}-v{version}.ckpt"), version + 1
        return path

    def _removable(self, previous: str, current: str) -> bool:
        """A superseded file is deleted unless it is the new one, the one resumed from, or elsewhere."""
        if previous == current:
            return False
        if self.resumed_from is not None and Path(previous).absolute() == self.resumed_from:
            return False
        return self.dir in Path(previous).absolute().parents

    def _save(self, path: str, wrapper, optimizer, scheds, state: State, moment: str) -> None:
        self.write(Path(path), wrapper, optimizer, scheds, state, moment)
        self.last_saved_step, self.saved = state.step, True

    def write(self, path: Path, wrapper, optimizer, scheds, state: State, moment: str) -> None:
        """A checkpoint as pl.Trainer writes it at `moment`: 'batch' (after a training batch), 'val'
        (after a validation), 'epoch' (an epoch's end) or 'end' (the end of training)."""
        ckpt = {
            "epoch": state.epoch, "global_step": state.step,
            "pytorch-lightning_version": pl.__version__,
            "state_dict": wrapper.state_dict(),
            "loops": lightning_loops(state, self.per_epoch, moment),
            "callbacks": {self.state_key: self.lightning_state(), STATE_KEY: torchx_state(self.config)},
            "optimizer_states": [optimizer.state_dict()],
            "lr_schedulers": [s["scheduler"].state_dict() for s in scheds],
            "hparams_name": "kwargs",
            "hyper_parameters": dict(wrapper.hparams),
        }
        if self.precision is not None and self.precision.state_dict():
            ckpt[PRECISION_KEY] = self.precision.state_dict()
        wrapper.on_save_checkpoint(ckpt)  # the LightningModule's own hook, as pl.Trainer calls it
        atomic_save(ckpt, path)

    def lightning_state(self) -> dict:
        def tensor(x: float | None) -> torch.Tensor | None:
            return None if x is None else torch.tensor(x)

        return {"monitor": self.monitor, "best_model_score": tensor(self.best_score),
                "best_model_path": self.best_path, "current_score": tensor(self.current_score),
                "dirpath": str(self.dir), "best_k_models": {p: torch.tensor(s) for p, s in self.best_k.items()},
                "kth_best_model_path": self.kth_path, "kth_value": torch.tensor(self.kth_value),
                "last_model_path": self.last_model_path}

    def restore(self, callbacks: dict) -> None:
        """ModelCheckpoint.load_state_dict, from a checkpoint written by either loop."""
        value = callbacks.get(self.state_key) or callbacks.get("ModelCheckpoint")
        if not value:
            return
        if value.get("dirpath", str(self.dir)) == str(self.dir):  # the same run directory
            score = value.get("best_model_score")
            self.best_score = None if score is None else float(score)
            self.kth_path = value.get("kth_best_model_path", self.kth_path)
            self.kth_value = float(value.get("kth_value", self.kth_value))
            self.best_k = {p: float(s) for p, s in (value.get("best_k_models") or {}).items()}
            self.last_model_path = value.get("last_model_path", self.last_model_path)
        self.best_path = value.get("best_model_path") or ""


def lightning_loops(state: State, per_epoch: int, moment: str = "epoch") -> dict:
    """pl.Trainer's fit-loop progress as its own ModelCheckpoint writes it at `moment` (see
    Checkpoints.write) of epoch `state.epoch`. Lightning restores epoch, global step and the data
    position from this, and decides from it what of the interrupted epoch is left to do."""
    s = state.step
    if moment == "end":  # after the last epoch, counted as completed
        e, k = state.epoch - 1, state.last_epoch_batches
    else:
        e, k = state.epoch, state.in_epoch  # k: batches of this epoch done

    def prog(total: int, current: int, started: bool = True, lag: int = 0) -> dict:
        keys = ("ready", "completed", "started", "processed") if started else ("ready", "completed")
        return {"total": {key: total - (lag if key == "completed" else 0) for key in keys},
                "current": {key: current - (lag if key == "completed" else 0) for key in keys}}

    # after a batch the checkpoint comes before Lightning marks the batch completed
    batch = {**prog(state.batches, k, lag=1 if moment == "batch" else 0), "is_last_batch": k == per_epoch}
    if moment == "end":
        epochs = prog(e + 1, e + 1)
    else:
        epochs = prog(e + 1, e + 1, lag=1)  # started; completed only once its end hooks are done
        if moment in ("batch", "val"):  # ...and inside the epoch, not yet processed
            for part in ("total", "current"):
                epochs[part]["processed"] = e
    # Lightning counts a batch's step for its loggers after validation
    stepped = s - 1 if moment in ("batch", "val") and state.in_step else s
    n = state.epoch_steps
    optim = {"optimizer": {"step": prog(s, n, started=False), "zero_grad": {
        "total": {"ready": s, "completed": s, "started": s}, "current": {"ready": n, "completed": n, "started": n}}}}
    empty = {**prog(0, 0), "is_last_batch": False}
    return {
        "fit_loop": {
            "state_dict": {"combined_loader": [{"epoch": e, "batches": k}]},
            "epoch_loop.state_dict": {"_batches_that_stepped": stepped},
            "epoch_loop.batch_progress": batch,
            "epoch_loop.scheduler_progress": prog(state.sched_steps, state.epoch_sched_steps, started=False),
            "epoch_loop.automatic_optimization.state_dict": {},
            "epoch_loop.automatic_optimization.optim_progress": optim,
            "epoch_loop.manual_optimization.state_dict": {},
            "epoch_loop.manual_optimization.optim_step_progress": prog(0, 0, started=False),
            "epoch_loop.val_loop.state_dict": {},
            "epoch_loop.val_loop.batch_progress": {**prog(state.val_batches, state.last_val_batches),
                                                   "is_last_batch": state.last_val_batches > 0},
            "epoch_progress": epochs,
        },
        "validate_loop": {"state_dict": {}, "batch_progress": empty},
        "test_loop": {"state_dict": {}, "batch_progress": empty},
        "predict_loop": {"state_dict": {}, "batch_progress": {**prog(0, 0)}},
    }


def load_checkpoint(path: Path, wrapper, optimizer, scheds, ckpts: Checkpoints, device: torch.device,
                    trust: bool = False) -> State:
    """Restore weights, optimizer, schedulers and progress from a checkpoint of either loop."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ckpt = torch.load(path, map_location=device, weights_only=not trust)
    wrapper.on_load_checkpoint(ckpt)
    wrapper.load_state_dict(ckpt["state_dict"])
    optimizer.load_state_dict(ckpt["optimizer_states"][0])
    for s, sd in zip(scheds, ckpt.get("lr_schedulers", [])):
        s["scheduler"].load_state_dict(sd)
    ckpts.restore(ckpt.get("callbacks", {}))
    if ckpts.precision is not None:
        ckpts.precision.load_state_dict(ckpt)
    restore_torchx_state(ckpt.get("callbacks", {}).get(STATE_KEY))  # dropout etc. continue as if never stopped
    fit_loop = ckpt.get("loops", {}).get("fit_loop", {})
    epochs = fit_loop.get("epoch_progress", {}).get("current", {})
    batches = fit_loop.get("epoch_loop.batch_progress", {})
    scheds_done = fit_loop.get("epoch_loop.scheduler_progress", {})
    val = fit_loop.get("epoch_loop.val_loop.batch_progress", {})
    optim = fit_loop.get("epoch_loop.automatic_optimization.optim_progress", {}).get("optimizer", {}).get("step", {})
    # Lightning's own test: an epoch started but not processed is a mid-epoch checkpoint
    mid = epochs.get("started", 0) > epochs.get("processed", 0)
    epoch = epochs["processed"] if "processed" in epochs else ckpt["epoch"] + (0 if mid else 1)
    return State(epoch=epoch, step=ckpt["global_step"], in_epoch=batches.get("current", {}).get("processed", 0) if mid
                 else 0, batches=batches.get("total", {}).get("processed", 0),
                 sched_steps=scheds_done.get("total", {}).get("completed", 0),
                 epoch_steps=optim.get("current", {}).get("completed", 0) if mid else 0,
                 epoch_sched_steps=scheds_done.get("current", {}).get("completed", 0) if mid else 0,
                 val_batches=val.get("total", {}).get("processed", 0) if mid else 0,
                 last_val_batches=val.get("current", {}).get("processed", 0), restarting=True,
                 resumed_log_step=fit_loop.get("epoch_loop.state_dict", {}).get("_batches_that_stepped"))

"""The plain PyTorch loop behind train.py: the same config, wrapper math and run directory.

It reads top to bottom: `train` sets up, `fit` runs epochs, `train_epoch` / `evaluate` run
batches, `Checkpoints` writes Lightning-format checkpoints. It steps optimizers and
schedulers at the points pl.Trainer does, so the same seed gives the same losses, and a
checkpoint from either loop resumes in the other.
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

from torchx import build
from torchx.callbacks.base_logger import EpochReport, fmt_seconds
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
from torchx.csvlog import MetricsCSV
from torchx.errors import ConfigError, NonFiniteLoss
from torchx.run import Run, check_fits, claim

# trainer_params the plain loop honours; `IGNORED` ones change nothing about the results here.
SUPPORTED = {"max_epochs", "max_steps", "limit_train_batches", "limit_val_batches", "limit_test_batches",
             "check_val_every_n_epoch", "accumulate_grad_batches", "gradient_clip_val",
             "gradient_clip_algorithm", "log_every_n_steps", "deterministic", "enable_progress_bar",
             "enable_checkpointing", "benchmark"}
IGNORED = {"accelerator", "devices", "strategy", "num_nodes", "enable_model_summary", "num_sanity_val_steps",
           "precision", "sync_batchnorm", "use_distributed_sampler"}
CHECKPOINT_KEYS = {"monitor", "mode", "save_last", "save_top_k", "every_n_epochs", "every_n_train_steps", "verbose"}
REQUIRED_METHODS = ("training_loss", "evaluate", "epoch_metrics", "build_optimizers")


@dataclass
class Settings:
    """trainer_params, read once, with Lightning's defaults."""

    max_epochs: int
    max_steps: int
    limits: dict[str, int | float]
    val_every: int
    accumulate: int
    clip_val: float | None
    clip_algorithm: str
    log_every: int
    progress_bar: bool
    checkpointing: bool

    @classmethod
    def from_config(cls, params: dict) -> Settings:
        for key in params:
            if key not in SUPPORTED | IGNORED:
                raise ConfigError(f"train.py does not support trainer_params.{key}; run this config with "
                                  f"train_pl.py, or drop the key (train.py supports: {', '.join(sorted(SUPPORTED))})")
        precision = str(params.get("precision", "32"))
        if precision not in ("32", "32-true"):
            raise ConfigError(f"train.py trains in float32 only; trainer_params.precision={precision!r} "
                              f"needs train_pl.py")
        max_steps = params.get("max_steps", -1)
        max_epochs = params.get("max_epochs")
        if max_epochs is None:
            max_epochs = -1 if max_steps != -1 else 1000  # Lightning's default when neither is set
        return cls(max_epochs=max_epochs, max_steps=max_steps,
                   limits={s: params.get(f"limit_{s}_batches", 1.0) for s in ("train", "val", "test")},
                   val_every=params.get("check_val_every_n_epoch", 1) or 0,
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


@dataclass
class State:
    """Where training stands: what a checkpoint must restore."""

    epoch: int = 0  # epochs completed (= index of the epoch running)
    step: int = 0  # optimizer steps taken (Lightning's global_step)
    batches: int = 0  # training batches seen
    in_epoch: int = 0  # batches of the running epoch already done (after a mid-epoch resume, > 0 at start)
    sched_steps: int = 0
    last_epoch_batches: int = 0
    last_val_batches: int = 0


def dry_check(args: argparse.Namespace, run: Run, data: Any, wrapper: pl.LightningModule) -> None:
    """What --dry-run checks for train.py: its trainer_params, checkpoint keys, device, wrapper."""
    cfg = run.config
    Settings.from_config(cfg.get("trainer_params") or {})
    Checkpoints(run.ckpt_dir, cfg.get("checkpoint") or {})
    pick_device(args.gpus)
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
    pl.seed_everything(cfg["seed"], workers=True, verbose=False)
    if (cfg.get("trainer_params") or {}).get("deterministic"):
        torch.use_deterministic_algorithms(True)
    refuse_callbacks(cfg)
    data, wrapper = build.data_module(cfg), build.wrapper(cfg)
    check_wrapper(wrapper, cfg["train_wrapper"]["name"])
    build.check_monitors(cfg, wrapper)
    data.prepare_data()
    data.setup("fit")
    ckpts = Checkpoints(run.ckpt_dir, cfg.get("checkpoint") or {}, enabled=settings.checkpointing)
    wrapper.to(device)
    optimizer, scheds = wrapper.build_optimizers()
    state = State()
    if run.ckpt_path:  # before claim(): a checkpoint that does not fit this model changes nothing
        check_fits(run.ckpt, wrapper.state_dict(), run.ckpt_path)
        state = load_checkpoint(run.ckpt_path, wrapper, optimizer, scheds, ckpts, device, run.trust_checkpoint)
    claim(run)
    logs = Logs(run, wrapper)
    report = EpochReport(run.dir / "log.txt")
    try:
        fit(wrapper, data, optimizer, scheds, settings, state, ckpts, logs, report, device)
    except Preempted as e:
        logs.close()
        print(f"preempted: {e}", file=sys.stderr)
        return EXIT_PREEMPTED
    except NonFiniteLoss as e:
        logs.close()
        print(f"stopped: {e} at step {state.step} (epoch {state.epoch}); the checkpoints in {ckpts.dir} are "
              f"from before it. Set train_wrapper.args.nonfinite_loss=skip to skip such batches", file=sys.stderr)
        return EXIT_NONFINITE
    results = test(wrapper, data, settings, state, ckpts, logs, device)
    logs.close()
    (run.dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print("final: " + json.dumps(results))
    return 0


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
        logs: Logs, report: EpochReport, device: torch.device) -> None:
    train_loader = data.train_dataloader()
    per_epoch = settings.batches("train", len(train_loader))
    steps_per_epoch = math.ceil(per_epoch / settings.accumulate)
    total = settings.max_steps if settings.max_epochs == -1 else settings.max_epochs * steps_per_epoch
    if settings.max_steps != -1:
        total = min(total, settings.max_steps)
    report.start(state.step, total)
    val_loader = data.val_dataloader()
    if callable(getattr(train_loader, "load_state_dict", None)):  # a mid-epoch checkpoint goes on from there
        train_loader.load_state_dict({"epoch": state.epoch, "batches": state.in_epoch})

    def on_step() -> None:
        data.batches_seen = state.in_epoch
        ckpts.save_step(wrapper, optimizer, scheds, state, per_epoch)
        if flag.received:  # preempted: a mid-epoch last.ckpt, then stop
            path = ckpts.dir / "last.ckpt"
            ckpts.write(path, wrapper, optimizer, scheds, state, {"per_epoch": per_epoch})
            raise Preempted(flag.received, state.step, path)

    flag = SignalFlag()
    flag.install()

    try:
        while not done(settings, state):
            resumed_at = state.in_epoch
            train_epoch(wrapper, train_loader, per_epoch, optimizer, scheds, settings, state, logs, report, device,
                        on_step)
            metrics = {}
            complete = state.last_epoch_batches == per_epoch  # pl.Trainer skips validation of a cut-short epoch
            ran = state.last_epoch_batches > resumed_at  # ...and of an epoch resumed after its last batch
            if val_loader and complete and ran and settings.val_every and (state.epoch + 1) % settings.val_every == 0:
                metrics.update(evaluate(wrapper, val_loader, "val", settings, device, state))
                step_plateau(scheds, "step", metrics, state, batch_idx=state.last_epoch_batches - 1)
            metrics.update({k: float(v) for k, v in wrapper.epoch_metrics("train").items()})
            logs.epoch_end(metrics, state)  # on disk before the checkpoint: a kill cannot lose them
            ckpts.save_epoch(wrapper, optimizer, scheds, state, metrics)
            state.epoch += 1
            step_plateau(scheds, "epoch", metrics, state, batch_idx=None)
            report.write(report.line(state.epoch - 1, settings.max_epochs, state.step, metrics), echo=tqdm.write)
    finally:
        flag.uninstall()


def done(settings: Settings, state: State) -> bool:
    return (settings.max_steps != -1 and state.step >= settings.max_steps) or \
        (settings.max_epochs != -1 and state.epoch >= settings.max_epochs)


def train_epoch(wrapper, loader, n_batches: int, optimizer, scheds, settings: Settings, state: State,
                logs: Logs, report: EpochReport, device: torch.device, on_step=lambda: None) -> None:
    """One epoch (or its rest, after a mid-epoch resume), stepping like Lightning's automatic
    optimization: accumulation, clipping, schedulers; `on_step` runs after every optimizer step."""
    wrapper.train()
    if callable(getattr(loader.sampler, "set_epoch", None)):  # torchx's sampler, DistributedSampler, ...
        loader.sampler.set_epoch(state.epoch)
    bar = tqdm(total=n_batches, initial=state.in_epoch, desc=f"Epoch {state.epoch}", disable=not settings.progress_bar,
               leave=False, dynamic_ncols=True, mininterval=0.5)
    for batch_idx, batch in enumerate(loader, start=state.in_epoch):
        if batch_idx >= n_batches or (settings.max_steps != -1 and state.step >= settings.max_steps):
            break
        batch = to_device(batch, device)
        loss = wrapper.training_loss(batch)
        state.in_epoch, state.batches = batch_idx + 1, state.batches + 1
        if loss is None:  # a non-finite loss the wrapper skips: no backward; as under Lightning, the step
            optimizer.zero_grad(set_to_none=True)  # still counts but changes nothing (no gradients)
        else:
            (loss / settings.accumulate if settings.accumulate > 1 else loss).backward()
        stepping = (batch_idx + 1) % settings.accumulate == 0 or batch_idx + 1 == n_batches
        if stepping:
            clip(wrapper, settings)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step_schedulers(scheds, "step", batch_idx, state)
            if loss is not None and (state.step + 1) % settings.log_every == 0:
                logs.log({"train/loss_step": float(loss.detach())}, state.epoch, state.step)
            state.step += 1
        if batch_idx + 1 == n_batches:
            step_schedulers(scheds, "epoch", state.epoch, state)
        if stepping:
            on_step()
        if state.in_epoch % 20 == 0:
            bar.update(20)
            eta = report.eta(state.step)
            if eta is not None:
                bar.set_postfix(eta=fmt_seconds(eta), refresh=False)
    bar.close()
    state.last_epoch_batches, state.in_epoch = state.in_epoch, 0


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


def step_plateau(scheds: list[dict], interval: str, metrics: dict, state: State, batch_idx: int | None) -> None:
    """ReduceLROnPlateau schedulers, fed their monitored metric after validation."""
    index = state.epoch if batch_idx is None else batch_idx
    for s in scheds:
        if not is_plateau(s) or s["interval"] != interval or index % s["frequency"] != 0 and batch_idx is None:
            continue
        if interval == "step" and (batch_idx + 1) % s["frequency"] != 0:
            continue
        monitor = s.get("monitor")
        if monitor not in metrics:
            if s.get("strict", True):
                raise ConfigError(f"ReduceLROnPlateau monitors '{monitor}', which was not logged; "
                                  f"logged: {', '.join(sorted(metrics)) or '(nothing)'}")
            continue
        s["scheduler"].step(metrics[monitor])
        state.sched_steps += 1


def is_plateau(s: dict) -> bool:
    return isinstance(s["scheduler"], torch.optim.lr_scheduler.ReduceLROnPlateau)


@torch.no_grad()
def evaluate(wrapper, loader, stage: str, settings: Settings, device: torch.device,
             state: State | None = None) -> dict[str, float]:
    wrapper.eval()
    n = settings.batches(stage, len(loader))
    for i, batch in enumerate(loader):
        if i >= n:
            break
        wrapper.evaluate(to_device(batch, device), stage)
    if state is not None:
        state.last_val_batches = n
    wrapper.train()
    return {k: float(v) for k, v in wrapper.epoch_metrics(stage).items()}


def to_device(batch: Any, device: torch.device) -> Any:
    if device.type == "cpu":
        return batch
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(b, device) for b in batch)
    return batch.to(device, non_blocking=True) if isinstance(batch, torch.Tensor) else batch


def test(wrapper, data, settings: Settings, state: State, ckpts: Checkpoints, logs: Logs,
         device: torch.device) -> dict[str, Any]:
    """Test with the best checkpoint (else the last weights) when the data module has a test set."""
    results: dict[str, Any] = {"epochs": state.epoch, "global_step": state.step}
    if ckpts.best_path:
        results["best_model_path"] = str(ckpts.best_path)
        if ckpts.best_score is not None:
            results["best_model_score"] = ckpts.best_score
    loader = data.test_dataloader()
    if not loader:
        return results
    if ckpts.best_path:
        sd = torch.load(ckpts.best_path, map_location=device, weights_only=True)["state_dict"]
        wrapper.load_state_dict(sd)
    metrics = evaluate(wrapper, loader, "test", settings, device)
    logs.epoch_end(metrics, state, step=state.step)
    results["test"] = metrics
    return results


# ---------------------------------------------------------------- logging


class Logs:
    """TensorBoard events and metrics.csv, with the tags and steps Lightning uses."""

    def __init__(self, run: Run, wrapper) -> None:
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
        self.csv = MetricsCSV(run.dir / "metrics.csv", build.declared_metrics(wrapper), drop_from=run.resume_step)

    def log(self, metrics: dict[str, float], epoch: int, step: int) -> None:
        for k, v in metrics.items():
            self.tb.add_scalar(k, v, step)
        self.tb.add_scalar("epoch", epoch, step)
        self.csv.log({**metrics, "epoch": epoch}, step)

    def epoch_end(self, metrics: dict[str, float], state: State, step: int | None = None) -> None:
        """Epoch-end scalars at the step of the epoch's last batch, as Lightning's logger writes them."""
        self.log(metrics, state.epoch, state.step - 1 if step is None else step)
        self.tb.flush()

    def close(self) -> None:
        self.tb.close()


# ---------------------------------------------------------------- checkpoints


class Checkpoints:
    """ModelCheckpoint's behaviour for the plain loop: top-k by `monitor`, last.ckpt, Lightning's format."""

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
        self.every_steps = args.get("every_n_train_steps") or 0
        # as ModelCheckpoint: with a step interval, no epoch-end checkpoints unless also asked for
        self.every = args.get("every_n_epochs", 0 if self.every_steps else 1) or 0
        self.best_k: dict[str, float] = {}  # path -> score
        self.last_saved_step = -1  # as ModelCheckpoint: never two saves at one global step
        self.best_path: Path | None = None
        self.best_score: float | None = None
        from pytorch_lightning.callbacks import ModelCheckpoint

        lightning_args = {k: v for k, v in args.items() if k != "verbose"}
        with build.reported_as(f"checkpoint {args}"):  # the same settings ModelCheckpoint refuses
            self.state_key = ModelCheckpoint(dirpath=None, **lightning_args).state_key

    def save_epoch(self, wrapper, optimizer, scheds, state: State, metrics: dict[str, float]) -> None:
        """After epoch `state.epoch` (not yet counted as completed), like ModelCheckpoint at epoch end."""
        if not self.enabled or self.last_saved_step == state.step:
            return
        if self.every and (state.epoch + 1) % self.every == 0 and self.top_k != 0:
            path = self.dir / f"epoch={state.epoch}-step={state.step}.ckpt"
            if self.monitor is None:  # keep the newest
                self._keep(path, float(state.step), wrapper, optimizer, scheds, state)
            elif self.monitor in metrics:
                self._keep(path, metrics[self.monitor], wrapper, optimizer, scheds, state)
            elif any(k.startswith("val/") for k in metrics):  # validated, yet the monitor is missing
                raise ConfigError(f"checkpoint.monitor '{self.monitor}' was not logged; logged: "
                                  f"{', '.join(sorted(metrics))}")
        if self.save_last:
            self.write(self.dir / "last.ckpt", wrapper, optimizer, scheds, state)

    def save_step(self, wrapper, optimizer, scheds, state: State, per_epoch: int) -> None:
        """Every `every_n_train_steps` optimizer steps, mid-epoch: top-k by step (or monitor) and last."""
        if not self.enabled or not self.every_steps or state.step % self.every_steps:
            return
        mid = {"per_epoch": per_epoch}
        if self.top_k != 0 and self.monitor is None:
            path = self.dir / f"epoch={state.epoch}-step={state.step}.ckpt"
            self._keep(path, float(state.step), wrapper, optimizer, scheds, state, mid)
        if self.save_last:
            self.write(self.dir / "last.ckpt", wrapper, optimizer, scheds, state, mid)

    def _keep(self, path: Path, score: float, wrapper, optimizer, scheds, state: State,
              mid: dict | None = None) -> None:
        """Top-k as ModelCheckpoint keeps it: a new checkpoint must be strictly better than the k-th."""
        sign = 1.0 if self.mode == "max" or self.monitor is None else -1.0
        if self.top_k != -1 and len(self.best_k) >= self.top_k:
            kth = min(self.best_k, key=lambda p: sign * self.best_k[p])
            if not sign * score > sign * self.best_k[kth]:
                return
            del self.best_k[kth]
            Path(kth).unlink(missing_ok=True)
        self.best_k[str(path)] = score
        best = max(self.best_k, key=lambda p: sign * self.best_k[p])
        self.best_path, self.best_score = Path(best), (self.best_k[best] if self.monitor else None)
        self.write(path, wrapper, optimizer, scheds, state, mid)

    def write(self, path: Path, wrapper, optimizer, scheds, state: State, mid: dict | None = None) -> None:
        """`mid`: set for a checkpoint taken inside an epoch ({'per_epoch': batches per epoch})."""
        self.last_saved_step = state.step
        ckpt = {
            "epoch": state.epoch, "global_step": state.step,
            "pytorch-lightning_version": pl.__version__,
            "state_dict": wrapper.state_dict(),
            "loops": lightning_loops(state, None if mid is None else mid["per_epoch"]),
            "callbacks": {self.state_key: self.lightning_state(), STATE_KEY: torchx_state()},
            "optimizer_states": [optimizer.state_dict()],
            "lr_schedulers": [s["scheduler"].state_dict() for s in scheds],
            "hparams_name": "kwargs",
            "hyper_parameters": dict(wrapper.hparams),
        }
        wrapper.on_save_checkpoint(ckpt)  # the LightningModule's own hook, as pl.Trainer calls it
        atomic_save(ckpt, path)

    def lightning_state(self) -> dict:
        return {"monitor": self.monitor, "best_model_score": None if self.best_score is None else
                torch.tensor(self.best_score), "best_model_path": str(self.best_path or ""),
                "current_score": None, "dirpath": str(self.dir),
                "best_k_models": {p: torch.tensor(s) for p, s in self.best_k.items()},
                "kth_best_model_path": "", "kth_value": torch.tensor(float("inf")),
                "last_model_path": str(self.dir / "last.ckpt") if self.save_last else ""}

    def restore(self, callbacks: dict) -> None:
        """Best-so-far from a checkpoint written by either loop."""
        for key, value in callbacks.items():
            if key.startswith("ModelCheckpoint") and value.get("monitor") == self.monitor:
                self.best_k = {p: float(s) for p, s in (value.get("best_k_models") or {}).items()}
                if value.get("best_model_path"):
                    self.best_path = Path(value["best_model_path"])
                    score = value.get("best_model_score")
                    self.best_score = None if score is None or self.monitor is None else float(score)


def lightning_loops(state: State, per_epoch: int | None = None) -> dict:
    """pl.Trainer's fit-loop progress, as its own ModelCheckpoint writes it, for a checkpoint taken
    at the end of epoch `state.epoch` (after validation), or inside it when `per_epoch` is given.

    Lightning restores epoch, global step and the data position from this.
    """
    e, s = state.epoch, state.step
    mid = per_epoch is not None
    k = state.in_epoch if mid else state.last_epoch_batches  # batches of this epoch done

    def prog(total: int, current: int, started: bool = True, lag: int = 0) -> dict:
        keys = ("ready", "completed", "started", "processed") if started else ("ready", "completed")
        return {"total": {key: total - (lag if key == "completed" else 0) for key in keys},
                "current": {key: current - (lag if key == "completed" else 0) for key in keys}}

    # mid-epoch saves happen before Lightning marks the batch completed, epoch-end ones after validation
    batch = {**prog(state.batches, k, lag=1 if mid else 0), "is_last_batch": not mid or k == per_epoch}
    epochs = prog(e + 1, e + 1, lag=1)
    if mid:
        for part in ("total", "current"):
            epochs[part]["processed"] = e
    optim = {"optimizer": {"step": prog(s, s, started=False), "zero_grad": {
        "total": {"ready": s, "completed": s, "started": s}, "current": {"ready": s, "completed": s, "started": s}}}}
    empty = {**prog(0, 0), "is_last_batch": False}
    return {
        "fit_loop": {
            "state_dict": {"combined_loader": [{"epoch": e, "batches": k}]},
            "epoch_loop.state_dict": {"_batches_that_stepped": s - 1 if mid else s},
            "epoch_loop.batch_progress": batch,
            "epoch_loop.scheduler_progress": prog(state.sched_steps, state.sched_steps, started=False),
            "epoch_loop.automatic_optimization.state_dict": {},
            "epoch_loop.automatic_optimization.optim_progress": optim,
            "epoch_loop.manual_optimization.state_dict": {},
            "epoch_loop.manual_optimization.optim_step_progress": prog(0, 0, started=False),
            "epoch_loop.val_loop.state_dict": {},
            "epoch_loop.val_loop.batch_progress": {**prog(state.last_val_batches, state.last_val_batches),
                                                   "is_last_batch": True},
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
    restore_torchx_state(ckpt.get("callbacks", {}).get(STATE_KEY))  # dropout etc. continue as if never stopped
    fit_loop = ckpt.get("loops", {}).get("fit_loop", {})
    epochs = fit_loop.get("epoch_progress", {}).get("current", {})
    batches = fit_loop.get("epoch_loop.batch_progress", {})
    # Lightning's own test: an epoch started but not processed is a mid-epoch checkpoint
    mid = epochs.get("started", 0) > epochs.get("processed", 0)
    in_epoch = batches.get("current", {}).get("processed", 0) if mid else 0
    return State(epoch=ckpt["epoch"] + (0 if mid else 1), step=ckpt["global_step"], in_epoch=in_epoch,
                 batches=batches.get("total", {}).get("processed", 0))

"""Training with pl.Trainer: what train_pl.py runs once the config is checked."""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from typing import Any

import pytorch_lightning as pl
from lightning_fabric.utilities.exceptions import MisconfigurationException
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import TensorBoardLogger
from pytorch_lightning.trainer.connectors.data_connector import _parse_num_batches
from pytorch_lightning.trainer.states import RunningStage
from pytorch_lightning.utilities.model_helpers import is_overridden

from torchx import build
from torchx.callbacks.base_logger import BaseLogger, ProgressBar
from torchx.checkpoint import (
    EXIT_NONFINITE,
    EXIT_PREEMPTED,
    AtomicCheckpointIO,
    Preempted,
    PreemptionCheckpoint,
    TorchxState,
)
from torchx.config import check_val_interval
from torchx.csvlog import CSVLogger
from torchx.datasets.base import TensorDataModule
from torchx.errors import ConfigError, NonFiniteLoss
from torchx.run import Run, check_fits, claim, is_rank_zero

PROG = "train_pl.py"
# what gloo / NCCL say when a peer process is gone (a crash, an OOM kill, a node lost)
PEER_FAILURE = ("Connection reset by peer", "Connection closed by peer", "NCCL communicator was aborted",
                "Socket Timeout", "Timed out", "ProcessGroupNCCL", "Broken pipe")

_lightning_log = logging.getLogger("pytorch_lightning.utilities.rank_zero")
_lightning_log.addFilter(lambda record: "litlogger" not in record.getMessage())  # an advert, not information


def trainer_kwargs(cfg: dict, run: Run, data: pl.LightningDataModule, wrapper: pl.LightningModule,
                   gpus: list[int] | None) -> dict[str, Any]:
    """pl.Trainer arguments: trainer_params plus torchx's loggers, checkpointing and callbacks."""
    params = build.apply_gpus(cfg, gpus)["trainer_params"]
    logger = BaseLogger(run.dir)
    cbs: list[pl.Callback] = [logger, TorchxState(), PreemptionCheckpoint(run.ckpt_dir), *build.user_callbacks(cfg)]
    if params.get("enable_progress_bar", True):
        cbs.append(ProgressBar(logger.report))
    if params.get("enable_checkpointing", True):
        with build.reported_as(f"checkpoint {cfg.get('checkpoint') or {}}"):
            cbs.append(ModelCheckpoint(dirpath=run.ckpt_dir, **build.checkpoint_args(cfg)))
    # on resume, TensorBoard hides and metrics.csv drops what a killed run logged after its checkpoint
    tensorboard = TensorBoardLogger(save_dir=run.dir, name="default", version=0, default_hp_metric=False,
                                    purge_step=run.resume_step)
    csv = CSVLogger(run.dir / "metrics.csv", build.declared_metrics(wrapper), drop_from=run.resume_step)
    kwargs = {"logger": [tensorboard, csv],
              "log_every_n_steps": 50, **params, "callbacks": cbs,
              "plugins": [AtomicCheckpointIO(), *(params.get("plugins") or [])]}
    if isinstance(data, TensorDataModule):
        kwargs["use_distributed_sampler"] = False  # torchx's sampler shards by rank itself
    return kwargs


def make_trainer(cfg: dict, kwargs: dict[str, Any]) -> pl.Trainer:
    with build.reported_as(f"trainer_params {cfg.get('trainer_params') or {}}"):
        return pl.Trainer(**kwargs)


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
    build.check_monitors(cfg, wrapper)
    if run.ckpt is not None:
        check_fits(run.ckpt, wrapper.state_dict(), run.ckpt_path)
    trainer = make_trainer(cfg, trainer_kwargs(cfg, run, data, wrapper, args.gpus))
    check_val_batches(cfg, data, trainer)
    claim(run)
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
        if trainer.world_size > 1 and any(w in str(e) for w in PEER_FAILURE):
            print(f"{PROG}: error: another DDP process died or stopped answering, so this one stops too "
                  f"(its own output above says why). Resume with --resume from {run.ckpt_dir}/last.ckpt. "
                  f"[{str(e).splitlines()[0][:160]}]", file=sys.stderr)
            return 1
        raise
    except MisconfigurationException as e:  # e.g. a monitored metric that a user's wrapper never logs;
        raise ConfigError(f"training stopped: {e}") from e  # errors from model code keep their traceback
    except ValueError as e:
        if "`val_check_interval`" in str(e):  # longer than a DDP rank's epoch: found only now
            raise ConfigError(f"trainer_params.val_check_interval: {str(e).strip()}") from e
        raise
    if trainer.interrupted:
        return 130
    results = {"epochs": trainer.current_epoch, "global_step": trainer.global_step}
    ckpt = trainer.checkpoint_callback
    if ckpt is not None and ckpt.best_model_path:
        results["best_model_path"] = ckpt.best_model_path
        if ckpt.best_model_score is not None:
            results["best_model_score"] = float(ckpt.best_model_score)
    # torchx's data modules say whether they have a test set; a user's is asked through trainer.test
    has_test = not isinstance(data, TensorDataModule) or data.has_split("test")
    if has_test and is_overridden("test_step", wrapper):
        best = results.get("best_model_path")
        tested = trainer.test(wrapper, datamodule=data, ckpt_path=best, verbose=False)
        results["test"] = {k: float(v) for k, v in (tested[0] if tested else {}).items()}
    if is_rank_zero():
        (run.dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        print("final: " + json.dumps(results))
    return 0

"""`python -m torchx test|validate RUN_DIR [--ckpt best|last|PATH] [--gpu IDS] [KEY=VALUE ...]`.

The run's data module and wrapper are rebuilt from its config.yaml (with the overrides, shown as a
diff), the checkpoint's weights loaded, and the split evaluated with pl.Trainer, whichever loop
trained the run: the wrapper's own test_step / validation_step, the same metrics the run logged.
Several devices (`--gpu 1,2`, or trainer_params.devices with strategy ddp) evaluate under DDP with
every sample counted once. The numbers go to a table and to RUN_DIR/eval/<split>-<ckpt>.json,
a new file for every evaluation.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch

from torchx import build, distributed
from torchx.errors import ConfigError
from torchx.run import inspect_checkpoint, is_rank_zero
from torchx.tools.api import build_loaded, pick_checkpoint, read_json, run_config, run_dir_of

# trainer_params that decide what an evaluation computes and where; the rest concern training
EVAL_PARAMS = ("accelerator", "devices", "strategy", "num_nodes", "precision", "deterministic", "inference_mode",
               "limit_val_batches", "limit_test_batches", "benchmark")
SPLITS = {"test": ("test", "test_step", "test_dataloader"), "validate": ("val", "validation_step", "val_dataloader")}


def main(args: argparse.Namespace) -> int:
    split, step_hook, loader_hook = SPLITS[args.command]
    quiet = not is_rank_zero()  # DDP children re-run this command: only rank 0 speaks and writes
    run_dir = run_dir_of(args.run_dir)
    cfg, changes = run_config(run_dir, args.overrides)
    from torchx.cli import parse_gpus

    gpus = parse_gpus(args.gpu)
    ckpt_path, label = pick_checkpoint(run_dir, args.ckpt)
    loaded = inspect_checkpoint(ckpt_path, trust=args.trust_checkpoint, what="--ckpt")
    wrapper = build_loaded(run_dir, cfg, ckpt_path, loaded)
    data = build.data_module(cfg)
    data.prepare_data()
    data.setup("test" if split == "test" else "validate")
    check_split(data, wrapper, split, step_hook, loader_hook)
    trainer = make_trainer(cfg, data, gpus, nodes_given=any(
        o.lstrip("+").startswith("trainer_params.num_nodes=") for o in args.overrides))
    build.count_each_sample_once(data, trainer)
    if not quiet:
        for line in changes:
            print(f"override: {line}")
    counter = SampleCounter()
    trainer.callbacks.append(counter)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*does not have many workers.*")
        warnings.filterwarnings("ignore", message=".*LeafSpec.*")
        run = trainer.test if split == "test" else trainer.validate
        out = run(wrapper, datamodule=data, verbose=False)
    metrics = {k: float(v) for k, v in (out[0] if out else {}).items()}
    if quiet:
        return 0
    record = {"split": split, "checkpoint": str(ckpt_path), "ckpt": label, "epoch": loaded["epoch"],
              "global_step": loaded["global_step"], "samples": counter.total, "devices": trainer.world_size,
              "metrics": metrics, "overrides": list(args.overrides), "changes": changes,
              "command": [sys.executable, "-m", "torchx", *sys.argv[1:]],
              "time": datetime.datetime.now().astimezone().isoformat(timespec="seconds")}
    path = write_new(run_dir / "eval", f"{split}-{label}", record)
    print(table(run_dir, record, reference(run_dir, split, ckpt_path, changes)))
    print(f"wrote {path}")
    return 0


def check_split(data: Any, wrapper: Any, split: str, step_hook: str, loader_hook: str) -> None:
    """The data module must have the split and the wrapper a step for it, else there is nothing to evaluate."""
    from pytorch_lightning.utilities.model_helpers import is_overridden

    from torchx.datasets.base import TensorDataModule

    has = data.has_split(split) if isinstance(data, TensorDataModule) else is_overridden(loader_hook, data)
    if not has:
        fix = ("give it one (data_module.args.test_split=N for digits) or evaluate another split with `validate`"
               if split == "test" else "give it one, e.g. data_module.args.val_split=0.1")
        raise ConfigError(f"the data module {type(data).__name__} has no {split} split; {fix}")
    if not is_overridden(step_hook, wrapper):
        raise ConfigError(f"the wrapper {type(wrapper).__name__} has no {step_hook}, so it cannot be evaluated "
                          f"on the {split} split")


def make_trainer(cfg: dict, data: Any, gpus: list[int] | None, nodes_given: bool = False) -> pl.Trainer:
    """A Trainer that only evaluates: the run's device and precision settings, no loggers or checkpoints.

    A run trained on several nodes is evaluated on this one, unless this command was itself started
    on several (by torchrun or srun) or `trainer_params.num_nodes` is given again: started alone, the
    processes of node 0 would wait for the others until the process-group timeout."""
    from lightning_fabric.plugins.environments import SLURMEnvironment, TorchElasticEnvironment

    from torchx.callbacks.base_logger import interactive
    from torchx.datasets.base import TensorDataModule

    params = distributed.with_timeout(cfg, build.apply_gpus(cfg, gpus)["trainer_params"])
    kwargs = {k: params[k] for k in EVAL_PARAMS if k in params}
    nodes = kwargs.get("num_nodes", 1)
    if nodes != 1 and not nodes_given and not (TorchElasticEnvironment.detect() or SLURMEnvironment.detect()):
        kwargs.pop("num_nodes")
        if is_rank_zero():
            print(f"note: the run trained on {nodes} nodes; evaluating on this one (start this command on every "
                  f"node with torchrun or srun, with trainer_params.num_nodes={nodes}, to use them all)",
                  file=sys.stderr)
    kwargs.update(logger=False, enable_checkpointing=False, enable_model_summary=False,
                  enable_progress_bar=interactive() and params.get("enable_progress_bar", True))
    if isinstance(data, TensorDataModule):
        kwargs["use_distributed_sampler"] = False  # torchx's sampler shards by rank itself, without repeats
    log = logging.getLogger("pytorch_lightning.utilities.rank_zero")
    level = log.level
    log.setLevel(logging.WARNING)  # "GPU available: ..." is not part of an evaluation's report
    try:
        with build.reported_as(f"trainer_params {kwargs}"):
            return pl.Trainer(**kwargs)
    finally:
        log.setLevel(level)


class SampleCounter(pl.Callback):
    """Counts the samples evaluated, summed over DDP ranks: the record shows each was counted once."""

    def __init__(self) -> None:
        self.seen, self.total = 0, 0

    def _add(self, batch: Any) -> None:
        from pytorch_lightning.utilities.data import extract_batch_size

        try:
            self.seen += extract_batch_size(batch)
        except Exception:  # a batch without tensors; nothing to count
            pass

    def on_test_batch_end(self, trainer: pl.Trainer, module: Any, outputs: Any, batch: Any, *args: Any) -> None:
        self._add(batch)

    def on_validation_batch_end(self, trainer: pl.Trainer, module: Any, outputs: Any, batch: Any,
                                *args: Any) -> None:
        self._add(batch)

    def _total(self, trainer: pl.Trainer) -> None:
        count = torch.tensor(float(self.seen), device=trainer.strategy.root_device)
        self.total = int(trainer.strategy.reduce(count, reduce_op="sum").item()) if trainer.world_size > 1 \
            else self.seen

    def on_test_end(self, trainer: pl.Trainer, module: Any) -> None:
        self._total(trainer)

    def on_validation_end(self, trainer: pl.Trainer, module: Any) -> None:
        self._total(trainer)


def reference(run_dir: Path, split: str, ckpt_path: Path, changes: list[str]) -> dict[str, float] | None:
    """The numbers the run itself reported for this split and checkpoint, to print beside the new ones:
    results.json's test metrics (tested with the best checkpoint), when nothing was overridden."""
    results = read_json(run_dir / "results.json") or {}
    best = results.get("best_model_path")
    if split != "test" or changes or not best or Path(best).name != ckpt_path.name:
        return None
    return results.get("test") or None


def table(run_dir: Path, record: dict, ref: dict[str, float] | None) -> str:
    head = (f"{record['split']} of {run_dir} with {record['checkpoint']} ({record['ckpt']}, epoch "
            f"{record['epoch']}, step {record['global_step']}): {record['samples']} samples"
            + (f" on {record['devices']} devices" if record["devices"] > 1 else ""))
    names = sorted(record["metrics"])
    if not names:
        return head + "\n(the wrapper logged no metrics)"
    width = max(len(n) for n in names) + 2
    lines = [head, f"{'metric':<{width}}{'value':>12}" + (f"{'results.json':>14}" if ref else "")]
    for n in names:
        line = f"{n:<{width}}{record['metrics'][n]:>12.6f}"
        if ref:
            line += f"{ref[n]:>14.6f}" if n in ref else f"{'-':>14}"
        lines.append(line)
    return "\n".join(lines)


def write_new(folder: Path, stem: str, record: dict) -> Path:
    """Write `record` as folder/stem.json, or stem-2.json, ... : a new file, never one that exists
    (an os.link of a finished temporary file, which fails rather than replace)."""
    folder.mkdir(exist_ok=True)
    tmp = folder / f".{stem}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    try:
        n = 1
        while True:
            path = folder / (f"{stem}.json" if n == 1 else f"{stem}-{n}.json")
            try:
                os.link(tmp, path)
                return path
            except FileExistsError:
                n += 1
    finally:
        tmp.unlink(missing_ok=True)

"""Build a checked config's components; shared by train_pl.py, train.py and --dry-run."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator
from typing import Any

import pytorch_lightning as pl

from torchx import callbacks, datasets, wrappers
from torchx.errors import ConfigError
from torchx.registry import close_matches


def data_module(cfg: dict) -> pl.LightningDataModule:
    """The data module, constructed only: no data is read until its setup() (unless the config's
    ${data:...} references needed it, in which case the module built to answer them is reused)."""
    from torchx.config import PREBUILT, spec_key

    prebuilt = PREBUILT.pop(spec_key(cfg["data_module"]), None)
    return prebuilt if prebuilt is not None else datasets.make(cfg["data_module"])


def wrapper(cfg: dict) -> pl.LightningModule:
    """The training wrapper; the top-level `metrics:` list is handed to it as `metrics`."""
    return wrappers.make(cfg["train_wrapper"], args={"metrics": cfg["metrics"]} if cfg.get("metrics") else None)


@contextlib.contextmanager
def reported_as(where: str) -> Iterator[None]:
    """Lightning's MisconfigurationException (a plain Exception), ValueError, TypeError and a
    missing optional package, raised while building `where`, become one ConfigError naming it."""
    from lightning_fabric.utilities.exceptions import MisconfigurationException

    try:
        yield
    except ConfigError:
        raise
    except (MisconfigurationException, ValueError, TypeError, ImportError) as e:
        raise ConfigError(f"{where}: {e}") from e


def user_callbacks(cfg: dict) -> list[pl.Callback]:
    built = []
    for i, spec in enumerate(cfg.get("callbacks") or []):
        with reported_as(f"callbacks.{i} ({spec.get('name')} with args {spec.get('args') or {}})"):
            built.append(callbacks.make(spec))
    return built


def declared_metrics(wrapper: Any) -> set[str]:
    """What the wrapper says it logs (`logged_metrics()`), or nothing if it does not say."""
    logged = getattr(wrapper, "logged_metrics", None)
    return set(logged()) if callable(logged) else set()


def named_monitors(cfg: dict) -> list[tuple[str, str, bool]]:
    """(where, metric, strict) of every metric the config names: checkpoint.monitor, callbacks'
    monitors, schedulers' monitors. Not strict: a callback or scheduler told to skip a missing metric
    (`strict: false`)."""
    named = [("checkpoint.monitor", (cfg.get("checkpoint") or {}).get("monitor"), True)]
    named += [(f"callbacks.{i}.args.monitor", (spec.get("args") or {}).get("monitor"),
               (spec.get("args") or {}).get("strict", True) is not False)
              for i, spec in enumerate(cfg.get("callbacks") or [])]
    scheds = (cfg["train_wrapper"].get("args") or {}).get("sched_spec") or []
    for i, spec in enumerate(scheds if isinstance(scheds, list) else [scheds]):
        if isinstance(spec, dict):
            named.append((f"sched_spec.{i}.monitor" if isinstance(scheds, list) else "sched_spec.monitor",
                          spec.get("monitor"), spec.get("strict", True) is not False))
    return [(where, metric, strict) for where, metric, strict in named if metric is not None]


def csv_columns(data: pl.LightningDataModule, wrapper: Any) -> set[str]:
    """metrics.csv's columns from the first row: what the wrapper declares, without test metrics
    when the run will not be tested."""
    declared = declared_metrics(wrapper)
    if why_untested(data, wrapper):
        declared = {m for m in declared if not m.startswith("test/")}
    if not validates(data):
        declared = {m for m in declared if not m.startswith("val/")}
    return declared


def validates(data: pl.LightningDataModule) -> bool:
    """Whether the data module has a validation split (a user's may have a train loader alone)."""
    from pytorch_lightning.utilities.model_helpers import is_overridden

    from torchx.datasets.base import TensorDataModule

    if isinstance(data, TensorDataModule):
        return data.has_split("val")
    return is_overridden("val_dataloader", data)


def check_monitors(cfg: dict, wrapper: Any) -> None:
    """Metrics named by checkpoint.monitor, callbacks and schedulers must be ones the wrapper logs."""
    known = sorted(declared_metrics(wrapper))
    if not known:
        return  # a user wrapper that does not declare its metrics: see checks.monitors
    for where, metric, _ in named_monitors(cfg):
        if metric not in known:
            raise ConfigError(f"{where}: the wrapper does not log '{metric}'{close_matches(str(metric), known)}; "
                              f"it logs: {', '.join(known)}")


def checkpoint_args(cfg: dict) -> dict[str, Any]:
    """The `checkpoint:` section with torchx's defaults (keep last.ckpt)."""
    args = {"save_last": True}
    args.update(copy.deepcopy(cfg.get("checkpoint") or {}))
    return args


def apply_gpus(cfg: dict, gpus: list[int] | None) -> dict:
    """`--gpu 1,2` -> accelerator gpu, devices [1, 2], DDP when more than one; else CPU by default."""
    params = dict(cfg.get("trainer_params") or {})
    if gpus:
        check_gpus(gpus)
        params.update(accelerator="gpu", devices=gpus)
        if len(gpus) > 1 and params.get("strategy", "auto") == "auto":
            params["strategy"] = "ddp"
    else:
        params.setdefault("accelerator", "cpu")
    return {**cfg, "trainer_params": params}


def optimizers_of(wrapper: Any) -> tuple[list, list[dict]]:
    """The optimizers and scheduler dicts a wrapper configures, whatever shape it returns them in."""
    import torch

    if callable(getattr(wrapper, "build_optimizers", None)):
        optimizer, scheds = wrapper.build_optimizers()
        return [optimizer], scheds
    out = wrapper.configure_optimizers()
    if isinstance(out, dict):
        out = ([out["optimizer"]], [out["lr_scheduler"]] if "lr_scheduler" in out else [])
    if isinstance(out, torch.optim.Optimizer):
        return [out], []
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], list):
        opts, scheds = out
    else:
        opts, scheds = list(out), []
    scheds = [s if isinstance(s, dict) else {"scheduler": s} for s in scheds]
    return list(opts), scheds


def check_gpus(gpus: list[int]) -> None:
    """CUDA must be there and every asked-for index must exist."""
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"--gpu {','.join(map(str, gpus))}: CUDA is not available on this machine "
                          f"(torch {torch.__version__}); drop --gpu to run on the CPU")
    count = torch.cuda.device_count()
    bad = [g for g in gpus if g >= count]
    if bad:
        raise ConfigError(f"--gpu: device {bad[0]} does not exist; this machine has {count} CUDA "
                          f"device(s): {', '.join(map(str, range(count)))}")


def why_untested(data: pl.LightningDataModule, wrapper: pl.LightningModule) -> str | None:
    """Why a finished run is not tested (no test split, no test_step), or None: it is."""
    from pytorch_lightning.utilities.model_helpers import is_overridden

    from torchx.datasets.base import TensorDataModule

    if isinstance(data, TensorDataModule):
        if not data.has_split("test"):
            return f"{type(data).__name__} has no test split"
    elif not is_overridden("test_dataloader", data):
        return f"the data module {type(data).__name__} has no test_dataloader"
    if not is_overridden("test_step", wrapper):
        return f"the wrapper {type(wrapper).__name__} has no test_step"
    return None


def count_each_sample_once(data: pl.LightningDataModule, trainer: pl.Trainer) -> None:
    """Under DDP, Lightning gives a user's validation and test loaders a DistributedSampler that
    repeats samples to even out the ranks, so metrics count some twice. Give them instead the
    sampler Lightning uses for prediction, which shards without repeating (torchx's own data
    modules shard so themselves)."""
    import functools

    from pytorch_lightning.overrides.distributed import UnrepeatedDistributedSamplerWrapper
    from pytorch_lightning.utilities.model_helpers import is_overridden
    from torch.utils.data import DataLoader, DistributedSampler

    from torchx.datasets.base import TensorDataModule

    if trainer.world_size < 2 or isinstance(data, TensorDataModule) or not trainer._accelerator_connector \
            .use_distributed_sampler:
        return

    def unrepeated(loader: Any) -> Any:
        if not isinstance(loader, DataLoader) or isinstance(loader.sampler, DistributedSampler) \
                or loader.batch_sampler is None:
            return loader
        from pytorch_lightning.trainer.states import RunningStage
        from pytorch_lightning.utilities.data import _update_dataloader

        sampler = UnrepeatedDistributedSamplerWrapper(loader.sampler, num_replicas=trainer.world_size,
                                                      rank=trainer.global_rank, shuffle=False)
        return _update_dataloader(loader, sampler, mode=RunningStage.VALIDATING)

    for hook in ("val_dataloader", "test_dataloader"):
        if not is_overridden(hook, data):
            continue
        original = getattr(data, hook)

        @functools.wraps(original)
        def wrapped(original: Any = original) -> Any:
            from lightning_utilities import apply_to_collection

            return apply_to_collection(original(), DataLoader, unrepeated)

        setattr(data, hook, wrapped)


HASHED_FILES = 1000  # data.txt gives each file's sha256 up to this many files; beyond, names and sizes only


def data_record(cfg: dict, data: pl.LightningDataModule) -> str:
    """data.txt: the data module as configured, its splits, the transforms each split goes through and
    the checksums of the files the data came from, so a run says exactly what data it saw."""
    import hashlib
    import os

    import yaml

    from torchx.datasets.base import TensorDataModule

    lines = ["# the data this run saw", "data_module:"]
    lines += ["  " + line for line in yaml.safe_dump(cfg["data_module"], sort_keys=False).splitlines()]
    if isinstance(data, TensorDataModule):
        sizes = ", ".join(f"{split} {data.split_size(split)}" for split in ("train", "val", "test")
                          if data.has_split(split))
        lines += ["", f"splits: {sizes}", "", "transforms:"] + ["  " + line for line in data.pipeline_lines()]
    files = data.data_files() if callable(getattr(data, "data_files", None)) else []
    lines += ["", f"files ({len(files)}):"]
    if len(files) <= HASHED_FILES:
        for path in files:
            digest = hashlib.sha256()
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            lines.append(f"  sha256 {digest.hexdigest()}  {os.path.getsize(path):>12}  {path}")
    else:  # reading every file of a large folder before training would cost minutes
        digest = hashlib.sha256()
        for path in sorted(map(str, files)):
            digest.update(f"{path}\0{os.path.getsize(path)}\n".encode())
        lines.append(f"  {len(files)} files (more than {HASHED_FILES}): sha256 of their names and sizes "
                     f"{digest.hexdigest()}; contents not hashed")
    return "\n".join(lines) + "\n"


def describe(obj: Any) -> str:
    """One line per component for --dry-run."""
    if hasattr(obj, "describe"):
        return obj.describe()
    params = getattr(obj, "parameters", None)
    if callable(params):
        return f"{type(obj).__name__}: {sum(p.numel() for p in params()):,} parameters"
    return type(obj).__name__

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
    """The data module, constructed only: no data is read until its setup()."""
    return datasets.make(cfg["data_module"])


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


def check_monitors(cfg: dict, wrapper: Any) -> None:
    """Metrics named by checkpoint.monitor, callbacks and schedulers must be ones the wrapper logs."""
    known = sorted(declared_metrics(wrapper))
    if not known:
        return  # a user wrapper that does not declare its metrics is checked when they are logged
    named = [("checkpoint.monitor", (cfg.get("checkpoint") or {}).get("monitor"))]
    named += [(f"callbacks.{i}.args.monitor", (spec.get("args") or {}).get("monitor"))
              for i, spec in enumerate(cfg.get("callbacks") or [])]
    scheds = cfg["train_wrapper"].get("args", {}).get("sched_spec") or []
    for i, spec in enumerate(scheds if isinstance(scheds, list) else [scheds]):
        named.append((f"sched_spec.{i}.monitor" if isinstance(scheds, list) else "sched_spec.monitor",
                      spec.get("monitor")))
    for where, metric in named:
        if metric is not None and metric not in known:
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
                          f"(torch {torch.__version__}); drop --gpu to train on the CPU")
    count = torch.cuda.device_count()
    bad = [g for g in gpus if g >= count]
    if bad:
        raise ConfigError(f"--gpu: device {bad[0]} does not exist; this machine has {count} CUDA "
                          f"device(s): {', '.join(map(str, range(count)))}")


def describe(obj: Any) -> str:
    """One line per component for --dry-run."""
    if hasattr(obj, "describe"):
        return obj.describe()
    params = getattr(obj, "parameters", None)
    if callable(params):
        return f"{type(obj).__name__}: {sum(p.numel() for p in params()):,} parameters"
    return type(obj).__name__

"""Loggers: where a run's metrics go besides TensorBoard and metrics.csv, which are always on.

    loggers:
      - {name: mlflow}                                    # sqlite:///<save dir>/mlflow.db
      - {name: wandb, args: {project: digits, mode: offline}}
    system_metrics: {every_s: 10}                         # CPU, memory, GPUs (off by default)

Each entry is a `{name, args}` spec of this registry; the built-ins (mlflow, wandb, comet, sacred)
are torchx Trackers. A user's own entry may be any Lightning Logger:

    import torchx.loggers as loggers
    @loggers.register('my_tracker')
    class MyTracker(pytorch_lightning.loggers.Logger): ...

Both loops drive the same logger objects: pl.Trainer through its `logger` list, train.py by
calling `log_metrics` with the names and steps it gives TensorBoard. A backend's package is
imported only when a config names it.
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

from torchx.errors import ConfigError
from torchx.registry import Registry

registry = Registry("logger")
register = registry.register
make = registry.make

ALWAYS_ON = {"tensorboard": "TensorBoard events", "csv": "metrics.csv"}

from torchx.loggers import comet, mlflow, sacred, wandb  # noqa: E402,F401  (built-ins register themselves)
from torchx.loggers.base import Tracker  # noqa: E402


def specs(cfg: dict) -> list[dict]:
    found = cfg.get("loggers") or []
    if not isinstance(found, list):
        raise ConfigError(f"loggers must be a list of {{name, args}} specs, like [{{name: mlflow}}], got {found!r}")
    return found


def check(cfg: dict) -> None:
    """The `loggers:` and `system_metrics:` sections, before anything is created: known names,
    installed packages, arguments the backend accepts (its __init__ checks their values)."""
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs(cfg)):
        name = spec.get("name") if isinstance(spec, dict) else None
        if isinstance(name, str) and name in ALWAYS_ON:
            raise ConfigError(f"loggers.{i}: '{name}' is always on ({ALWAYS_ON[name]} are in every run directory); "
                              f"list only other loggers (known: {', '.join(registry.keys())})")
        if isinstance(name, str) and name in seen:
            raise ConfigError(f"loggers.{i}: '{name}' is listed twice (first as loggers.{seen[name]}); "
                              f"a run logs to each backend once")
        build_one(spec, f"loggers.{i}")
        seen[str(name)] = i
    from torchx.loggers import system

    system.check(cfg.get("system_metrics"))


def build_one(spec: Any, where: str) -> Any:
    """One logger from its spec: the name known, the package installed, the arguments accepted."""
    from pytorch_lightning.loggers import Logger

    if not isinstance(spec, dict) or "name" not in spec or set(spec) - {"name", "args"}:
        raise ConfigError(f"{where} must be a spec {{name: ..., args: {{...}}}}, got {spec!r}")
    try:
        ctor, _ = registry.check(spec)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    need_package(ctor, where)
    try:
        logger = registry.make(spec)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    if not isinstance(logger, Logger):
        raise ConfigError(f"{where}: logger '{spec['name']}' built a {type(logger).__name__}, not a Lightning "
                          f"Logger (pytorch_lightning.loggers.Logger)")
    return logger


def need_package(ctor: Any, where: str) -> None:
    package = getattr(ctor, "package", "")
    if not package:
        return
    try:
        with warnings.catch_warnings():  # packages' notices about their own dependencies (sacred: pkg_resources)
            warnings.simplefilter("ignore")
            importlib.import_module(package)
    except ImportError as e:
        extra = getattr(ctor, "extra", "")
        also = f" (or the extra: pip install -e '.[{extra}]')" if extra else ""
        missing = isinstance(e, ModuleNotFoundError) and e.name == package
        why = "is not installed" if missing else f"cannot be imported ({type(e).__name__}: {e})"
        raise ConfigError(f"{where}: logger '{ctor.backend}' needs the {package} package, which {why}; "
                          f"install it with: pip install '{ctor.requirement}'{also}") from None


def build(cfg: dict) -> list[Any]:
    """The configured loggers (checked by `check` when the config was)."""
    return [build_one(spec, f"loggers.{i}") for i, spec in enumerate(specs(cfg))]


def start(built: list[Any], run: Any, entry: str) -> None:
    """Rank 0, once the run directory is claimed: each tracker starts or resumes its run (on its own
    thread); another Lightning Logger is given the flattened config."""
    from torchx.loggers.context import context

    if not built:
        return
    ctx = context(run, entry)
    for logger in built:
        if isinstance(logger, Tracker):
            logger.open(ctx)
        else:
            logger.log_hyperparams(ctx.params())


def finish(built: list[Any], status: str) -> None:
    """End every tracked run: FINISHED, FAILED or KILLED (preempted or interrupted)."""
    for logger in built:
        if isinstance(logger, Tracker):
            logger.close(status)
        else:
            logger.finalize("success" if status == "FINISHED" else "failed")

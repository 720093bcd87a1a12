"""Optimizers and LR schedulers by name: torch's own, unless a registered entry shadows them.

    import torchx.optim as optim
    @optim.register_scheduler('warmup_cosine')
    def warmup_cosine(optimizer, warmup, total): ...
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from torchx.errors import ConfigError
from torchx.registry import Registry


def _torch_classes(module: Any, base: type) -> dict[str, type]:
    return {n: c for n, c in vars(module).items()
            if inspect.isclass(c) and issubclass(c, base) and c is not base and not n.startswith("_")}


_TORCH_OPTIMIZERS = _torch_classes(torch.optim, torch.optim.Optimizer)
_TORCH_SCHEDULERS = _torch_classes(torch.optim.lr_scheduler, torch.optim.lr_scheduler.LRScheduler)
_TORCH_SCHEDULERS["ReduceLROnPlateau"] = torch.optim.lr_scheduler.ReduceLROnPlateau
# These take Python callables or other schedulers, which a YAML file cannot spell.
_REFUSED = ("LambdaLR", "MultiplicativeLR", "ChainedScheduler", "SequentialLR")
for _name in _REFUSED:
    _TORCH_SCHEDULERS.pop(_name, None)


def _torch_scheduler(name: str) -> type | None:
    if name in _REFUSED:
        raise ConfigError(f"lr_scheduler '{name}' cannot be built from a config: it takes Python callables or "
                          f"other schedulers. Register a factory with @torchx.optim.register_scheduler instead")
    return _TORCH_SCHEDULERS.get(name)


optimizers = Registry("optimizer", fallback=_TORCH_OPTIMIZERS.get,
                      fallback_names=lambda: list(_TORCH_OPTIMIZERS))
schedulers = Registry("lr_scheduler", fallback=_torch_scheduler,
                      fallback_names=lambda: list(_TORCH_SCHEDULERS))
register_optimizer = optimizers.register
register_scheduler = schedulers.register


@register_scheduler("sequential")
def sequential(optimizer: torch.optim.Optimizer, schedulers: list[dict],
               milestones: list[int]) -> torch.optim.lr_scheduler.SequentialLR:
    """Schedulers one after another (e.g. warm-up, then cosine), switching at `milestones`."""
    return torch.optim.lr_scheduler.SequentialLR(optimizer, _build(optimizer, schedulers), milestones=milestones)


@register_scheduler("chained")
def chained(optimizer: torch.optim.Optimizer, schedulers: list[dict]) -> torch.optim.lr_scheduler.ChainedScheduler:
    """Schedulers applied together at every step, their factors multiplied."""
    return torch.optim.lr_scheduler.ChainedScheduler(_build(optimizer, schedulers), optimizer=optimizer)


def _build(optimizer: torch.optim.Optimizer, specs: object) -> list:
    """The inner schedulers of `sequential` / `chained`, all on the same optimizer."""
    if not isinstance(specs, list) or not specs:
        raise ConfigError(f"'schedulers' must be a non-empty list of scheduler specs, got {specs!r}")
    return [schedulers.make(spec, args={"optimizer": optimizer}) for spec in specs]

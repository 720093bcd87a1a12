"""`trainer_params.precision` and `compile` for the plain loop, as pl.Trainer applies them.

Mixed precision follows Lightning's MixedPrecision plugin step for step, so that both loops compute
the same thing and a checkpoint of one resumes in the other: the forward pass and the loss of every
training, validation and test batch run under `torch.autocast` (bfloat16 or float16, autocast's
weight cache off), the backward pass and the optimizer step outside it; with float16 a GradScaler
scales the loss, unscales the gradients before clipping, skips a step whose gradients are not
finite, and its state goes into the checkpoint under the key Lightning uses ("MixedPrecision").

`compile` (a top-level config key, for both loops) compiles the network in place with
`nn.Module.compile`, which keeps its parameter names: checkpoints of a compiled run load into an
uncompiled model and the other way round.
"""

from __future__ import annotations

import contextlib
import sys
import warnings
from typing import Any

import torch

from torchx.errors import ConfigError

# what the plain loop runs: Lightning's names, after its aliases (16 -> 16-mixed, bf16 -> bf16-mixed, 32 -> 32-true)
SUPPORTED = ("32-true", "bf16-mixed", "16-mixed")
STATE_KEY = "MixedPrecision"  # where pl.Trainer keeps the GradScaler's state in a checkpoint
COMPILE_ARGS = ("mode", "fullgraph", "dynamic", "backend", "options")


def unified(value: Any) -> str:
    """Lightning's name for a precision setting (its aliases resolved), or a message saying what is valid."""
    from lightning_fabric.connector import _convert_precision_to_unified_args

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "16 is supported for historical reasons": the name is what we need
            return str(_convert_precision_to_unified_args(value))
    except Exception:
        raise ConfigError(f"trainer_params.precision={value!r} is not a precision Lightning knows; use one of "
                          f"{', '.join(SUPPORTED)} (train.py), or 16-true, bf16-true, 64-true with "
                          f"train_pl.py") from None


class Precision:
    """The plain loop's autocast and gradient scaling for one precision setting on one device."""

    def __init__(self, value: Any, device: torch.device) -> None:
        self.name = unified(value if value is not None else "32-true")
        if self.name not in SUPPORTED:
            raise ConfigError(f"train.py trains in {', '.join(SUPPORTED)}; trainer_params.precision={value!r} needs "
                              f"train_pl.py")
        if self.name == "16-mixed" and device.type == "cpu":  # float16 autocast is CUDA's; pl.Trainer does the same
            print("note: trainer_params.precision=16-mixed: float16 autocast needs a CUDA device; on the CPU this run "
                  "uses bf16-mixed, as train_pl.py does", file=sys.stderr)
            self.name = "bf16-mixed"
        self.device = device
        self.dtype = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(self.name)
        self.scaler = torch.amp.GradScaler(device=device.type) if self.name == "16-mixed" else None

    def autocast(self) -> contextlib.AbstractContextManager:
        """Around a forward pass and its loss; nothing for float32."""
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.dtype, cache_enabled=False)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, clip: Any, skipped: bool = False) -> None:
        """Clip (`clip()`) and step; with a scaler the gradients are unscaled first and a step whose
        gradients are not finite is skipped, as Lightning's plugin does (and a batch whose loss the
        wrapper skipped, `skipped`, steps nothing)."""
        if self.scaler is None:
            clip()
            optimizer.step()
            return
        if skipped:
            return
        self.scaler.unscale_(optimizer)
        clip()
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler is not None else {}

    def load_state_dict(self, ckpt: dict) -> None:
        if self.scaler is not None and ckpt.get(STATE_KEY):
            self.scaler.load_state_dict(ckpt[STATE_KEY])


def check_compile(value: Any) -> dict | None:
    """`compile: true`, `false`/null, or the keyword arguments of torch.compile (mode, fullgraph, dynamic,
    backend, options); returns those arguments, None for no compiling."""
    if value is None or value is False:
        return None
    if value is True:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"compile must be true, false or a mapping of torch.compile arguments "
                          f"({', '.join(COMPILE_ARGS)}), got {value!r}")
    for key in value:
        if key not in COMPILE_ARGS:
            from torchx.registry import close_matches

            hint = close_matches(str(key), COMPILE_ARGS)
            raise ConfigError(f"compile.{key} is not an argument of torch.compile{hint}; it takes "
                              f"{', '.join(COMPILE_ARGS)}")
    mode = value.get("mode")
    modes = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
    if mode is not None and mode not in modes:
        raise ConfigError(f"compile.mode must be one of {', '.join(modes)}, got {mode!r}")
    if "options" in value and "mode" in value:
        raise ConfigError("compile takes mode or options, not both (as torch.compile)")
    return dict(value)


def compile_model(wrapper: torch.nn.Module, cfg: dict) -> str | None:
    """Compile the wrapper's network (`wrapper.model`, else the wrapper's own forward) in place when the
    config asks; returns what was compiled, for the log."""
    args = check_compile(cfg.get("compile"))
    if args is None:
        return None
    inner = getattr(wrapper, "model", None)
    target = inner if isinstance(inner, torch.nn.Module) else wrapper
    target.compile(**args)
    return type(target).__name__

"""A model for fault tests: torchx's MLP that, at its N-th training forward pass, waits for a file
to exist (FAULT_WAIT_AT=N, FAULT_WAIT_FOR=path) and/or kills its own process with SIGKILL
(FAULT_KILL_AT=N). The environment, not the config, arms it, so a resumed run is not killed."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import torch

from torchx.models import register
from torchx.models.mlp import MLP


@register("mlp_with_faults")
class MLPWithFaults(MLP):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self.calls += 1
            if self.calls == int(os.environ.get("FAULT_WAIT_AT", 0)):
                deadline = time.monotonic() + 60
                while not Path(os.environ["FAULT_WAIT_FOR"]).exists() and time.monotonic() < deadline:
                    time.sleep(0.02)
            if self.calls == int(os.environ.get("FAULT_KILL_AT", 0)):
                time.sleep(2.0)  # what was logged so far reaches the tracker (it sends every 0.1 s here)
                os.kill(os.getpid(), signal.SIGKILL)
        return super().forward(x)

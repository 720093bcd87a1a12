"""A user's callback that only slows training down (it changes no number), so that a test can act on
a multi-process run while it is between two known steps."""

from __future__ import annotations

import time

import pytorch_lightning as pl

import torchx.callbacks as callbacks


@callbacks.register("pace")
class Pace(pl.Callback):
    """Sleep `seconds` after every training batch, on every rank."""

    def __init__(self, seconds: float = 0.2) -> None:
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        self.seconds = seconds

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: object) -> None:
        time.sleep(self.seconds)

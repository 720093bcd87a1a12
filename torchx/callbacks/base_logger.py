"""Epoch reports with elapsed time and ETA, printed and appended to `<run dir>/log.txt`.

`EpochReport` is shared by both loops; `BaseLogger` drives it from pl.Trainer's hooks and
`ProgressBar` shows the same ETA in the tqdm bar.
"""

from __future__ import annotations

import datetime
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar

from torchx.run import is_rank_zero


def fmt_seconds(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


class EpochReport:
    """Knows how far the run is (steps done of total) and writes one line per epoch."""

    def __init__(self, log_file: Path | None) -> None:
        self.log_file = log_file
        self.t0 = time.monotonic()
        self.step0 = 0
        self.total_steps: float = 0

    def start(self, step: int, total_steps: float) -> None:
        """Called when training (re)starts: the rate is measured from here, not across resumes."""
        self.t0, self.step0, self.total_steps = time.monotonic(), step, total_steps

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def eta(self, step: int) -> float | None:
        done = step - self.step0
        if done <= 0 or not self.total_steps or self.total_steps == float("inf"):
            return None
        return self.elapsed() / done * max(self.total_steps - step, 0)

    def line(self, epoch: int, max_epochs: int | None, step: int, metrics: dict[str, float],
             done: int | None = None) -> str:
        """`done` measures progress in the unit of total_steps (default: `step`)."""
        head = f"epoch {epoch + 1}" + (f"/{max_epochs}" if max_epochs and max_epochs > 0 else "")
        parts = [head, f"step {step}"]
        parts += [f"{k} {v:.4f}" for k, v in sorted(metrics.items())]
        eta = self.eta(step if done is None else done)
        parts += [f"elapsed {fmt_seconds(self.elapsed())}", f"eta {fmt_seconds(eta) if eta is not None else '?'}"]
        return " | ".join(parts)

    def write(self, text: str, echo: Callable[[str], None] = print) -> None:
        """Print `text` (through `echo`, e.g. a progress bar's own print) and append it to log.txt."""
        if not is_rank_zero():
            return
        echo(text)
        if self.log_file is not None:
            with open(self.log_file, "a") as f:
                f.write(text + "\n")


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            pass
    return out


def progress(trainer: pl.Trainer) -> int:
    """Batches that stepped so far: the unit of `estimated_stepping_batches`, also under manual
    optimization, where global_step counts every optimizer's steps."""
    return trainer.fit_loop.epoch_loop._batches_that_stepped


class BaseLogger(pl.Callback):
    """One line per epoch (metrics, elapsed, ETA) on stdout and in log.txt, from rank 0.

    Lightning runs plain callbacks' `on_train_epoch_end` before the module logs its epoch
    metrics, so an epoch's line is written when the next epoch starts or training ends.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.report = EpochReport(Path(run_dir) / "log.txt")
        self._pending: int | None = None  # epoch whose line is not written yet
        self._validated = False  # whether validation ran in the pending epoch (else val/* are stale)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.report.start(progress(trainer), trainer.estimated_stepping_batches)
        if trainer.fit_loop.restarted_mid_epoch:  # Lightning skips on_train_epoch_start for this epoch
            self._pending, self._validated = trainer.current_epoch, False

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer)
        self._pending, self._validated = trainer.current_epoch, False

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            self._validated = True

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._flush(trainer)

    def _flush(self, trainer: pl.Trainer) -> None:
        if self._pending is None or trainer.sanity_checking:
            return
        metrics = {k: v for k, v in _floats(trainer.callback_metrics).items()
                   if not k.endswith("_step") and (self._validated or not k.startswith("val/"))}
        bar = trainer.progress_bar_callback
        line = self.report.line(self._pending, trainer.max_epochs, trainer.global_step, metrics, progress(trainer))
        self.report.write(line, echo=bar.print if bar is not None else print)
        self._pending = None


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, refreshed every `refresh_rate` steps, with the run's total ETA."""

    def __init__(self, report: EpochReport, refresh_rate: int = 20) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.report = report

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        eta = self.report.eta(progress(trainer))
        if eta is not None:
            metrics["eta"] = fmt_seconds(eta)
        return metrics

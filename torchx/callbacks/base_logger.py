"""Progress reports with elapsed time and ETA, printed and appended to `<run dir>/log.txt`.

`EpochReport` is shared by both loops; `BaseLogger` drives it from pl.Trainer's hooks and
`ProgressBar` shows the same ETA in the tqdm bar. When standard output is not a terminal (a
log file, SLURM, nohup, a session's experiments), `PlainProgress` replaces the bar: a plain
line every TORCHX_PROGRESS_EVERY seconds (default 30) and nothing else, so a log holds lines,
not carriage returns and cursor movements.

A report line is written when an epoch ends (its train metrics, and the validation metrics when
validation ran at that same step) and, when a validation runs inside an epoch, for that
validation (its metrics). An epoch-based run heads its lines `epoch E/N | step S`; a step-based
run (see `counts_steps`) heads them `step S/T | epoch E`. The ETA comes from the optimizer steps
done and the steps the run will take in all.
"""

from __future__ import annotations

import datetime
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.callbacks.progress.progress_bar import ProgressBar as LightningProgressBar

from torchx.errors import ConfigError
from torchx.run import is_rank_zero

PLAIN_EVERY_S = 30.0  # seconds between plain progress lines, unless TORCHX_PROGRESS_EVERY says otherwise


def interactive() -> bool:
    """Whether progress may be drawn as a bar: standard output is a terminal."""
    try:
        return sys.stdout.isatty()
    except (AttributeError, ValueError):  # replaced or closed streams
        return False


def plain_every_s() -> float:
    """Seconds between plain progress lines (TORCHX_PROGRESS_EVERY; 0 prints one per batch)."""
    text = os.environ.get("TORCHX_PROGRESS_EVERY")
    if text is None:
        return PLAIN_EVERY_S
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise ConfigError(f"TORCHX_PROGRESS_EVERY={text!r} must be a number of seconds >= 0, like 30")
    return value


class Every:
    """Due once every `seconds` of wall time, counted from `start()` (or from its creation)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.start()

    def start(self) -> None:
        self._next = time.monotonic() + self.seconds

    def due(self) -> bool:
        now = time.monotonic()
        if now < self._next:
            return False
        self._next = now + self.seconds
        return True


def fmt_seconds(seconds: float) -> str:
    return str(datetime.timedelta(seconds=int(max(seconds, 0))))


def counts_steps(max_epochs: int | None, val_check_interval: int | float | None,
                 check_val_every_n_epoch: int | None) -> bool:
    """Whether a run is reported in steps: its length is given in steps only (max_epochs -1), or
    validation is scheduled in training batches (val_check_interval an int or a fraction below 1.0,
    or check_val_every_n_epoch None)."""
    if val_check_interval is None:
        val_check_interval = 1.0
    return max_epochs == -1 or check_val_every_n_epoch is None or isinstance(val_check_interval, int) \
        or val_check_interval != 1.0


class EpochReport:
    """Knows how far the run is (steps done of total) and writes its report lines."""

    def __init__(self, log_file: Path | None) -> None:
        self.log_file = log_file
        self.t0 = time.monotonic()
        self.step0 = 0
        self.total_steps: float = 0
        self.by_steps = False

    def start(self, step: int, total_steps: float, by_steps: bool = False) -> None:
        """Called when training (re)starts: the rate is measured from here, not across resumes."""
        self.t0, self.step0, self.total_steps, self.by_steps = time.monotonic(), step, total_steps, by_steps

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def eta(self, step: int) -> float | None:
        done = step - self.step0
        if done <= 0 or not self.total_steps or self.total_steps == float("inf"):
            return None
        return self.elapsed() / done * max(self.total_steps - step, 0)

    def steps(self, step: int, of_total: bool = True) -> str:
        """`S/T` (or `S` when the total is unknown or counted in other units)."""
        finite = of_total and self.total_steps and self.total_steps != float("inf")
        return f"{step}/{int(self.total_steps)}" if finite else str(step)

    def line(self, epoch: int, max_epochs: int | None, step: int, metrics: dict[str, float],
             done: int | None = None, of_total: bool = True) -> str:
        """`done` measures progress in the unit of total_steps (default: `step`); `of_total`: whether
        `step` is in that unit too (not under manual optimization, where each optimizer counts)."""
        epochs = self._epochs(epoch, max_epochs)
        parts = [f"step {self.steps(step, of_total)}", epochs] if self.by_steps else [epochs, f"step {step}"]
        parts += [f"{k} {v:.4f}" for k, v in sorted(metrics.items())]
        return " | ".join(parts + self._clock(step if done is None else done))

    def progress(self, epoch: int, max_epochs: int | None, step: int, batch: int, batches: float,
                 done: int | None = None, of_total: bool = True) -> str:
        """A plain progress line inside an epoch: where the run is, its speed, elapsed and ETA."""
        epochs = self._epochs(epoch, max_epochs)
        in_epoch = f"batch {batch}" + (f"/{int(batches)}" if batches and batches != float("inf") else "")
        parts = [f"step {self.steps(step, of_total)}", epochs, in_epoch] if self.by_steps else \
            [epochs, in_epoch, f"step {self.steps(step, of_total)}"]
        done = step if done is None else done
        if done > self.step0 and self.elapsed() > 0:
            parts.append(f"{(done - self.step0) / self.elapsed():.1f} steps/s")
        return " | ".join(parts + self._clock(done))

    @staticmethod
    def _epochs(epoch: int, max_epochs: int | None) -> str:
        return f"epoch {epoch + 1}" + (f"/{max_epochs}" if max_epochs and max_epochs > 0 else "")

    def _clock(self, done: int) -> list[str]:
        """The elapsed time and the ETA, the last two parts of every line."""
        eta = self.eta(done)
        return [f"elapsed {fmt_seconds(self.elapsed())}", f"eta {fmt_seconds(eta) if eta is not None else '?'}"]

    def postfix(self, step: int, done: int | None = None, of_total: bool = True) -> dict[str, str]:
        """What a progress bar shows beside its batch count: the run's step (step-based runs) and ETA."""
        out = {"step": self.steps(step, of_total)} if self.by_steps else {}
        eta = self.eta(step if done is None else done)
        if eta is not None:
            out["eta"] = fmt_seconds(eta)
        return out

    def write(self, text: str, echo: Callable[[str], None] = print) -> None:
        """Print `text` (through `echo`, e.g. a progress bar's own print) and append it to log.txt."""
        if not is_rank_zero():
            return
        echo(text)
        if self.log_file is not None:
            with open(self.log_file, "a") as f:
                f.write(text + "\n")


def epoch_line_metrics(metrics: dict[str, float], validated: dict[str, float] | None) -> dict[str, float]:
    """An epoch-end line: its metrics without per-step values, with the validation's only when it
    ran at the epoch's last step (an earlier one had its own line)."""
    out = {k: v for k, v in metrics.items() if not k.endswith("_step") and not k.startswith("val/")}
    return {**out, **(validated or {})}


def validation_metrics(metrics: dict[str, float]) -> dict[str, float]:
    return {k: v for k, v in metrics.items() if k.startswith("val/") and not k.endswith("_step")}


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
    """Report lines (metrics, elapsed, ETA) on stdout and in log.txt, from rank 0.

    Lightning runs plain callbacks' `on_train_epoch_end` before the module logs its epoch
    metrics, so an epoch's line is written when the next epoch starts or training ends; a
    validation inside an epoch gets its line when the next training batch starts.
    """

    def __init__(self, run_dir: str | Path) -> None:
        self.report = EpochReport(Path(run_dir) / "log.txt")
        self._ended: int | None = None  # epoch that ended; its line is not written yet
        self._val: tuple[int, int, int, dict[str, float]] | None = None  # epoch, step, done, metrics

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        by_steps = counts_steps(trainer.max_epochs, trainer.val_check_interval, trainer.check_val_every_n_epoch)
        self.report.start(progress(trainer), trainer.estimated_stepping_batches, by_steps)
        self._ended, self._val = None, None

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer, pl_module)

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self._val is not None:
            self._flush(trainer, pl_module)

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking:
            # before the step's `_batches_that_stepped` increment: count this batch's step as done
            done = trainer.global_step if pl_module.automatic_optimization else progress(trainer) + 1
            self._val = (trainer.current_epoch, trainer.global_step, done,
                         validation_metrics(_floats(trainer.callback_metrics)))

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._ended = trainer.current_epoch

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._flush(trainer, pl_module)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._flush(trainer, pl_module)

    def _flush(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        auto = pl_module.automatic_optimization
        if self._ended is not None:
            metrics = epoch_line_metrics(_floats(trainer.callback_metrics), self._val[3] if self._val else None)
            line = self.report.line(self._ended, trainer.max_epochs, trainer.global_step, metrics,
                                    progress(trainer), of_total=auto)
        elif self._val is not None:
            epoch, step, done, metrics = self._val
            line = self.report.line(epoch, trainer.max_epochs, step, metrics, done, of_total=auto)
        else:
            return
        bar = trainer.progress_bar_callback
        self.report.write(line, echo=bar.print if bar is not None else print)
        self._ended, self._val = None, None


class ProgressBar(TQDMProgressBar):
    """Lightning's tqdm bar, refreshed every `refresh_rate` steps, with the run's total ETA."""

    def __init__(self, report: EpochReport, refresh_rate: int = 20) -> None:
        super().__init__(refresh_rate=refresh_rate)
        self.report = report

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)
        metrics.update(self.report.postfix(trainer.global_step, progress(trainer),
                                           of_total=pl_module.automatic_optimization))
        return metrics


class PlainProgress(LightningProgressBar):
    """Progress for output that is not a terminal: a line every `every_s` seconds of training, with
    the ETA (see EpochReport.progress), and no bar for sanity checks, validation or testing."""

    def __init__(self, report: EpochReport, every_s: float) -> None:
        super().__init__()
        self.report, self.every = report, Every(every_s)
        self._enabled = True

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def is_enabled(self) -> bool:
        return self._enabled

    @property
    def is_disabled(self) -> bool:
        return not self._enabled

    def print(self, *args: Any, **kwargs: Any) -> None:
        if self._enabled and is_rank_zero():
            print(*args, **kwargs, flush=True)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.every.start()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if not self._enabled or not self.every.due():
            return
        batch = trainer.fit_loop.epoch_loop.batch_progress.current.processed
        self.print(self.report.progress(trainer.current_epoch, trainer.max_epochs, trainer.global_step, batch,
                                        self.total_train_batches, progress(trainer),
                                        of_total=pl_module.automatic_optimization))

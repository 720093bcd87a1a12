"""Hardware metrics, from global rank 0: `system_metrics: {every_s: 10}` (off by default).

    system/cpu_percent            the machine's CPU use since the previous sample
    system/memory_percent         the machine's memory in use
    system/process_rss_mb         this process's resident memory
    system/gpu<i>/utilization     per CUDA device (NVML's index), when NVML answers
    system/gpu<i>/memory_used_mb

A sample is taken after a training batch once `every_s` seconds have passed, and logged at the
step of the latest training metrics, at most once per such step: a tracker's steps then keep
growing as it needs (W&B refuses a step below one it has). It goes to TensorBoard and every
tracker, not to metrics.csv, which stays the table of the training's own metrics that sessions
summarise and `rerun` compares.
"""

from __future__ import annotations

import time
from typing import Any

from torchx.errors import ConfigError

REQUIREMENT = "psutil==7.2.2"


def check(section: Any) -> None:
    if section is None:
        return
    SystemMetrics(**parse(section))


def parse(section: Any) -> dict[str, Any]:
    if not isinstance(section, dict) or set(section) - {"every_s"}:
        raise ConfigError(f"system_metrics must be a mapping like {{every_s: 10}} (seconds between samples), "
                          f"or null for none; got {section!r}")
    return dict(section)


def make(cfg: dict) -> SystemMetrics | None:
    section = cfg.get("system_metrics")
    return None if section is None else SystemMetrics(**parse(section))


class SystemMetrics:
    """Samples CPU, memory and NVML's GPU figures at most every `every_s` seconds."""

    def __init__(self, every_s: float = 10.0) -> None:
        if isinstance(every_s, bool) or not isinstance(every_s, (int, float)) or not 0 < every_s < float("inf"):
            raise ConfigError(f"system_metrics.every_s must be a number of seconds > 0, got {every_s!r}")
        try:
            import psutil
        except ImportError:
            raise ConfigError(f"system_metrics needs the psutil package, which cannot be imported; install it "
                              f"with: pip install '{REQUIREMENT}' (or the extra: pip install -e '.[system]')") from None
        self.every_s, self.psutil = float(every_s), psutil
        self.process = psutil.Process()
        self.next = time.monotonic()  # the first batch takes a sample
        self.last_step: int | None = None
        self.gpus: list[Any] | None = None  # NVML device handles; None until first asked

    def due(self, step: int | None) -> dict[str, float] | None:
        """A sample, when `every_s` has passed and `step` (the latest logging step) is new."""
        if step is None or step == self.last_step or time.monotonic() < self.next:
            return None
        self.next, self.last_step = time.monotonic() + self.every_s, step
        return self.sample()

    def sample(self) -> dict[str, float]:
        mb = 1024.0 * 1024.0
        out = {"system/cpu_percent": float(self.psutil.cpu_percent(interval=None)),
               "system/memory_percent": float(self.psutil.virtual_memory().percent),
               "system/process_rss_mb": self.process.memory_info().rss / mb}
        for i, handle in enumerate(self._gpus()):
            import pynvml

            out[f"system/gpu{i}/utilization"] = float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)
            out[f"system/gpu{i}/memory_used_mb"] = pynvml.nvmlDeviceGetMemoryInfo(handle).used / mb
        return out

    def _gpus(self) -> list[Any]:
        if self.gpus is None:
            self.gpus = []
            try:
                import pynvml

                pynvml.nvmlInit()
                self.gpus = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
            except Exception:  # no nvidia-ml-py, no driver, no device: CPU figures only
                self.gpus = []
        return self.gpus


def lightning_callback(sampler: SystemMetrics) -> Any:
    """The pl.Callback that logs `sampler`'s samples under pl.Trainer."""
    import pytorch_lightning as pl

    from torchx.loggers.csvlog import CSVLogger

    class SystemMetricsCallback(pl.Callback):
        def on_train_batch_end(self, trainer: pl.Trainer, *args: Any) -> None:
            if not trainer.is_global_zero:
                return
            csv = next((lg for lg in trainer.loggers if isinstance(lg, CSVLogger)), None)
            last = csv.csv.last if csv is not None and csv._csv is not None else None
            sample = sampler.due(int(last["step"]) if last else None)
            if sample:
                for logger in trainer.loggers:
                    if not isinstance(logger, CSVLogger):
                        logger.log_metrics(sample, step=int(last["step"]))

    return SystemMetricsCallback()

"""Tracker: the base of torchx's tracking backends, a Lightning Logger that both loops drive.

The training thread only merges metrics into a row per step and queues it; one thread per
backend does every call into the backend, in order: start or resume the tracked run, send the
queued rows in batches (at most every `flush_every_s`), upload artifacts, end the run. So a slow
or dead tracking server never holds training up.

When a call fails (the server is unreachable at start, or dies mid-run), the backend's thread
says so once on stderr and sends that backend nothing more from this process: TensorBoard and
metrics.csv, written by the training thread, stay complete. A later --resume of the run starts
the backend again (continuing its run if it had started one).

On resume, a backend is asked what it holds already (`logged`): a (metric, step) at or before the
last step it holds for that metric is not sent again, so a tracked run never gets a step twice or
a step out of order. Trackers cannot delete what a killed process logged after its checkpoint;
the resumed process replays those steps with the same values (resume is bitwise exact), so they
are kept as they are rather than sent twice.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar

from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

from torchx.errors import ConfigError, first_line
from torchx.loggers.context import Context

Row = tuple[int, dict[str, float], int]  # (step, {metric: value}, wall time in ms when it was logged)
STATUSES = ("FINISHED", "FAILED", "KILLED")  # how a run ends, in MLflow's words; each backend maps them
CLOSE_TIMEOUT_S = 60.0  # how long the end of a run waits for a backend still sending
MAX_FLUSH_S = 86400.0  # the longest flush_every_s


class Tracker(Logger):
    """A tracking backend (mlflow, wandb, comet, sacred). Subclasses set `backend`, `package` and
    `requirement`, check their arguments in __init__ (before the run directory exists; nothing is
    created or contacted there) and implement the backend calls below, which run on its thread."""

    backend: ClassVar[str] = ""  # its name in the config, in tracking.json and in messages
    package: ClassVar[str] = ""  # the module it imports
    requirement: ClassVar[str] = ""  # what `pip install` needs for it (pinned)
    extra: ClassVar[str] = ""  # the optional-dependency group of torchx that holds it
    one_counter: ClassVar[bool] = False  # the backend's steps are one counter that only grows (W&B, Comet)

    def __init__(self, log_checkpoints: bool = False, flush_every_s: float = 5.0) -> None:
        super().__init__()
        if not isinstance(log_checkpoints, bool):
            raise ConfigError(f"log_checkpoints must be true or false, got {log_checkpoints!r}")
        # bounded: the backend's thread waits up to this long, and a wait past a day overflows the clock
        if isinstance(flush_every_s, bool) or not isinstance(flush_every_s, (int, float)) \
                or not 0 < flush_every_s <= MAX_FLUSH_S:
            raise ConfigError(f"flush_every_s must be a number of seconds > 0 and at most {MAX_FLUSH_S:.0f} (a day), "
                              f"got {flush_every_s!r}")
        self.log_checkpoints, self.flush_every_s = log_checkpoints, float(flush_every_s)
        self.ctx: Context | None = None
        self.run_id: str | None = None
        self._step: int | None = None  # the row being filled: its step, values and wall time (ms)
        self._row: dict[str, float] = {}
        self._row_ms = 0
        self._worker: Worker | None = None
        self._last: dict[str, int] = {}  # per metric, the last step the backend holds (set on resume)

    # ---------------------------------------------------------------- Lightning's Logger

    @property
    def name(self) -> str:
        return self.backend

    @property
    def version(self) -> str:
        return self.run_id or ""

    @property
    def experiment(self) -> Any:
        return None

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # the flattened resolved config is sent when the run starts (Context.params)

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Merge into the row of `step` (values logged at one step share a row, as in metrics.csv);
        a new step queues the finished row."""
        if self._worker is None:
            return  # not started: another DDP rank, or a run that never began
        step = 0 if step is None else int(step)
        if step != self._step:
            self._queue_row()
            self._step, self._row_ms = step, int(time.time() * 1000)
        self._row.update({k: float(v) for k, v in metrics.items() if not isinstance(v, str)})

    def finalize(self, status: str) -> None:
        """Lightning calls this after fit and again after test: the row so far goes, the run stays open
        (torchx ends it with `close`)."""
        self._queue_row()

    def _queue_row(self) -> None:
        if self._row and self._worker is not None:
            self._worker.add_row(self._step, self._row, self._row_ms)
        self._row = {}

    # ---------------------------------------------------------------- torchx's side

    def open(self, ctx: Context) -> None:
        """Start (or resume) the tracked run on the backend's thread; returns at once."""
        self.ctx = ctx
        self._worker = Worker(self)
        self._worker.call(f"starting its run ({self.where()})", self._begin)

    def close(self, status: str = "FINISHED") -> None:
        """Send what is queued, keep results.json (and the best checkpoint) and end the tracked run;
        waits up to CLOSE_TIMEOUT_S for a backend that is still sending."""
        if self._worker is None:
            return
        self._queue_row()
        self._worker.call("ending its run", self._end, status)
        if not self._worker.stop(CLOSE_TIMEOUT_S):
            say(f"{self.backend}: still sending after {CLOSE_TIMEOUT_S:.0f} s; torchx gives up on the rest "
                f"(TensorBoard and metrics.csv hold every metric)")
        self._worker = None

    def _begin(self) -> None:
        ctx = self.ctx
        previous = ctx.ids().get(self.backend)
        entry = self.start(previous if isinstance(previous, dict) else None)
        self.run_id = str(entry.get("run_id"))
        ctx.record(self.backend, entry)
        if previous and previous.get("run_id") == entry.get("run_id"):
            self._last = self.logged()
        for path in ctx.start_files():
            self.artifact(path)

    def _send(self, rows: list[Row]) -> None:
        kept = []
        floor = max(self._last.values(), default=-1) if self.one_counter else -1
        for step, row, ms in rows:
            fresh = {k: v for k, v in row.items() if step > max(self._last.get(k, -1), floor)}
            if fresh:
                kept.append((step, fresh, ms))
        if kept:
            self.write(kept)

    def _end(self, status: str) -> None:
        results = self.ctx.run_dir / "results.json"
        if results.is_file():
            self.artifact(results)
            best = read_best(results)
            if self.log_checkpoints and best is not None:
                self.artifact(best, "checkpoints")
        self.finish(status if status in STATUSES else "FAILED")

    # ---------------------------------------------------------------- the backend (on its thread)

    def where(self) -> str:
        """Where the backend writes, for messages."""
        return self.backend

    def start(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        """Create the tracked run, or continue `previous` (this backend's entry in tracking.json);
        returns the entry to keep, holding at least `run_id`."""
        raise NotImplementedError

    def logged(self) -> dict[str, int]:
        """Of a resumed run: per metric, the last step the backend holds."""
        return {}

    def write(self, rows: list[Row]) -> None:
        """Send rows of (step, {metric: value}, wall time in ms when logged), in the order they were logged."""
        raise NotImplementedError

    def artifact(self, path: Path, folder: str = "") -> None:
        """Keep the file `path` with the run (under `folder`)."""

    def finish(self, status: str) -> None:
        """End the tracked run with a status from STATUSES."""


def last_steps(points: Iterable[tuple[int, str]]) -> dict[str, int]:
    """Per metric, the last step among (step, metric) points a backend holds."""
    last: dict[str, int] = {}
    for step, name in points:
        last[name] = max(last.get(name, -1), step)
    return last


def read_best(results: Path) -> Path | None:
    from torchx.loggers.context import read_json

    best = read_json(results).get("best_model_path")
    return Path(best) if best and Path(best).is_file() else None


def say(text: str) -> None:
    print(f"torchx: {text}", file=sys.stderr, flush=True)


class Worker:
    """The thread that makes every call into one backend, in order. Rows are batched: they are
    sent when a call is queued and otherwise at most every `flush_every_s`."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.jobs: queue.SimpleQueue = queue.SimpleQueue()
        self.rows: list[Row] = []
        self.lock = threading.Lock()
        self.failed = False
        self.begun = False  # rows wait until the first call (the start of the tracked run) has run
        self.thread = threading.Thread(target=self._loop, name=f"torchx-{tracker.backend}", daemon=True)
        self.thread.start()

    def call(self, what: str, fn: Callable[..., None], *args: Any) -> None:
        self.jobs.put((what, fn, args))

    def add_row(self, step: int, row: dict[str, float], ms: int) -> None:
        with self.lock:
            self.rows.append((step, dict(row), ms))

    def stop(self, timeout: float) -> bool:
        self.jobs.put(None)
        self.thread.join(timeout)
        return not self.thread.is_alive()

    def _loop(self) -> None:
        next_flush = time.monotonic() + self.tracker.flush_every_s
        while True:
            try:
                job = self.jobs.get(timeout=max(0.0, next_flush - time.monotonic()))
            except queue.Empty:
                job = ()
            if job is None:
                if self.begun:
                    self._flush()
                return
            if self.begun and (job or time.monotonic() >= next_flush):
                self._flush()
                next_flush = time.monotonic() + self.tracker.flush_every_s
            if job:
                self._run(*job)
                self.begun = True

    def _flush(self) -> None:
        with self.lock:
            rows, self.rows = self.rows, []
        if rows:
            self._run("logging metrics", self.tracker._send, (rows,))

    def _run(self, what: str, fn: Callable[..., None], args: tuple) -> None:
        if self.failed:
            return
        try:
            fn(*args)
        except Exception as e:  # a backend's failure must never reach training: said once, then given up
            self.failed = True
            t = self.tracker
            say(f"{t.backend}: {what} failed: {first_line(e, 300)}. Training goes on; torchx sends {t.backend} "
                f"nothing more from this process (TensorBoard and metrics.csv keep every metric)")

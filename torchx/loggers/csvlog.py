"""`metrics.csv` in the run directory: one row per logged step, the same columns in both loops.

Columns are `step`, `epoch`, then the metric names the wrapper declares (sorted), so a file
has its full header from the first row; a metric nobody declared extends the header (the
file is rewritten once). Values logged at the same step (train and val at epoch end) share
a row: the file's last line is rewritten rather than a second row added.
"""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from pytorch_lightning.loggers import Logger
from pytorch_lightning.utilities import rank_zero_only

FIXED = ("step", "epoch")


class MetricsCSV:
    def __init__(self, path: Path, metrics: set[str] | list[str] = (), drop_from: int | None = None) -> None:
        """`drop_from`: on resume, the checkpoint's step; rows from it on were logged by work
        that the resumed run replays, and are dropped."""
        self.path = Path(path)
        self.columns = [*FIXED, *sorted(set(metrics) - set(FIXED))]
        self.last: dict[str, Any] | None = None  # the file's last row, merged into when its step repeats
        self.last_offset = 0  # where that row starts in the file
        if self.path.is_file():  # a resumed run keeps its rows and widens its header if needed
            with open(self.path, newline="") as f:
                header = next(csv.reader(f), [])
            rows = read(self.path)
            kept = [r for r in rows if drop_from is None or r["step"] is None or r["step"] < drop_from]
            self.columns = [*FIXED, *sorted(set(header + self.columns) - set(FIXED))]
            if header != self.columns or len(kept) != len(rows):
                self._rewrite(kept)

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Write a row now (a killed run loses nothing); values for the same step share one row."""
        row = {k: float(v) for k, v in metrics.items()}
        row["step"] = step
        if self.last is not None and self.last["step"] == step:
            row = {**self.last, **row}
            with open(self.path, "r+") as f:
                f.truncate(self.last_offset)
        if any(k not in self.columns for k in row):
            self.columns = [*FIXED, *sorted((set(self.columns) | set(row)) - set(FIXED))]
            rows = read(self.path) if self.path.is_file() else []
            self._rewrite(rows, last=row)
        else:
            fresh = not self.path.is_file()
            with open(self.path, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=self.columns)
                if fresh:
                    writer.writeheader()
                self.last_offset = f.tell()
                writer.writerow(_format(row))
        self.last = row

    def _rewrite(self, rows: list[dict], last: dict | None = None) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=self.columns)
            writer.writeheader()
            writer.writerows(_format(r) for r in rows)
            self.last_offset = f.tell()
            if last is not None:
                writer.writerow(_format(last))
        tmp.replace(self.path)


def _format(row: dict[str, Any]) -> dict[str, Any]:
    out = {k: (int(v) if k in FIXED and v is not None else v) for k, v in row.items()}
    return {k: ("" if v is None else v) for k, v in out.items()}


def read(path: Path) -> list[dict[str, float | None]]:
    """The rows of a metrics.csv as dicts; empty cells are None."""
    with open(path, newline="") as f:
        return [{k: (float(v) if v not in ("", None) else None) for k, v in row.items()} for row in csv.DictReader(f)]


class CSVLogger(Logger):
    """Lightning's side of MetricsCSV (rank 0 only). Rows are on disk as soon as they are logged,
    so Logger's save() and finalize() have nothing to do."""

    def __init__(self, path: Path, metrics: set[str] | list[str] = (), drop_from: int | None = None) -> None:
        super().__init__()
        self._path, self._metrics, self._drop_from, self._csv = Path(path), metrics, drop_from, None

    @property
    def name(self) -> str:
        return "csv"

    @property
    def version(self) -> int:
        return 0

    @property
    def csv(self) -> MetricsCSV:
        if self._csv is None:  # opened on first use: only rank 0 ever logs
            self._csv = MetricsCSV(self._path, self._metrics, self._drop_from)
        return self._csv

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        pass  # hparams.yaml beside the TensorBoard events holds them

    @rank_zero_only
    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.csv.log(metrics, step if step is not None else 0)


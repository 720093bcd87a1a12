"""`python -m torchx plot RUN [RUN ...]`: the curves of one or several runs, one panel per metric."""

from __future__ import annotations

import math
from pathlib import Path

from torchx.csvlog import FIXED, read
from torchx.errors import ConfigError

PANEL_INCHES, DPI = (5.0, 3.5), 100


def run_dirs(paths: list[str]) -> list[Path]:
    """Run directories among `paths`; a folder of runs (a session) stands for the runs inside it."""
    runs = []
    for p in map(Path, paths):
        if (p / "metrics.csv").is_file():
            runs.append(p)
            continue
        inside = sorted(d for d in p.glob("*/") if (d / "metrics.csv").is_file()) if p.is_dir() else []
        if not inside:
            raise ConfigError(f"'{p}' is not a run directory (no metrics.csv in it or in its subfolders)")
        runs.extend(inside)
    return runs


def plot(paths: list[str], metrics: list[str] | None, out: str) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {str(r): read(r / "metrics.csv") for r in run_dirs(paths)}
    present = sorted({k for rows in runs.values() for row in rows for k, v in row.items()
                      if k not in FIXED and v is not None})
    names = metrics or present
    missing = [m for m in names if m not in present]
    if missing:
        raise ConfigError(f"--metrics: {', '.join(missing)} not logged by these runs; logged: {', '.join(present)}")
    if not names:
        raise ConfigError("these runs have logged no metrics yet")
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, squeeze=False, dpi=DPI,
                             figsize=(PANEL_INCHES[0] * cols, PANEL_INCHES[1] * rows))
    labels = _labels(list(runs))
    for ax, metric in zip(axes.flat, names):
        for data, label in zip(runs.values(), labels):
            pts = [(r["step"], r[metric]) for r in data if r.get(metric) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o" if len(pts) < 30 else None, markersize=3, label=label)
        ax.set_title(metric)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    out_path = Path(out)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path


def _labels(runs: list[str]) -> list[str]:
    """Run names; parent folders added where two runs share a name."""
    names = [Path(r).name for r in runs]
    return [str(Path(r).parent.name + "/" + n) if names.count(n) > 1 else n for r, n in zip(runs, names)]

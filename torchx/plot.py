"""`python -m torchx plot RUN [RUN ...]`: the curves of one or several runs, one panel per metric."""

from __future__ import annotations

import math
from pathlib import Path

from torchx.csvlog import FIXED, read
from torchx.errors import ConfigError

PANEL_INCHES, DPI = (5.0, 3.5), 100


def run_dirs(paths: list[str]) -> list[Path]:
    """Run directories among `paths`; a folder of runs (a session) stands for the runs inside it,
    a session's in the order of its experiments."""
    runs = []
    for p in map(Path, paths):
        if (p / "metrics.csv").is_file():
            runs.append(p)
            continue
        inside = sorted(d for d in p.glob("*/") if (d / "metrics.csv").is_file()) if p.is_dir() else []
        order = _session_order(p)
        inside.sort(key=lambda d: order.get(d.name, len(order)))
        if not inside:
            raise ConfigError(f"'{p}' is not a run directory (no metrics.csv in it or in its subfolders)")
        runs.extend(inside)
    return runs


def plot(paths: list[str], metrics: list[str] | None, out: str, x: str = "auto") -> Path:
    """One panel per metric, the runs overlaid in one colour each and named in one legend below.

    `x` is `step`, `epoch` (fractional within an epoch), or `auto`: epochs when the runs' epochs
    have different numbers of steps (a batch-size sweep), where steps would not line up.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    if x not in ("auto", "step", "epoch"):
        raise ConfigError(f"--x {x!r} must be step, epoch or auto")
    runs = {str(r): read(r / "metrics.csv") for r in run_dirs(paths)}
    present = sorted({k for rows in runs.values() for row in rows for k, v in row.items()
                      if k not in FIXED and v is not None})
    names = metrics or present
    missing = [m for m in names if m not in present]
    if missing:
        raise ConfigError(f"--metrics: {', '.join(missing)} not logged by these runs; logged: {', '.join(present)}")
    if not names:
        raise ConfigError("these runs have logged no metrics yet")
    ends = {run: _epoch_ends(rows) for run, rows in runs.items()}
    x = axis(x, list(ends.values()))
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(rows, cols, squeeze=False, dpi=DPI, layout="constrained",
                             figsize=(PANEL_INCHES[0] * cols, PANEL_INCHES[1] * rows))
    labels = _labels(list(runs))
    colors = [f"C{i % 10}" for i in range(len(runs))]  # a run keeps its colour in every panel
    for ax, metric in zip(axes.flat, names):
        for (run, data), color in zip(runs.items(), colors):
            pts = [(_x(r, ends[run]) if x == "epoch" else r["step"], r[metric])
                   for r in data if r.get(metric) is not None]
            if pts:
                ax.plot(*zip(*pts), marker="o" if len(pts) < 30 else None, markersize=3, color=color)
        ax.set_title(metric)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    handles = [Line2D([], [], color=c, marker="o", markersize=3, label=label) for c, label in zip(colors, labels)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8, frameon=False)
    out_path = Path(out)
    fig.savefig(out_path)
    plt.close(fig)
    return out_path


def axis(x: str, ends: list[dict[int, float]]) -> str:
    """`auto` becomes `epoch` when the runs' first epochs end at different steps, else `step`."""
    if x != "auto":
        return x
    return "epoch" if len({e.get(0) for e in ends} - {None}) > 1 else "step"


def _epoch_ends(rows: list[dict]) -> dict[int, float]:
    """epoch -> the step that ended it, from the rows logged while training (test rows come after)."""
    ends: dict[int, float] = {}
    for r in rows:
        if r.get("epoch") is not None and r.get("step") is not None and any(
                v is not None and k not in FIXED and not k.startswith("test/") for k, v in r.items()):
            ends[int(r["epoch"])] = max(ends.get(int(r["epoch"]), r["step"]), r["step"])
    return ends


def _x(row: dict, ends: dict[int, float]) -> float:
    """A row's place in epochs: 1.0 is the end of the first epoch; a step within one counts in fractions."""
    e = int(row["epoch"])
    if e not in ends:
        return float(e)  # after training: the test row, at the number of epochs trained
    start, end = ends.get(e - 1, -1.0), ends[e]
    return e + (min(max((row["step"] - start) / (end - start), 0.0), 1.0) if end > start else 1.0)


def _session_order(folder: Path) -> dict[str, int]:
    """Experiment name -> index, from a session's session.yaml; empty for any other folder."""
    from torchx.session import SESSION_FILE, read_document

    if not (folder / SESSION_FILE).is_file():
        return {}
    try:
        return {e["name"]: e["index"] for e in read_document(folder)["experiments"]}
    except (ConfigError, KeyError, TypeError):
        return {}


def _labels(runs: list[str]) -> list[str]:
    """Run names; parent folders added where two runs share a name."""
    names = [Path(r).name for r in runs]
    return [str(Path(r).parent.name + "/" + n) if names.count(n) > 1 else n for r, n in zip(runs, names)]

"""`python -m torchx plot RUN [RUN ...]`: the curves of one or several runs, one panel per metric."""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from torchx.errors import ConfigError
from torchx.loggers.csvlog import FIXED

PANEL_INCHES, DPI = (5.0, 3.5), 100
DEFAULT_NAME = "plot.png"  # the file written into a folder given as -o


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
    out_path, fmt = output_path(out)
    runs = {str(r): read_metrics(r / "metrics.csv") for r in run_dirs(paths)}
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
    searches = [s for s in (search_trials(Path(q)) for q in paths) if s is not None]
    extra = sum(1 + len(s["space"]) for s in searches)
    cols = min(3, len(names) + extra)
    rows = math.ceil((len(names) + extra) / cols)
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
    free = list(axes.flat)[len(names):]
    for s in searches:
        free = draw_search(free, s)
    for ax in free:
        ax.axis("off")
    handles = [Line2D([], [], color=c, marker="o", markersize=3, label=label) for c, label in zip(colors, labels)]
    fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8, frameon=False)
    try:
        out_path = save(fig, out_path, fmt)
    finally:
        plt.close(fig)
    return out_path


def output_path(out: str) -> tuple[Path, str]:
    """Where `-o` writes and in which format, checked before anything is drawn: an existing folder
    gets plot.png inside it; a name without an extension gets .png, as matplotlib would add."""
    if not out:
        raise ConfigError(f"-o '' is empty; give the file to write, e.g. -o {DEFAULT_NAME}")
    try:
        return _output_path(out)
    except OSError as e:  # a name too long to look up, a folder one may not enter
        raise ConfigError(f"-o: cannot write '{out}': {e.strerror or e}; pick another -o") from None


def _output_path(out: str) -> tuple[Path, str]:
    from matplotlib.backend_bases import FigureCanvasBase

    path = Path(out)
    if path.is_dir():
        path = path / DEFAULT_NAME
    elif out.endswith(("/", os.sep)):
        raise ConfigError(f"-o '{out}': there is no folder '{path}'; create it first or pick another -o")
    elif path.exists() and not path.is_file():  # a device or a pipe: renaming over it would replace it
        raise ConfigError(f"-o '{out}' is not a regular file; pick a file name such as {DEFAULT_NAME}")
    elif not path.suffix:
        path = path.with_name(path.name + ".png")
    fmt = path.suffix[1:].lower()
    supported = FigureCanvasBase.get_supported_filetypes()
    if fmt not in supported:
        raise ConfigError(f"-o '{out}': matplotlib cannot write '.{path.suffix[1:]}' files; use one of "
                          f"{', '.join(sorted(supported))}")
    folder = path.parent
    if not folder.is_dir():
        why = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"-o '{out}': cannot write '{path}': the folder '{folder}' {why}; "
                          f"create it first or pick another -o")
    return path, fmt


def save(fig, path: Path, fmt: str) -> Path:
    """Write the figure to a temporary file beside `path`, then rename it: a failed write leaves
    no half-written image, and an older one at `path` stays as it was. Returns the file written."""
    if path.is_symlink():
        path = path.resolve()  # write the file it points to, not over the link
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fig.savefig(tmp, format=fmt)
        os.replace(tmp, path)
        return path
    except OSError as e:  # a read-only folder, a full disk, a name the file system refuses
        raise ConfigError(f"-o: cannot write '{path}': {e.strerror or e}") from None
    finally:
        tmp.unlink(missing_ok=True)


def read_metrics(path: Path) -> list[dict[str, float | None]]:
    """The rows of a run's metrics.csv, empty cells None; anything that is not the header `step,
    epoch, metrics...` over rows of numbers is refused, naming the file and the line."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror or e})") from None
    fix = "the file is corrupt: repair or delete that line"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ConfigError(f"{path}:{line}: byte 0x{data[e.start]:02x} is not text (metrics.csv holds "
                          f"comma-separated numbers); {fix}") from None
    if "\0" in text:
        line = text.count("\n", 0, text.index("\0")) + 1
        raise ConfigError(f"{path}:{line}: a NUL byte (metrics.csv holds comma-separated numbers); {fix}")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
        if header is None:
            raise ConfigError(f"{path} is empty: it has no header line 'step,epoch,...'; the run has logged "
                              f"nothing, or the file was cut off")
        absent = [k for k in FIXED if k not in header]
        if absent or len(set(header)) != len(header):
            what = f"has no {absent[0]!r} column" if absent else "names a column twice"
            raise ConfigError(f"{path}:1: the header {_short(','.join(header))!r} {what}; "
                              f"it must be 'step,epoch,' then the metric names, each once; {fix}")
        rows = []
        for cells in reader:
            if not cells:
                continue  # a blank line, as csv.DictReader skips it
            rows.append(_row(path, reader.line_num, header, cells, fix))
    except csv.Error as e:
        raise ConfigError(f"{path}:{reader.line_num}: {e}; {fix}") from None
    return rows


def _row(path: Path, line: int, header: list[str], cells: list[str], fix: str) -> dict[str, float | None]:
    if len(cells) != len(header):
        raise ConfigError(f"{path}:{line}: {len(cells)} values under {len(header)} columns "
                          f"({_short(','.join(cells))!r}); {fix}")
    row: dict[str, float | None] = {}
    for key, cell in zip(header, cells):
        try:
            value = float(cell) if cell != "" else None
        except ValueError:
            raise ConfigError(f"{path}:{line}: column {key!r} holds {_short(cell)!r}, not a number; {fix}") from None
        # step and epoch place a point on the x axis, in every row; a metric may be empty or nan
        if key in FIXED and not (value is not None and math.isfinite(value) and value.is_integer() and value >= 0):
            raise ConfigError(f"{path}:{line}: {key} is {_short(cell)!r}; it must be a whole number >= 0; {fix}")
        row[key] = value
    return row


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


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


def search_trials(folder: Path) -> dict | None:
    """A search session's trials: (number, {label: value}, objective, state), its space and metric;
    None for any other folder."""
    from torchx.session.document import SESSION_FILE, read_document
    from torchx.session.summary import group, summarize

    if not (folder / SESSION_FILE).is_file():
        return None
    try:
        doc = read_document(folder)
    except ConfigError:
        return None
    search = doc.get("search")
    if not search:
        return None
    objective = (search["metric"], "max" if search["direction"] == "maximize" else "min")
    entries = doc["experiments"]
    units = group(entries, [summarize(folder, e, objective) for e in entries])
    trials = [(u["trial"], u["params"], u["value"] if u["state"] == "done" else (u["pruned"] or {}).get("value"),
               u["state"]) for u in units if u["trial"] is not None]
    return {"trials": sorted(trials, key=lambda t: t[0]), "space": doc.get("space") or [], "metric": search["metric"],
            "mode": objective[1], "name": folder.name}


def draw_search(free: list, s: dict) -> list:
    """The objective of each trial (pruned ones at their last value, in grey) with the best so far,
    then each search parameter against the objective; into the first free panels. Returns the rest."""
    done = [(n, p, v) for n, p, v, state in s["trials"] if state == "done" and v is not None]
    pruned = [(n, p, v) for n, p, v, state in s["trials"] if state == "pruned" and v is not None]
    ax, free = free[0], free[1:]
    if done:
        ax.plot([n for n, _, _ in done], [v for _, _, v in done], "o", color="C0", label="done")
        best, line = None, []
        for n, _, v in done:
            best = v if best is None else (max if s["mode"] == "max" else min)(best, v)
            line.append((n, best))
        last = max(n for n, _, _, _ in s["trials"])
        line.append((last, best))  # the best found holds to the last trial, pruned ones included
        ax.step(*zip(*line), where="post", color="C1", label="best so far")
    if pruned:
        ax.plot([n for n, _, _ in pruned], [v for _, _, v in pruned], "x", color="0.5", label="pruned (last value)")
    ax.set_title(f"{s['name']}: {s['metric']} per trial")
    ax.set_xlabel("trial")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    for d in s["space"]:
        ax, free = free[0], free[1:]
        for group, style, color in ((done, "o", "C0"), (pruned, "x", "0.5")):
            pts = [(p.get(d["label"]), v) for _, p, v in group if p.get(d["label"]) is not None]
            if pts:
                ax.plot(*zip(*pts), style, color=color)
        if "loguniform" in d:
            ax.set_xscale("log")
        ax.set_title(f"{s['metric']} against {d['label']}")
        ax.set_xlabel(d["label"])
        ax.grid(alpha=0.3)
    return free


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

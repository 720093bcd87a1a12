"""summary.csv and summary.md: one row per experiment, read from its run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from torchx import config as C
from torchx.errors import ConfigError
from torchx.run import atomic_write


def write_atomic(path: Path, text: str) -> None:
    """Readers (other array tasks, a user's `cat`) see the old file or the new one, never half."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} m {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} m"



def summarize(folder: Path, entry: dict) -> dict:
    """One experiment's row: its monitored metric at best and the final metrics, from its run directory."""
    from torchx.csvlog import FIXED, read

    run = folder / entry["name"]
    row: dict[str, Any] = {"monitor": None, "mode": None, "best": None, "best_epoch": None, "final": {},
                           "epochs": None}
    cfg_file = run / "config.yaml" if (run / "config.yaml").is_file() else folder / "configs" / f"{entry['name']}.yaml"
    try:
        cfg = C.read_yaml(cfg_file) if cfg_file.is_file() else {}
        rows = read(run / "metrics.csv") if (run / "metrics.csv").is_file() else []
        results = json.loads((run / "results.json").read_text()) if (run / "results.json").is_file() else {}
    except (OSError, ValueError, ConfigError):  # a file being written right now: leave the row empty
        return row
    monitor, mode = (cfg.get("checkpoint") or {}).get("monitor"), (cfg.get("checkpoint") or {}).get("mode", "min")
    if monitor is None and any(r.get("val/loss") is not None for r in rows):
        monitor, mode = "val/loss", "min"
    row["monitor"], row["mode"] = monitor, mode
    scored = [(r[monitor], r["epoch"]) for r in rows if monitor and r.get(monitor) is not None]
    if scored:
        best = (max if mode == "max" else min)(scored, key=lambda p: p[0])
        row["best"] = best[0]
        row["best_epoch"] = int(best[1]) + 1 if best[1] is not None else None  # counted from 1, as log.txt does
    for r in rows:
        for k, v in r.items():
            if k not in FIXED and v is not None and not k.endswith("_step"):
                row["final"][k] = v
    row["final"].update({k: float(v) for k, v in (results.get("test") or {}).items()})
    epochs = [r["epoch"] for r in rows if r.get("epoch") is not None]
    row["epochs"] = results.get("epochs", int(max(epochs)) + 1 if epochs else None)
    return row


def _metric_order(name: str) -> tuple:
    stage = name.split("/")[0]
    return ({"train": 0, "val": 1, "test": 2}.get(stage, 3), name)


def write_summary(folder: Path, doc: dict) -> str:
    """summary.csv (every column) and summary.md (a table to read); returns the Markdown."""
    import csv
    import io

    entries = doc["experiments"]
    rows = [summarize(folder, e) for e in entries]
    labels = [g["label"] for g in doc.get("grid") or []]
    metrics = sorted({k for r in rows for k in r["final"]}, key=_metric_order)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["index", "name", *labels, "state", "exit_status", "monitor", "best", "best_epoch", *metrics,
                     "epochs", "wall_time_s", "error"])
    for e, r in zip(entries, rows):
        writer.writerow([e["index"], e["name"], *[_cell(e["params"].get(k)) for k in labels], e["state"],
                         _cell(e.get("exit_status")), _cell(r["monitor"]), _cell(r["best"]), _cell(r["best_epoch"]),
                         *[_cell(r["final"].get(m)) for m in metrics], _cell(r["epochs"]),
                         _cell(e.get("wall_time_s")), _cell(e.get("error"))])
    write_atomic(folder / "summary.csv", out.getvalue())
    table = markdown(entries, rows, labels, metrics)
    write_atomic(folder / "summary.md", table)
    return table


def markdown(entries: list[dict], rows: list[dict], labels: list[str], metrics: list[str]) -> str:
    monitors = {r["monitor"] for r in rows if r["monitor"]}
    best_head = f"best {next(iter(monitors))}" if len(monitors) == 1 else "best"
    head = ["#", *labels, "state", best_head, "epoch", *metrics, "time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for e, r in zip(entries, rows):
        best = _num(r["best"]) if len(monitors) <= 1 or r["best"] is None else f"{r['monitor']} {_num(r['best'])}"
        cells = [str(e["index"]), *[_cell(e["params"].get(k)) for k in labels],
                 e["state"] + (f" ({e['exit_status']})" if e["state"] in ("failed", "interrupted") else ""),
                 best, _cell(r["best_epoch"]), *[_num(r["final"].get(m)) for m in metrics],
                 duration(e["wall_time_s"]) if e.get("wall_time_s") else ""]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    errors = [f"- {e['index']} `{e['name']}`: {e['error']}" for e in entries if e.get("error")]
    return "\n".join(lines) + "\n" + ("\n" + "\n".join(errors) + "\n" if errors else "")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


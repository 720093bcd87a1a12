"""summary.csv and summary.md: one row per experiment, read from its run directory; for a search
or cross-validation, ranking.csv and a ranked table too (one row per trial, or per experiment
over its folds: their mean and standard deviation), and best.yaml, the best one's config."""

from __future__ import annotations

import copy
import json
import re
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



def summarize(folder: Path, entry: dict, objective: tuple[str, str] | None = None) -> dict:
    """One experiment's row: its monitored metric at best and the final metrics, from its run directory.
    `objective` (metric, mode): what a search scores by, in place of checkpoint.monitor."""
    from torchx.loggers.csvlog import FIXED, read

    run = folder / entry["name"]
    row: dict[str, Any] = {"monitor": None, "mode": None, "best": None, "best_epoch": None, "final": {},
                           "epochs": None, "pruned": None}
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
    if objective is not None:
        monitor, mode = objective
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
    row["pruned"] = results.get("pruned")
    return row


def _metric_order(name: str) -> tuple:
    stage = name.split("/")[0]
    return ({"train": 0, "val": 1, "test": 2}.get(stage, 3), name)


def write_summary(folder: Path, doc: dict) -> str:
    """summary.csv (every column) and summary.md (a table to read); returns the Markdown."""
    import csv
    import io

    entries = doc["experiments"]
    objective = (doc["search"]["metric"], "max" if doc["search"]["direction"] == "maximize" else "min") \
        if doc.get("search") else None
    rows = [summarize(folder, e, objective) for e in entries]
    labels = columns(doc)
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
    if doc.get("search") or doc.get("cross_validation"):
        units = rank(group(entries, rows), objective[1] if objective else rows_mode(rows))
        write_atomic(folder / "ranking.csv", ranking_csv(units, labels, metrics))
        table = ranking_markdown(units, labels, metrics, doc) + "\n" + table
        best = next((u for u in units if u["rank"] == 1), None)
        if best is not None:
            write_atomic(folder / "best.yaml", best_config(doc, best))
    write_atomic(folder / "summary.md", table)
    return table


def columns(doc: dict) -> list[str]:
    """The labels of what varies between experiments: grid keys, search keys, then the fold."""
    labels = [g["label"] for g in doc.get("grid") or []] + [d["label"] for d in doc.get("space") or []]
    return labels + (["fold"] if doc.get("cross_validation") else [])


def rows_mode(rows: list[dict]) -> str:
    return next((r["mode"] for r in rows if r["mode"]), "min")


def group(entries: list[dict], rows: list[dict]) -> list[dict]:
    """The units a search or cross-validation scores: a trial, or a grid experiment, over its folds."""
    units: dict[tuple, dict] = {}
    for e, r in zip(entries, rows):
        key = (e.get("point", 0), e.get("trial"))
        unit = units.setdefault(key, {"entries": [], "rows": []})
        unit["entries"].append(e)
        unit["rows"].append(r)
    for unit in units.values():
        states = [e["state"] for e in unit["entries"]]
        unit["state"] = next((s for s in ("failed", "interrupted", "running", "pending", "pruned") if s in states),
                             "done")
        first = unit["entries"][0]
        unit["name"] = re.sub(r",?fold=[0-9]+$", "", first["name"]) if "fold" in first else first["name"]
        unit["params"] = {k: v for k, v in first["params"].items() if k != "fold"}
        unit["trial"] = first.get("trial")
        bests = [r["best"] for r in unit["rows"]]
        unit["value"], unit["std"] = spread(bests) if None not in bests else (None, None)
        metrics = {m for r in unit["rows"] for m in r["final"]}
        unit["metrics"] = {m: spread([r["final"].get(m) for r in unit["rows"]]) for m in metrics}
        unit["pruned"] = next((r["pruned"] for r in unit["rows"] if r["pruned"]), None)
        unit["wall_time_s"] = sum(e.get("wall_time_s") or 0.0 for e in unit["entries"])
    return list(units.values())


def spread(values: list[float | None]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1) of values that are all there; (None, None) if one is not."""
    import statistics

    if not values or None in values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else None


def rank(units: list[dict], mode: str) -> list[dict]:
    """Units with every run done, best first (rank 1, 2, ...); then the others, unranked, in order."""
    done = [u for u in units if u["state"] == "done" and u["value"] is not None]
    done.sort(key=lambda u: -u["value"] if mode == "max" else u["value"])
    for i, u in enumerate(done, start=1):
        u["rank"] = i
    rest = [u for u in units if u not in done]
    for u in rest:
        u["rank"] = None
    return done + rest


def _mean_std(pair: tuple[float | None, float | None]) -> str:
    mean, std = pair
    return "" if mean is None else _num(mean) + ("" if std is None else f" ± {_num(std)}")


def ranking_markdown(units: list[dict], labels: list[str], metrics: list[str], doc: dict) -> str:
    search, folds = doc.get("search"), doc.get("cross_validation")
    params = [k for k in labels if k != "fold"]
    what = f"{search['metric']} ({search['direction']})" if search else \
        f"best {next((u['rows'][0]['monitor'] for u in units if u['rows'][0]['monitor']), 'value')}"
    over = f", mean ± std over {folds['folds']} folds" if folds else ""
    title = (f"Trials ranked by {what}{over}" if search else f"Experiments ranked by {what}{over}")
    shown = [m for m in metrics if folds] if folds else []
    head = ["rank", *(["trial"] if search else []), *params, "state", what.split(" (")[0], *shown, "time"]
    lines = [f"{title}:", "", "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for u in units:
        state = u["state"]
        if u["pruned"]:
            state = f"pruned at epoch {u['pruned']['epoch'] + 1}, step {u['pruned']['step']}"
        cells = [_cell(u["rank"]), *([_cell(u["trial"])] if search else []),
                 *[_param(u["params"].get(k)) for k in params], state,
                 _mean_std((u["value"], u["std"])) if u["value"] is not None else
                 (_num(u["pruned"]["value"]) if u["pruned"] else ""),
                 *[_mean_std(u["metrics"].get(m, (None, None))) for m in shown],
                 duration(u["wall_time_s"]) if u["wall_time_s"] else ""]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def ranking_csv(units: list[dict], labels: list[str], metrics: list[str]) -> str:
    import csv
    import io

    params = [k for k in labels if k != "fold"]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["rank", "trial", "name", *params, "state", "runs", "value", "std", "pruned_at_step",
                     "pruned_at_epoch", *[f"{m} {s}" for m in metrics for s in ("mean", "std")], "wall_time_s"])
    for u in units:
        pruned = u["pruned"] or {}
        writer.writerow([_cell(u["rank"]), _cell(u["trial"]), u["name"], *[_cell(u["params"].get(k)) for k in params],
                         u["state"], len(u["entries"]), _cell(u["value"]), _cell(u["std"]), _cell(pruned.get("step")),
                         _cell(pruned.get("epoch")), *[_cell(x) for m in metrics for x in u["metrics"].get(m, (None,
                         None))], _cell(round(u["wall_time_s"], 1))])
    return out.getvalue()


def best_config(doc: dict, unit: dict) -> str:
    """The session's config with the best unit's values in place of its grid and search keys, without
    the `search:` and `cross_validation:` sections: a plain config that trains as it is."""
    cfg = {k: copy.deepcopy(v) for k, v in doc["config"].items() if k not in ("search", "cross_validation")}
    found = C.sweep_keys(cfg) + C.search_keys(cfg)
    labels = [g["label"] for g in doc.get("grid") or []] + [d["label"] for d in doc.get("space") or []]
    for (path, _), label in zip(found, labels):
        C.assign(cfg, path, unit["params"][label])
    trial = f"trial {unit['trial']}, " if unit["trial"] is not None else ""
    metric = (doc.get("search") or {}).get("metric") or unit["rows"][0]["monitor"]
    score = _mean_std((unit["value"], unit["std"]))
    head = f"# The best of session {doc['session']}: {unit['name'] or 'its config'} ({trial}{metric} {score})\n"
    return head + C.dump_yaml(cfg)


def markdown(entries: list[dict], rows: list[dict], labels: list[str], metrics: list[str]) -> str:
    monitors = {r["monitor"] for r in rows if r["monitor"]}
    best_head = f"best {next(iter(monitors))}" if len(monitors) == 1 else "best"
    head = ["#", *labels, "state", best_head, "epoch", *metrics, "time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for e, r in zip(entries, rows):
        best = _num(r["best"]) if len(monitors) <= 1 or r["best"] is None else f"{r['monitor']} {_num(r['best'])}"
        cells = [str(e["index"]), *[_param(e["params"].get(k)) for k in labels],
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


def _param(value: Any) -> str:
    """A parameter's value in a table to read: floats to 4 significant digits (summary.csv has them whole)."""
    return f"{value:.4g}" if isinstance(value, float) else _cell(value)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


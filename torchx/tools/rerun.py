"""`python -m torchx rerun RUN_DIR [--name NEW]`: the reproducibility promise, tested in one command.

The run is trained again, into a new run directory beside it, by the code it ran with: the entry
point, torchx and the `imports:` modules of its src/ snapshot (imported before anything else, so an
edited copy in the working directory does not take their place), with its config.yaml and seed,
from the working directory it started in. Then the two metrics.csv files are compared: identical
(on the CPU with the same package versions, torchx promises so), or the first difference, named.
Package versions that differ from the run's provenance.json are listed before training starts.
Exit status: 0 identical, 1 different (or the new run failed), 2 bad input.
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from torchx import config as C
from torchx.errors import ConfigError
from torchx.run import check_run_name
from torchx.tools.api import read_json, run_dir_of

ENTRY_POINTS = ("train_pl.py", "train.py")

# the child process: the snapshot's folder first on sys.path, its user modules imported from it, then
# the entry point run as a script would be
BOOTSTRAP = """
import importlib, runpy, sys
src, imports = sys.argv[1], sys.argv[2].split(",") if sys.argv[2] else []
sys.path.insert(0, src)
for name in imports:
    try:
        importlib.import_module(name)
    except Exception:
        pass  # not in the snapshot: the entry point imports it as usual, and says so if it fails
sys.argv = sys.argv[3:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def main(args: argparse.Namespace) -> int:
    run_dir = run_dir_of(args.run_dir)
    src = run_dir / "src"
    prov = read_json(run_dir / "provenance.json") or {}
    entry = entry_point(prov)
    if not (src / "torchx").is_dir() or not (src / entry).is_file():
        raise ConfigError(f"'{run_dir}' has no code snapshot to rerun ({src / 'torchx'} and {src / entry} are "
                          f"needed; a run directory written by train_pl.py or train.py has them)")
    new = new_run_dir(run_dir, args.name)
    cfg = C.read_yaml(run_dir / "config.yaml")
    imports = cfg.get("imports") or []
    imports = [imports] if isinstance(imports, str) else [str(n) for n in imports]
    cwd = prov.get("cwd") if prov.get("cwd") and Path(prov["cwd"]).is_dir() else os.getcwd()
    for line in version_changes(prov):
        print(f"differs from {run_dir / 'provenance.json'}: {line}")
    command = [sys.executable, "-c", BOOTSTRAP, str(src.resolve()), ",".join(imports), str((src / entry).resolve()),
               "--config", str((run_dir / "config.yaml").resolve()), "--name", new.name,
               "--save-dir", str(new.parent.resolve())]
    print(f"rerun of {run_dir}: {entry} from {src} with its config.yaml (seed {cfg.get('seed')}), in {cwd}, "
          f"into {new}", flush=True)
    code = subprocess.run(command, cwd=cwd).returncode
    if code != 0:
        print(f"rerun: {new} did not finish (exit status {code}); nothing to compare", file=sys.stderr)
        return 1
    difference = first_difference(run_dir / "metrics.csv", new / "metrics.csv")
    if difference is None:
        rows = sum(1 for _ in open(new / "metrics.csv")) - 1
        print(f"identical: {new / 'metrics.csv'} equals {run_dir / 'metrics.csv'} ({rows} rows)")
        return 0
    print(f"different: {difference}")
    return 1


def entry_point(prov: dict) -> str:
    """train_pl.py or train.py: the entry point the run was started with (train_pl.py if unknown)."""
    for arg in (prov.get("command") or [])[1:3]:
        if Path(str(arg)).name in ENTRY_POINTS:
            return Path(str(arg)).name
    return "train_pl.py"


def new_run_dir(run_dir: Path, name: str | None) -> Path:
    if name is not None:
        check_run_name(name)
        new = run_dir.parent / name
        if new.exists():
            raise ConfigError(f"--name {name}: '{new}' already exists; torchx never overwrites a run, pick another "
                              f"--name")
        return new
    n = 1
    while (run_dir.parent / (f"{run_dir.name}-rerun" + (f"-{n}" if n > 1 else ""))).exists():
        n += 1
    new = run_dir.parent / (f"{run_dir.name}-rerun" + (f"-{n}" if n > 1 else ""))
    check_run_name(new.name)
    return new


def version_changes(prov: dict) -> list[str]:
    """'package: RUN -> NOW' for every package (and Python) whose version differs from the run's."""
    lines = []
    for pkg, then in sorted((prov.get("versions") or {}).items()):
        if pkg == "torchx":
            continue  # the snapshot's torchx is what runs
        try:
            now = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            now = "not installed"
        if now != then:
            lines.append(f"{pkg} {then} -> {now}")
    if prov.get("python") and prov["python"] != platform.python_version():
        lines.append(f"python {prov['python']} -> {platform.python_version()}")
    return lines


def first_difference(a: Path, b: Path) -> str | None:
    """None if the two metrics.csv files hold the same rows, else where they first differ."""
    rows_a, rows_b = _rows(a), _rows(b)
    if not rows_a or not rows_b:
        return f"{a if not rows_a else b} has no rows"
    head_a, head_b = rows_a[0], rows_b[0]
    if head_a != head_b:
        only_a, only_b = sorted(set(head_a) - set(head_b)), sorted(set(head_b) - set(head_a))
        return (f"the columns differ: only in the run: {', '.join(only_a) or '-'}; only in the rerun: "
                f"{', '.join(only_b) or '-'}")
    for i, (ra, rb) in enumerate(zip(rows_a[1:], rows_b[1:]), start=1):
        if ra != rb:
            col = next(j for j, (x, y) in enumerate(zip(ra, rb)) if x != y) if len(ra) == len(rb) else 0
            where = ", ".join(f"{k} {ra[head_a.index(k)]}" for k in ("step", "epoch") if k in head_a)
            return (f"row {i} ({where}), column {head_a[col]}: {ra[col] or '(empty)'} in the run, "
                    f"{rb[col] if col < len(rb) else '(missing)'} in the rerun")
    if len(rows_a) != len(rows_b):
        return (f"the run has {len(rows_a) - 1} rows, the rerun {len(rows_b) - 1}; the first "
                f"{min(len(rows_a), len(rows_b)) - 1} are equal")
    return None


def _rows(path: Path) -> list[list[str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.reader(f))


"""Run every benchmark one after another and print all their targets as one Markdown table.

    python bench/all.py [--quick] [--out FILE]

Runs overhead.py, startup.py, data.py and checkpoint.py (each with --quick if given), shows
their full output as it comes, then prints one table of every `target ...` line they printed:
the figure, the measured value, the limit and the verdict. --out also writes the full output
and the table to FILE. Exit status 1 when any target failed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPTS = ("overhead.py", "startup.py", "data.py", "checkpoint.py")
TARGET = re.compile(r"^target (?P<figure>.+?) (?P<op><=|>=) (?P<limit>[\d.%]+): "
                    r"(?P<value>[\d.%]+) (?P<verdict>PASS|FAIL)")
MODEL = re.compile(r"^model (\S+) ")


def run(script: str, quick: bool, log: list[str]) -> list[tuple[str, str, str, str, str]]:
    """Run one script, echoing its stdout; its target rows as (script, figure, value, limit, verdict)."""
    cmd = [sys.executable, str(HERE / script), *(["--quick"] if quick else [])]
    log.append(f"$ python bench/{script}{' --quick' if quick else ''}")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, cwd=HERE.parent)
    rows, context = [], ""
    for line in proc.stdout:
        print(line, end="", flush=True)
        log.append(line.rstrip("\n"))
        if m := MODEL.match(line):
            context = f" ({m.group(1)})"
        if m := TARGET.match(line):
            rows.append((script, m["figure"] + context, m["value"], f"{m['op']} {m['limit']}", m["verdict"]))
    if proc.wait() not in (0, 1):
        raise SystemExit(f"bench/{script} failed with exit status {proc.returncode}")
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="every script in its --quick mode")
    p.add_argument("--out", type=Path, help="also write the output and the table to this file")
    args = p.parse_args()
    start, log, rows = time.time(), [], []
    for script in SCRIPTS:
        rows += run(script, args.quick, log)
    table = ["| script | figure | measured | target | verdict |", "| --- | --- | --- | --- | --- |"]
    table += [f"| {s} | {f} | {v} | {t} | {r} |" for s, f, v, t, r in rows]
    table.append(f"\n`python bench/all.py{' --quick' if args.quick else ''}`, {time.strftime('%Y-%m-%d')}, "
                 f"{(time.time() - start) / 60:.0f} min")
    print("\n" + "\n".join(table))
    if args.out:
        args.out.write_text("\n".join(log + [""] + table) + "\n")
    return 0 if all(r[-1] == "PASS" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

"""Kill a real MNIST run with SIGKILL at random points, resume it each time, and compare.

    python bench/chaos.py [--kills 20] [--loop train_pl.py|train.py] [--data DIR] [--quick]

An uninterrupted run and a run that is killed `--kills` times (at seeded random moments once
a checkpoint exists, so some kills land mid-epoch and some mid-write) then resumed with
--resume, on the same config: every surviving last.ckpt must load, and the final weights of
the two runs must be bitwise equal. Prints `N/N resumed, C corrupt, final weights identical`.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]


def config(data: Path, quick: bool) -> dict:
    """tiny_cnn on real MNIST with a checkpoint every 10 steps, so kills land mid-epoch too."""
    return {
        "data_module": {"name": "mnist", "args": {"root_dir": str(data), "batch_size": 64}},
        "train_wrapper": {"name": "base", "args": {
            "model_spec": {"name": "tiny_cnn"}, "loss_spec": {"name": "ce"},
            "optim_spec": {"name": "Adam", "args": {"lr": 2e-3}},
            "sched_spec": {"name": "StepLR", "args": {"step_size": 1, "gamma": 0.7}}}},
        "trainer_params": {"max_epochs": 2 if quick else 3, "limit_train_batches": 100 if quick else 250,
                           "limit_val_batches": 10, "limit_test_batches": 10, "enable_progress_bar": False},
        "checkpoint": {"every_n_train_steps": 10, "save_top_k": -1},
        "seed": 7,
    }


def launch(loop: str, argv: list[str], cwd: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "PL_GLOBAL_SEED")}
    return subprocess.Popen([sys.executable, str(ROOT / loop), *argv], cwd=cwd, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--loop", default="train_pl.py", choices=["train_pl.py", "train.py"])
    p.add_argument("--data", type=Path, default=None, help="folder with the four MNIST IDX files")
    p.add_argument("--seed", type=int, default=2026)
    p.add_argument("--quick", action="store_true", help="3 kills on a shorter run")
    args = p.parse_args()
    data = args.data or next((d for d in (ROOT.parent / "shared" / "data" / "mnist", ROOT / "load" / "mnist")
                              if d.is_dir()), None)
    if data is None or not data.is_dir():
        print("chaos.py: error: no MNIST files; pass --data DIR (the four IDX files)", file=sys.stderr)
        return 2
    kills_wanted = 3 if args.quick else args.kills
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="torchx-chaos-"))
    cfg = work / "chaos.yaml"
    cfg.write_text(yaml.safe_dump(config(data.resolve(), args.quick)))
    t0 = time.monotonic()
    full = launch(args.loop, ["--config", str(cfg), "--save-dir", "save", "--name", "full"], work)
    if full.wait() != 0:
        print(full.stderr.read()[-3000:], file=sys.stderr)
        return 1
    last = work / "save" / "cut" / "ckpt" / "last.ckpt"
    argv = ["--config", str(cfg), "--save-dir", "save", "--name", "cut"]
    kills = corrupt = resumed = 0
    while True:
        before = last.stat().st_mtime_ns if last.exists() else 0
        proc = launch(args.loop, argv, work)
        if kills < kills_wanted:
            # wait until this process has written a checkpoint of its own, then kill at a random
            # moment: mid-step, mid-write or mid-validation
            while (not last.exists() or last.stat().st_mtime_ns == before) and proc.poll() is None:
                time.sleep(0.02)
            if proc.poll() is None:
                time.sleep(rng.uniform(0.0, 0.6))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
                try:
                    step = torch.load(last, weights_only=True)["global_step"]
                except Exception as e:  # a torn file is exactly what must never happen
                    corrupt += 1
                    print(f"kill {kills}: last.ckpt does not load: {e}", file=sys.stderr)
                    return 1
                print(f"kill {kills:2d}: at {time.monotonic() - t0:6.1f}s, last.ckpt at step {step}")
                argv = ["--save-dir", "save", "--name", "cut", "--resume"]
                resumed += 1
                continue
        if proc.wait() != 0:
            print(proc.stderr.read()[-3000:], file=sys.stderr)
            return 1
        break
    a = torch.load(work / "save" / "full" / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    b = torch.load(last, weights_only=True)["state_dict"]
    same = a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    verdict = "final weights identical" if same else "FINAL WEIGHTS DIFFER"
    print(f"{resumed}/{kills} resumed, {corrupt} corrupt, {verdict}  ({args.loop}, {data.name}, work dir {work})")
    return 0 if same and kills == kills_wanted else 1


if __name__ == "__main__":
    sys.exit(main())

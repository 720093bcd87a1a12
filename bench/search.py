"""What a median pruner saves a search session: the same 16 trials run with and without it.

    python bench/search.py [--trials 16] [--epochs 8] [--batches 60] [--rounds 1] [--data DIR] [--quick]

Both sessions are `python train_pl.py` runs of one search config on real MNIST (tiny_cnn, Adam,
StepLR; the learning rate drawn from a log-uniform range wide enough that some trials do not
learn), one trial at a time. They use the random sampler with the same seed, so both draw the
same 16 trials whatever the results: the pruner is the only difference. The pruned session stops
a trial after a validation at which it trails the median of the trials before it (Optuna's
MedianPruner, after 4 trials that always run to the end).

Measured side by side in this one run (the order of the two sessions rotates from round to
round; a round is two whole sessions, so one round is the default): the wall time of each
session, from its command to its exit (process starts included, as a user waits for them), and
the best val/acc each found. Targets: the pruned session takes at most 0.60 of the time (saves
>= 40%), and its best value is at least 0.995 of the unpruned one's (within 0.5%).
Without the MNIST files (--data, or ../shared/data/mnist beside the repository) it runs on
scikit-learn's digits, as does --quick (8 trials, a smoke test of the script, no targets).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, interleave, scratch, shared_mnist, table, target  # noqa: E402

sys.path.insert(0, str(ROOT))

from torchx.config import dump_yaml  # noqa: E402


def config(data: Path | None, trials: int, epochs: int, batches: int, pruned: bool) -> dict:
    if data is not None:
        data_module = {"name": "mnist", "args": {"root_dir": str(data), "batch_size": 64, "eval_batch_size": 1000}}
        model = {"name": "tiny_cnn"}
        limits = {"limit_train_batches": batches, "limit_val_batches": 2, "limit_test_batches": 1}
    else:
        data_module = {"name": "digits", "args": {"batch_size": 16}}
        model = {"name": "mlp", "args": {"in_dim": 64, "hidden": [64], "out_dim": 10}}
        limits = {"limit_train_batches": min(batches, 75)}
    pruner = {"name": "median", "args": {"n_startup_trials": 4}} if pruned else "none"
    return {
        "data_module": data_module,
        "train_wrapper": {"name": "base", "args": {
            "model_spec": model, "loss_spec": {"name": "ce"},
            "optim_spec": {"name": "Adam", "args": {"lr~": {"loguniform": [1.0e-5, 1.0]}}},
            "sched_spec": {"name": "StepLR", "args": {"step_size": 1, "gamma": 0.8}, "interval": "epoch"}}},
        "trainer_params": {"max_epochs": epochs, "enable_progress_bar": False, "enable_model_summary": False,
                           **limits},
        "checkpoint": {"monitor": "val/acc", "mode": "max"},
        "seed": 1,
        "search": {"method": "random", "n_trials": trials, "seed": 0, "pruner": pruner},
    }


def session(work: Path, cfg: dict, name: str, results: dict) -> float:
    """Run one search session to its end; returns its wall seconds, records its trials in `results`."""
    config_file = work / f"{name}.yaml"
    config_file.write_text(dump_yaml(cfg))
    save = work / f"save-{name}-{time.monotonic_ns()}"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(ROOT / "train_pl.py"), "--config", str(config_file), "--save-dir",
                           str(save), "--name", name], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, "TORCHX_PROGRESS_EVERY": "600"})
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"the {name} session failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    with open(save / name / "ranking.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    results[name] = rows
    return seconds


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=16)
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batches", type=int, default=60, help="training batches per epoch (limit_train_batches)")
    p.add_argument("--rounds", type=int, default=1, help="pairs of sessions (default 1: two sessions take minutes)")
    p.add_argument("--data", type=Path, help="folder with the MNIST IDX files (default ../shared/data/mnist)")
    p.add_argument("--quick", action="store_true", help="digits, 8 trials of 3 epochs: checks the script runs")
    args = p.parse_args()
    data = None if args.quick else (args.data or shared_mnist())
    trials, epochs = (8, 3) if args.quick else (args.trials, args.epochs)
    print(f"search pruning benchmark: {trials} trials of {epochs} epochs x {args.batches} batches on "
          f"{'MNIST (' + str(data) + ')' if data else 'digits'}, random sampler, seed 0, one trial at a time, "
          f"{os.cpu_count()} CPU cores")
    found: dict[str, dict[str, list]] = {"no pruner": {}, "median pruner": {}}
    with scratch() as work:
        variants = {
            name: (lambda name=name: session(work, config(data, trials, epochs, args.batches, name != "no pruner"),
                                             name.replace(" ", "-"), found[name]))
            for name in found
        }
        seconds = interleave(variants, args.rounds, warmup=False, label="sessions: ")
    best = {}
    for name, per_round in found.items():
        rows = next(iter(per_round.values()))
        values = [float(r["value"]) for r in rows if r["value"] and r["state"] == "done"]
        pruned = sum(1 for r in rows if r["state"] == "pruned")
        best[name] = max(values)
        print(f"{name:<14} best val/acc {best[name]:.4f}   trials pruned {pruned}/{len(rows)}")
    table(seconds, "no pruner", "s", digits=1)
    print()
    ok = target(seconds, "median pruner", "no pruner", None if args.quick else 0.60,
                note="   (wall time; saved = 1 - ratio)")
    ratio = best["median pruner"] / best["no pruner"]
    verdict = "" if args.quick else f"  {'PASS' if ratio >= 0.995 else 'FAIL'}"
    print(f"target best val/acc median pruner / no pruner >= 0.995: {ratio:.4f}{verdict}")
    return 0 if args.quick or (ok and ratio >= 0.995) else 1


if __name__ == "__main__":
    sys.exit(main())

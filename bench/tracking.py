"""Per-step cost of tracking to MLflow, side by side with the same runs without it.

    python bench/tracking.py [--quick] [--rounds 5] [--threads 1]

Each round runs four variants once (the order rotated from round to round, after a dropped
warm-up round), all through torchx's real command line in this process with the default user
config: checkpoints on (ModelCheckpoint's defaults: last.ckpt and one checkpoint per epoch),
TensorBoard and metrics.csv, the progress bar on (to /dev/null):

  train_pl.py            the tiny CNN on synthetic MNIST-shaped data
  train_pl.py +mlflow    the same with `loggers: [{name: mlflow}]`: its SQLite store in the run's
                         save directory (copied from an empty store made once, as every run after
                         a save directory's first finds it), metrics, params, tags, artifacts
  train.py, train.py +mlflow   the same two through the plain loop

Timed as in overhead.py (harness.mark_epochs): from each epoch's start to the next one's, so the
epoch-end work (metrics, checkpoint, the tracker's queue) is inside; a run's seconds per step is
its median epoch over its steps per epoch, a variant's figure the median over the rounds.
Targets: `+mlflow / without <= 1.02` for each loop.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import shutil
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    add_round_options,
    allocator_note,
    interleave,
    mark_epochs,
    quiet,
    ratio,
    rounds_of,
    scratch,
    steady_allocator,
    table,
    target,
)

steady_allocator()  # before anything is imported or allocated

import torch  # noqa: E402
import yaml  # noqa: E402
from overhead import Clock, Spec, per_step  # noqa: E402

from torchx import cli  # noqa: E402

VARIANTS = ("train_pl.py", "train_pl.py +mlflow", "train.py", "train.py +mlflow")


def config(spec: Spec, mlflow: bool) -> dict:
    """overhead.py's tiny-CNN config with the default user settings: checkpoints and the bar on."""
    cfg = spec.config(progress_bar=True)
    del cfg["trainer_params"]["enable_checkpointing"]
    if mlflow:
        cfg["loggers"] = [{"name": "mlflow"}]
    return cfg


def run(spec: Spec, prog: str, mlflow: bool, store: Path) -> tuple[Clock, int]:
    clock = Clock()
    with scratch() as work, contextlib.ExitStack() as stack:
        (work / "save").mkdir()
        shutil.copy(store, work / "save" / "mlflow.db")
        cfg_file = work / "bench.yaml"
        cfg_file.write_text(yaml.safe_dump(config(spec, mlflow)))
        loop = mark_epochs(stack, prog, clock.mark)
        gc.collect()
        with quiet():
            code = cli.main(["--config", str(cfg_file), "--save-dir", str(work / "save"), "--name", "run"], prog, loop)
        if code != 0:
            raise RuntimeError(f"{prog}{' +mlflow' if mlflow else ''} exited {code}")
        run_dir = work / "save" / "run"
        steps = json.loads((run_dir / "results.json").read_text())["global_step"]
        if mlflow:
            check_tracked(run_dir, work / "save", steps)
    return clock, steps


def check_tracked(run_dir: Path, save: Path, steps: int) -> None:
    """What is timed must have been tracked: the run FINISHED in MLflow with every epoch's loss."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{save / 'mlflow.db'}")
    run_id = json.loads((run_dir / "tracking.json").read_text())["mlflow"]["run_id"]
    history = client.get_metric_history(run_id, "train/loss")
    if client.get_run(run_id).info.status != "FINISHED" or not history or history[-1].step != steps - 1:
        raise RuntimeError(f"the +mlflow run was not tracked in full: {[(m.step, m.value) for m in history]}")


def empty_store(folder: Path) -> Path:
    from mlflow.tracking import MlflowClient

    logging.getLogger("mlflow.store.db.utils").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    path = folder / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_round_options(p, quick="1024 samples, 2 epochs, 3 rounds: checks that it runs")
    args = p.parse_args()
    rounds = rounds_of(p, args)
    for name in ("pytorch_lightning", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    n_train, epochs = (1024, 2) if args.quick else (4096, 6)
    spec = Spec(model="tiny_cnn", loss="ce", epochs=epochs, n_train=n_train, batch=64, lr=0.01, seed=0)
    print(f"torchx tracking benchmark{' --quick' if args.quick else ''}: torch {torch.__version__}, "
          f"{os.cpu_count()} CPU cores, torch.set_num_threads({args.threads}), {allocator_note()}")
    t0 = time.perf_counter()
    with scratch() as home:
        store = empty_store(home)
        warm = replace(spec, epochs=1, n_train=4 * spec.batch)
        for name in VARIANTS:  # imports, kernel selection, the allocator: dropped
            per_step(warm, name, lambda name=name: run(warm, name.split()[0], "+mlflow" in name, store))

        cpu: dict[str, list[float]] = {}

        def timed(name: str):
            def once() -> float:
                wall, used = per_step(spec, name, lambda: run(spec, name.split()[0], "+mlflow" in name, store))
                cpu.setdefault(name, []).append(used)
                return wall
            return once

        wall = interleave({name: timed(name) for name in VARIANTS}, rounds, warmup=False, label="[tracking] ")
    print(f"\nmodel tiny_cnn, SGD lr 0.01, synthetic uint8 1x28x28, {spec.n_train} training samples, batch 64, "
          f"{spec.epochs} epochs = {spec.steps} steps per run; checkpoints, TensorBoard, metrics.csv and the progress "
          f"bar on; {rounds} rounds after 1 dropped warm-up round, interleaved, order rotated each round")
    table(wall, "train_pl.py", "s/step", digits=5,
          extra=("CPU-time ratio", {n: ratio(cpu, n, "train_pl.py") for n in wall}))
    print("CPU time: the process's, the tracker's thread included; it leaves out waiting for a core")
    ok = True
    for loop in ("train_pl.py", "train.py"):
        ok &= target(wall, f"{loop} +mlflow", loop, 1.02, note=f"  CPU time {ratio(cpu, f'{loop} +mlflow', loop):.3f}")
    print(f"({time.perf_counter() - t0:.0f} s of measuring, {time.strftime('%Y-%m-%d')})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

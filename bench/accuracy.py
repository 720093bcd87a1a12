"""Real MNIST with configs/mnist-cnn.yaml (classic CNN, Adadelta lr 1.0, batch 64, one epoch).

    python bench/accuracy.py [--quick] [--data DIR] [--loop train_pl.py|train.py|both]

Runs the entry point as a user would, in a subprocess:

    python train_pl.py --config configs/mnist-cnn.yaml --save-dir <tmp> \\
        data_module.args.root_dir=<DIR> +trainer_params.enable_progress_bar=false

then reads <tmp>/mnist-cnn/results.json and prints the test accuracy and the wall time of the
whole command (process start, data loading, training, validation, test). Target: test
accuracy >= 0.98 after one epoch. --quick trains on the first 200 batches only
(+trainer_params.limit_train_batches=200) and prints the accuracy without a target.
Exit status: 0 when every target passes, 1 when one fails, 2 when the MNIST files are missing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CONFIG = "configs/mnist-cnn.yaml"
TARGET = 0.98
STEMS = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def default_data_dir() -> Path:
    shared = (ROOT / ".." / "shared" / "data" / "mnist").resolve()
    return shared if shared.is_dir() else ROOT / "load" / "mnist"


def missing_files(root: Path) -> list[str]:
    """The IDX files (gzipped or not, flat or in torchvision's MNIST/raw layout) that `root` lacks."""
    def found(stem: str) -> bool:
        return any((folder / name).is_file() for folder in (root, root / "MNIST" / "raw")
                   for name in (stem, stem + ".gz"))

    return [stem for stem in STEMS if not found(stem)]


def run_once(loop: str, data_dir: Path, quick: bool, save_dir: Path) -> dict:
    cmd = [sys.executable, loop, "--config", CONFIG, "--save-dir", str(save_dir),
           f"data_module.args.root_dir={data_dir}", "+trainer_params.enable_progress_bar=false"]
    if quick:
        cmd.append("+trainer_params.limit_train_batches=200")
    shown = " ".join(["python", *cmd[1:]]).replace(str(save_dir), "<tmp>")
    print(f"$ {shown}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    results_file = save_dir / Path(CONFIG).stem / "results.json"
    if proc.returncode != 0 or not results_file.is_file():
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"{loop} failed (exit status {proc.returncode}); its output is above")
    results = json.loads(results_file.read_text())
    test = results.get("test") or {}
    if "test/acc" not in test:
        raise SystemExit(f"{results_file} has no test/acc: {results}")
    return {"loop": loop, "acc": test["test/acc"], "loss": test.get("test/loss"), "wall": wall,
            "steps": results.get("global_step"), "epochs": results.get("epochs")}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="train on 200 batches only; no accuracy target")
    p.add_argument("--data", type=Path, help="folder with the four MNIST IDX files "
                                             "(default: ../shared/data/mnist if it exists, else ./load/mnist)")
    p.add_argument("--loop", choices=("train_pl.py", "train.py", "both"), default="train_pl.py",
                   help="entry point to run (default train_pl.py)")
    p.add_argument("--keep", action="store_true", help="keep the run directories and print where they are")
    args = p.parse_args()
    data_dir = (args.data or default_data_dir()).resolve()
    missing = missing_files(data_dir)
    if missing:
        where = "--data" if args.data else "the default folder (../shared/data/mnist if it exists, else ./load/mnist)"
        print(f"accuracy.py: MNIST files missing in '{data_dir}', {where}: "
              f"{', '.join(m + '[.gz]' for m in missing)}.\nPut the four IDX files there or pass --data DIR.",
              file=sys.stderr)
        return 2
    loops = ("train_pl.py", "train.py") if args.loop == "both" else (args.loop,)
    print(f"MNIST accuracy benchmark{' --quick' if args.quick else ''}: {CONFIG}, data {data_dir}, "
          f"{os.cpu_count()} CPU cores (torch's default thread count)")
    rows = []
    for loop in loops:
        save_dir = Path(tempfile.mkdtemp(prefix="torchx-acc-"))
        try:
            rows.append(run_once(loop, data_dir, args.quick, save_dir))
        finally:
            if args.keep:
                print(f"run directory kept: {save_dir / Path(CONFIG).stem}")
            else:
                shutil.rmtree(save_dir, ignore_errors=True)
    print(f"\n{'entry point':<12} {'epochs':>6} {'steps':>6} {'test acc':>9} {'test loss':>10} {'wall s':>8}")
    for r in rows:
        loss = f"{r['loss']:.4f}" if r["loss"] is not None else "?"
        print(f"{r['loop']:<12} {r['epochs']!s:>6} {r['steps']!s:>6} {r['acc']:>9.4f} {loss:>10} {r['wall']:>8.1f}")
    print("wall s = the whole command: process start, data loading, training, validation and test")
    if args.quick:
        print("--quick: 200 training batches; no accuracy target applies")
        return 0
    ok = True
    for r in rows:
        verdict = "PASS" if r["acc"] >= TARGET else "FAIL"
        ok &= verdict == "PASS"
        print(f"target {r['loop']} test accuracy >= {TARGET}: {r['acc']:.4f} {verdict}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

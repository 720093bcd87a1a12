"""Command to first optimizer step: train_pl.py and train.py against a plain Lightning script and a
raw PyTorch script; and `import torchx` against `import pytorch_lightning`.

    python bench/startup.py [--quick] [--rounds N]

Each variant is a fresh `python` process started by this script. The clock starts just before
the process is spawned and stops inside it, at the end of the first `optimizer.step()` (a global
optimizer step hook that `torch.optim` offers, registered by a few lines run before the
script; the process then exits at once). So interpreter start, imports, config checks, the run
directory, data, model, Trainer set-up and the first forward/backward are all inside the time.

All four train the same thing: the ~7.5k-parameter tiny CNN, SGD lr 0.01, batch 64, on 8192
random MNIST-shaped uint8 images held in memory (torchx: the `synthetic` data module; the
scripts: `torch.randint`), one epoch, on CPU.

  raw              a hand-written loop (`bench/startup.py` writes it to a temp folder)
  lightning        a LightningModule + `pl.Trainer(max_epochs=1, accelerator="cpu", devices=1)`
                   with Lightning's defaults: TensorBoard logger, checkpointing, progress bar,
                   model summary; `self.log("train_loss", ..., prog_bar=True)` every step
  train_pl.py      `python train_pl.py --config <that config> --save-dir <tmp> --name <new>`:
                   a full run directory (config, code snapshot, provenance, loggers, checkpoints)
  train.py         the same config through torchx's plain loop

Imports: the seconds `import X` takes in a fresh `python` process (timed inside it, so
interpreter start and exit are left out) for torchx (the package: its registries load on first
use), torchx.fit (everything train_pl.py imports), torchx.loop (train.py) and pytorch_lightning.

--quick leaves out the information-only rows (train.py, import torchx.loop) and the warm-up
round, to finish in under a minute.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, allocator_note, first_step_seconds, interleave, scratch, steady_allocator, table, target  # noqa: E402

steady_allocator()  # before anything is imported or allocated

N_TRAIN, BATCH = 8192, 64

TINY_CNN = """nn.Sequential(
    nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
    nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
    nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 10))"""

DATA = f"""g = torch.Generator().manual_seed(0)
images = torch.randint(0, 256, ({N_TRAIN}, 1, 28, 28), generator=g, dtype=torch.uint8)
labels = torch.randint(0, 10, ({N_TRAIN},), generator=g)"""

RAW = f"""import torch
from torch import nn

torch.manual_seed(0)
{DATA}
model = {TINY_CNN}
opt = torch.optim.SGD(model.parameters(), lr=0.01)
perm = torch.randperm({N_TRAIN})
for i in range(0, {N_TRAIN}, {BATCH}):
    idx = perm[i:i + {BATCH}]
    x = images[idx].float().div(255).sub(0.1307).div(0.3081)
    loss = nn.functional.cross_entropy(model(x), labels[idx])
    opt.zero_grad()
    loss.backward()
    opt.step()
"""

LIGHTNING = f"""import sys

import pytorch_lightning as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class Classifier(pl.LightningModule):
    def __init__(self):
        super().__init__()
        self.model = {textwrap.indent(TINY_CNN, "        ").lstrip()}

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = nn.functional.cross_entropy(self.model(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


pl.seed_everything(0)
{DATA}
x = images.float().div(255).sub(0.1307).div(0.3081)
loader = DataLoader(TensorDataset(x, labels), batch_size={BATCH}, shuffle=True)
trainer = pl.Trainer(max_epochs=1, accelerator="cpu", devices=1, default_root_dir=sys.argv[1])
trainer.fit(Classifier(), loader)
"""

CONFIG = f"""data_module:
  name: synthetic
  args: {{n_train: {N_TRAIN}, n_test: 256, val_split: 0, batch_size: {BATCH}}}
train_wrapper:
  name: base
  args:
    model_spec: {{name: tiny_cnn}}
    loss_spec: {{name: ce}}
    optim_spec: {{name: SGD, args: {{lr: 0.01}}}}
trainer_params: {{max_epochs: 1}}
seed: 0
"""


def import_seconds(module: str) -> float:
    """Seconds `import module` takes in a fresh interpreter, timed inside it."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True, text=True)
    return float(out.stdout.strip().splitlines()[-1])


def version(dist: str) -> str:
    from importlib.metadata import version as v

    return v(dist)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 rounds, no warm-up round (under a minute)")
    p.add_argument("--rounds", type=int, help="timed rounds (default 5, --quick 3); at least 3")
    args = p.parse_args()
    rounds = args.rounds or (3 if args.quick else 5)
    if rounds < 3:
        p.error("--rounds must be at least 3")
    print(f"torchx startup benchmark{' --quick' if args.quick else ''}: torch {version('torch')}, "
          f"pytorch_lightning {version('pytorch_lightning')}, {os.cpu_count()} CPU cores, {allocator_note()}")
    ok = True
    with scratch() as work:
        (work / "raw.py").write_text(RAW)
        (work / "lightning.py").write_text(LIGHTNING)
        (work / "bench.yaml").write_text(CONFIG)
        runs = iter(range(10**6))
        variants = {
            "raw": lambda: first_step_seconds([str(work / "raw.py")], work),
            "lightning": lambda: first_step_seconds([str(work / "lightning.py"), str(work / f"pl{next(runs)}")], work),
            "train_pl.py": lambda: first_step_seconds(
                ["train_pl.py", "--config", str(work / "bench.yaml"), "--save-dir", str(work / "save"),
                 "--name", f"run{next(runs)}"], work),
            "train.py": lambda: first_step_seconds(
                ["train.py", "--config", str(work / "bench.yaml"), "--save-dir", str(work / "save"),
                 "--name", f"run{next(runs)}"], work),
        }
        if args.quick:
            del variants["train.py"]
        # the warm-up round fills the page cache with the libraries; quick mode relies on the rotation
        steps = interleave(variants, rounds, warmup=not args.quick, label="first step: ")
    print(f"\ncommand to first optimizer step ({N_TRAIN} in-memory samples, batch {BATCH}, tiny CNN, CPU); "
          f"{rounds} rounds{'' if args.quick else ' after 1 dropped warm-up round'}, interleaved")
    table(steps, "raw", "s", digits=2)
    ok &= target(steps, "train_pl.py", "lightning", 1.10)
    if "train.py" in steps:
        target(steps, "train.py", "lightning", None, note="  (information)")
    target(steps, "lightning", "raw", None, note="  (information: what Lightning itself costs to start)")

    modules = ["torchx", "torchx.fit", *([] if args.quick else ["torchx.loop"]), "pytorch_lightning"]
    imports = interleave({m: (lambda m=m: import_seconds(m)) for m in modules}, rounds,
                         warmup=not args.quick, label="imports: ")
    print(f"\n`import X` in a fresh interpreter, timed inside it; {rounds} rounds, interleaved")
    table(imports, "pytorch_lightning", "s", digits=3)
    ok &= target(imports, "torchx", "pytorch_lightning", 1.05)
    ok &= target(imports, "torchx.fit", "pytorch_lightning", 1.05,
                 note="  (what train_pl.py imports: Lightning and all of torchx)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

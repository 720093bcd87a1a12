"""Per-step training overhead of torchx's two loops, against a hand-written PyTorch loop and
against pl.Trainer, bare and with Lightning's own defaults.

    python bench/overhead.py [--quick] [--model tiny_cnn|cnn|linear|all] [--threads 1] [--rounds 5]

Every figure is measured side by side in this one process: each round runs every variant once
(the order rotated from round to round), a warm-up round comes first and is dropped, a
variant's seconds per step is the median over the rounds, and a ratio divides two such
medians. The per-round ratios (min..max) are printed beside it to show the noise.

Variants (same model, data, batch size, optimizer and thread count; checkpointing off in all:
its cost is bench/checkpoint.py's question):
  raw                 hand-written loop over the uint8 tensor (randperm, slice, normalise, step)
  train.py            `python train.py --config <cfg>` run in this process through torchx's
                      command line (a real run directory), progress bar off
  train.py +bar       the same with the progress bar on (its default; written to /dev/null)
  lightning-plain     minimal LightningModule (training_step returns the loss) + pl.Trainer with
                      no logger, progress bar, model summary or checkpointing
  lightning-defaults  the same module logging its loss every step with prog_bar=True (as
                      Lightning's examples do) + pl.Trainer with its defaults: TensorBoard logger,
                      progress bar refreshed every step (to /dev/null), model summary
  train_pl.py         `python train_pl.py --config <cfg>` through torchx's command line, progress
                      bar off: torchx's callbacks, TensorBoard + metrics.csv loggers, log.txt
  train_pl.py +bar    the same with the progress bar on: torchx's default config
Both Lightning variants read the same in-memory loader as torchx (the data path is
bench/data.py's question).

Models: tiny_cnn (~7.5k parameters, batch 64: where overhead shows in a real step), cnn (the
classic MNIST example net), and linear (one 784x10 layer, batch 8: a step of almost no compute,
so a variant's extra microseconds per step over raw are the framework's own per-step cost;
its ratios are not targets, its microseconds explain the other models' ratios).

Timed region: every variant marks a clock (time.perf_counter and time.process_time) at the start
of each epoch and at the end of training; an epoch's interval runs to the next epoch's start,
so the work between epochs (epoch metrics, logging, a new data iterator) is inside it, and
process start, Trainer construction, the run directory and the model summary are outside.
A run's seconds per step = its median epoch / steps per epoch (the median keeps a short burst
of a busy neighbour out); a variant's figure is the median of that over the rounds.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    ROOT,
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

sys.path.insert(0, str(ROOT))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from torch import nn  # noqa: E402

from torchx import cli, models  # noqa: E402
from torchx.datasets.synthetic import Synthetic  # noqa: E402

LOSSES = {"tiny_cnn": "ce", "cnn": "nll", "linear": "ce"}  # cnn returns log-probabilities
# (training samples, epochs, batch) per timed run, full and --quick
SIZES = {"tiny_cnn": ((4096, 6, 64), (1024, 2, 64)), "cnn": ((2048, 3, 64), (1024, 1, 64)),
         "linear": ((2048, 3, 8), (1024, 2, 8))}
MODELS = {"tiny_cnn": {"name": "tiny_cnn"}, "cnn": {"name": "cnn"},
          "linear": {"name": "mlp", "args": {"in_dim": 784, "hidden": [], "out_dim": 10}}}


@dataclass
class Spec:
    model: str
    loss: str
    epochs: int
    n_train: int
    batch: int
    lr: float
    seed: int

    def config(self, progress_bar: bool) -> dict:
        """The torchx config both torchx variants run."""
        return {
            "data_module": {"name": "synthetic", "args": {"n_train": self.n_train, "n_test": 64, "val_split": 0,
                                                          "batch_size": self.batch}},
            "train_wrapper": {"name": "base", "args": {
                "model_spec": MODELS[self.model], "loss_spec": {"name": self.loss},
                "optim_spec": {"name": "SGD", "args": {"lr": self.lr}}}},
            "trainer_params": {"max_epochs": self.epochs, "limit_val_batches": 0,
                               "enable_progress_bar": progress_bar, "enable_checkpointing": False},
            "seed": self.seed,
        }

    @property
    def steps(self) -> int:
        return self.epochs * -(-self.n_train // self.batch)


class Clock:
    """(perf_counter, process_time) at the start of every epoch and at the end of training."""

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def mark(self, *args, **kwargs) -> None:
        self.marks.append((time.perf_counter(), time.process_time()))

    def epochs(self) -> list[tuple[float, float]]:
        """(wall, CPU) seconds of each epoch."""
        return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(self.marks, self.marks[1:])]


def loader_data(spec: Spec) -> Synthetic:
    data = Synthetic(n_train=spec.n_train, n_test=64, val_split=0, batch_size=spec.batch)
    data.setup("fit")
    return data


def make_model(spec: Spec) -> nn.Module:
    torch.manual_seed(spec.seed)
    return models.make(MODELS[spec.model])


def torch_loss(spec: Spec) -> nn.Module:
    return nn.CrossEntropyLoss() if spec.loss == "ce" else nn.NLLLoss()


# ------------------------------------------------- variants: each returns (Clock, optimizer steps)


def run_raw(spec: Spec, data: tuple[torch.Tensor, torch.Tensor]) -> tuple[Clock, int]:
    images, labels = data
    mean, std = Synthetic.mean, Synthetic.std
    model, loss_fn = make_model(spec), torch_loss(spec)
    opt = torch.optim.SGD(model.parameters(), lr=spec.lr)
    model.train()
    n, b, steps = len(labels), spec.batch, 0
    clock = Clock()
    gc.collect()
    for _ in range(spec.epochs):
        clock.mark()
        perm = torch.randperm(n)
        for i in range(0, n, b):
            idx = perm[i:i + b]
            x = images[idx].float().div(255).sub(mean).div(std)
            y = labels[idx]
            loss = loss_fn(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
    clock.mark()
    return clock, steps


def run_torchx(spec: Spec, prog: str, progress_bar: bool) -> tuple[Clock, int]:
    """The entry point's own command line, in this process, with a clock at every epoch start
    (train_pl.py: TorchxState's hooks; train.py: torchx.loop.train_epoch, which fit looks up each
    epoch) and at the end of training."""
    clock = Clock()
    with scratch() as work, contextlib.ExitStack() as stack:
        cfg_file = work / "bench.yaml"
        cfg_file.write_text(yaml.safe_dump(spec.config(progress_bar)))
        loop = mark_epochs(stack, prog, clock.mark)
        gc.collect()
        with quiet():
            code = cli.main(["--config", str(cfg_file), "--save-dir", str(work), "--name", "run"], prog, loop)
        if code != 0:
            raise RuntimeError(f"{prog} exited {code}")
        steps = json.loads((work / "run" / "results.json").read_text())["global_step"]
    return clock, steps


class EpochTimer(pl.Callback):
    def __init__(self) -> None:
        self.clock = Clock()
        self.steps = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.clock.mark()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.clock.mark()
        self.steps = trainer.global_step


class PlainModule(pl.LightningModule):
    def __init__(self, model: nn.Module, loss_fn: nn.Module, lr: float, log_every_step: bool) -> None:
        super().__init__()
        self.model, self.loss_fn, self.lr, self.log_every_step = model, loss_fn, lr, log_every_step

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = self.loss_fn(self.model(x), y)
        if self.log_every_step:
            self.log("train_loss", loss, prog_bar=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def run_lightning(spec: Spec, defaults: bool) -> tuple[Clock, int]:
    pl.seed_everything(spec.seed, verbose=False)
    data = loader_data(spec)  # torchx's loader over the same uint8 tensor, for a like-for-like input path
    module = PlainModule(make_model(spec), torch_loss(spec), spec.lr, log_every_step=defaults)
    timer = EpochTimer()
    bare = {} if defaults else {"logger": False, "enable_progress_bar": False, "enable_model_summary": False}
    with scratch() as work, quiet():
        trainer = pl.Trainer(max_epochs=spec.epochs, accelerator="cpu", devices=1, default_root_dir=work,
                             enable_checkpointing=False, num_sanity_val_steps=0, limit_val_batches=0,
                             callbacks=[timer], **bare)
        gc.collect()
        trainer.fit(module, train_dataloaders=data.train_dataloader())
    return timer.clock, timer.steps


# ---------------------------------------------------------------- harness


def variants(spec: Spec) -> dict:
    data = loader_data(spec).splits["train"]
    return {
        "raw": lambda: run_raw(spec, data),
        "train.py": lambda: run_torchx(spec, "train.py", False),
        "train.py +bar": lambda: run_torchx(spec, "train.py", True),
        "lightning-plain": lambda: run_lightning(spec, defaults=False),
        "lightning-defaults": lambda: run_lightning(spec, defaults=True),
        "train_pl.py": lambda: run_torchx(spec, "train_pl.py", False),
        "train_pl.py +bar": lambda: run_torchx(spec, "train_pl.py", True),
    }


def per_step(spec: Spec, name: str, run) -> tuple[float, float]:
    """(wall, CPU) seconds per step of one run: its median epoch / steps per epoch."""
    clock, steps = run()
    epochs = clock.epochs()
    if steps != spec.steps or len(epochs) != spec.epochs:
        raise RuntimeError(f"{name} ran {steps} steps in {len(epochs)} epochs, expected {spec.steps} in {spec.epochs}")
    per_epoch = spec.steps // spec.epochs
    return (statistics.median(w for w, _ in epochs) / per_epoch, statistics.median(c for _, c in epochs) / per_epoch)


def measure(spec: Spec, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    # the warm-up round runs every variant on 4 batches (imports, kernel selection, allocator); dropped
    warm = replace(spec, epochs=1, n_train=4 * spec.batch)
    for name, run in variants(warm).items():
        per_step(warm, name, run)
    runs, cpu_of = variants(spec), {}

    def timed(name: str):
        def once() -> float:
            wall, cpu = per_step(spec, name, runs[name])
            cpu_of.setdefault(name, []).append(cpu)
            return wall
        return once

    wall = interleave({name: timed(name) for name in runs}, rounds, warmup=False, label=f"[{spec.model}] ")
    return wall, cpu_of


TARGETS = [  # (numerator, denominator, limit or None for information)
    ("train.py", "raw", 1.05),
    ("train_pl.py", "lightning-plain", 1.05),
    ("train_pl.py +bar", "raw", 1.35),
    ("train.py +bar", "raw", None),
    ("lightning-plain", "raw", None),
    ("lightning-defaults", "raw", None),
    ("train_pl.py +bar", "lightning-defaults", None),
]


def report(spec: Spec, wall: dict[str, list[float]], cpu: dict[str, list[float]], rounds: int, threads: int) -> bool:
    n_params = sum(p.numel() for p in make_model(spec).parameters())
    print(f"\nmodel {spec.model} ({n_params:,} parameters), loss {spec.loss}, SGD lr {spec.lr}; synthetic uint8 "
          f"1x28x28, {spec.n_train} training samples, batch {spec.batch}, no validation, no checkpoints")
    print(f"torch.set_num_threads({threads}); {spec.epochs} epochs = {spec.steps} steps per timed run; {rounds} rounds "
          f"after 1 dropped warm-up round, interleaved, order rotated each round")
    table(wall, "raw", "s/step", digits=5, extra=("CPU-time ratio", {n: ratio(cpu, n, "raw") for n in wall}))
    print("ratio = median s/step over raw's (wall clock); per round pairs the two runs of one round (the spread is\n"
          "the noise); CPU-time ratio = the same from process CPU time, which leaves out waiting for a core.")
    if spec.model == "linear":  # almost no compute: the differences are per-step framework costs
        base = statistics.median(wall["raw"])
        for a, b in (("train.py", "raw"), ("lightning-plain", "raw"), ("train_pl.py", "lightning-plain"),
                     ("train_pl.py +bar", "lightning-defaults")):
            extra = (statistics.median(wall[a]) - statistics.median(wall[b])) * 1e6
            print(f"per-step cost of {a} over {b}: {extra:+.0f} us (raw's whole step: {base * 1e6:.0f} us)")
        return True
    ok = True
    for a, b, limit in TARGETS:
        ok &= target(wall, a, b, limit, note=f"  CPU time {ratio(cpu, a, b):.3f}" +
                     ("" if limit else "  (information)"))
    return ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_round_options(p, quick="tiny_cnn only, 1024 samples, 2 epochs, 3 rounds")
    p.add_argument("--model", choices=("tiny_cnn", "cnn", "linear", "all"), help="default: all (--quick: tiny_cnn)")
    p.add_argument("--epochs", type=int, help="epochs per timed run (default: tiny_cnn 6, cnn 3)")
    p.add_argument("--n-train", type=int, help="training samples (default: tiny_cnn 4096, cnn 2048)")
    p.add_argument("--batch-size", type=int, help="default: 64 (linear: 8)")
    args = p.parse_args()
    rounds = rounds_of(p, args)
    for name in ("pytorch_lightning", "lightning_fabric"):  # their notices go to handlers quiet() cannot reach
        logging.getLogger(name).setLevel(logging.ERROR)
    print(f"torchx overhead benchmark{' --quick' if args.quick else ''}: torch {torch.__version__}, "
          f"pytorch_lightning {pl.__version__}, {os.cpu_count()} CPU cores, torch.set_num_threads({args.threads}), "
          f"{allocator_note()}")
    model = args.model or ("tiny_cnn" if args.quick else "all")
    ok = True
    for m in ("tiny_cnn", "cnn", "linear") if model == "all" else (model,):
        n_train, epochs, batch = SIZES[m][args.quick]
        spec = Spec(model=m, loss=LOSSES[m], epochs=args.epochs or epochs, n_train=args.n_train or n_train,
                    batch=args.batch_size or batch, lr=0.01, seed=0)
        t0 = time.perf_counter()
        wall, cpu = measure(spec, rounds)
        ok &= report(spec, wall, cpu, rounds, args.threads)
        print(f"({m}: {time.perf_counter() - t0:.0f} s of measuring)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

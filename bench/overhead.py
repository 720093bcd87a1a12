"""Per-step training overhead of torchx's two loops, measured against a hand-written PyTorch loop.

    python bench/overhead.py [--quick] [--model tiny_cnn|cnn|both] [--threads 1] [--rounds 5]

Every figure is measured side by side in this one process: each round runs every variant once
(the order rotated from round to round), a warm-up round comes first and is dropped, a
variant's seconds per step is the median over the rounds, and a ratio divides two such
medians. The per-round ratios (min..max) are printed beside it to show the noise. Absolute
seconds are noise on a shared machine; the ratios are the result.

Variants (same model, initial weights, data, batch size, optimizer and thread count):
  raw              hand-written loop over the uint8 tensor (randperm, slice, normalise, step)
  train.py         torchx.loop.fit, built as torchx.loop.train builds it, with its loggers
                   (TensorBoard + metrics.csv in a temp dir; progress bar off)
  train.py +bar    the same with the tqdm progress bar on (written to /dev/null)
  lightning-plain  minimal LightningModule + bare pl.Trainer (no logger, no callbacks)
  train_pl.py      torchx.fit.trainer_kwargs + make_trainer: BaseWrapper, BaseLogger, torchx's
                   loggers (TensorBoard + metrics.csv in a temp dir; progress bar off)
  train_pl.py +bar the same with torchx's ProgressBar (written to /dev/null)

Timed region: every variant marks a clock (time.perf_counter and time.process_time) at the start
of each epoch and at the end of training; an epoch's interval runs to the next epoch's start,
so the work between epochs (epoch metrics, logging, a new data iterator) is inside it. raw marks
its own loop; train.py's marks come from wrapping torchx.loop.train_epoch (looked up by fit
each epoch) and fit's return; the Lightning variants use a callback marking at every
on_train_epoch_start and at on_train_end, so Trainer construction, strategy setup,
configure_optimizers, the model summary and process start are all outside the timing.
A run's seconds per step = its median epoch / steps per epoch (the median keeps a short burst
of a busy neighbour out); a variant's figure is the median of that over the rounds.
Checkpointing is off in every variant unless --checkpoints is given (then train.py writes
its Checkpoints and train_pl.py keeps torchx's ModelCheckpoint).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import inspect
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import torchx.fit  # noqa: E402
import torchx.loop  # noqa: E402
from torchx import build, models  # noqa: E402
from torchx import config as C  # noqa: E402
from torchx.callbacks.base_logger import EpochReport  # noqa: E402
from torchx.datasets.synthetic import Synthetic  # noqa: E402
from torchx.run import Run  # noqa: E402

LOSSES = {"tiny_cnn": "ce", "cnn": "nll"}  # cnn returns log-probabilities
# epochs per timed run: (full, --quick); full: 2048 samples / batch 64 = 32 steps per epoch,
# --quick: 1024 samples = 16 steps per epoch
EPOCHS = {"tiny_cnn": (10, 2), "cnn": (3, 1)}


@dataclass
class Spec:
    model: str
    loss: str
    epochs: int
    n_train: int
    batch: int
    lr: float
    seed: int
    checkpoints: bool

    def config(self, progress_bar: bool) -> dict:
        """The torchx config both torchx variants run."""
        cfg = {
            "data_module": {"name": "synthetic", "args": {"n_train": self.n_train, "n_test": 64, "val_split": 0,
                                                          "batch_size": self.batch}},
            "train_wrapper": {"name": "base", "args": {
                "model_spec": {"name": self.model}, "loss_spec": {"name": self.loss},
                "optim_spec": {"name": "SGD", "args": {"lr": self.lr}}}},
            "trainer_params": {"max_epochs": self.epochs, "limit_val_batches": 0,
                               "enable_progress_bar": progress_bar, "enable_checkpointing": self.checkpoints},
            "seed": self.seed,
        }
        C.check(cfg)
        return cfg

    @property
    def steps(self) -> int:
        return self.epochs * -(-self.n_train // self.batch)


@contextlib.contextmanager
def quiet():
    """stdout and stderr (epoch lines, tqdm bars, Lightning's notices) to /dev/null."""
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        yield


@contextlib.contextmanager
def scratch():
    path = Path(tempfile.mkdtemp(prefix="torchx-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def train_images(spec: Spec) -> tuple[torch.Tensor, torch.Tensor]:
    data = Synthetic(n_train=spec.n_train, n_test=64, val_split=0, batch_size=spec.batch)
    data.setup("fit")
    return data.splits["train"]


def make_model(spec: Spec) -> nn.Module:
    torch.manual_seed(spec.seed)  # the same initial weights in every variant
    return models.make({"name": spec.model})


def torch_loss(spec: Spec) -> nn.Module:
    return nn.CrossEntropyLoss() if spec.loss == "ce" else nn.NLLLoss()


# ------------------------------------------------- variants: each returns (Clock, optimizer steps)


class Clock:
    """(perf_counter, process_time) at the start of every epoch and at the end of training.

    An epoch's interval runs from its start to the next epoch's start (the last one to the end of
    training), so the work between epochs (epoch metrics, logging, a new data iterator) counts.
    """

    def __init__(self) -> None:
        self.marks: list[tuple[float, float]] = []

    def mark(self) -> None:
        self.marks.append((time.perf_counter(), time.process_time()))

    def epochs(self) -> list[tuple[float, float]]:
        """(wall, CPU) seconds of each epoch."""
        return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(self.marks, self.marks[1:])]


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


def train_py_logs(run: Run, wrapper: pl.LightningModule):
    """train.py's loggers, whichever form this checkout has: `Logs` (TensorBoard + metrics.csv) or the
    older bare tensorboardX writer."""
    loop = torchx.loop
    if hasattr(loop, "Logs"):
        return loop.Logs(run, wrapper)
    return loop.tensorboard_writer(run, wrapper)


def train_pl_kwargs(cfg: dict, run: Run, data, wrapper: pl.LightningModule) -> dict:
    """torchx.fit.trainer_kwargs, with or without the `wrapper` argument (it gained one)."""
    if "wrapper" in inspect.signature(torchx.fit.trainer_kwargs).parameters:
        return torchx.fit.trainer_kwargs(cfg, run, data, wrapper, None)
    return torchx.fit.trainer_kwargs(cfg, run, data, None)


def run_train_py(spec: Spec, progress_bar: bool) -> tuple[Clock, int]:
    """torchx.loop.fit, with the components built the way torchx.loop.train builds them.

    The clock marks each call of torchx.loop.train_epoch (fit looks it up in the module each
    epoch) and the return of fit; torchx's code itself is unchanged."""
    loop = torchx.loop
    cfg = spec.config(progress_bar)
    settings = loop.Settings.from_config(cfg["trainer_params"])
    device = torch.device("cpu")
    pl.seed_everything(cfg["seed"], workers=True, verbose=False)
    data, wrapper = build.data_module(cfg), build.wrapper(cfg)
    loop.check_wrapper(wrapper, cfg["train_wrapper"]["name"])
    data.prepare_data()
    data.setup("fit")
    with scratch() as tmp:
        run = Run(dir=tmp / "r", config=cfg)
        run.dir.mkdir(parents=True)
        ckpts = loop.Checkpoints(run.ckpt_dir, cfg.get("checkpoint") or {}, enabled=settings.checkpointing)
        wrapper.to(device)
        optimizer, scheds = wrapper.build_optimizers()
        state = loop.State()
        logs = train_py_logs(run, wrapper)
        report = EpochReport(None)
        clock, train_epoch = Clock(), loop.train_epoch

        def marked_epoch(*args, **kwargs):
            clock.mark()
            return train_epoch(*args, **kwargs)

        gc.collect()
        loop.train_epoch = marked_epoch
        try:
            with quiet():
                loop.fit(wrapper, data, optimizer, scheds, settings, state, ckpts, logs, report, device)
                clock.mark()
        finally:
            loop.train_epoch = train_epoch
        logs.close()
    return clock, state.step


class StepTimer(pl.Callback):
    """Marks the clock at every on_train_epoch_start and at on_train_end: Trainer construction,
    strategy setup, configure_optimizers and the model summary all happen before the first mark."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.step0: int | None = None
        self.steps = 0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.step0 is None:
            self.step0 = trainer.global_step
        self.clock.mark()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.clock.mark()
        self.steps = trainer.global_step - (self.step0 or 0)

    def result(self) -> tuple[Clock, int]:
        assert self.step0 is not None and self.steps > 0, "the timer callback never ran"
        return self.clock, self.steps


class PlainModule(pl.LightningModule):
    def __init__(self, model: nn.Module, loss_fn: nn.Module, lr: float) -> None:
        super().__init__()
        self.model, self.loss_fn, self.lr = model, loss_fn, lr

    def training_step(self, batch, batch_idx):
        x, y = batch
        return self.loss_fn(self.model(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


def run_lightning_plain(spec: Spec) -> tuple[Clock, int]:
    cfg = spec.config(False)
    pl.seed_everything(spec.seed, verbose=False)
    data = build.data_module(cfg)  # torchx's loader over the same uint8 tensor, for a like-for-like input path
    data.setup("fit")
    module = PlainModule(make_model(spec), torch_loss(spec), spec.lr)
    timer = StepTimer()
    with quiet():
        trainer = pl.Trainer(max_epochs=spec.epochs, accelerator="cpu", devices=1, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                             num_sanity_val_steps=0, limit_val_batches=0, callbacks=[timer])
        gc.collect()
        trainer.fit(module, train_dataloaders=data.train_dataloader())
    return timer.result()


def run_train_pl(spec: Spec, progress_bar: bool) -> tuple[Clock, int]:
    """torchx.fit's Trainer (its callbacks, logger and defaults) with a timer callback added."""
    cfg = spec.config(progress_bar)
    pl.seed_everything(cfg["seed"], workers=True, verbose=False)
    data, wrapper = build.data_module(cfg), build.wrapper(cfg)
    data.prepare_data()
    data.setup("fit")
    timer = StepTimer()
    with scratch() as tmp, quiet():
        run = Run(dir=tmp / "r", config=cfg)
        run.dir.mkdir(parents=True)
        kwargs = train_pl_kwargs(cfg, run, data, wrapper)
        kwargs["callbacks"].append(timer)
        trainer = torchx.fit.make_trainer(cfg, kwargs)
        gc.collect()
        trainer.fit(wrapper, datamodule=data)
    return timer.result()


# ---------------------------------------------------------------- harness


def variants(spec: Spec, data: tuple[torch.Tensor, torch.Tensor]) -> dict:
    return {
        "raw": lambda: run_raw(spec, data),
        "train.py": lambda: run_train_py(spec, False),
        "train.py +bar": lambda: run_train_py(spec, True),
        "lightning-plain": lambda: run_lightning_plain(spec),
        "train_pl.py": lambda: run_train_pl(spec, False),
        "train_pl.py +bar": lambda: run_train_pl(spec, True),
    }


def measure(spec: Spec, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seconds per step (wall, CPU) of every variant in every timed round: a run's median epoch
    divided by the steps in an epoch (the median keeps a burst of a busy neighbour out)."""
    # The warm-up round runs every variant once on 4 batches (imports, kernel selection, allocator)
    # and is dropped.
    warm = replace(spec, epochs=1, n_train=4 * spec.batch)
    for run in variants(warm, train_images(warm)).values():
        run()
    print("  warm-up round done (dropped)", file=sys.stderr, flush=True)
    runs = variants(spec, train_images(spec))
    names = list(runs)
    wall: dict[str, list[float]] = {n: [] for n in names}
    cpu: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:  # round-robin, rotated each round
            clock, steps = runs[name]()
            epochs = clock.epochs()
            if steps != spec.steps or len(epochs) != spec.epochs:
                raise RuntimeError(f"{name} ran {steps} steps in {len(epochs)} epochs, expected {spec.steps} "
                                   f"in {spec.epochs}")
            per_epoch = spec.steps // spec.epochs
            wall[name].append(statistics.median(w for w, _ in epochs) / per_epoch)
            cpu[name].append(statistics.median(c for _, c in epochs) / per_epoch)
        print(f"  round {r + 1}/{rounds} done", file=sys.stderr, flush=True)
    return wall, cpu


def ratio(per_step: dict[str, list[float]], a: str, b: str) -> float:
    """The figure: median seconds per step of `a` over that of `b` (each the median over rounds)."""
    return statistics.median(per_step[a]) / statistics.median(per_step[b])


def paired(per_step: dict[str, list[float]], a: str, b: str) -> tuple[float, float, float]:
    """Median, min and max over rounds of a/b timed in the same round: the spread shows the noise."""
    rs = [x / y for x, y in zip(per_step[a], per_step[b])]
    return statistics.median(rs), min(rs), max(rs)


TARGETS = [  # (numerator, denominator, limit, required)
    ("train.py", "raw", 1.05, True),
    ("train.py +bar", "raw", 1.05, False),
    ("train_pl.py", "lightning-plain", 1.05, False),
    ("train_pl.py", "raw", 1.35, False),
]


def report(spec: Spec, wall: dict[str, list[float]], cpu: dict[str, list[float]], rounds: int,
           threads: int) -> bool:
    n_params = sum(p.numel() for p in make_model(spec).parameters())
    steps = spec.steps
    print(f"\nmodel {spec.model} ({n_params:,} parameters), loss {spec.loss}, SGD lr {spec.lr}; synthetic uint8 "
          f"1x28x28, {spec.n_train} training samples, batch {spec.batch}, no validation")
    print(f"torch.set_num_threads({threads}) in every variant; {spec.epochs} epoch(s) = {steps} steps per timed run; "
          f"{rounds} rounds after 1 dropped warm-up round;\nvariants interleaved round-robin, order rotated each "
          f"round; a run's s/step = its median epoch / steps per epoch")
    print("checkpointing: " + ("ON (train.py Checkpoints, train_pl.py ModelCheckpoint)" if spec.checkpoints else
                               "off in every variant (train.py Checkpoints(enabled=False), train_pl.py "
                               "enable_checkpointing=False)"))
    print(f"\n{'variant':<18} {'median s/step':>14} {'ratio to raw':>13} {'per-round ratios: median (min..max)':>36} "
          f"{'CPU-time ratio':>15}")
    for name, times in wall.items():
        med, lo, hi = paired(wall, name, "raw")
        print(f"{name:<18} {statistics.median(times):>14.5f} {ratio(wall, name, 'raw'):>13.3f} "
              f"{f'{med:.3f} ({lo:.3f}..{hi:.3f})':>36} {ratio(cpu, name, 'raw'):>15.3f}")
    print("median s/step = median over rounds; ratio = that median over raw's (wall clock). Per-round ratios pair\n"
          "the two runs of one round: their spread is the noise. CPU-time ratio = the ratio from process CPU time\n"
          "(all threads): it leaves out waiting for a core, but a neighbour on the same cores still slows it.")
    ok = True
    for a, b, limit, required in TARGETS:
        value, (med, lo, hi) = ratio(wall, a, b), paired(wall, a, b)
        verdict = "PASS" if value <= limit else "FAIL"
        ok &= verdict == "PASS" or not required
        noisy = "; NOISY: rounds differ by more than 0.10, rerun on a quieter machine or with more --rounds" \
            if hi - lo > 0.10 else ""
        print(f"target {a} / {b} <= {limit:.2f}: {value:.3f} {verdict}{'' if required else ' (information)'}"
              f"   [per round {med:.3f} ({lo:.3f}..{hi:.3f}), CPU time {ratio(cpu, a, b):.3f}{noisy}]")
    return ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 rounds, 1024 samples, fewer epochs (under a minute)")
    p.add_argument("--model", choices=("tiny_cnn", "cnn", "both"), default="both")
    p.add_argument("--rounds", type=int, help="timed rounds (default 5, --quick 3); at least 3")
    p.add_argument("--epochs", type=int, help="epochs per timed run (default: tiny_cnn 10, cnn 3; --quick 2 and 1)")
    p.add_argument("--n-train", type=int, help="training samples (default 2048, --quick 1024)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for every variant (default 1)")
    p.add_argument("--checkpoints", action="store_true", help="keep torchx's checkpointing on in both torchx loops")
    args = p.parse_args()
    rounds = args.rounds or (3 if args.quick else 5)
    if rounds < 3:
        p.error("--rounds must be at least 3")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # Lightning's advice about workers and log intervals
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    print(f"torchx overhead benchmark{' --quick' if args.quick else ''}: torch {torch.__version__}, "
          f"pytorch_lightning {pl.__version__}, {os.cpu_count()} CPU cores, torch.set_num_threads({args.threads})")
    ok = True
    for model in ("tiny_cnn", "cnn") if args.model == "both" else (args.model,):
        spec = Spec(model=model, loss=LOSSES[model], epochs=args.epochs or EPOCHS[model][args.quick],
                    n_train=args.n_train or (1024 if args.quick else 2048), batch=args.batch_size, lr=0.01, seed=0,
                    checkpoints=args.checkpoints)
        t0 = time.perf_counter()
        print(f"[{model}] measuring ...", file=sys.stderr, flush=True)
        wall, cpu = measure(spec, rounds)
        ok &= report(spec, wall, cpu, rounds, args.threads)
        print(f"({model}: {time.perf_counter() - t0:.0f} s of measuring)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

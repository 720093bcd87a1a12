"""The GPU path in one prepared run: both loops on `--gpu 0` against a raw CUDA loop, bf16-mixed and
`compile: true` with their speedups, peak GPU memory, and the loss after N steps against the CPU's.

    python bench/gpu.py [--quick] [--cpu] [--rounds 3] [--steps 50]

One table per model (tiny_cnn: ~7.5k parameters, where per-step overhead shows; cnn: the classic
PyTorch MNIST network), every row measured side by side in this one process: each round runs every
variant once in a rotated order, a warm-up round is dropped, a figure is the median over the rounds.

Data: MNIST's training images (the real files beside the repository when they are there, else
synthetic MNIST-shaped images), normalised once and held on the device, served in batches of 64 by a
seeded permutation per epoch: every variant sees the same batches and none waits on a host-to-device
copy. The torchx variants read them through a data module registered here (`bench_device_mnist`), as
a user's own in-memory data module would; they run with torchx's defaults (progress bar to /dev/null,
TensorBoard + metrics.csv, a checkpoint every epoch) and no validation, which the raw loop does not do.

Variants: raw (a hand-written loop: forward, loss, backward, SGD step), train.py and train_pl.py
(`python train.py --gpu 0 --config ...` through torchx's command line, in this process), each in
float32, in bf16-mixed (`trainer_params.precision`; the raw loop under torch.autocast) and compiled
(`compile: true`; the raw loop with nn.Module.compile). Timed region: from each epoch's start to the
next's (the GPU synchronised at each mark), so start-up, the first compilation and the model summary
are outside it; the first epoch of a run (warm-up: cudnn's choice of kernels, autotuning, compiling)
is dropped.

Targets (on a GPU): train.py and train_pl.py per step <= 1.05 x raw in float32; the loss after
--steps steps of train.py on the GPU (TF32 off) equals the CPU's within 1e-3 (relative). bf16 and
compile speedups and the memory column are information. Without CUDA (or with --cpu) the same table
runs on the CPU, to show the script works; its figures are not the GPU's and no target is judged.
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
import warnings
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, interleave, mark_epochs, quiet, ratio, scratch, shared_mnist, table, target  # noqa: E402

sys.path.insert(0, str(ROOT))

import pytorch_lightning as pl  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from torch import nn  # noqa: E402

from torchx import cli, datasets, models  # noqa: E402

LOSSES = {"tiny_cnn": "ce", "cnn": "nll"}  # cnn returns log-probabilities
MEAN, STD = 0.1307, 0.3081
VARIANTS = ("raw", "train.py", "train_pl.py")
MODES = ("fp32", "bf16", "compile")


class DeviceBatches:
    """Batches of (images, labels) already on the device, in a permutation drawn from (seed, epoch); the
    epoch counts the passes over it, so both loops (and the raw one) see the same batches."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, seed: int, shuffle: bool) -> None:
        self.x, self.y, self.batch_size, self.seed, self.shuffle = x, y, batch_size, seed, shuffle
        self.epoch = 0

    def __len__(self) -> int:
        return -(-len(self.y) // self.batch_size)

    def __iter__(self):
        n = len(self.y)
        if self.shuffle:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed * 1000 + self.epoch))
            order = order.to(self.x.device)
        else:
            order = torch.arange(n, device=self.x.device)
        self.epoch += 1
        for i in range(0, n, self.batch_size):
            idx = order[i:i + self.batch_size]
            yield self.x[idx], self.y[idx]


_IMAGES: dict[int, tuple[torch.Tensor, torch.Tensor, str]] = {}  # read once: every run would read the files again


def mnist_images(n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    """The first `n` MNIST training images (uint8 [n, 1, 28, 28]) and labels, and where they came from."""
    if n not in _IMAGES:
        _IMAGES[n] = _read_images(n)
    return _IMAGES[n]


def _read_images(n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    folder = shared_mnist()
    if folder is not None and (folder / "train-images-idx3-ubyte.gz").is_file():
        from torchx.datasets.mnist import MNIST

        data = MNIST(root_dir=str(folder), val_split=0)
        data.setup("fit")
        x, y = data.splits["train"]
        return x[:n], y[:n], f"real MNIST ({folder.name}/)"
    from torchx.datasets.synthetic import Synthetic

    data = Synthetic(n_train=n, n_test=1, val_split=0)
    data.setup("fit")
    x, y = data.splits["train"]
    return x, y, "synthetic MNIST-shaped images (no MNIST files found)"


@datasets.register("bench_device_mnist")
class DeviceMNIST(pl.LightningDataModule):
    """MNIST's first `n_train` training images, normalised and held on `device`; test on 512 of them."""

    def __init__(self, n_train: int = 8192, batch_size: int = 64, device: str = "cpu", seed: int = 0) -> None:
        super().__init__()
        self.n_train, self.batch_size, self.device, self.seed = n_train, batch_size, device, seed

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self, "x"):
            return
        x, y, _ = mnist_images(self.n_train)
        self.x = x.to(self.device).float().div_(255).sub_(MEAN).div_(STD)
        self.y = y.to(self.device)
        self.batches = DeviceBatches(self.x, self.y, self.batch_size, self.seed, shuffle=True)

    def train_dataloader(self) -> DeviceBatches:
        return self.batches

    def test_dataloader(self) -> DeviceBatches:
        return DeviceBatches(self.x[:512], self.y[:512], self.batch_size, self.seed, shuffle=False)


@dataclass
class Spec:
    model: str
    epochs: int
    n_train: int
    batch: int
    device: str
    lr: float = 0.01
    seed: int = 0

    def config(self, mode: str) -> dict:
        cfg = {
            "data_module": {"name": "bench_device_mnist", "args": {"n_train": self.n_train, "batch_size": self.batch,
                                                                    "device": self.device, "seed": self.seed}},
            "train_wrapper": {"name": "base", "args": {
                "model_spec": {"name": self.model}, "loss_spec": {"name": LOSSES[self.model]},
                "optim_spec": {"name": "SGD", "args": {"lr": self.lr}}}},
            "trainer_params": {"max_epochs": self.epochs, "limit_val_batches": 0, "limit_test_batches": 1},
            "seed": self.seed,
        }
        if mode == "bf16":
            cfg["trainer_params"]["precision"] = "bf16-mixed"
        if mode == "compile":
            cfg["compile"] = True
        return cfg

    @property
    def per_epoch(self) -> int:
        return -(-self.n_train // self.batch)


class Clock:
    """A mark at every epoch start and at the end of training, the device synchronised first."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.marks = device, []

    def mark(self, *args, **kwargs) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.marks.append(time.perf_counter())

    def per_step(self, steps_per_epoch: int) -> float:
        """The median epoch after the first, per step."""
        epochs = [b - a for a, b in zip(self.marks, self.marks[1:])][1:]
        return statistics.median(epochs) / steps_per_epoch


def run_raw(spec: Spec, mode: str, data: DeviceMNIST) -> tuple[float, list[float]]:
    device = torch.device(spec.device)
    torch.manual_seed(spec.seed)
    model = models.make({"name": spec.model}).to(device)
    if mode == "compile":
        model.compile()
    loss_fn = nn.CrossEntropyLoss() if LOSSES[spec.model] == "ce" else nn.NLLLoss()
    opt = torch.optim.SGD(model.parameters(), lr=spec.lr)
    batches = DeviceBatches(data.x, data.y, spec.batch, spec.seed, shuffle=True)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if mode == "bf16" else contextlib.nullcontext()
    clock, losses = Clock(device), []
    model.train()
    for _ in range(spec.epochs):
        clock.mark()
        for x, y in batches:
            with autocast:
                loss = loss_fn(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        losses.append(float(loss))
    clock.mark()
    return clock.per_step(spec.per_epoch), losses


def run_torchx(spec: Spec, mode: str, prog: str, argv: list[str] = ()) -> tuple[float, Path]:
    """The entry point's command line in this process (`--gpu 0` on CUDA), timed per epoch; returns the
    seconds per step and the run directory (inside a scratch folder that lives until the next call)."""
    device = torch.device(spec.device)
    clock = Clock(device)
    with contextlib.ExitStack() as stack:
        work = stack.enter_context(scratch())
        cfg_file = work / "bench.yaml"
        cfg_file.write_text(yaml.safe_dump(spec.config(mode)))
        loop = mark_epochs(stack, prog, clock.mark)
        gpu = ["--gpu", str(device.index or 0)] if device.type == "cuda" else []
        gc.collect()
        with quiet():
            code = cli.main(["--config", str(cfg_file), "--save-dir", str(work), "--name", "run", *gpu, *argv],
                            prog, loop)
        if code != 0:
            raise RuntimeError(f"{prog} ({mode}) exited {code}")
        steps = json.loads((work / "run" / "results.json").read_text())["global_step"]
        if steps != spec.epochs * spec.per_epoch:
            raise RuntimeError(f"{prog} ({mode}) ran {steps} steps, expected {spec.epochs * spec.per_epoch}")
        return clock.per_step(spec.per_epoch), work / "run"


def measure(spec: Spec, rounds: int, warmup: bool) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Seconds per step and peak device memory (MB) of every variant x mode, `rounds` interleaved rounds."""
    data = DeviceMNIST(n_train=spec.n_train, batch_size=spec.batch, device=spec.device, seed=spec.seed)
    data.setup()
    cuda = torch.device(spec.device).type == "cuda"
    memory: dict[str, list[float]] = {}

    def timed(variant: str, mode: str):
        def once() -> float:
            if cuda:
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()
            seconds = run_raw(spec, mode, data)[0] if variant == "raw" else run_torchx(spec, mode, variant)[0]
            peak = torch.cuda.max_memory_allocated() / 2**20 if cuda else float("nan")
            memory.setdefault(name(variant, mode), []).append(peak)
            return seconds
        return once

    runs = {name(v, m): timed(v, m) for m in MODES for v in VARIANTS}
    return interleave(runs, rounds, warmup=warmup, label=f"[{spec.model}] "), memory


def name(variant: str, mode: str) -> str:
    return variant if mode == "fp32" else f"{variant} {mode}"


def correctness(spec: Spec, steps: int) -> tuple[float, float]:
    """train.py's training loss after `steps` steps on the device and on the CPU (float32, TF32 off, the
    same batches): the last step's loss as metrics.csv logs it."""
    losses = []
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        for device in (spec.device, "cpu"):
            one = Spec(spec.model, epochs=1, n_train=steps * spec.batch, batch=spec.batch, device=device)
            with contextlib.ExitStack() as stack:
                work = stack.enter_context(scratch())
                cfg = one.config("fp32")
                cfg["trainer_params"]["log_every_n_steps"] = steps
                (work / "c.yaml").write_text(yaml.safe_dump(cfg))
                gpu = ["--gpu", str(torch.device(device).index or 0)] if device != "cpu" else []
                with quiet():
                    code = cli.main(["--config", str(work / "c.yaml"), "--save-dir", str(work), "--name", "c", *gpu],
                                    "train.py", "torchx.loop")
                if code != 0:
                    raise RuntimeError(f"train.py on {device} exited {code}")
                rows = (work / "c" / "metrics.csv").read_text().splitlines()
                header = rows[0].split(",")
                col = header.index("train/loss_step")
                losses.append(next(float(r.split(",")[col]) for r in rows[1:] if r.split(",")[col]))
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return losses[0], losses[1]


def report(spec: Spec, wall: dict[str, list[float]], memory: dict[str, list[float]], on_gpu: bool) -> bool:
    n_params = sum(p.numel() for p in models.make({"name": spec.model}).parameters())
    print(f"\nmodel {spec.model} ({n_params:,} parameters), loss {LOSSES[spec.model]}, SGD lr {spec.lr}, batch "
          f"{spec.batch}, {spec.n_train} images on {spec.device}, {spec.epochs} epochs a run (the first dropped)")
    mem = {n: statistics.median(v) for n, v in memory.items()}
    table(wall, "raw", "ms/step", scale=1e3, digits=3, extra=("peak MB", mem))
    for variant in VARIANTS:
        for mode in ("bf16", "compile"):
            print(f"{mode} speedup of {variant}: {ratio(wall, variant, name(variant, mode)):.2f}x")
    ok = True
    for variant in ("train.py", "train_pl.py"):
        if on_gpu:
            ok &= target(wall, variant, "raw", 1.05)
        else:
            target(wall, variant, "raw", None, note="  (the CPU's figure: the target is a GPU's)")
    return ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="tiny_cnn only, fewer images, 1 round, no warm-up round")
    p.add_argument("--cpu", action="store_true", help="run on the CPU even where CUDA is available")
    p.add_argument("--rounds", type=int, help="timed rounds (default 3; --quick 1)")
    p.add_argument("--steps", type=int, default=50, help="steps of the GPU-against-CPU loss check (default 50)")
    args = p.parse_args()
    on_gpu = torch.cuda.is_available() and not args.cpu
    device = "cuda:0" if on_gpu else "cpu"
    rounds = args.rounds or (1 if args.quick else 3)
    warnings.filterwarnings("ignore")
    for logger in ("pytorch_lightning", "lightning_fabric", "torch._inductor", "torch._dynamo"):
        logging.getLogger(logger).setLevel(logging.ERROR)
    gpu_name = torch.cuda.get_device_name(0) if on_gpu else "none (CPU path)"
    _, _, source = mnist_images(1)
    print(f"torchx GPU benchmark{' --quick' if args.quick else ''}: {time.strftime('%Y-%m-%d')}, device {device}, "
          f"GPU {gpu_name}, torch {torch.__version__}, CUDA {torch.version.cuda}, pytorch_lightning {pl.__version__}, "
          f"data: {source}")
    if not on_gpu:
        torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    start, ok = time.perf_counter(), True
    sizes = {"tiny_cnn": (8192, 4), "cnn": (8192, 4)} if on_gpu else {"tiny_cnn": (1024, 3), "cnn": (512, 3)}
    for model in ("tiny_cnn",) if args.quick else ("tiny_cnn", "cnn"):
        n_train, epochs = sizes[model]
        if args.quick:
            n_train = min(n_train, 256)
        spec = Spec(model=model, epochs=epochs, n_train=n_train, batch=64, device=device)
        wall, memory = measure(spec, rounds, warmup=not args.quick)
        ok &= report(spec, wall, memory, on_gpu)
    if on_gpu:
        steps = 10 if args.quick else args.steps
        gpu_loss, cpu_loss = correctness(Spec("cnn", 1, 0, 64, device), steps)
        rel = abs(gpu_loss - cpu_loss) / max(abs(cpu_loss), 1e-12)
        passed = rel <= 1e-3
        ok &= passed
        print(f"correctness: train.py's loss after {steps} steps: GPU {gpu_loss:.6f}, CPU {cpu_loss:.6f}, relative "
              f"difference {rel:.2e} (target <= 1e-3) {'PASS' if passed else 'FAIL'}")
    else:
        print("correctness: GPU against CPU not checked (no GPU in this run)")
    print(f"took {time.perf_counter() - start:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

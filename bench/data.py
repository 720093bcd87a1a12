"""Samples per second: torchx's `mnist` loader against torchvision's MNIST pipeline.

    python bench/data.py [--quick] [--rounds N] [--data DIR]

Both read the same four decompressed IDX files (copied into a temp folder in torchvision's
MNIST/raw layout) and serve the 60,000 training images as shuffled batches of 64 float
tensors normalised with MNIST's mean and std, ready for a model:

  torchx       the `mnist` data module (val_split 0): the images are one uint8 tensor in memory;
               each batch is indexed, converted and normalised in one vectorised step
  torchvision  `torchvision.datasets.MNIST(transform=Compose([ToTensor(), Normalize(...)]))`
               through `DataLoader(batch_size=64, shuffle=True)`: one PIL image per sample

torchvision with num_workers 0, 1 and 2, torchx with its default of 0 (and, for information,
with 1 and 2: worker processes add a copy of every batch between processes, which for data
already in memory costs more than making the batch). A measurement is one epoch: create the loader's iterator
(starting its workers, if any), then draw every batch; samples per second = samples / that
time. Loading the files (the datasets' constructors) is timed once, apart, for information.
--quick draws the first 160 batches of each epoch instead of all 938, and skips the warm-up.

The real MNIST files are read from --data (default: ../shared/data/mnist beside the
repository, or ./load/mnist); when neither has them, random images in the same IDX format
are written instead (the speed does not depend on the pixels).
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, allocator_note, interleave, scratch, shared_mnist, steady_allocator, table, target  # noqa: E402

steady_allocator()  # before anything is imported or allocated

sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torchvision  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision import transforms  # noqa: E402

from torchx.datasets import make as make_data  # noqa: E402
from torchx.datasets.mnist import FILES, find_file  # noqa: E402

BATCH, MEAN, STD = 64, 0.1307, 0.3081
WORKERS = (0, 1, 2)
QUICK_BATCHES = 160


def idx_bytes(data: torch.Tensor) -> bytes:
    header = bytes([0, 0, 8, data.dim()]) + b"".join(n.to_bytes(4, "big") for n in data.shape)
    return header + data.numpy().tobytes()


def prepare(source: Path | None, dest: Path) -> str:
    """The four IDX files, decompressed, in dest/MNIST/raw; returns where they came from."""
    raw = dest / "MNIST" / "raw"
    raw.mkdir(parents=True)
    if source is not None and all(find_file(source, stem) for stem in FILES):
        for stem in FILES:
            path = find_file(source, stem)
            data = path.read_bytes()
            (raw / stem).write_bytes(gzip.decompress(data) if path.suffix == ".gz" else data)
        return f"real MNIST from {os.path.relpath(source, ROOT)}"
    g = torch.Generator().manual_seed(0)
    for split, n in (("train", 60000), ("t10k", 10000)):
        (raw / f"{split}-images-idx3-ubyte").write_bytes(
            idx_bytes(torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)))
        (raw / f"{split}-labels-idx1-ubyte").write_bytes(
            idx_bytes(torch.randint(0, 10, (n,), generator=g, dtype=torch.uint8)))
    return "random images in MNIST's IDX format (no MNIST files found)"


def torchx_loader(root: Path, workers: int) -> DataLoader:
    data = make_data({"name": "mnist", "args": {"root_dir": str(root), "batch_size": BATCH, "val_split": 0,
                                                "num_workers": workers, "download": False}})
    data.setup("fit")
    return data.train_dataloader()


def torchvision_dataset(root: Path) -> torchvision.datasets.MNIST:
    pipeline = transforms.Compose([transforms.ToTensor(), transforms.Normalize((MEAN,), (STD,))])
    return torchvision.datasets.MNIST(str(root), train=True, download=False, transform=pipeline)


def samples_per_second(loader: DataLoader, batches: int | None) -> float:
    n = 0
    start = time.perf_counter()
    for i, (x, _) in enumerate(loader):
        n += len(x)
        if batches is not None and i + 1 == batches:
            break
    return n / (time.perf_counter() - start)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK_BATCHES} batches per epoch, no warm-up round")
    p.add_argument("--rounds", type=int, help="timed rounds (default 5, --quick 3); at least 3")
    p.add_argument("--data", type=Path, help="folder with the MNIST IDX files (default: ../shared/data/mnist)")
    args = p.parse_args()
    rounds = args.rounds or (3 if args.quick else 5)
    if rounds < 3:
        p.error("--rounds must be at least 3")
    batches = QUICK_BATCHES if args.quick else None
    torch.set_num_threads(1)  # a loader's worker processes get one thread each too
    print(f"torchx data benchmark{' --quick' if args.quick else ''}: torch {torch.__version__}, torchvision "
          f"{torchvision.__version__}, {os.cpu_count()} CPU cores, torch.set_num_threads(1), {allocator_note()}")
    with scratch() as work:
        source = prepare(args.data or shared_mnist() or ROOT / "load" / "mnist", work)
        start = time.perf_counter()
        torchx_loader(work, 0)
        load_torchx = time.perf_counter() - start
        start = time.perf_counter()
        tv = torchvision_dataset(work)
        load_tv = time.perf_counter() - start
        variants = {}
        for w in WORKERS:
            variants[f"torchx {w} workers"] = lambda w=w: samples_per_second(torchx_loader(work, w), batches)
            variants[f"torchvision {w} workers"] = lambda w=w: samples_per_second(
                DataLoader(tv, batch_size=BATCH, shuffle=True, num_workers=w), batches)
        rates = interleave(variants, rounds, warmup=not args.quick)
    print(f"\n{source}; {len(tv)} training images, batch {BATCH}, shuffled, normalised float32; "
          f"{'first ' + str(batches) + ' batches' if batches else 'one epoch'} per measurement; {rounds} rounds"
          f"{'' if args.quick else ' after 1 dropped warm-up round'}, interleaved")
    table(rates, "torchvision 0 workers", "samples/s", digits=0)
    ok = True
    for w in WORKERS:  # torchx as configured by default against each torchvision set-up
        ok &= target(rates, "torchx 0 workers", f"torchvision {w} workers", 10, at_least=True)
    for w in WORKERS[1:]:
        target(rates, f"torchx {w} workers", f"torchvision {w} workers", None,
               note="  (information: torchx with workers it does not need)")
    print(f"loading the files (once, not in the ratios): torchx mnist setup {load_torchx:.2f} s, "
          f"torchvision MNIST() {load_tv:.2f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Samples per second: torchx's loaders against torchvision's, plain (MNIST) and augmented (CIFAR-10).

    python bench/data.py [--quick] [--rounds N] [--data DIR] [--cifar DIR] [--only mnist|cifar]

Two tables, each measured in its own interleaved rounds.

MNIST, plain batches. Both read the same four decompressed IDX files (copied into a temp folder in
torchvision's MNIST/raw layout) and serve the 60,000 training images as shuffled batches of 64
float tensors normalised with MNIST's mean and std, ready for a model:

  torchx       the `mnist` data module (val_split 0): the images are one uint8 tensor in memory;
               each batch is indexed, converted and normalised in one vectorised step
  torchvision  `torchvision.datasets.MNIST(transform=Compose([ToTensor(), Normalize(...)]))`
               through `DataLoader(batch_size=64, shuffle=True)`: one PIL image per sample

CIFAR-10, augmented batches. Both read the same python-version pickle batches in a temp
`cifar-10-batches-py/` folder and serve the 50,000 training images as shuffled batches of 128,
augmented with the standard recipe RandomCrop(32, padding=4) + RandomHorizontalFlip +
Normalize(CIFAR-10's mean and std per channel), and in a second set of rows + RandomErasing:

  torchx       the `cifar10` data module (val_split 0) with `train_transforms` set to the recipe,
               as a config sets it: the loader indexes a uint8 batch, and every op of the recipe
               runs on the whole batch in `on_after_batch_transfer`, which the training loops call
               on the training device; here the device is the CPU and the timed loop calls it on
               every batch
  torchvision  `torchvision.datasets.CIFAR10(transform=v2.Compose([ToImage(), RandomCrop(32,
               padding=4), RandomHorizontalFlip(), ToDtype(float32, scale=True), Normalize(...)]))`
               through `DataLoader(batch_size=128, shuffle=True)`: one PIL image per sample

torchvision with num_workers 0, 1 and 2, torchx with its default of 0 (and, for information,
with 1 and 2: worker processes add a copy of every batch between processes, which for data
already in memory costs more than making the batch). A measurement is one epoch: create the loader's iterator
(starting its workers, if any), then draw every batch; samples per second = samples / that
time. Loading the files (the datasets' constructors) is timed once, apart, for information.
--quick draws the first 160 MNIST batches (30 CIFAR batches) of each epoch instead of all 938
(391), and skips the warm-up.

The real MNIST files are read from --data (default: ../shared/data/mnist beside the
repository, or ./load/mnist), the real CIFAR-10 batches from --cifar (default:
../shared/data/cifar10 beside the repository, or ./load/cifar10); when they are not there,
random images in the same formats are written instead (the speed does not depend on the pixels).
"""

from __future__ import annotations

import argparse
import copy
import gzip
import hashlib
import io
import os
import pickle
import shutil
import struct
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import ROOT, allocator_note, interleave, scratch, shared_mnist, steady_allocator, table, target  # noqa: E402

steady_allocator()  # before anything is imported or allocated

sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torchvision  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402
from torchvision import transforms  # noqa: E402
from torchvision.datasets.vision import StandardTransform  # noqa: E402
from torchvision.transforms import v2  # noqa: E402

from torchx.datasets import make as make_data  # noqa: E402
from torchx.datasets.mnist import FILES, find_file  # noqa: E402

BATCH, MEAN, STD = 64, 0.1307, 0.3081
WORKERS = (0, 1, 2)
QUICK_BATCHES = 160

CIFAR_BATCH, CIFAR_QUICK_BATCHES = 128, 30
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)  # per channel, of the training set
CIFAR_FOLDER = "cifar-10-batches-py"
CIFAR_FILES = (*(f"data_batch_{k}" for k in range(1, 6)), "test_batch", "batches.meta")
# The recipe as a config spells it (torchx), and as torchvision's transforms (one image at a time)
RECIPE = [{"name": "RandomCrop", "args": {"size": 32, "padding": 4}}, {"name": "RandomHorizontalFlip"},
          {"name": "Normalize", "args": {"mean": list(CIFAR_MEAN), "std": list(CIFAR_STD)}}]
ERASING = [{"name": "RandomErasing"}]
RECIPES = {"cifar": (RECIPE, []), "+erase": (RECIPE + ERASING, [v2.RandomErasing()])}


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


def samples_per_second(loader: DataLoader, batches: int | None,
                       finish: Callable[[object, int], object] | None = None) -> float:
    """Draw `batches` batches (None: the epoch) from a new iterator; `finish(batch, 0)`, when given,
    runs on every batch inside the clock (a data module's on_after_batch_transfer)."""
    n = 0
    start = time.perf_counter()
    for i, batch in enumerate(loader):
        x = (finish(batch, 0) if finish is not None else batch)[0]
        n += len(x)
        if batches is not None and i + 1 == batches:
            break
    return n / (time.perf_counter() - start)


def mnist_table(args: argparse.Namespace, rounds: int) -> bool:
    batches = QUICK_BATCHES if args.quick else None
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
        rates = interleave(variants, rounds, warmup=not args.quick, label="mnist: ")
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
    return ok


# ---------------------------------------------------------------- CIFAR-10, augmented


class Py2Pickler(pickle._Pickler):
    """Pickles as Python 2's cPickle wrote the official batches: protocol 2, with every byte string
    a Python 2 `str`, which Python 3 reads back as bytes (torchx) or, with encoding='latin1', as
    str (torchvision's reader looks its keys up as str)."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_str


def py2_pickle(obj: object) -> bytes:
    out = io.BytesIO()
    Py2Pickler(out, protocol=2).dump(obj)
    return out.getvalue()


def cifar_source(given: Path | None) -> Path | None:
    """The folder holding the real CIFAR-10 batches (itself or its cifar-10-batches-py/), if any."""
    beside = (ROOT / ".." / "shared" / "data" / "cifar10").resolve()
    for folder in ([given] if given else [beside, ROOT / "load" / "cifar10"]):
        for path in (folder, folder / CIFAR_FOLDER):
            if all((path / name).is_file() for name in CIFAR_FILES):
                return path
    return None


def prepare_cifar(given: Path | None, dest: Path) -> str:
    """The seven files of the python-version release in dest/cifar-10-batches-py; returns where
    they came from."""
    folder = dest / CIFAR_FOLDER
    folder.mkdir(parents=True)
    source = cifar_source(given)
    if source is not None:
        for name in CIFAR_FILES:
            shutil.copyfile(source / name, folder / name)
        real = "real CIFAR-10" if md5s(folder) == official_md5s() else "CIFAR-10 batches (not the official files)"
        return f"{real} from {os.path.relpath(source, ROOT)}"
    g = torch.Generator().manual_seed(0)
    for k, name in enumerate(CIFAR_FILES[:-1]):
        images = torch.randint(0, 256, (10000, 3 * 32 * 32), generator=g, dtype=torch.uint8)  # planes R, G, B
        labels = torch.randint(0, 10, (10000,), generator=g).tolist()
        title = b"testing batch 1 of 1" if name == "test_batch" else f"training batch {k + 1} of 5".encode()
        batch = {b"batch_label": title, b"labels": labels, b"data": images.numpy(),
                 b"filenames": [f"image_{k}_{i}.png".encode() for i in range(10000)]}
        (folder / name).write_bytes(py2_pickle(batch))
    meta = {b"num_cases_per_batch": 10000, b"num_vis": 3 * 32 * 32,
            b"label_names": [c.encode() for c in ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                                                  "horse", "ship", "truck")]}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    return "random images in CIFAR-10's pickle format (no CIFAR-10 batches found)"


def md5s(folder: Path) -> dict[str, str]:
    return {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in CIFAR_FILES}


def official_md5s() -> dict[str, str]:
    release = torchvision.datasets.CIFAR10
    return dict(release.train_list + release.test_list + [[release.meta["filename"], release.meta["md5"]]])


def torchvision_cifar(root: Path) -> dict[str, torchvision.datasets.CIFAR10]:
    """torchvision's CIFAR10 on root/cifar-10-batches-py, one per recipe (sharing the images). It
    accepts only files with the official md5s; for files written here, a subclass gives it theirs,
    and its reader runs unchanged."""
    release = torchvision.datasets.CIFAR10
    md5 = md5s(root / CIFAR_FOLDER)
    if md5 != official_md5s():
        release = type("WrittenCIFAR10", (release,), {
            "train_list": [[n, md5[n]] for n, _ in release.train_list],
            "test_list": [[n, md5[n]] for n, _ in release.test_list],
            "meta": {**release.meta, "md5": md5[release.meta["filename"]]}})
    recipe = [v2.ToImage(), v2.RandomCrop(32, padding=4), v2.RandomHorizontalFlip(),
              v2.ToDtype(torch.float32, scale=True), v2.Normalize(CIFAR_MEAN, CIFAR_STD)]
    out = {}
    for name, (_, extra) in RECIPES.items():
        if not out:
            out[name] = release(str(root), train=True, download=False, transform=v2.Compose(recipe + extra))
        else:  # the same images, another transform
            out[name] = copy.copy(next(iter(out.values())))
            out[name].transform = v2.Compose(recipe + extra)
            out[name].transforms = StandardTransform(out[name].transform)
    return out


def torchx_cifar(root: Path, recipe: list[dict], workers: int) -> object:
    """The `cifar10` data module as a config builds it, with the recipe as its train_transforms."""
    data = make_data({"name": "cifar10", "args": {"root_dir": str(root), "batch_size": CIFAR_BATCH, "val_split": 0,
                                                  "num_workers": workers, "train_transforms": recipe}})
    data.setup("fit")
    return data


def first_batch(loader: DataLoader, finish: Callable | None = None) -> torch.Tensor:
    batch = next(iter(loader))
    return (finish(batch, 0) if finish is not None else batch)[0]


def cifar_table(args: argparse.Namespace, rounds: int) -> bool:
    batches = CIFAR_QUICK_BATCHES if args.quick else None
    with scratch() as work:
        source = prepare_cifar(args.cifar, work)
        start = time.perf_counter()
        modules = {("cifar", 0): torchx_cifar(work, RECIPE, 0)}
        load_torchx = time.perf_counter() - start
        modules.update({("cifar", w): torchx_cifar(work, RECIPE, w) for w in WORKERS[1:]})
        modules[("+erase", 0)] = torchx_cifar(work, RECIPE + ERASING, 0)
        start = time.perf_counter()
        tv = torchvision_cifar(work)
        load_tv = time.perf_counter() - start
        for name, data in tv.items():  # both sides make the same batches, and torchx does all its work per batch
            ours = first_batch(modules[(name, 0)].train_dataloader(), modules[(name, 0)].on_after_batch_transfer)
            theirs = first_batch(DataLoader(data, batch_size=CIFAR_BATCH, shuffle=True))
            assert ours.shape == theirs.shape and ours.dtype == theirs.dtype, (ours.shape, ours.dtype, theirs.shape)
        pipeline = modules[("cifar", 0)].pipelines["train"]
        assert not pipeline.per_image, pipeline.describe()
        variants = {}
        for (name, w), data in modules.items():
            variants[f"{name} torchx {w}w"] = lambda data=data: samples_per_second(
                data.train_dataloader(), batches, data.on_after_batch_transfer)
            if w == 0:
                for tw in WORKERS:
                    variants[f"{name} torchvision {tw}w"] = lambda data=tv[name], tw=tw: samples_per_second(
                        DataLoader(data, batch_size=CIFAR_BATCH, shuffle=True, num_workers=tw), batches)
        rates = interleave(variants, rounds, warmup=not args.quick, label="cifar: ")
    print(f"\n{source}; {len(tv['cifar'])} training images 3x32x32, batch {CIFAR_BATCH}, shuffled, augmented "
          f"float32; {'first ' + str(batches) + ' batches' if batches else 'one epoch'} per measurement; "
          f"{rounds} rounds{'' if args.quick else ' after 1 dropped warm-up round'}, interleaved; Nw = N workers")
    print("cifar: RandomCrop(32, padding=4), RandomHorizontalFlip, Normalize(CIFAR-10 mean, std per channel); "
          "+erase: the same, then RandomErasing()")
    print("torchx's cifar10 train_transforms, where each op runs:\n" +
          "\n".join(f"  {line}" for line in pipeline.describe()) + "\n  (+erase: RandomErasing after them, per batch)")
    for name in RECIPES:
        table({k: v for k, v in rates.items() if k.startswith(name + " ")}, f"{name} torchvision 0w", "samples/s",
              digits=0)
    print()
    ok = True
    for w in WORKERS:  # the recipe, torchx as configured by default, against each torchvision set-up
        ok &= target(rates, "cifar torchx 0w", f"cifar torchvision {w}w", 10, at_least=True)
    for w in WORKERS:
        target(rates, "+erase torchx 0w", f"+erase torchvision {w}w", None, note="  (information)")
    for w in WORKERS[1:]:
        target(rates, f"cifar torchx {w}w", f"cifar torchvision {w}w", None,
               note="  (information: torchx with workers it does not need)")
    print(f"loading the files (once, not in the ratios): torchx cifar10 setup {load_torchx:.2f} s, "
          f"torchvision CIFAR10() {load_tv:.2f} s")
    return ok


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help=f"{QUICK_BATCHES} MNIST / {CIFAR_QUICK_BATCHES} CIFAR batches per epoch, no warm-up round")
    p.add_argument("--rounds", type=int, help="timed rounds (default 5, --quick 3); at least 3")
    p.add_argument("--data", type=Path, help="folder with the MNIST IDX files (default: ../shared/data/mnist)")
    p.add_argument("--cifar", type=Path, help="folder with the CIFAR-10 python batches, or the folder holding "
                                              f"{CIFAR_FOLDER}/ (default: ../shared/data/cifar10)")
    p.add_argument("--only", choices=("mnist", "cifar"), help="measure one table (default: both)")
    args = p.parse_args()
    rounds = args.rounds or (3 if args.quick else 5)
    if rounds < 3:
        p.error("--rounds must be at least 3")
    if args.cifar is not None and cifar_source(args.cifar) is None:
        p.error(f"--cifar {args.cifar}: the CIFAR-10 python batches ({', '.join(CIFAR_FILES)}) are not there, "
                f"nor in its {CIFAR_FOLDER}/")
    torch.set_num_threads(1)  # a loader's worker processes get one thread each too
    print(f"torchx data benchmark{' --quick' if args.quick else ''}: torch {torch.__version__}, torchvision "
          f"{torchvision.__version__}, {os.cpu_count()} CPU cores, torch.set_num_threads(1), {allocator_note()}")
    ok = True
    if args.only != "cifar":
        ok &= mnist_table(args, rounds)
    if args.only != "mnist":
        ok &= cifar_table(args, rounds)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

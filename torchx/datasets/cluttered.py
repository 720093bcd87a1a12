"""Cluttered MNIST: each digit at a random place on a larger canvas, among fragments of other digits.

Image i of a split is MNIST digit i of that split, pasted at a random position on an empty
canvas, with `n_clutter` fragments (`fragment` pixels each) cut at random from other digits of
the same MNIST split and pasted at random positions; overlaps combine with max, so pixels stay
uint8. Every random number comes from a torch.Generator seeded by `data_seed` and the split
(integers only, on the CPU), so a seed gives bitwise the same images on every machine, and the
first N images do not depend on how many are made: `n_train: 1000` gives the first 1000 images
of the full set.

The images are made once and cached in `root_dir`, in a file whose name holds every generation
setting and a hash of the MNIST files, so other settings or other MNIST files never reuse it. The
file (magic, JSON header, raw uint8 arrays) records a sha256 of its arrays; a torn, truncated or
corrupt one is noticed, said on stderr, and made again.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any, NamedTuple

import torch

from torchx.datasets import register
from torchx.datasets.base import FileDataModule
from torchx.datasets.mnist import MNIST
from torchx.errors import ConfigError

DIGIT = 28  # MNIST's side
VERSION = 1  # of the generator: bump it when the same settings would give other pixels
MAGIC = b"TXCLUT1\n"
Splits = dict[str, tuple[torch.Tensor, torch.Tensor]]  # split -> (images, labels)
SPLITS = {"train": 0, "test": 1}  # a split's own random stream: the test images do not depend on n_train
KEYS = [f"{split}/{part}" for split in SPLITS for part in ("images", "labels")]  # a cache file's arrays, in order


class Plan(NamedTuple):
    """Where everything of each image goes: the digit's offset on the canvas [n, 2] (top, left);
    for each of the k fragments the digit it is cut from [n, k], its offset in that digit
    [n, k, 2] and on the canvas [n, k, 2]."""

    digit_at: torch.Tensor
    source: torch.Tensor
    cut_at: torch.Tensor
    paste_at: torch.Tensor


def _pair(value: Any) -> tuple[int, int] | None:
    """(h, w) from an int or a [h, w] list of ints; None if it is neither."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value, value
    if (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        return int(value[0]), int(value[1])
    return None


def plan(n: int, source_size: int, canvas: tuple[int, int], n_clutter: int, fragment: tuple[int, int],
         seed: int, split: str = "train") -> Plan:
    """The random layout of the first `n` images of a split of `source_size` digits.

    Row i of one [n, 2 + 5k] draw of 62-bit integers holds everything image i needs, so image i
    depends on (seed, split, i) alone, never on n. A fragment of image i comes from any digit of
    the split but digit i itself.
    """
    g = torch.Generator().manual_seed(seed * 2 + SPLITS[split])
    raw = torch.randint(0, 2**62, (n, 2 + 5 * n_clutter), generator=g)  # taken modulo r below: a bias < r / 2**62
    (h, w), (fh, fw) = canvas, fragment
    digit_at = raw[:, :2] % torch.tensor([h - DIGIT + 1, w - DIGIT + 1])
    parts = raw[:, 2:].reshape(n, n_clutter, 5)
    others = max(source_size - 1, 1)  # digit i + 1 + (0 .. N-2), wrapped around: any digit but i
    source = (torch.arange(n).unsqueeze(1) + 1 + parts[..., 0] % others) % max(source_size, 1)
    cut_at = parts[..., 1:3] % torch.tensor([DIGIT - fh + 1, DIGIT - fw + 1])
    paste_at = parts[..., 3:5] % torch.tensor([h - fh + 1, w - fw + 1])
    return Plan(digit_at, source, cut_at, paste_at)


def _windows(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Every `size` window of every image of x [n, H, W], as a view [n, H - h + 1, W - w + 1, h, w]:
    writing into the window at [i, top, left] writes into image i."""
    return x.unfold(1, size[0], 1).unfold(2, size[1], 1)


def compose(digits: torch.Tensor, layout: Plan, canvas: tuple[int, int], fragment: tuple[int, int]) -> torch.Tensor:
    """The images [n, 1, H, W] (uint8) that `layout` describes, made from the split's digits
    [N, 28, 28]; image i shows digits[i]. Vectorised over images: each fragment slot and the digit
    is one gather and one scatter of whole windows, so no index is computed per pixel."""
    n, k = layout.source.shape
    out = torch.zeros(n, *canvas, dtype=torch.uint8)
    image = torch.arange(n)
    cuts, slots = _windows(digits, fragment), _windows(out, fragment)
    for j in range(k):
        pieces = cuts[layout.source[:, j], layout.cut_at[:, j, 0], layout.cut_at[:, j, 1]]  # [n, h, w]
        at = (image, layout.paste_at[:, j, 0], layout.paste_at[:, j, 1])
        slots[at] = torch.maximum(slots[at], pieces)
    slots = _windows(out, (DIGIT, DIGIT))
    at = (image, layout.digit_at[:, 0], layout.digit_at[:, 1])
    slots[at] = torch.maximum(slots[at], digits[:n])  # last: clutter never hides the digit
    return out.unsqueeze(1)


def _file_hash(paths: list[Path]) -> str:
    """One sha256 over the names and bytes of the MNIST files the images are made from."""
    h = hashlib.sha256()
    for path in paths:
        h.update(path.name.encode() + b"\0")
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError as e:
            raise ConfigError(f"{path}: cannot read it ({e.strerror or e})") from None
    return h.hexdigest()


class _Unusable(Exception):
    """The cache file is torn, truncated, corrupt or not for these settings: make it again."""


def _arrays(data: Splits) -> dict[str, torch.Tensor]:
    """The arrays a cache file holds, in KEYS order, all uint8 (labels too: they run from 0 to 9)."""
    out = {}
    for split in SPLITS:
        images, labels = data[split]
        out[f"{split}/images"], out[f"{split}/labels"] = images.contiguous(), labels.to(torch.uint8).contiguous()
    return out


def write_cache(path: Path, data: Splits, settings: dict) -> None:
    """Magic, a JSON header (settings, array shapes, sha256 of the payload), then the raw arrays.

    Written to a temporary file of this process's own and moved into place with os.replace, so a
    reader (another DDP rank too) sees the whole old file or the whole new one, never a torn one.
    """
    arrays = _arrays(data)
    views = [memoryview(t.reshape(-1).numpy()) for t in arrays.values()]  # their bytes, not a copy
    digest = hashlib.sha256()
    for view in views:
        digest.update(view)
    header = json.dumps({"settings": settings, "sha256": digest.hexdigest(),
                         "arrays": {k: list(t.shape) for k, t in arrays.items()}}).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(MAGIC + len(header).to_bytes(8, "little") + header)
            for view in views:
                f.write(view)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_cache(path: Path, settings: dict) -> Splits:
    """What write_cache wrote for `settings`; raises _Unusable saying what is wrong with it."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        start = f.read(len(MAGIC) + 8)
        if len(start) < len(MAGIC) + 8 or not start.startswith(MAGIC):
            raise _Unusable("it does not start like a cluttered_mnist cache file")
        n = int.from_bytes(start[len(MAGIC):], "little")
        if n > 1 << 20:
            raise _Unusable(f"its header claims {n} bytes")
        try:
            header = json.loads(f.read(n))
            shapes = {str(k): torch.Size(int(s) for s in v) for k, v in header["arrays"].items()}
            expected = str(header["sha256"])
        except (ValueError, KeyError, TypeError, AttributeError, RuntimeError) as e:
            raise _Unusable(f"its header is unreadable ({e})") from None
        if header.get("settings") != settings:
            raise _Unusable("its header records other settings")
        if list(shapes) != KEYS:
            raise _Unusable(f"it holds the arrays {list(shapes)}, not {KEYS}")
        h, w = settings["canvas"]
        for split in SPLITS:
            images, labels = shapes[f"{split}/images"], shapes[f"{split}/labels"]
            if len(labels) != 1 or images != (labels[0], 1, h, w):
                raise _Unusable(f"its {split} arrays have shapes {list(images)} and {list(labels)}")
        total = len(start) + n + sum(s.numel() for s in shapes.values())  # uint8 throughout
        if size != total:
            raise _Unusable(f"it has {size} bytes, its header says {total}")
        digest, arrays = hashlib.sha256(), {}
        for key, shape in shapes.items():  # each array into its own buffer: no copy of the whole file
            buffer = bytearray(shape.numel())
            if f.readinto(buffer) != len(buffer):
                raise _Unusable("it ended early")
            digest.update(buffer)
            arrays[key] = torch.frombuffer(buffer, dtype=torch.uint8).reshape(shape) if buffer else \
                torch.empty(shape, dtype=torch.uint8)
    if digest.hexdigest() != expected:
        raise _Unusable("its checksum does not match its contents")
    return {split: (arrays[f"{split}/images"], arrays[f"{split}/labels"].long()) for split in SPLITS}


@register("cluttered_mnist")
class ClutteredMNIST(FileDataModule):
    """MNIST digits at random positions on a `canvas`, among `n_clutter` fragments of other digits.

    Made from the MNIST IDX files in `mnist_dir` (read by the `mnist` data module; `download`
    fetches them) and cached in `root_dir`. Train images come from MNIST's train split, test
    images from its test split; `n_train` / `n_test` take the first N digits (null: all).
    """

    # over the 60,000 default (60x60, 8 fragments of 8x8, data_seed 0) training images of real MNIST
    mean, std = 0.0572, 0.2146
    num_classes, in_channels = 10, 1

    def __init__(self, root_dir: str = "./load/cluttered_mnist", mnist_dir: str = "./load/mnist",
                 download: bool = False, canvas: int | list[int] = 60, n_clutter: int = 8,
                 fragment: int | list[int] = 8, data_seed: int = 0, n_train: int | None = None,
                 n_test: int | None = None, batch_size: int = 64, num_workers: int = 0,
                 val_split: float = 5000, pin_memory: bool = False, shuffle: bool = True,
                 drop_last: bool = False, split_seed: int = 0, eval_batch_size: int | None = None,
                 mean: float | None = None, std: float | None = None,
                 train_transforms: list[dict] | None = None, eval_transforms: list[dict] | None = None,
                 fold: int | None = None, folds: int | None = None, fold_seed: int = 0) -> None:
        size = _pair(canvas)
        if size is None or min(size) < DIGIT:
            raise ConfigError(f"canvas={canvas!r} is not a canvas an MNIST digit fits on; it must be an int or "
                              f"[height, width] of at least {DIGIT} (the digit's side)")
        frag = _pair(fragment)
        if frag is None or not (1 <= min(frag) and max(frag) <= DIGIT):
            raise ConfigError(f"fragment={fragment!r} is not a fragment that can be cut from a digit; it must be "
                              f"an int or [height, width] from 1 to {DIGIT}")
        if not isinstance(n_clutter, int) or isinstance(n_clutter, bool) or n_clutter < 0:
            raise ConfigError(f"n_clutter={n_clutter!r} must be a whole number of fragments, 0 or more")
        if not isinstance(data_seed, int) or isinstance(data_seed, bool) or not 0 <= data_seed < 2**62:
            raise ConfigError(f"data_seed={data_seed!r} must be a whole number from 0 to 2**62 - 1")
        for name, value, least in (("n_train", n_train, 1), ("n_test", n_test, 0)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < least):
                raise ConfigError(f"{name}={value!r} must be a whole number of images, at least {least} "
                                  f"(or null: every digit of MNIST's {name[2:]} split)")
        super().__init__(root_dir=root_dir, download=download, batch_size=batch_size, num_workers=num_workers,
                         val_split=val_split, pin_memory=pin_memory, shuffle=shuffle, drop_last=drop_last,
                         split_seed=split_seed, eval_batch_size=eval_batch_size, mean=mean, std=std,
                         train_transforms=train_transforms, eval_transforms=eval_transforms,
                         fold=fold, folds=folds, fold_seed=fold_seed)
        self.source = MNIST(root_dir=mnist_dir, download=download)
        self.source.root_arg = "mnist_dir"  # its messages point at the argument that names its folder here
        self.canvas, self.fragment, self.n_clutter, self.data_seed = size, frag, n_clutter, data_seed
        self.n_train, self.n_test = n_train, n_test
        self.image_size: int | list[int] = size[0] if size[0] == size[1] else list(size)
        self.cache_file: Path | None = None  # known once the MNIST files are

    # ------------------------------------------------------------ the MNIST source, as `mnist` has it

    def missing(self) -> list[str]:
        return self.source.missing()

    def fetch(self) -> None:
        self.source.fetch()

    def missing_message(self, missing: list[str]) -> str:
        return self.source.missing_message(missing)

    def data_files(self) -> list[Path]:
        mnist = self.source.data_files()
        if self.cache_file is None and len(mnist) == 4:
            self.cache_file = self.cache_path(_file_hash(mnist))
        return ([self.cache_file] if self.cache_file is not None else []) + mnist

    # ------------------------------------------------------------ generation and the cache

    def settings(self, mnist_hash: str) -> dict:
        """Everything the pixels depend on, as the cache file's header records it."""
        return {"version": VERSION, "canvas": list(self.canvas), "n_clutter": self.n_clutter,
                "fragment": list(self.fragment), "data_seed": self.data_seed, "n_train": self.n_train,
                "n_test": self.n_test, "mnist_sha256": mnist_hash}

    def cache_path(self, mnist_hash: str) -> Path:
        """The cache file for these settings and the MNIST files of hash `mnist_hash`."""
        (h, w), (fh, fw) = self.canvas, self.fragment
        count = {s: "all" if c is None else str(c) for s, c in (("train", self.n_train), ("test", self.n_test))}
        return self.root_dir / (f"cluttered-v{VERSION}-canvas{h}x{w}-clutter{self.n_clutter}-fragment{fh}x{fw}"
                                f"-seed{self.data_seed}-train{count['train']}-test{count['test']}"
                                f"-mnist{mnist_hash[:16]}.bin")

    def generate(self, digits: Splits) -> Splits:
        """The cluttered images and labels of each split, from the MNIST splits `digits`; refuses
        counts larger than MNIST has."""
        data = {}
        for split, wanted in (("train", self.n_train), ("test", self.n_test)):
            images, labels = digits[split]
            have = len(labels)
            if wanted is not None and wanted > have:
                raise ConfigError(f"n_{split}={wanted} is more than the {have} digits of MNIST's {split} split in "
                                  f"'{self.source.root_dir}'; use at most {have} (or null for all of them)")
            n = have if wanted is None else wanted
            if n and self.n_clutter and have < 2:
                raise ConfigError(f"n_clutter={self.n_clutter} needs at least 2 digits in MNIST's {split} split "
                                  f"in '{self.source.root_dir}' (fragments come from other digits), it has {have}")
            layout = plan(n, have, self.canvas, self.n_clutter, self.fragment, self.data_seed, split)
            data[split] = (compose(images[:, 0], layout, self.canvas, self.fragment), labels[:n].clone())
        return data

    def read(self) -> Splits:
        mnist_hash = _file_hash(self.source.data_files())
        path = self.cache_file = self.cache_path(mnist_hash)
        settings = self.settings(mnist_hash)
        data = None
        if path.is_file():
            try:
                data = read_cache(path, settings)
            except (_Unusable, ValueError, RuntimeError) as e:  # the latter two: a header nobody wrote
                print(f"cluttered_mnist: the cache file {path} is unusable ({e}); making the images again",
                      file=sys.stderr)
            except OSError as e:
                print(f"cluttered_mnist: cannot read the cache file {path} ({e.strerror or e}); making the "
                      f"images again", file=sys.stderr)
        if data is None:
            data = self.generate(self.source.read())
            self._store(path, data, settings)
        if not len(data["test"][1]):
            del data["test"]  # n_test: 0, no test set
        return data

    def _store(self, path: Path, data: Splits, settings: dict) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_cache(path, data, settings)
        except OSError as e:
            print(f"cluttered_mnist: cannot write the cache file {path} ({e.strerror or e}); using the images "
                  f"made in memory (point data_module.args.root_dir at a writable folder to keep them)",
                  file=sys.stderr)

    def describe(self) -> str:
        (h, w), (fh, fw) = self.canvas, self.fragment
        return (f"ClutteredMNIST(canvas={h}x{w}, n_clutter={self.n_clutter}, fragment={fh}x{fw}, "
                f"data_seed={self.data_seed}, batch_size={self.batch_size}, val_split={self.val_split}, "
                f"num_workers={self.num_workers})")

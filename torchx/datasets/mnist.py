"""MNIST from the four IDX files, held in memory as one uint8 tensor."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import torch

from torchx.datasets import register
from torchx.datasets.base import FileDataModule
from torchx.errors import ConfigError

# name -> (magic number, md5 of the canonical .gz file)
FILES = {
    "train-images-idx3-ubyte": (2051, "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    "train-labels-idx1-ubyte": (2049, "d53e105ee54ea40749a09fcbcd1e9432"),
    "t10k-images-idx3-ubyte": (2051, "9fb629c4189551a2d022fa330f9573f3"),
    "t10k-labels-idx1-ubyte": (2049, "ec29112dd5afa0611ce80d1b7f02629c"),
}
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/",
           "http://yann.lecun.com/exdb/mnist/")


def read_idx(path: Path) -> torch.Tensor:
    """An IDX file (optionally gzipped) of unsigned bytes as a uint8 tensor; checks header and size."""
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror or e})") from None
    if path.suffix == ".gz":
        # a bad header is BadGzipFile (an OSError), a cut-off stream EOFError, garbage deflate data
        # zlib.error (neither); whatever else the decompressor raises means the same: a corrupt file
        try:
            raw = gzip.decompress(raw)
        except Exception as e:
            reason = str(e).strip() or type(e).__name__
            raise ConfigError(f"{path}: cannot decompress ({reason}); the file is truncated or corrupt, "
                              f"replace it with a good copy of the gzipped IDX file") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise ConfigError(f"{path} is not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        raise ConfigError(f"{path}: IDX data type 0x{raw[2]:02x} is not unsigned byte (0x08)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    size = 1
    for s in shape:
        size *= s
    if len(raw) != header + size:
        raise ConfigError(f"{path}: header says shape {shape} ({header + size} bytes) but the file "
                          f"has {len(raw)} bytes; it is truncated or corrupt")
    if size == 0:
        return torch.empty(shape, dtype=torch.uint8)
    return torch.frombuffer(bytearray(raw[header:]), dtype=torch.uint8).reshape(shape)


def find_file(root: Path, stem: str) -> Path | None:
    """`stem` or `stem.gz`, flat in root or in torchvision's MNIST/raw layout."""
    for folder in (root, root / "MNIST" / "raw"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def download(root: Path) -> None:
    """Fetch the missing .gz files into root, checking each md5."""
    from urllib.error import URLError
    from urllib.request import urlopen

    root.mkdir(parents=True, exist_ok=True)
    for stem, (_, md5) in FILES.items():
        if find_file(root, stem):
            continue
        errors = []
        for mirror in MIRRORS:
            try:
                with urlopen(mirror + stem + ".gz", timeout=30) as response:
                    data = response.read()
            except (URLError, OSError) as e:
                errors.append(f"{mirror}: {e}")
                continue
            if hashlib.md5(data).hexdigest() != md5:
                errors.append(f"{mirror}: md5 mismatch")
                continue
            tmp = root / (stem + ".gz.part")
            tmp.write_bytes(data)
            tmp.replace(root / (stem + ".gz"))
            break
        else:
            raise ConfigError(f"could not download {stem}.gz: {'; '.join(errors)}")


@register("mnist")
class MNIST(FileDataModule):
    """MNIST digits (60k train, 10k test, 28x28) read from the IDX files in `root_dir`."""

    mean, std = 0.1307, 0.3081
    num_classes, in_channels, image_size = 10, 1, 28
    title = "MNIST"  # in messages
    root_arg = "root_dir"  # the config argument that names the folder, in messages
    max_label: int | None = None  # labels above it are refused (None: not checked)

    def __init__(self, root_dir: str = "./load/mnist", batch_size: int = 64, num_workers: int = 0,
                 val_split: float = 5000, pin_memory: bool = False, download: bool = False,
                 shuffle: bool = True, drop_last: bool = False, split_seed: int = 0,
                 eval_batch_size: int | None = None, mean: float | None = None,
                 std: float | None = None,
                 train_transforms: list[dict] | None = None, eval_transforms: list[dict] | None = None,
                 fold: int | None = None, folds: int | None = None, fold_seed: int = 0) -> None:
        super().__init__(root_dir=root_dir, download=download, batch_size=batch_size, num_workers=num_workers,
                         val_split=val_split, pin_memory=pin_memory, shuffle=shuffle, drop_last=drop_last,
                         split_seed=split_seed, eval_batch_size=eval_batch_size, mean=mean, std=std,
                         train_transforms=train_transforms, eval_transforms=eval_transforms,
                         fold=fold, folds=folds, fold_seed=fold_seed)

    def find(self, stem: str) -> Path | None:
        return find_file(self.root_dir, stem)

    def fetch(self) -> None:
        download(self.root_dir)

    def data_files(self) -> list[Path]:
        return [p for stem in FILES if (p := self.find(stem)) is not None]

    def missing(self) -> list[str]:
        return [stem for stem in FILES if self.find(stem) is None]

    def missing_message(self, missing: list[str]) -> str:
        return (f"{self.title} files missing in '{self.root_dir}': {', '.join(m + '.gz' for m in missing)}. "
                f"Copy the four IDX files (gzipped or not) into that folder, point "
                f"data_module.args.{self.root_arg} at them, or set data_module.args.download=true")

    def read(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        data = {}
        for split, prefix in (("train", "train"), ("test", "t10k")):
            images = read_idx(self.find(f"{prefix}-images-idx3-ubyte"))
            labels = read_idx(self.find(f"{prefix}-labels-idx1-ubyte"))
            if images.dim() != 3 or labels.dim() != 1 or len(images) != len(labels):
                raise ConfigError(f"{self.title} {split} files in '{self.root_dir}' disagree: images "
                                  f"{list(images.shape)}, labels {list(labels.shape)}")
            if self.max_label is not None and len(labels) and int(labels.max()) > self.max_label:
                raise ConfigError(f"{self.find(f'{prefix}-labels-idx1-ubyte')}: label {int(labels.max())} is "
                                  f"out of range; {self.title} has classes 0 to {self.max_label}")
            data[split] = (images.unsqueeze(1), labels.long())
        return data

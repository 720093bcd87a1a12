"""Fashion-MNIST from its four IDX files, held in memory as one uint8 tensor.

The files have MNIST's names and format, so MNIST's reader does the work. The download mirrors
and the md5 of each official .gz file are read from torchvision's FashionMNIST class.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from torchx.datasets import register
from torchx.datasets.mnist import FILES, MNIST, find_file
from torchx.errors import ConfigError

STEMS = tuple(FILES)  # train-images-idx3-ubyte, ..., the same four names as MNIST's


def find(root: Path, stem: str) -> Path | None:
    """`stem` or `stem.gz`, flat in root or in torchvision's FashionMNIST/raw layout.

    Never in MNIST/raw: torchvision keeps both datasets under one root, and MNIST's digits must not
    be taken for Fashion-MNIST's clothes.
    """
    for folder in (root, root / "FashionMNIST" / "raw"):
        path = find_file(folder, stem)
        if path is not None and path.parent == folder:
            return path
    return None


def download(root: Path) -> None:
    """Fetch the missing .gz files into root, checking each md5; nothing half-written is left behind."""
    from torchvision.datasets import FashionMNIST as Release
    from torchvision.datasets.utils import download_url

    root.mkdir(parents=True, exist_ok=True)
    for filename, md5 in Release.resources:
        if find(root, filename.removesuffix(".gz")):
            continue
        errors = []
        for mirror in Release.mirrors:
            with tempfile.TemporaryDirectory(dir=root, prefix=".download-") as tmp:
                try:  # download_url raises RuntimeError when the md5 does not match
                    download_url(mirror + filename, tmp, filename, md5)
                except Exception as e:
                    errors.append(f"{mirror}: {str(e).strip() or type(e).__name__}")
                    continue
                (Path(tmp) / filename).replace(root / filename)
            break
        else:
            raise ConfigError(f"could not download {filename} (md5 {md5}): {'; '.join(errors)}")


@register("fashion_mnist")
class FashionMNIST(MNIST):
    """Fashion-MNIST (60k train, 10k test, 28x28 greyscale, 10 kinds of clothing) from its IDX files.

    The four files (gzipped or not) are read from `root_dir` or its `FashionMNIST/raw/`.
    """

    mean, std = 0.2860, 0.3530
    title = "Fashion-MNIST"
    max_label = 9

    def __init__(self, root_dir: str = "./load/fashion_mnist", batch_size: int = 64, num_workers: int = 0,
                 val_split: float = 5000, pin_memory: bool = False, download: bool = False,
                 shuffle: bool = True, drop_last: bool = False, split_seed: int = 0,
                 eval_batch_size: int | None = None, mean: float | None = None,
                 std: float | None = None,
                 train_transforms: list[dict] | None = None, eval_transforms: list[dict] | None = None,
                 fold: int | None = None, folds: int | None = None, fold_seed: int = 0) -> None:
        super().__init__(root_dir=root_dir, batch_size=batch_size, num_workers=num_workers, val_split=val_split,
                         pin_memory=pin_memory, download=download, shuffle=shuffle, drop_last=drop_last,
                         split_seed=split_seed, eval_batch_size=eval_batch_size, mean=mean, std=std,
                         train_transforms=train_transforms, eval_transforms=eval_transforms,
                         fold=fold, folds=folds, fold_seed=fold_seed)

    def find(self, stem: str) -> Path | None:
        return find(self.root_dir, stem)

    def fetch(self) -> None:
        download(self.root_dir)

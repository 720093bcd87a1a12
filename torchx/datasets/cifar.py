"""CIFAR-10 and CIFAR-100 from the python-version pickle batches, held in memory as one uint8 tensor.

The batch names and the md5 of each official file are read from torchvision's CIFAR10 and
CIFAR100 classes (`train_list`, `test_list`), so they are written down in one place only.
"""

from __future__ import annotations

import hashlib
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchx.datasets import register
from torchx.datasets.base import FileDataModule
from torchx.errors import ConfigError

IMAGE_BYTES = 3 * 32 * 32  # one row of b'data': the red plane, then green, then blue, each row-major


def _safe_globals() -> dict[tuple[str, str], Any]:
    """What a CIFAR batch refers to by name: numpy's array and dtype reconstruction (under its
    numpy 1 and numpy 2 module names) and what protocol-2 pickles use to rebuild bytes."""
    import codecs

    try:
        from numpy._core.multiarray import _reconstruct
        from numpy._core.numeric import _frombuffer
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
        from numpy.core.numeric import _frombuffer
    names = {"_reconstruct": ("multiarray", _reconstruct), "_frombuffer": ("numeric", _frombuffer)}
    table: dict[tuple[str, str], Any] = {}
    for name, (module, obj) in names.items():
        table[(f"numpy.core.{module}", name)] = table[(f"numpy._core.{module}", name)] = obj
    table[("numpy", "ndarray")], table[("numpy", "dtype")] = np.ndarray, np.dtype
    table[("_codecs", "encode")] = codecs.encode
    for obj in (bytes, bytearray, dict, list, tuple):
        table[("builtins", obj.__name__)] = obj
    return table


class _Refused(Exception):
    """A pickle named a global that a CIFAR batch never needs."""


class _BadBatch(Exception):
    """The file unpickled, but not to what a CIFAR batch holds."""


class BatchUnpickler(pickle.Unpickler):
    """Unpickles a CIFAR batch whose md5 is not the official one, resolving only `_safe_globals()`.

    Unpickling runs whatever callables a pickle names, so an arbitrary file could run
    `os.system` just by being loaded. The official batches are trusted by their md5; any other
    file (a subset, a re-pickled copy, a file made for a test) may only name numpy's array
    reconstructors and the builtins that dicts of arrays, lists and bytes need, and every other
    name is refused before anything is called. Its contents are then checked like the official ones.
    """

    def __init__(self, file: io.BufferedIOBase) -> None:
        super().__init__(file, encoding="bytes")
        self.allowed = _safe_globals()

    def find_class(self, module: str, name: str) -> Any:
        if module == "__builtin__":  # Python 2's name, which protocol 0-2 pickles keep
            module = "builtins"
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise _Refused(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise _Refused(f"persistent id {pid!r}")


def _what(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"a {value.dtype} array of shape {list(value.shape)}"
    return f"a {type(value).__name__}"


def _check_batch(batch: Any, keys: dict[bytes, int], title: str) -> tuple[np.ndarray, dict[bytes, np.ndarray]]:
    """The images [N, 3072] and each label list of an unpickled batch of `title` (CIFAR-10, ...);
    `keys` maps every label key to its number of classes. Raises _BadBatch saying what is wrong."""
    expected = sorted([b"batch_label", b"data", b"filenames", *keys])
    if not isinstance(batch, dict):
        raise _BadBatch(f"it holds {_what(batch)}, not the dict of a CIFAR batch")
    if set(batch) != set(expected):
        raise _BadBatch(f"its keys are {sorted(batch, key=repr)}; a {title} batch has exactly {expected}")
    data = batch[b"data"]
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == IMAGE_BYTES and len(data) > 0):
        raise _BadBatch(f"b'data' is {_what(data)}; it must be a uint8 array [N, {IMAGE_BYTES}] of N >= 1 "
                        f"images (3 colour planes of 32x32)")
    n = len(data)
    labels = {}
    for key, classes in keys.items():
        value = batch[key]
        array = np.asarray(value) if isinstance(value, (list, np.ndarray)) else None
        if array is None or array.ndim != 1 or array.dtype.kind not in "iu" or len(array) != n:
            size = f" of {len(value)} items" if isinstance(value, list) else ""
            raise _BadBatch(f"{key!r} is {_what(value)}{size}; it must be a list of {n} whole numbers (one per image)")
        bad = array[(array < 0) | (array >= classes)]
        if len(bad):
            raise _BadBatch(f"label {int(bad[0])} in {key!r} is out of range; {title} has classes "
                            f"0 to {classes - 1}")
        labels[key] = array.astype(np.int64)
    names = batch[b"filenames"]
    if not isinstance(names, list) or len(names) != n:
        raise _BadBatch(f"b'filenames' is {_what(names)}; it must be a list of {n} file names (one per image)")
    return data, labels


def read_batch(path: Path, official_md5: str, keys: dict[bytes, int],
               title: str = "CIFAR") -> tuple[np.ndarray, dict[bytes, np.ndarray]]:
    """One pickle batch file of `title`: images [N, 3072] uint8 and the label arrays named in `keys`.

    A file with the official md5 is unpickled as it is; any other goes through BatchUnpickler.
    Every failure is a ConfigError naming the file (and, for a file that is not the official one,
    its md5 and the official md5).
    """
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read it ({e.strerror or e})") from None
    md5 = hashlib.md5(raw).hexdigest()
    official = md5 == official_md5
    try:
        if official:
            batch = pickle.loads(raw, encoding="bytes")
        else:
            batch = BatchUnpickler(io.BytesIO(raw)).load()
        return _check_batch(batch, keys, title)
    except _Refused as e:
        problem = f"it refers to {e}, which a CIFAR batch never needs; it was refused without being called"
    except _BadBatch as e:
        problem = str(e)
    except Exception as e:  # EOFError, UnpicklingError, whatever numpy raises on bad array state, ...
        reason = str(e).strip() or type(e).__name__
        problem = f"cannot unpickle it ({reason}); the file is truncated or corrupt"
    note = "" if official else f" (its md5 is {md5}; the official {path.name} has md5 {official_md5})"
    raise ConfigError(f"{path}: {problem}{note}; replace it with the file from the official archive")


@register("cifar10")
class CIFAR10(FileDataModule):
    """CIFAR-10 (50k train, 10k test, 3x32x32 colour, 10 classes) from its python-version batches.

    `data_batch_1` .. `data_batch_5` and `test_batch` are read from `root_dir` or its
    `cifar-10-batches-py/`. The default mean and std are one value over all three channels.
    """

    mean, std = 0.4734, 0.2516
    num_classes, in_channels, image_size = 10, 3, 32
    title = "CIFAR-10"
    torchvision_class = "CIFAR10"
    label_key = b"labels"
    label_keys = {b"labels": 10}  # every label key of a batch -> its number of classes

    def __init__(self, root_dir: str = "./load/cifar10", batch_size: int = 64, num_workers: int = 0,
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

    @property
    def release(self) -> Any:
        """torchvision's class for this dataset: archive URL and md5, folder name, batch names and md5s."""
        import torchvision.datasets

        return getattr(torchvision.datasets, self.torchvision_class)

    def find(self, name: str) -> Path | None:
        for path in (self.root_dir / name, self.root_dir / self.release.base_folder / name):
            if path.is_file():
                return path
        return None

    def data_files(self) -> list[Path]:
        release = self.release
        return [p for name, _ in release.train_list + release.test_list if (p := self.find(name)) is not None]

    def missing(self) -> list[str]:
        release = self.release
        return [name for name, _ in release.train_list + release.test_list if self.find(name) is None]

    def fetch(self) -> None:
        """Download the official archive into root_dir, check its md5 and extract it there."""
        from torchvision.datasets.utils import check_integrity, download_and_extract_archive

        release = self.release
        try:
            download_and_extract_archive(release.url, download_root=str(self.root_dir), filename=release.filename,
                                         md5=release.tgz_md5, remove_finished=True)
        except Exception as e:  # URLError, md5 mismatch (RuntimeError), a broken archive, a full disk, ...
            archive = self.root_dir / release.filename
            if archive.is_file() and not check_integrity(str(archive), release.tgz_md5):
                archive.unlink()  # a partial or wrong download would only be tried again
            reason = str(e).strip() or type(e).__name__
            raise ConfigError(f"could not download {release.url} (md5 {release.tgz_md5}) into "
                              f"'{self.root_dir}': {reason}") from None

    def missing_message(self, missing: list[str]) -> str:
        release = self.release
        return (f"{self.title} files missing in '{self.root_dir}': {', '.join(missing)}. Copy the python-version "
                f"batches (the {release.base_folder}/ folder of {release.filename}) into that folder, point "
                f"data_module.args.root_dir at them, or set data_module.args.download=true")

    def read(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        release = self.release
        data = {}
        for split, files in (("train", release.train_list), ("test", release.test_list)):
            parts = [read_batch(self.find(name), md5, self.label_keys, self.title) for name, md5 in files]
            images = np.concatenate([images for images, _ in parts])  # a copy: writable, one block
            labels = np.concatenate([labels[self.label_key] for _, labels in parts])
            data[split] = (torch.from_numpy(images).reshape(-1, 3, 32, 32), torch.from_numpy(labels))
        return data


@register("cifar100")
class CIFAR100(CIFAR10):
    """CIFAR-100 (50k train, 10k test, 3x32x32 colour, 100 or 20 classes) from its python-version files.

    `train` and `test` are read from `root_dir` or its `cifar-100-python/`; `label` picks the 100
    fine classes or the 20 coarse superclasses. The default mean and std are one value over all
    three channels.
    """

    mean, std = 0.4782, 0.2682
    title = "CIFAR-100"
    torchvision_class = "CIFAR100"
    label_keys = {b"fine_labels": 100, b"coarse_labels": 20}

    def __init__(self, root_dir: str = "./load/cifar100", label: str = "fine", batch_size: int = 64,
                 num_workers: int = 0, val_split: float = 5000, pin_memory: bool = False, download: bool = False,
                 shuffle: bool = True, drop_last: bool = False, split_seed: int = 0,
                 eval_batch_size: int | None = None, mean: float | None = None,
                 std: float | None = None,
                 train_transforms: list[dict] | None = None, eval_transforms: list[dict] | None = None,
                 fold: int | None = None, folds: int | None = None, fold_seed: int = 0) -> None:
        if label not in ("fine", "coarse"):
            raise ConfigError(f"label must be 'fine' (100 classes) or 'coarse' (20 superclasses), got {label!r}")
        super().__init__(root_dir=root_dir, batch_size=batch_size, num_workers=num_workers, val_split=val_split,
                         pin_memory=pin_memory, download=download, shuffle=shuffle, drop_last=drop_last,
                         split_seed=split_seed, eval_batch_size=eval_batch_size, mean=mean, std=std,
                         train_transforms=train_transforms, eval_transforms=eval_transforms,
                         fold=fold, folds=folds, fold_seed=fold_seed)
        self.label = label
        self.label_key = f"{label}_labels".encode()
        self.num_classes = self.label_keys[self.label_key]

"""Images in class folders, the layout torchvision's ImageFolder reads.

    root_dir/                        or      root_dir/
      train/  cat/ 1.jpg ...  dog/ ...         cat/ 1.jpg ...
      val/    cat/ ...        dog/ ...         dog/ ...
      test/   cat/ ...        dog/ ...

Class names, sorted, give the labels 0, 1, ... (as torchvision does). Files are found recursively
inside each class folder; a file counts when its name ends in one of torchvision's IMG_EXTENSIONS,
in any case. Names starting with a dot (files and folders) and files of other types are ignored.

Two storage modes. In memory, every image is decoded once at setup into one uint8 tensor, so it
trains like the other built-in data modules. Lazily, a split keeps its file paths and each batch is
decoded in the DataLoader (its workers when num_workers > 0), where the per-image transforms run:
folders larger than memory, images of many sizes. Both modes decode the same way, so they give the
same pixels.
"""

from __future__ import annotations

import concurrent.futures
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch.utils.data import Dataset

from torchx.datasets import register
from torchx.datasets.base import BatchKey, BatchTensorDataset, TensorDataModule
from torchx.errors import ConfigError, first_line

SPLIT_FOLDERS = ("train", "val", "test")
MiB = 2**20


def image_extensions() -> tuple[str, ...]:
    """torchvision's list (.jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp), compared lower-case."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    return tuple(e.lower() for e in IMG_EXTENSIONS)


def _hidden(name: str) -> bool:
    return name.startswith(".")


def _subfolders(folder: Path) -> list[str]:
    """The sorted names of the visible folders in `folder` (links to folders included)."""
    try:
        return sorted(e.name for e in os.scandir(folder) if not _hidden(e.name) and e.is_dir())
    except OSError as e:
        raise ConfigError(f"'{folder}': cannot list it ({e.strerror or e})") from None


def _images_in(folder: Path, extensions: tuple[str, ...]) -> list[str]:
    """Every image file under `folder`, recursively and in sorted order, following links to folders
    (each real folder once, so a link cycle ends)."""
    found: list[str] = []
    seen: set[str] = set()

    def walk(here: str) -> None:
        real = os.path.realpath(here)
        if real in seen:
            return
        seen.add(real)
        try:
            entries = sorted(os.scandir(here), key=lambda e: e.name)
        except OSError as e:
            raise ConfigError(f"'{here}': cannot list it ({e.strerror or e})") from None
        for entry in entries:
            if _hidden(entry.name):
                continue
            if entry.is_dir():
                walk(entry.path)
            elif entry.name.lower().endswith(extensions) and entry.is_file():
                found.append(entry.path)

    walk(str(folder))
    return found


def _parallel(fn: Callable[[Any], Any], items: Sequence[Any]) -> Iterator[Any]:
    """`fn` over `items` in order; on a few threads when there are many (PIL reads and decodes
    without holding the GIL). The first failure, in item order, is raised and the rest cancelled."""
    if len(items) < 64:
        yield from map(fn, items)
        return
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1))
    try:
        yield from pool.map(fn, items)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def read_size(path: str, verify: bool) -> tuple[int, int]:
    """(height, width) from an image file's header; with `verify`, PIL's integrity check as well
    (it reads a PNG's chunks and their checksums, not the pixels)."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
            if verify:
                img.verify()
    except Exception as e:  # UnidentifiedImageError, SyntaxError, OSError, struct.error, ...
        raise ConfigError(f"{path}: cannot read it as an image ({first_line(e)}); the file is truncated, "
                          f"corrupt or not an image: replace or remove it") from None
    return height, width


def decode(path: str, grayscale: bool, size: tuple[int, int] | None = None) -> torch.Tensor:
    """One image file as uint8 [C, H, W]: RGB (C = 3), or luminance with `grayscale` (C = 1); resized
    to `size` (height, width) with antialiasing when given and different."""
    import numpy as np
    from PIL import Image

    try:
        with Image.open(path) as img:
            array = np.array(img.convert("L" if grayscale else "RGB"))
    except Exception as e:
        raise ConfigError(f"{path}: cannot decode it ({first_line(e)}); the file is truncated or corrupt: "
                          f"replace or remove it") from None
    image = torch.from_numpy(array)
    image = image.unsqueeze(0) if grayscale else image.permute(2, 0, 1).contiguous()
    if size is not None and tuple(image.shape[-2:]) != size:
        from torchvision.transforms.v2.functional import resize

        image = resize(image, list(size), antialias=True)
    return image


def _show_size(size: tuple[int, int]) -> str:
    return f"{size[1]}x{size[0]}"  # width x height, as image viewers say it


@dataclass
class FileList:
    """Image paths and their (height, width), indexed like a tensor: what a lazy split holds in
    place of decoded images (TensorDataModule's split logic indexes it as it would the images)."""

    paths: list[str]
    sizes: list[tuple[int, int]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: torch.Tensor | Sequence[int]) -> FileList:
        idx = index.tolist() if isinstance(index, torch.Tensor) else list(index)
        return FileList([self.paths[i] for i in idx], [self.sizes[i] for i in idx] if self.sizes else [])


class FolderBatchDataset(BatchTensorDataset):
    """A lazy split: a batch's files are decoded when the batch is asked for, then go through the
    per-image transforms as in-memory images do."""

    def __init__(self, files: FileList, labels: torch.Tensor, mean: float, std: float, pipeline: Any = None,
                 seed: int = 0, train: bool = False, grayscale: bool = False,
                 size: tuple[int, int] | None = None) -> None:
        super().__init__(files, labels, mean, std, pipeline, seed, train)  # a FileList where images would be
        self.grayscale, self.size = grayscale, size

    def pick(self, index: torch.Tensor) -> list[torch.Tensor]:
        return [decode(self.images.paths[i], self.grayscale, self.size) for i in index.tolist()]

    def batch(self, key: BatchKey | list[int]) -> Any:
        if self.pipeline is not None:
            return super().batch(key)
        # no transforms: the batch is normalised here, exactly as an in-memory one is
        idx = key.indices if isinstance(key, BatchKey) else key
        index = torch.as_tensor(idx, dtype=torch.long)
        images = self.pick(index)
        shapes = [tuple(i.shape) for i in images]
        if len(set(shapes)) > 1:
            other = next(i for i, s in enumerate(shapes) if s != shapes[0])
            paths = self.images.paths
            raise ConfigError(
                f"the images of a batch have different sizes: {paths[idx[0]]} is {list(shapes[0])}, "
                f"{paths[idx[other]]} is {list(shapes[other])}; set data_module.args.image_size to resize "
                f"them as they are read, or add a Resize or RandomResizedCrop to the transforms")
        x = torch.stack(images).float().mul_(self.scale).sub_(self.shift)
        return x, self.labels[index]


@register("image_folder")
class ImageFolder(TensorDataModule):
    """Images in one folder per class (torchvision's ImageFolder layout), in memory or decoded per batch.

    `root_dir` holds `train/` (and optionally `val/`, `test/`) with the class folders in each, or
    the class folders themselves. `val_split` / `test_split` (a count if >= 1, else a fraction)
    carve validation and test images out of the training images where there is no `val/` / `test/`
    folder; without a test folder or `test_split` there is no test set. `image_size` (an int for a
    square, or [height, width]) resizes every image as it is read. `in_memory`: true, false, or
    `auto`: in memory when every image has one size (or image_size is given) and all of them,
    decoded, take at most `memory_limit_mb`. `grayscale` reads one luminance channel instead of RGB.
    """

    in_channels = 3
    same_size = False  # images are read as they are: crops stay per image, where they make them one size

    def __init__(self, root_dir: str = "./load/image_folder", batch_size: int = 64, num_workers: int = 0,
                 val_split: float | None = None, test_split: float | None = None,
                 image_size: int | list[int] | None = None, grayscale: bool = False,
                 in_memory: bool | Literal["auto"] = "auto", memory_limit_mb: float = 2048,
                 pin_memory: bool = False, shuffle: bool = True, drop_last: bool = False, split_seed: int = 0,
                 eval_batch_size: int | None = None, mean: float | None = None, std: float | None = None,
                 train_transforms: list[dict] | None = None, eval_transforms: list[dict] | None = None,
                 fold: int | None = None, folds: int | None = None, fold_seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers,
                         val_split=0.1 if val_split is None else val_split, pin_memory=pin_memory,
                         shuffle=shuffle, drop_last=drop_last, split_seed=split_seed,
                         eval_batch_size=eval_batch_size, mean=mean, std=std,
                         train_transforms=train_transforms, eval_transforms=eval_transforms,
                         fold=fold, folds=folds, fold_seed=fold_seed)
        if test_split is not None and (isinstance(test_split, bool) or not isinstance(test_split, (int, float))
                                       or not test_split >= 0):
            raise ConfigError(f"test_split must be a count (>= 1) or a fraction in [0, 1), got {test_split!r}")
        if in_memory not in (True, False, "auto"):
            raise ConfigError(f"in_memory must be true, false or 'auto', got {in_memory!r}")
        if isinstance(memory_limit_mb, bool) or not isinstance(memory_limit_mb, (int, float)) or \
                not memory_limit_mb > 0:
            raise ConfigError(f"memory_limit_mb must be a positive number of MiB, got {memory_limit_mb!r}")
        self.root_dir = Path(root_dir)
        self.val_split_given, self.test_split = val_split is not None, test_split
        self.size = self._check_image_size(image_size)  # (height, width) or None
        self.grayscale, self.in_memory, self.memory_limit_mb = grayscale, in_memory, memory_limit_mb
        if grayscale:
            self.in_channels = 1
        self._classes: list[str] | None = None
        self._found: dict[str, tuple[list[str], list[int]]] | None = None  # split folder -> files, labels
        self._file_lists: dict[str, FileList] | None = None
        self._val_folder: tuple[Any, torch.Tensor] | None = None
        self.stored_in_memory: bool | None = None  # decided at setup

    @staticmethod
    def _check_image_size(image_size: Any) -> tuple[int, int] | None:
        if image_size is None:
            return None
        valid = "an int (a square side) or [height, width], each at least 1"
        if isinstance(image_size, int) and not isinstance(image_size, bool):
            if image_size < 1:
                raise ConfigError(f"image_size={image_size!r} is not a size; it must be {valid}")
            return image_size, image_size
        if isinstance(image_size, (list, tuple)) and len(image_size) == 2 and \
                all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in image_size):
            return int(image_size[0]), int(image_size[1])
        raise ConfigError(f"image_size={image_size!r} is not a size; it must be {valid}")

    # ------------------------------------------------------------ what the data is, for models

    @property
    def layout(self) -> str:
        """'split' when root_dir has a train/ folder (train/, val/, test/ inside), else 'flat'."""
        self._check_root()
        return "split" if (self.root_dir / "train").is_dir() else "flat"

    @property
    def classes(self) -> list[str]:
        """The class folder names, sorted; a class's label is its index here."""
        if self._classes is None:
            top = self.root_dir / "train" if self.layout == "split" else self.root_dir
            self._classes = _subfolders(top)
            if not self._classes:
                self._no_classes(top)
        return self._classes

    @property
    def class_to_idx(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.classes)}

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int | list[int] | None:
        """The size every image has once read: image_size if given, else the images' own size when
        they all share one (an int for a square, else [height, width]), else None."""
        size = self.size
        if size is None:
            sizes = {s for files in self._files().values() for s in files.sizes}
            if len(sizes) != 1:
                return None
            size = sizes.pop()
        return size[0] if size[0] == size[1] else list(size)

    def data_files(self) -> list[Path]:
        """Every image file read, train first, then the val/ and test/ folders."""
        return [Path(p) for files, _ in self._scan().values() for p in files]

    def describe(self) -> str:
        mode = {True: "in memory", False: "lazy", "auto": "auto"}[self.in_memory]
        return (f"{type(self).__name__}(root_dir='{self.root_dir}', batch_size={self.batch_size}, "
                f"storage={mode}, num_workers={self.num_workers})")

    def pipeline_lines(self) -> list[str]:
        read = "grayscale (1 channel)" if self.grayscale else "RGB"
        if self.size is not None:
            read += f", resized to {self.size[0]}x{self.size[1]} (height x width, antialiased) as read"
        if self.stored_in_memory is not None:
            read += "; decoded once at setup and held in memory" if self.stored_in_memory else \
                "; decoded per batch in the data loader"
        return [f"all splits: {read}", *super().pipeline_lines()]

    # ------------------------------------------------------------ finding the files

    def _check_root(self) -> None:
        if not self.root_dir.exists():
            raise ConfigError(f"root_dir '{self.root_dir}' does not exist; point data_module.args.root_dir at a "
                              f"folder of class folders (or of train/, val/, test/ folders of class folders)")
        if not self.root_dir.is_dir():
            raise ConfigError(f"root_dir '{self.root_dir}' is a file, not a folder of class folders")

    def _no_classes(self, top: Path) -> None:
        loose = _images_in(top, image_extensions()) if top.is_dir() else []
        where = f"'{top}' has no class folders"
        if loose:
            raise ConfigError(f"{where}, but {len(loose)} images lie directly in it ({loose[0]}, ...); an image "
                              f"folder holds one folder per class, with that class's images inside")
        raise ConfigError(f"{where} and no images: an image folder holds one folder per class, each with "
                          f"images ({' '.join(image_extensions())}, in any case)")

    def _scan(self) -> dict[str, tuple[list[str], list[int]]]:
        """Split folder ('train', or 'val' / 'test' in the split layout) -> (files, labels); checked."""
        if self._found is not None:
            return self._found
        classes, extensions = self.classes, image_extensions()
        index = self.class_to_idx
        split = self.layout == "split"
        if split:
            others = [n for n in _subfolders(self.root_dir) if n not in SPLIT_FOLDERS]
            if others:
                raise ConfigError(f"'{self.root_dir}' has a train/ folder, so it is read as train/, val/ and test/ "
                                  f"folders of class folders, but it also holds {', '.join(repr(n) for n in others)}; "
                                  f"rename or move {'it' if len(others) == 1 else 'them'}")
        found: dict[str, tuple[list[str], list[int]]] = {}
        for name in SPLIT_FOLDERS if split else ("train",):
            top = self.root_dir / name if split else self.root_dir
            if not top.is_dir():
                continue
            names = classes if name == "train" else _subfolders(top)
            if not names:
                self._no_classes(top)
            extra = [n for n in names if n not in index]
            if extra:
                raise ConfigError(f"'{top}' has class folder {extra[0]!r}, which '{self.root_dir / 'train'}' lacks "
                                  f"(its classes are {', '.join(classes)}); a class of {name}/ must be one of train/")
            files, labels = [], []
            for cls in names:
                found_here = _images_in(top / cls, extensions)
                if not found_here:
                    raise ConfigError(f"class folder '{top / cls}' has no images ({' '.join(extensions)}, in any "
                                      f"case); add images or remove the folder")
                files += found_here
                labels += [index[cls]] * len(found_here)
            found[name] = (files, labels)
        if split:
            for name, folder_split in (("val", self.val_split_given), ("test", bool(self.test_split))):
                if name in found and folder_split:
                    arg = "val_split" if name == "val" else "test_split"
                    raise ConfigError(f"{arg}={getattr(self, arg)!r} and a {name}/ folder in '{self.root_dir}': the "
                                      f"{name} images come from one of them; remove {arg} or the {name}/ folder")
        self._found = found
        return found

    def _files(self) -> dict[str, FileList]:
        """Split folder -> its files with their sizes, read from the headers once (and, unless
        in_memory is true, checked by PIL, so a broken file is named now, not mid-epoch)."""
        if self._file_lists is None:
            verify = self.in_memory is not True  # decoding in memory finds broken files anyway
            lists = {}
            for name, (files, _) in self._scan().items():
                lists[name] = FileList(files, list(_parallel(lambda p: read_size(p, verify), files)))
            self._file_lists = lists
        return self._file_lists

    # ------------------------------------------------------------ reading

    def _decide_storage(self) -> bool:
        """Whether the images are held in memory: see the class docstring for the rule."""
        lists = self._files()
        everything = [(p, s) for files in lists.values() for p, s in zip(files.paths, files.sizes)]
        first_path, first_size = everything[0]
        other = next(((p, s) for p, s in everything if s != first_size), None)
        if self.size is None and other is not None:
            if self.in_memory is True:
                raise ConfigError(
                    f"in_memory: true needs images of one size, but {first_path} is {_show_size(first_size)} "
                    f"and {other[0]} is {_show_size(other[1])}; set data_module.args.image_size (e.g. "
                    f"{max(*first_size, *other[1])}) to resize them as they are read, or in_memory: false with a "
                    f"Resize or RandomResizedCrop in the transforms")
            return False
        if self.in_memory != "auto":
            return bool(self.in_memory)
        h, w = self.size or first_size
        return len(everything) * self.in_channels * h * w <= self.memory_limit_mb * MiB

    def _read(self, files: FileList) -> torch.Tensor:
        h, w = self.size or files.sizes[0]
        images = torch.empty((len(files), self.in_channels, h, w), dtype=torch.uint8)
        for i, image in enumerate(_parallel(lambda p: decode(p, self.grayscale, self.size), files.paths)):
            images[i] = image
        return images

    def load(self) -> dict[str, tuple[Any, torch.Tensor]]:
        """'train' (without the test images carved out of it) and 'test', as TensorDataModule wants;
        a val/ folder is kept aside for `setup`. Images are a uint8 tensor or a FileList."""
        lists = self._files()
        self.stored_in_memory = self._decide_storage()
        data: dict[str, tuple[Any, torch.Tensor]] = {}
        for name, files in lists.items():
            labels = torch.tensor(self._scan()[name][1], dtype=torch.long)
            data[name] = (self._read(files) if self.stored_in_memory else files, labels)
        if self.test_split and "test" not in data:
            images, labels = data["train"]
            n = len(labels)
            n_test = int(self.test_split) if self.test_split >= 1 else int(round(n * self.test_split))
            if not 0 <= n_test < n:
                raise ConfigError(f"test_split={self.test_split} leaves no training images ({n} images in "
                                  f"'{self.root_dir}')")
            perm = torch.randperm(n, generator=torch.Generator().manual_seed(self.split_seed + 1))
            keep, test = perm[: n - n_test], perm[n - n_test:]
            data["train"], data["test"] = (images[keep], labels[keep]), (images[test], labels[test])
        self._val_folder = data.pop("val", None)
        if self._val_folder is not None:
            self.val_split = 0  # the val/ folder is the validation set
        return data

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        super().setup(stage)
        if self._val_folder is not None and self.folds is not None:
            self.splits.clear()
            raise ConfigError(f"'{self.root_dir}' has a val/ folder, and folds={self.folds} would validate on fold "
                              f"{self.fold} of train/ instead; remove val/ (or move its images into train/) to "
                              f"cross-validate, or drop folds")
        if self._val_folder is not None:
            self.splits["val"] = self._val_folder
        if not self.stored_in_memory:
            for split, (files, _) in self.splits.items():
                self._check_batch_sizes(split, files)

    def _check_batch_sizes(self, split: str, files: FileList) -> None:
        """A lazy split's images must leave the per-image transforms with one size, or a batch cannot
        be one tensor. Tried now on blank images of the most different sizes the split has, so a
        mismatch names two files before anything is created."""
        if self.size is not None or len(set(files.sizes)) < 2:
            return
        pipeline = self.pipelines["train" if split == "train" else "eval"] if self.pipelines else None
        per_image = pipeline.per_image if pipeline is not None else []
        where = f"data_module.args.{'train' if split == 'train' else 'eval'}_transforms"
        picks = {0}
        for key in (lambda s: s[0], lambda s: s[1], lambda s: s[0] / s[1]):
            values = [key(s) for s in files.sizes]
            picks |= {values.index(min(values)), values.index(max(values))}
        picks_sorted = sorted(picks)
        shapes = []
        if per_image:
            from torchvision.transforms import v2

            compose = v2.Compose(per_image)
            try:
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    for i in picks_sorted:
                        h, w = files.sizes[i]
                        shapes.append(tuple(compose(torch.zeros(self.in_channels, h, w, dtype=torch.uint8)).shape))
            except Exception:
                return  # a transform that cannot take a blank image: the first batch will tell
        else:
            shapes = [(self.in_channels, *files.sizes[i]) for i in picks_sorted]
        if len(set(shapes)) < 2:
            return
        j = next(k for k, s in enumerate(shapes) if s != shapes[0])
        a, b = files.paths[picks_sorted[0]], files.paths[picks_sorted[j]]
        size_a, size_b = _show_size(files.sizes[picks_sorted[0]]), _show_size(files.sizes[picks_sorted[j]])
        if not per_image:
            raise ConfigError(
                f"the {split} images differ in size ({a} is {size_a}, {b} is {size_b}) and {where} has no "
                f"per-image transform that makes them one size, so a batch cannot be one tensor; set "
                f"data_module.args.image_size to resize them as they are read, or start {where} with a Resize "
                f"to [height, width] or a RandomResizedCrop")
        raise ConfigError(
            f"after the per-image part of {where}, the {split} images still differ in size ({a}, {size_a}, "
            f"becomes {list(shapes[0])}; {b}, {size_b}, becomes {list(shapes[j])}), so a batch cannot be one "
            f"tensor; give Resize a [height, width] size, follow it with a CenterCrop or RandomCrop, or "
            f"set data_module.args.image_size")

    def make_dataset(self, split: str, train: bool) -> Dataset:
        images, labels = self.splits[split]
        if self.stored_in_memory:
            return super().make_dataset(split, train)
        pipeline = self.pipelines["train" if train else "eval"] if self.pipelines else None
        return FolderBatchDataset(images, labels, self.mean, self.std, pipeline, self._seed(), train,
                                  self.grayscale, self.size)



"""Super-resolution pairs made from high-resolution images: `paired_images` and `div2k`.

Each image is decoded once, at setup, and kept in memory as a uint8 tensor [3, H, W] (a list: the
sizes differ). A training batch is `(lr, hr)`: HR is a random `patch_size` crop of an image
(optionally flipped or turned by 90 degrees), LR its bicubic downscale by `scale`, both float in
[0, 1]. Every random draw of a batch comes from torchx.transforms.batch_seed (the run's seed and the
batch's epoch, position and rank), so train_pl.py and train.py see the same pixels and a run resumed
mid-epoch sees what it would have seen. Validation and test batches are centre crops of
`eval_patch_size` (default twice `patch_size`), or whole images with `eval_patch_size: full`.

The sampler, the resumable loader and DDP sharding are TensorDataModule's; only the storage and the
making of a batch are this module's.
"""

from __future__ import annotations

import concurrent.futures
import os
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from torchx.datasets import register
from torchx.datasets.base import BatchKey, TensorDataModule
from torchx.errors import ConfigError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
SCALES = (2, 3, 4)

DIV2K_URL = "http://data.vision.ee.ethz.ch/cvl/DIV2K/"
DIV2K_FOLDERS = {"train": "DIV2K_train_HR", "test": "DIV2K_valid_HR"}  # each zip unpacks to its folder


# ---------------------------------------------------------------- reading images


def list_images(folder: Path) -> list[Path]:
    """The image files directly in `folder` (by extension, any case; hidden files skipped), by name."""
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def read_image(path: Path) -> torch.Tensor:
    """One image file as a uint8 RGB tensor [3, H, W]: grayscale is repeated, alpha dropped, 16-bit
    values reduced to 8 bits and an EXIF orientation applied. A file that cannot be decoded to the
    end is a ConfigError naming it."""
    import numpy as np
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            img.load()  # decodes everything now: a truncated file fails here, not in a later batch
            img = ImageOps.exif_transpose(img)
            if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N"):  # 16-bit grayscale: Pillow would clip it
                wide = np.asarray(img, dtype=np.float64)
                gray = np.clip(np.rint(wide * (255.0 / 65535.0)), 0, 255).astype(np.uint8)
                array = np.repeat(gray[:, :, None], 3, axis=2)
            else:
                array = np.array(img.convert("RGB"))
    except UnidentifiedImageError:
        if path.stat().st_size == 0:
            raise ConfigError(f"{path}: the file is empty (0 bytes); replace or remove it") from None
        raise ConfigError(f"{path}: not an image that Pillow can read (the file's contents are not "
                          f"{path.suffix.lstrip('.').upper() or 'an image'}); replace or remove it") from None
    except Image.DecompressionBombError as e:
        raise ConfigError(f"{path}: {e}; refused as a possible decompression bomb") from None
    except OSError as e:
        if isinstance(e, FileNotFoundError | PermissionError | IsADirectoryError):
            raise ConfigError(f"{path}: cannot read it ({e.strerror or e})") from None
        reason = str(e).strip() or type(e).__name__
        raise ConfigError(f"{path}: cannot decode it ({reason}); the file is truncated or corrupt, replace "
                          f"or remove it") from None
    except Exception as e:  # Pillow's plugins raise SyntaxError, ValueError, struct.error, ... on bad data
        reason = str(e).strip() or type(e).__name__
        raise ConfigError(f"{path}: cannot decode it ({reason}); the file is truncated or corrupt, replace "
                          f"or remove it") from None
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def read_images(paths: list[Path]) -> list[torch.Tensor]:
    """Decode `paths` in a few threads (Pillow releases the GIL while it decodes), in order; the
    first bad file in that order is the one reported."""
    if len(paths) < 2:
        return [read_image(p) for p in paths]
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        return list(pool.map(read_image, paths))


# ---------------------------------------------------------------- making pairs


def downscale(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """The LR batch of an HR batch [N, C, H, W] in [0, 1]: bicubic with antialiasing, to exactly
    H/scale x W/scale, clamped to [0, 1] (bicubic overshoots at edges)."""
    h, w = hr.shape[-2:]
    lr = F.interpolate(hr, size=(h // scale, w // scale), mode="bicubic", antialias=True, align_corners=False)
    return lr.clamp_(0.0, 1.0)


def dihedral(img: torch.Tensor, k: int) -> torch.Tensor:
    """One of the 8 flips and 90-degree turns of a square image [C, P, P]: bit 0 flips left-right,
    bit 1 top-bottom, bit 2 transposes (EDSR's augmentation)."""
    if k & 1:
        img = img.flip(-1)
    if k & 2:
        img = img.flip(-2)
    if k & 4:
        img = img.transpose(-1, -2)
    return img


def random_patches(images: list[torch.Tensor], patch: int, g: torch.Generator, augment: bool) -> torch.Tensor:
    """A random `patch` x `patch` crop of each image (each then flipped or turned when `augment`),
    drawn from `g` in the images' order: per image its top, its left, then its turn."""
    out = []
    for img in images:
        h, w = img.shape[-2:]
        top = int(torch.randint(0, h - patch + 1, (1,), generator=g))
        left = int(torch.randint(0, w - patch + 1, (1,), generator=g))
        crop = img[:, top:top + patch, left:left + patch]
        if augment:
            crop = dihedral(crop, int(torch.randint(0, 8, (1,), generator=g)))
        out.append(crop)
    return torch.stack(out)


def centre_patches(images: list[torch.Tensor], patch: int | None, scale: int) -> torch.Tensor:
    """The centre `patch` x `patch` crop of each image; `patch` None: the whole image, its height and
    width cut down to multiples of `scale` (from the bottom and right, as SR benchmarks do)."""
    out = []
    for img in images:
        h, w = img.shape[-2:]
        if patch is None:
            out.append(img[:, :h - h % scale, :w - w % scale])
        else:
            top, left = (h - patch) // 2, (w - patch) // 2
            out.append(img[:, top:top + patch, left:left + patch])
    return torch.stack(out)


class PairDataset(Dataset):
    """One split's images, indexed by BatchKeys; returns a whole `(lr, hr)` batch.

    Training sample `i` is a random patch of image `i % len(images)` (so `samples_per_image` copies of
    the list give that many patches per image and epoch); evaluation samples are centre crops.
    """

    def __init__(self, images: list[torch.Tensor], scale: int, patch: int | None, train: bool, augment: bool,
                 samples_per_image: int, seed: int, pipeline: Any = None, mean: float = 0.0,
                 std: float = 1.0) -> None:
        self.images, self.scale, self.patch, self.train = images, scale, patch, train
        self.augment, self.samples_per_image, self.seed = augment, samples_per_image, seed
        self.pipeline, self.mean, self.std = pipeline, mean, std

    def __len__(self) -> int:
        return len(self.images) * (self.samples_per_image if self.train else 1)

    def hr_patches(self, key: BatchKey | list[int]) -> torch.Tensor:
        """The batch's HR patches, uint8 [N, 3, P, P]: random ones drawn from the batch's seed when
        training, centre crops (or whole images) otherwise."""
        from torchx.transforms import batch_seed

        idx = key.indices if isinstance(key, BatchKey) else list(key)
        images = [self.images[i % len(self.images)] for i in idx]
        if not self.train:
            return centre_patches(images, self.patch, self.scale)
        seed = batch_seed(self.seed, *(key[1:] if isinstance(key, BatchKey) else (0, 0, 0)))
        return random_patches(images, self.patch, torch.Generator().manual_seed(seed), self.augment)

    def __getitem__(self, key: BatchKey | list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        hr = self.hr_patches(key)
        shape = tuple(hr.shape)
        if self.pipeline is None:
            hr = hr.float().div_(255.0)
        else:  # the configured transforms change the HR patch; the LR is made from what they return
            from torchx.transforms import batch_seed

            seed = batch_seed(self.seed, *(key[1:] if isinstance(key, BatchKey) else (0, 0, 0))) ^ 0x2545F491
            hr = self.pipeline.device_ops(self.pipeline.image_ops(hr, seed), seed ^ 0x5DEECE66D)
            if tuple(hr.shape) != shape:
                raise ConfigError(f"{self.pipeline.where} turned HR patches of {list(shape[1:])} into "
                                  f"{list(hr.shape[1:])}; transforms of super-resolution patches must keep their "
                                  f"size (patch_size and eval_patch_size set it)")
        lr = downscale(hr, self.scale)
        if (self.mean, self.std) != (0.0, 1.0):
            lr = lr.sub_(self.mean).div_(self.std)
        return lr, hr


# ---------------------------------------------------------------- the data modules


def _positive_int(name: str, value: Any, extra: str = "") -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{name} must be a positive whole number{extra}, got {value!r}")


def _multiple(name: str, value: int, scale: int) -> None:
    if value % scale:
        lo = max(scale, value - value % scale)
        raise ConfigError(f"{name}={value} is not divisible by scale={scale} (the LR patch would be "
                          f"{value / scale:g} pixels wide); use a multiple of {scale}, such as {lo} or {lo + scale}")


@register("paired_images")
class PairedImages(TensorDataModule):
    """(LR, HR) patch pairs for super-resolution, made from the high-resolution images in `root_dir`.

    Layouts: `root_dir/train/` (required), `root_dir/val/` and `root_dir/test/` (optional) folders of
    images; or images directly in `root_dir`, with `val_split` of them for validation and no test set.
    `val_split` (a count if >= 1, else a fraction of the images) carves validation from the training
    images when there is no val/ folder. `mean` / `std` normalise the LR input only; the HR target
    stays in [0, 1], so the loss and PSNR are on the pixel scale. `train_transforms` /
    `eval_transforms` run on the HR patches (after the crop and turn, before the LR is made) and
    must keep their size.
    """

    mean, std = 0.0, 1.0  # LR in [0, 1]: no normalisation unless asked
    in_channels = 3
    data_args = ("scale",)  # offered to ${data:...}, e.g. the model's scale
    title = "paired_images"

    def __init__(self, root_dir: str, scale: int = 2, patch_size: int = 96,
                 eval_patch_size: int | Literal["full"] | None = None, augment: bool = True,
                 samples_per_image: int = 1, batch_size: int = 16, eval_batch_size: int | None = None,
                 num_workers: int = 0, val_split: float = 0, pin_memory: bool = False, shuffle: bool = True,
                 drop_last: bool = False, split_seed: int = 0, mean: float | None = None, std: float | None = None,
                 train_transforms: list[dict] | None = None, eval_transforms: list[dict] | None = None) -> None:
        if isinstance(scale, bool) or not isinstance(scale, int) or scale not in SCALES:
            raise ConfigError(f"scale must be 2, 3 or 4 (the upscaling factor), got {scale!r}")
        _positive_int("patch_size", patch_size)
        _multiple("patch_size", patch_size, scale)
        if eval_patch_size is None:
            eval_patch_size = 2 * patch_size
        if eval_patch_size != "full":
            _positive_int("eval_patch_size", eval_patch_size, " or 'full' (whole images)")
            _multiple("eval_patch_size", eval_patch_size, scale)
        _positive_int("samples_per_image", samples_per_image)
        if not isinstance(augment, bool):
            raise ConfigError(f"augment must be true or false, got {augment!r}")
        super().__init__(batch_size=batch_size, num_workers=num_workers, val_split=val_split,
                         pin_memory=pin_memory, shuffle=shuffle, drop_last=drop_last, split_seed=split_seed,
                         eval_batch_size=eval_batch_size, mean=mean, std=std,
                         train_transforms=train_transforms, eval_transforms=eval_transforms)
        if eval_patch_size == "full" and self.eval_batch_size != 1:
            raise ConfigError(f"eval_patch_size: full evaluates whole images, whose sizes differ, so they cannot "
                              f"share a batch; set eval_batch_size: 1 (it is {self.eval_batch_size})")
        self.root_dir = Path(root_dir)
        self.scale, self.patch_size, self.eval_patch_size = scale, patch_size, eval_patch_size
        self.augment, self.samples_per_image = augment, samples_per_image
        self.files: dict[str, list[Path]] = {}

    def build_pipelines(self, train: list[dict] | None, eval: list[dict] | None) -> dict[str, Any] | None:
        """The transforms of the HR patches, ending as floats in [0, 1] (mean and std are the LR's)."""
        if train is None and eval is None:
            return None
        from torchx.transforms import Pipeline

        return {"train": Pipeline(train, 0.0, 1.0, "data_module.args.train_transforms"),
                "eval": Pipeline(eval, 0.0, 1.0, "data_module.args.eval_transforms")}

    # ---- where the images are

    def folders(self) -> dict[str, Path]:
        """split -> the folder its images come from ('val' is absent when val_split carves it)."""
        root = self.root_dir
        if not root.is_dir():
            raise ConfigError(f"root_dir '{root}' is not a folder; {self.layout()}")
        if (root / "train").is_dir():
            return {split: root / split for split in ("train", "val", "test") if (root / split).is_dir()}
        return {"train": root}

    def layout(self) -> str:
        return "it must hold train/ (and optionally val/ and test/) folders of images, or the images themselves"

    def find_files(self) -> dict[str, list[Path]]:
        """split -> its image files, every folder checked for having some."""
        found = {}
        for split, folder in self.folders().items():
            files = list_images(folder)
            if not files:
                where = "" if folder != self.root_dir else f"; {self.layout()}"
                raise ConfigError(f"no images in '{folder}' (looked for {', '.join(IMAGE_EXTENSIONS)}, in any case)"
                                  f"{where}")
            found[split] = files
        return found

    def data_files(self) -> list[Path]:
        """Every image file the data was read from (after setup: exactly those; before: those found now)."""
        files = self.files or self.find_files()
        return [p for split in ("train", "val", "test") for p in files.get(split, [])]

    # ---- TensorDataModule's hooks

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        files = self.find_files()
        if "val" in files and self.val_split:
            raise ConfigError(f"'{self.root_dir}' has a val/ folder and val_split={self.val_split} would also carve "
                              f"validation images from train/; set val_split: 0 to validate on val/, or remove val/")
        train = files["train"]
        n_val = int(self.val_split) if self.val_split >= 1 else int(round(len(train) * self.val_split))
        if not 0 <= n_val < len(train):
            raise ConfigError(f"val_split={self.val_split} leaves no training images ({len(train)} images in "
                              f"'{self.folders()['train']}')")
        if n_val:
            perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(self.split_seed)).tolist()
            files["train"] = sorted(train[i] for i in perm[:len(train) - n_val])
            files["val"] = sorted(train[i] for i in perm[len(train) - n_val:])
        splits = {}
        for split, paths in files.items():
            images = read_images(paths)
            self.check_sizes(split, paths, images)
            splits[split] = (images, paths)
        self.files, self.splits = files, splits

    def check_sizes(self, split: str, paths: list[Path], images: list[torch.Tensor]) -> None:
        """Every image must hold a patch (training) or an evaluation crop (val, test)."""
        if split == "train":
            need, what, arg = self.patch_size, f"patch_size={self.patch_size}", "patch_size"
        elif self.eval_patch_size == "full":
            need, what, arg = self.scale, f"scale={self.scale}", "scale"
        else:
            need, what, arg = self.eval_patch_size, f"eval_patch_size={self.eval_patch_size}", "eval_patch_size"
        for path, img in zip(paths, images):
            h, w = img.shape[-2:]
            if h < need or w < need:
                raise ConfigError(f"{path} is {w}x{h} pixels (width x height), smaller than {what} ({split} "
                                  f"images must be at least {need}x{need}); remove it or lower {arg}")

    def split_size(self, split: str) -> int:
        return len(self.splits[split][0]) * (self.samples_per_image if split == "train" else 1)

    def labels(self) -> torch.Tensor | None:
        return None  # targets are images, not class labels

    def make_dataset(self, split: str, train: bool) -> Dataset:
        images = self.splits[split][0]
        pipeline = self.pipelines["train" if train else "eval"] if self.pipelines else None
        patch = self.patch_size if train else (None if self.eval_patch_size == "full" else self.eval_patch_size)
        return PairDataset(images, self.scale, patch, train, self.augment and train, self.samples_per_image,
                           self._seed(), pipeline, self.mean, self.std)

    def describe(self) -> str:
        return (f"{type(self).__name__}(root_dir='{self.root_dir}', scale={self.scale}, patch_size={self.patch_size}, "
                f"eval_patch_size={self.eval_patch_size}, batch_size={self.batch_size}, val_split={self.val_split}, "
                f"samples_per_image={self.samples_per_image}, augment={self.augment})")

    def pipeline_lines(self) -> list[str]:
        turn = ", a random flip / 90-degree turn" if self.augment else ""
        norm = f", normalised with mean {self.mean}, std {self.std}" if (self.mean, self.std) != (0.0, 1.0) else ""
        make_lr = f"LR = their bicubic (antialiased) downscale by {self.scale}, clamped to [0, 1]{norm}; HR in [0, 1]"
        ev = "whole images cut to multiples of the scale" if self.eval_patch_size == "full" else \
            f"centre {self.eval_patch_size}x{self.eval_patch_size} HR crops"
        lines = [f"train: random {self.patch_size}x{self.patch_size} HR crops{turn} "
                 f"({self.samples_per_image} per image and epoch); {make_lr}",
                 f"val/test: {ev}; {make_lr}"]
        if self.pipelines:
            for split, pipeline in (("train", self.pipelines["train"]), ("val/test", self.pipelines["eval"])):
                lines += [f"{split} HR patches: {line}" for line in pipeline.describe()]
        return lines


@register("div2k")
class DIV2K(PairedImages):
    """DIV2K's high-resolution images: `DIV2K_train_HR/` (800 images; `val_split` of them validate)
    and `DIV2K_valid_HR/` (100 images, the test set) in `root_dir`, as the official zips unpack.

    `download: true` fetches the zips that are missing from the DIV2K site and unpacks them into
    `root_dir`. DIV2K publishes no checksums, so the archives cannot be verified.
    """

    title = "DIV2K"
    archives = {split: f"{DIV2K_URL}{folder}.zip" for split, folder in DIV2K_FOLDERS.items()}

    def __init__(self, root_dir: str = "./load/div2k", download: bool = False, scale: int = 2,
                 patch_size: int = 96, eval_patch_size: int | Literal["full"] | None = None, augment: bool = True,
                 samples_per_image: int = 1, batch_size: int = 16, eval_batch_size: int | None = None,
                 num_workers: int = 0, val_split: float = 0, pin_memory: bool = False, shuffle: bool = True,
                 drop_last: bool = False, split_seed: int = 0, mean: float | None = None, std: float | None = None,
                 train_transforms: list[dict] | None = None, eval_transforms: list[dict] | None = None) -> None:
        super().__init__(root_dir=root_dir, scale=scale, patch_size=patch_size, eval_patch_size=eval_patch_size,
                         augment=augment, samples_per_image=samples_per_image, batch_size=batch_size,
                         eval_batch_size=eval_batch_size, num_workers=num_workers, val_split=val_split,
                         pin_memory=pin_memory, shuffle=shuffle, drop_last=drop_last, split_seed=split_seed,
                         mean=mean, std=std, train_transforms=train_transforms, eval_transforms=eval_transforms)
        if not isinstance(download, bool):
            raise ConfigError(f"download must be true or false, got {download!r}")
        self.download = download

    def missing(self) -> list[str]:
        """The DIV2K folders not in root_dir (or holding no images)."""
        return [folder for folder in DIV2K_FOLDERS.values()
                if not (self.root_dir / folder).is_dir() or not list_images(self.root_dir / folder)]

    def missing_message(self, missing: list[str]) -> str:
        zips = " and ".join(f"{m}.zip" for m in missing)
        them = "them" if len(missing) > 1 else "it"
        return (f"DIV2K folders missing in '{self.root_dir}': {', '.join(m + '/' for m in missing)}. Download "
                f"{zips} from {DIV2K_URL} and unzip {them} into that folder (it then holds "
                f"DIV2K_train_HR/0001.png ... and DIV2K_valid_HR/0801.png ...), point data_module.args.root_dir "
                f"at them, or set data_module.args.download=true (about 3.5 GB for the training images, 0.4 GB "
                f"for the validation images; DIV2K publishes no checksums, so they are not verified)")

    def fetch(self) -> None:
        """Download and unpack each missing archive into root_dir (unverified: there is no md5)."""
        from torchvision.datasets.utils import download_and_extract_archive

        for split, folder in DIV2K_FOLDERS.items():
            if folder not in self.missing():
                continue
            url = self.archives[split]
            try:
                download_and_extract_archive(url, download_root=str(self.root_dir), md5=None, remove_finished=True)
            except Exception as e:  # URLError, a broken or cut-off zip (BadZipFile), a full disk, ...
                archive = self.root_dir / f"{folder}.zip"
                if archive.is_file():
                    archive.unlink()  # a partial download would only fail again the same way
                reason = str(e).strip() or type(e).__name__
                raise ConfigError(f"could not download {url} into '{self.root_dir}': {reason}") from None

    def prepare_data(self) -> None:
        if self.download and self.missing():
            self.fetch()

    def folders(self) -> dict[str, Path]:
        missing = self.missing()
        if missing:
            raise ConfigError(self.missing_message(missing))
        return {split: self.root_dir / folder for split, folder in DIV2K_FOLDERS.items()}

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            self.prepare_data()  # a run's own process may not have called it (the checks, a tool)
        super().setup(stage)

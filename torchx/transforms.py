"""Transforms from config, and the common augmentations run on whole batches on the device.

A data module's `train_transforms` / `eval_transforms` are lists of `{name, args}`; a name is a
registered transform or a class of `torchvision.transforms.v2` (`RandomCrop`, `ColorJitter`, ...):

    import torchx.transforms as transforms
    @transforms.register('my_jitter')
    class MyJitter(torch.nn.Module): ...   # called on one image tensor [C, H, W], returns one

A `Pipeline` splits the list in two. Its tail of ops that have a batched form (`BATCHED`: crop with
padding, flips, erasing, centre crop, dtype, normalisation) runs on the whole uint8 batch after it
reached the training device; the ops before it run per image in the data loader (its workers when
there are any). Every random draw of a batch comes from `batch_seed(seed, key)`: the run's seed and
the batch's (epoch, position, rank), nothing else, so both loops see the same pixels, and a resumed
run, also mid-epoch, sees what it would have seen. Draws are made on the CPU, so a batch gets the
same augmentation on any device.

Unless the list has its own `Normalize` or `ToDtype`, pixels end as float, normalised with the data
module's mean and std, as without transforms.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from torchx.errors import ConfigError
from torchx.registry import Registry, close_matches

# v2 classes a config cannot use as they stand, and why
_REFUSED = {
    "Transform": "it is the base class of all transforms",
    "Lambda": "it takes a Python function, which a YAML file cannot spell; register a transform instead",
    "ToPILImage": "torchx's images are tensors throughout",
    "PILToTensor": "torchx's images are already tensors",
    "ToTensor": "torchx's images are already tensors (ToDtype with scale: true makes floats in [0, 1])",
    "FiveCrop": "it returns five images per image",
    "TenCrop": "it returns ten images per image",
    "CutMix": "it mixes labels as well as images, which a data module's image transforms cannot do",
    "MixUp": "it mixes labels as well as images, which a data module's image transforms cannot do",
    "LinearTransformation": "it takes a whitening matrix, which a YAML file cannot spell",
}
_NESTED = ("Compose", "RandomApply", "RandomChoice", "RandomOrder")  # take a list of transform specs


@functools.cache
def _v2_classes() -> dict[str, type]:
    from torchvision.transforms import v2

    return {n: c for n, c in vars(v2).items()
            if inspect.isclass(c) and issubclass(c, v2.Transform) and not n.startswith("_")
            and "Bounding" not in n and "KeyPoints" not in n and n not in ("SetClampingMode",
                                                                              "UniformTemporalSubsample")}


def _v2_class(name: str) -> type | None:
    if name in _REFUSED:
        raise ConfigError(f"transform '{name}' cannot be used in a config: {_REFUSED[name]}")
    return _v2_classes().get(name)


registry = Registry("transform", fallback=_v2_class,
                    fallback_names=lambda: [n for n in _v2_classes() if n not in _REFUSED])
register = registry.register


def _plain_args(name: str, args: dict, where: str) -> dict:
    """YAML spellings of torch values: `dtype: float32` is torch.float32, `interpolation: bicubic`
    torchvision's InterpolationMode.BICUBIC, and the nested specs of Compose / RandomApply built."""
    out = dict(args)
    if isinstance(out.get("dtype"), str):
        dtype = getattr(torch, out["dtype"], None)
        if not isinstance(dtype, torch.dtype):
            raise ConfigError(f"{where}: dtype '{out['dtype']}' is not a torch dtype (float32, float16, uint8, ...)")
        out["dtype"] = dtype
    if isinstance(out.get("interpolation"), str):
        from torchvision.transforms import InterpolationMode

        modes = [m.value for m in InterpolationMode]
        if out["interpolation"].lower() not in modes:
            raise ConfigError(f"{where}: interpolation '{out['interpolation']}' is not one of "
                              f"{', '.join(modes)}{close_matches(out['interpolation'].lower(), modes)}")
        out["interpolation"] = InterpolationMode(out["interpolation"].lower())
    if name in _NESTED:
        inner = out.get("transforms")
        if not isinstance(inner, list) or not inner:
            raise ConfigError(f"{where}: {name} takes `transforms`, a non-empty list of {{name, args}} specs")
        out["transforms"] = build_list(inner, f"{where}.args.transforms")
    return out


def build_list(specs: Any, where: str) -> list[Callable]:
    """The transforms of a list of specs, each checked (name, arguments) and named in messages."""
    if not isinstance(specs, list):
        raise ConfigError(f"{where} must be a list of {{name, args}} transform specs, got {specs!r}")
    built = []
    for i, spec in enumerate(specs):
        here = f"{where}.{i}"
        if not isinstance(spec, dict) or "name" not in spec:
            raise ConfigError(f"{here} must be a {{name, args}} transform spec, got {spec!r}")
        name = spec["name"]
        args = spec.get("args") or {}
        if not isinstance(args, dict):
            raise ConfigError(f"{here}.args must be a mapping, got {args!r}")
        try:
            built.append(registry.make({"name": name, "args": _plain_args(name, args, here)}))
        except ConfigError as e:
            raise ConfigError(f"{here}: {e}") from None
        except (TypeError, ValueError) as e:  # torchvision's own argument checks
            raise ConfigError(f"{here} ({name} with args {args}): {e}") from None
    return built


# ---------------------------------------------------------------- seeds


def batch_seed(seed: int, epoch: int, number: int, rank: int = 0) -> int:
    """The seed of one batch's random draws, from the run's seed and where the batch stands."""
    h = seed % 2**61
    for part in (epoch, number, rank):
        h = (h * 1_000_003 + part + 1) % (2**61 - 1)  # a Mersenne prime: well-spread 61-bit seeds
    return h


def generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- batched forms


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def _per_channel(values: Sequence[float], x: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(values, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)


def _crop(x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Per-sample crops of size h x w at (top, left). Each output row is a run of w consecutive
    values of x, so one index_select of the runs' starts, over a view of x whose rows are every
    such run, copies the whole batch (an order of magnitude faster than a 4-d gather)."""
    n, c, H, W = x.shape
    if x.numel() == 0:
        return x[..., :h, :w]
    dev = x.device
    x = x.contiguous()
    runs = x.reshape(-1).as_strided((x.numel() - w + 1, w), (1, 1))  # runs[o]: the w values from offset o
    starts = ((torch.arange(n, device=dev) * (c * H * W))[:, None, None]
              + (torch.arange(c, device=dev) * (H * W))[None, :, None]
              + ((top.to(dev)[:, None] + torch.arange(h, device=dev)) * W + left.to(dev)[:, None])[:, None, :])
    return runs.index_select(0, starts.reshape(-1)).reshape(n, c, h, w)


def _random_crop(t: Any, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    h, w = t.size
    if t.padding:
        left, top, right, bottom = t.padding
        mode = {"constant": "constant", "edge": "replicate", "reflect": "reflect"}[t.padding_mode]
        if mode == "constant":
            x = torch.nn.functional.pad(x, (left, right, top, bottom), value=float(t.fill))
        else:  # replicate / reflect pad need float input
            x = torch.nn.functional.pad(x.float(), (left, right, top, bottom), mode=mode).to(x.dtype)
    H, W = x.shape[-2:]
    if H < h or W < w:
        raise ConfigError(f"RandomCrop: size {h}x{w} is larger than the (padded) images, {H}x{W}")
    top = torch.randint(0, H - h + 1, (len(x),), generator=g)
    left = torch.randint(0, W - w + 1, (len(x),), generator=g)
    return _crop(x, top, left, h, w)


def _center_crop(t: Any, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    h, w = t.size
    H, W = x.shape[-2:]
    if H < h or W < w:
        raise ConfigError(f"CenterCrop: size {h}x{w} is larger than the images, {H}x{W}")
    top, left = (H - h) // 2, (W - w) // 2  # torchvision rounds the same way for even differences
    return x[..., top:top + h, left:left + w]


def _flip(dim: int) -> Callable:
    def flip(t: Any, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        chosen = (torch.rand(len(x), generator=g) < t.p).to(x.device)
        pick = torch.arange(len(x), device=x.device) + len(x) * chosen.long()
        return torch.cat([x, x.flip(dim)]).index_select(0, pick)  # a copy of each sample or of its mirror
    return flip


def _random_erasing(t: Any, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """torchvision's rule (area fraction in `scale`, log-uniform aspect in `ratio`, 10 tries for a
    box that fits, else no erasing), drawn for every sample at once."""
    n, tries = len(x), 10
    H, W = x.shape[-2:]
    area = H * W * (t.scale[0] + (t.scale[1] - t.scale[0]) * torch.rand(n, tries, generator=g))
    log_lo, log_hi = math.log(t.ratio[0]), math.log(t.ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, tries, generator=g))
    h = torch.sqrt(area * aspect).round().long()
    w = torch.sqrt(area / aspect).round().long()
    fits = (h < H) & (w < W) & (h > 0) & (w > 0)
    first = torch.where(fits.any(1), fits.float().argmax(1), torch.zeros(n, dtype=torch.long))
    h, w = h.gather(1, first[:, None])[:, 0], w.gather(1, first[:, None])[:, 0]
    u_top, u_left = torch.rand(n, generator=g), torch.rand(n, generator=g)
    top = (u_top * (H - h + 1).float()).long()
    left = (u_left * (W - w + 1).float()).long()
    chosen = (torch.rand(n, generator=g) < t.p) & fits.any(1)
    dev = x.device
    rows, cols = torch.arange(H, device=dev), torch.arange(W, device=dev)
    top, left, h, w, chosen = (v.to(dev) for v in (top, left, h, w, chosen))
    inside = (((rows[None, :] >= top[:, None]) & (rows[None, :] < (top + h)[:, None]))[:, :, None]
              & ((cols[None, :] >= left[:, None]) & (cols[None, :] < (left + w)[:, None]))[:, None, :])
    mask = (inside & chosen[:, None, None])[:, None]
    value = _per_channel(t.value, x.float()).to(x.dtype) if len(t.value) > 1 else \
        torch.tensor(t.value[0], device=dev).to(x.dtype)
    return torch.where(mask, value, x)


def _normalize(t: Any, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    x = _to_float(x)
    return (x - _per_channel(t.mean, x)) / _per_channel(t.std, x)


def _to_dtype(t: Any, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    dtype = t.dtype if isinstance(t.dtype, torch.dtype) else None
    if dtype is None:
        return x
    if t.scale and x.dtype == torch.uint8 and dtype.is_floating_point:
        return x.to(dtype).div_(255.0)
    return x.to(dtype)


def _identity(t: Any, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    return x


def _batched_forms() -> dict[type, Callable[[Any, torch.Tensor], Callable]]:
    """v2 class -> (transform, batch, generator) -> batch; `batchable` says which settings qualify."""
    from torchvision.transforms import v2

    return {v2.RandomCrop: _random_crop, v2.CenterCrop: _center_crop, v2.RandomHorizontalFlip: _flip(-1),
            v2.RandomVerticalFlip: _flip(-2), v2.RandomErasing: _random_erasing, v2.Normalize: _normalize,
            v2.ToDtype: _to_dtype, v2.ToImage: _identity, v2.ToPureTensor: _identity, v2.Identity: _identity}


def batchable(t: Any) -> bool:
    """Whether a built transform has a batched form with these settings (exact types: a subclass
    may change what the transform does)."""
    from torchvision.transforms import v2

    form = _batched_forms().get(type(t))
    if form is None:
        return False
    if isinstance(t, v2.RandomCrop):
        return not t.pad_if_needed and t.padding_mode in ("constant", "edge", "reflect") and \
            isinstance(t.fill, (int, float))
    if isinstance(t, v2.RandomErasing):
        return isinstance(t.value, (list, tuple)) and not t.inplace
    if isinstance(t, v2.ToDtype):
        return isinstance(t.dtype, torch.dtype)
    return True


# ---------------------------------------------------------------- the pipeline


@dataclass
class Finish:
    """Travels with a batch from the data loader to `on_after_batch_transfer`: which pipeline
    finishes it on the device, and the batch's seed. Not a tensor, so it is not moved."""

    train: bool
    seed: int


class Pipeline:
    """One split's transforms: per-image ops (in the loader) followed by batched ops (on the device).

    `mean` / `std` (one value or one per channel) normalise at the end unless the list has its
    own `Normalize` or `ToDtype`. With `same_size` false (images that may differ in size as they
    are read), crops stay per image, so that they can make the images one size before they are
    stacked; only what follows the last crop runs on the device.
    """

    def __init__(self, specs: list[dict] | None, mean: float | Sequence[float], std: float | Sequence[float],
                 where: str, same_size: bool = True) -> None:
        from torchvision.transforms import v2

        self.specs, self.where = list(specs or []), where
        ops = build_list(self.specs, where)
        cut = len(ops)
        while cut > 0 and batchable(ops[cut - 1]):
            cut -= 1
        if not same_size:
            crops = [i for i in range(cut, len(ops)) if isinstance(ops[i], (v2.RandomCrop, v2.CenterCrop))]
            cut = crops[-1] + 1 if crops else cut
        self.per_image, self.batched = ops[:cut], ops[cut:]
        self.default_normalize = not any(isinstance(t, (v2.Normalize, v2.ToDtype)) for t in ops)
        means = [float(mean)] if isinstance(mean, (int, float)) else [float(m) for m in mean]
        stds = [float(std)] if isinstance(std, (int, float)) else [float(s) for s in std]
        if self.default_normalize:
            self.batched.append(v2.Normalize(means, stds))
        self._forms = [_batched_forms()[type(t)] for t in self.batched]

    def image_ops(self, images: torch.Tensor | Sequence[torch.Tensor], seed: int) -> torch.Tensor:
        """The per-image ops on a batch of images (a uint8 tensor or a list of differently sized
        ones), their random draws seeded by `seed` without touching the global RNG; stacked."""
        if not self.per_image:
            return images if isinstance(images, torch.Tensor) else _stack(list(images), self.where)
        from torchvision.transforms import v2

        compose = v2.Compose(self.per_image)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            out = [compose(img) for img in images]
        return _stack(out, self.where)

    def device_ops(self, x: torch.Tensor, seed: int) -> torch.Tensor:
        """The batched ops on a whole batch, where it is (the training device)."""
        g = generator(seed)
        for t, form in zip(self.batched, self._forms):
            try:
                x = form(t, x, g)
            except ConfigError as e:
                raise ConfigError(f"{self.where}: {e}") from None
        return x if x.is_floating_point() else x.float()

    def describe(self) -> list[str]:
        """One line per op: where it runs and how it is set."""
        lines = [f"per image (data loader): {_show(t)}" for t in self.per_image]
        for t in self.batched:
            note = " (the data module's default)" if self.default_normalize and t is self.batched[-1] else ""
            lines.append(f"per batch (device): {_show(t)}{note}")
        return lines


def _stack(images: list[torch.Tensor], where: str) -> torch.Tensor:
    if not images:
        raise ConfigError(f"{where}: no images in the batch")
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) > 1:
        a, b = sorted(shapes)[:2]
        raise ConfigError(f"{where}: the images of a batch have different sizes ({list(a)} and {list(b)}) after "
                          f"the per-image transforms; add a Resize, CenterCrop or RandomResizedCrop that "
                          f"makes them one size")
    return torch.stack([torch.as_tensor(i) for i in images])


def _show(t: Any) -> str:
    text = repr(t)
    return " ".join(text.split())  # one line, however torchvision prints nested transforms

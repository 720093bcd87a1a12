"""Metrics: torchmetrics classes by snake_case name (`accuracy`, `f1_score`, ...) unless a
registered entry shadows them; built from the top-level `metrics:` list.

    import torchx.metrics as metrics
    @metrics.register('my_metric')
    class MyMetric(torchmetrics.Metric): ...

A metric is called as `update(output, target)` on every val/test batch and `compute()` at
the end of the epoch; it is logged as `val/<name>` and `test/<name>`.
"""

from __future__ import annotations

import functools
import inspect
import re

from torchx.registry import Registry


@functools.cache
def _torchmetrics_classes() -> dict[str, type]:
    import torchmetrics

    found = {}
    for name in dir(torchmetrics):
        cls = getattr(torchmetrics, name)
        if inspect.isclass(cls) and issubclass(cls, torchmetrics.Metric) and cls is not torchmetrics.Metric:
            found[re.sub(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])", "_", name).lower()] = cls
    return found


registry = Registry("metric", fallback=lambda name: _torchmetrics_classes().get(name),
                    fallback_names=lambda: list(_torchmetrics_classes()))
register = registry.register
make = registry.make


# ---------------------------------------------------------------- built-ins

import torch  # noqa: E402
from torchmetrics.image import PeakSignalNoiseRatio  # noqa: E402  (pytorch_lightning imports it anyway)


@register("psnr")
class PSNR(PeakSignalNoiseRatio):
    """Peak signal-to-noise ratio in dB of images [N, C, H, W] (torchmetrics' PeakSignalNoiseRatio).

    Defaults follow super-resolution practice: pixels in [0, `data_range`] (1.0), predictions
    clamped to that range as a saved image would be, and the mean of each image's PSNR
    (`per_image: false`: the PSNR of the mean squared error over all pixels of all images).
    `crop_border` pixels are left out at each edge (SR benchmarks often shave `scale`).
    """

    def __init__(self, data_range: float = 1.0, base: float = 10.0, per_image: bool = True, clamp: bool = True,
                 crop_border: int = 0) -> None:
        if isinstance(data_range, bool) or not isinstance(data_range, (int, float)) or not data_range > 0:
            raise ValueError(f"data_range must be a positive number (1.0 for pixels in [0, 1], 255 for bytes), "
                             f"got {data_range!r}")
        if isinstance(crop_border, bool) or not isinstance(crop_border, int) or crop_border < 0:
            raise ValueError(f"crop_border must be a whole number of pixels >= 0, got {crop_border!r}")
        super().__init__(data_range=float(data_range), base=base, dim=1 if per_image else None)
        self.per_image, self.clamp, self.crop_border = per_image, clamp, crop_border

    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        if preds.shape != target.shape:
            raise ValueError(f"psnr compares images of one shape, but the output is {list(preds.shape)} and the "
                             f"target {list(target.shape)}")
        if self.crop_border:
            b = self.crop_border
            preds, target = preds[..., b:-b, b:-b], target[..., b:-b, b:-b]
        if self.clamp:
            preds = preds.clamp(0.0, float(self.data_range))
        if self.per_image:  # one squared-error sum per image: the mean of per-image PSNRs
            preds, target = preds.flatten(1), target.flatten(1)
        super().update(preds, target)

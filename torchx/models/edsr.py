"""EDSR-style super-resolution network: residual blocks without batch norm, then sub-pixel upsampling.

After Lim et al., "Enhanced Deep Residual Networks for Single Image Super-Resolution" (2017): a head
convolution, `n_resblocks` blocks of conv-ReLU-conv whose output is scaled by `res_scale` before it
is added back (batch norm is left out: it removes the range flexibility SR needs), a convolution and
a skip over the whole body, a PixelShuffle upsampler and a tail convolution. Input and output are
images in [0, 1]; the mean shift subtracts a per-channel mean at the input and adds it back at the
output, so the network learns around zero.
"""

from __future__ import annotations

import torch
from torch import nn

from torchx.errors import ConfigError
from torchx.models import register

DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)  # the mean of DIV2K's training images, as EDSR uses it


class ResBlock(nn.Module):
    """x + res_scale * conv(relu(conv(x))), no batch norm."""

    def __init__(self, n_feats: int, kernel_size: int, res_scale: float) -> None:
        super().__init__()
        pad = kernel_size // 2
        self.body = nn.Sequential(nn.Conv2d(n_feats, n_feats, kernel_size, padding=pad), nn.ReLU(inplace=True),
                                  nn.Conv2d(n_feats, n_feats, kernel_size, padding=pad))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


def upsampler(scale: int, n_feats: int, kernel_size: int) -> nn.Sequential:
    """Sub-pixel convolution: x2 and x3 in one step, x4 as two x2 steps (as EDSR does)."""
    steps = [2, 2] if scale == 4 else [scale]
    layers: list[nn.Module] = []
    for s in steps:
        layers += [nn.Conv2d(n_feats, s * s * n_feats, kernel_size, padding=kernel_size // 2), nn.PixelShuffle(s)]
    return nn.Sequential(*layers)


@register("edsr")
class EDSR(nn.Module):
    """Images [N, C, H, W] in [0, 1] to [N, C, scale*H, scale*W].

    `mean` is the per-channel mean shifted away at the input and back at the output (default:
    DIV2K's RGB mean for 3 channels, 0.5 for any other count); `mean_shift: false` leaves it out.
    EDSR's paper sizes are n_resblocks 16, n_feats 64, res_scale 1 (baseline) and 32, 256, 0.1.
    """

    def __init__(self, scale: int = 2, n_resblocks: int = 8, n_feats: int = 32, res_scale: float = 0.1,
                 in_channels: int = 3, kernel_size: int = 3, mean_shift: bool = True,
                 mean: list[float] | None = None) -> None:
        super().__init__()
        if isinstance(scale, bool) or scale not in (2, 3, 4):
            raise ConfigError(f"scale must be 2, 3 or 4 (the sub-pixel upsampler's factors), got {scale!r}")
        for name, value, low in (("n_resblocks", n_resblocks, 0), ("n_feats", n_feats, 1),
                                 ("in_channels", in_channels, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be a whole number >= {low}, got {value!r}")
        if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ConfigError(f"kernel_size must be an odd positive whole number (3, 5, ...), got {kernel_size!r}")
        if not isinstance(res_scale, (int, float)) or isinstance(res_scale, bool) or not res_scale > 0:
            raise ConfigError(f"res_scale must be a positive number (0.1 for deep or wide networks, 1 for small "
                              f"ones), got {res_scale!r}")
        if mean is None:
            mean = list(DIV2K_RGB_MEAN) if in_channels == 3 else [0.5] * in_channels
        elif len(mean) != in_channels:
            raise ConfigError(f"mean has {len(mean)} values {list(mean)}, but in_channels is {in_channels}; give "
                              f"one mean per channel")
        self.scale = scale
        self.register_buffer("shift", torch.tensor(mean if mean_shift else [0.0] * in_channels,
                                                   dtype=torch.float32).reshape(1, -1, 1, 1))
        pad = kernel_size // 2
        self.head = nn.Conv2d(in_channels, n_feats, kernel_size, padding=pad)
        self.body = nn.Sequential(*(ResBlock(n_feats, kernel_size, res_scale) for _ in range(n_resblocks)),
                                  nn.Conv2d(n_feats, n_feats, kernel_size, padding=pad))
        self.upsample = upsampler(scale, n_feats, kernel_size)
        self.tail = nn.Conv2d(n_feats, in_channels, kernel_size, padding=pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(x - self.shift)
        x = x + self.body(x)  # the long skip: the blocks learn a residual of the head's features
        return self.tail(self.upsample(x)) + self.shift

"""A small DCGAN pair for 28x28 images (MNIST-sized)."""

from __future__ import annotations

import torch
from torch import nn

from torchx.models import register


@register("dcgan_generator")
class Generator(nn.Module):
    """Noise [B, latent_dim] -> images [B, channels, 28, 28] in [-1, 1] (tanh), via 7x7 and 14x14."""

    def __init__(self, latent_dim: int = 64, channels: int = 1, width: int = 64) -> None:
        super().__init__()
        self.latent_dim = latent_dim
        self.net = nn.Sequential(
            nn.Linear(latent_dim, 2 * width * 7 * 7, bias=False), nn.BatchNorm1d(2 * width * 7 * 7), nn.ReLU(True),
            nn.Unflatten(1, (2 * width, 7, 7)),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(True),
            nn.ConvTranspose2d(width, channels, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


@register("dcgan_discriminator")
class Discriminator(nn.Module):
    """Images [B, channels, 28, 28] -> one score (a logit) per image; `norm: none` for WGAN-GP."""

    def __init__(self, channels: int = 1, width: int = 64, norm: str = "batch") -> None:
        super().__init__()
        if norm not in ("batch", "none"):
            raise ValueError(f"norm must be 'batch' or 'none', got {norm!r}")
        middle = nn.BatchNorm2d(2 * width) if norm == "batch" else nn.Identity()
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2, True),
            nn.Conv2d(width, 2 * width, 4, 2, 1, bias=norm == "none"), middle, nn.LeakyReLU(0.2, True),
            nn.Flatten(), nn.Linear(2 * width * 7 * 7, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(1)

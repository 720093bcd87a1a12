"""A user's own model and loss, registered without touching torchx (see configs/digits-custom.yaml)."""

import torch
import torch.nn.functional as F
from torch import nn

import torchx.losses as losses
import torchx.models as models


@models.register("conv_digits")
class ConvDigits(nn.Module):
    """A small CNN for 8x8 digits: two 3x3 convolutions, global average pooling, a linear head."""

    def __init__(self, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.head = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        return self.head(x.mean(dim=(2, 3)))


@losses.register("smooth_ce")
def smooth_ce(smoothing: float = 0.1) -> nn.Module:
    """Cross-entropy with label smoothing (a factory function works as well as a class)."""
    return nn.CrossEntropyLoss(label_smoothing=smoothing)

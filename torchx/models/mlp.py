from __future__ import annotations

import torch
from torch import nn

from torchx.models import register


@register("mlp")
class MLP(nn.Module):
    """Multi-layer perceptron on flattened inputs: Linear -> ReLU (-> Dropout) per hidden layer."""

    def __init__(self, in_dim: int = 784, hidden: list[int] = (256,), out_dim: int = 10,
                 dropout: float = 0.0) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        for width in hidden:
            layers += [nn.Linear(in_dim, width), nn.ReLU()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            in_dim = width
        layers.append(nn.Linear(in_dim, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

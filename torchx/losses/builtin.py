"""Built-in losses: torch's own, under short names."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchx.losses import register

register("ce")(nn.CrossEntropyLoss)
register("nll")(nn.NLLLoss)
register("mse")(nn.MSELoss)
register("l1")(nn.L1Loss)
register("bce_logits")(nn.BCEWithLogitsLoss)


@register("mnist_ce")
class MnistCE(nn.Module):
    """Cross-entropy of class logits against integer labels (the name the original torchx configs use)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)

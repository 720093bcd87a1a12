"""Built-in losses: torch's own, under short names.

The element-wise ones (`mse`, `l1`, `smooth_l1`, `huber`, `bce`, `bce_logits`) refuse an output and
a target of different shapes instead of broadcasting them: torch turns a regression head's
[N, 1] against targets [N] into an [N, N] loss, which trains without an error and learns nothing.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from torchx.losses import register

register("ce")(nn.CrossEntropyLoss)
register("nll")(nn.NLLLoss)


def _same_shape(name: str, output: torch.Tensor, target: torch.Tensor) -> None:
    if output.shape != target.shape:
        raise ValueError(f"loss '{name}' compares element by element, but the output has shape "
                         f"{list(output.shape)} and the target {list(target.shape)}; make the model's "
                         f"output the target's shape (e.g. out_dim matching the target's last dimension)")


def _elementwise(name: str, base: type[nn.Module]) -> type[nn.Module]:
    """`base` with a shape check before its forward."""

    def forward(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        _same_shape(name, output, target)
        return base.forward(self, output, target)

    doc = f"torch.nn.{base.__name__}, refusing an output and a target of different shapes."
    return type(base.__name__, (base,), {"forward": forward, "__doc__": doc, "__module__": __name__})


for _name, _base in {"mse": nn.MSELoss, "l1": nn.L1Loss, "smooth_l1": nn.SmoothL1Loss, "huber": nn.HuberLoss,
                     "bce": nn.BCELoss, "bce_logits": nn.BCEWithLogitsLoss}.items():
    register(_name)(_elementwise(_name, _base))


@register("mnist_ce")
class MnistCE(nn.Module):
    """Cross-entropy of class logits against integer labels (the name the original torchx configs use)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = label_smoothing

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)

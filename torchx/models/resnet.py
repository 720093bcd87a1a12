from __future__ import annotations

from torch import nn

from torchx.models import register


@register("resnet18")
def resnet18(num_classes: int = 10, in_channels: int = 1, small_input: bool = True) -> nn.Module:
    """torchvision's ResNet-18, randomly initialised, for 1-channel 28x28 images unless told otherwise.

    With `small_input` the 7x7 stride-2 stem and its max-pool become one 3x3 stride-1 conv, so
    MNIST-sized inputs keep enough resolution for the four stages.
    """
    from torchvision.models import resnet18 as tv_resnet18  # imported here: torchvision is slow to load

    model = tv_resnet18(weights=None, num_classes=num_classes)
    if small_input:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return model

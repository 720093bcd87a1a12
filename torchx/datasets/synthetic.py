"""Random images with a learnable label: for smoke tests and benchmarks, no files needed."""

from __future__ import annotations

import torch

from torchx.datasets import register
from torchx.datasets.base import TensorDataModule


@register("synthetic")
class Synthetic(TensorDataModule):
    """`n_train` + `n_test` random uint8 images of `shape`; class k brightens row band k."""

    def __init__(self, n_train: int = 1024, n_test: int = 256, shape: list[int] = (1, 28, 28),
                 num_classes: int = 10, batch_size: int = 64, num_workers: int = 0, val_split: float = 0.1,
                 pin_memory: bool = False, shuffle: bool = True, drop_last: bool = False, split_seed: int = 0,
                 eval_batch_size: int | None = None, mean: float | None = None,
                 std: float | None = None, data_seed: int = 0,
                 train_transforms: list[dict] | None = None, eval_transforms: list[dict] | None = None,
                 fold: int | None = None, folds: int | None = None, fold_seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, val_split=val_split,
                         pin_memory=pin_memory, shuffle=shuffle, drop_last=drop_last,
                         split_seed=split_seed, eval_batch_size=eval_batch_size, mean=mean, std=std,
                         train_transforms=train_transforms, eval_transforms=eval_transforms,
                         fold=fold, folds=folds, fold_seed=fold_seed)
        self.n_train, self.n_test, self.shape = n_train, n_test, tuple(shape)
        self.num_classes, self.data_seed = num_classes, data_seed
        self.in_channels = self.shape[0]
        self.image_size = list(self.shape[1:])

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.data_seed)
        n = self.n_train + self.n_test
        labels = torch.randint(0, self.num_classes, (n,), generator=g)
        images = torch.randint(0, 128, (n, *self.shape), generator=g, dtype=torch.uint8)
        rows = self.shape[-2]
        band = torch.arange(rows).unsqueeze(0) * self.num_classes // rows == labels.unsqueeze(1)  # [n, rows]
        images[band.unsqueeze(1).unsqueeze(-1).expand_as(images)] = 255
        return {"train": (images[: self.n_train], labels[: self.n_train]),
                "test": (images[self.n_train:], labels[self.n_train:])}

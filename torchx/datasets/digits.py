"""scikit-learn's bundled 8x8 handwritten digits: real data that needs no download."""

from __future__ import annotations

import torch

from torchx.datasets import register
from torchx.datasets.base import TensorDataModule
from torchx.errors import ConfigError

N_DIGITS = 1797  # the size of sklearn.datasets.load_digits()


@register("digits")
class Digits(TensorDataModule):
    """1797 8x8 handwritten digits shipped with scikit-learn; the last `test_split` form the test set."""

    mean, std = 0.3, 0.4
    num_classes, in_channels, image_size = 10, 1, 8

    def __init__(self, batch_size: int = 64, num_workers: int = 0, val_split: float = 0.1,
                 test_split: int = 297, pin_memory: bool = False, shuffle: bool = True,
                 drop_last: bool = False, split_seed: int = 0, eval_batch_size: int | None = None,
                 mean: float | None = None, std: float | None = None,
                 train_transforms: list[dict] | None = None, eval_transforms: list[dict] | None = None,
                 fold: int | None = None, folds: int | None = None, fold_seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, val_split=val_split,
                         pin_memory=pin_memory, shuffle=shuffle, drop_last=drop_last,
                         split_seed=split_seed, eval_batch_size=eval_batch_size, mean=mean, std=std,
                         train_transforms=train_transforms, eval_transforms=eval_transforms,
                         fold=fold, folds=folds, fold_seed=fold_seed)
        # checked here, so a bad value is named before any data is read, not blamed on val_split later
        valid = f"it must be a whole number of digits from 0 to {N_DIGITS - 1} (at least one is left for training)"
        if not isinstance(test_split, int) or isinstance(test_split, bool):
            raise ConfigError(f"test_split={test_split!r} is not a count of test digits; {valid}")
        if test_split >= N_DIGITS:
            what = "is all" if test_split == N_DIGITS else "is more than"
            raise ConfigError(f"test_split={test_split} {what} the {N_DIGITS} digits and leaves none for "
                              f"training; {valid}")
        if test_split < 0:
            raise ConfigError(f"test_split={test_split} is negative; {valid}")
        self.test_split = test_split

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        # pixel values are 0..16; stored as uint8 0..255 like every other image module
        images = torch.from_numpy(bunch.images * (255.0 / 16.0)).round().to(torch.uint8).unsqueeze(1)
        labels = torch.from_numpy(bunch.target).long()
        cut = len(labels) - self.test_split
        data = {"train": (images[:cut], labels[:cut])}
        if self.test_split:  # test_split=0: no test set (the run says it is untested), not an empty one
            data["test"] = (images[cut:], labels[cut:])
        return data

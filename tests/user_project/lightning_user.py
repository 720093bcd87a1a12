"""A user's project, outside torchx: Lightning's own demo classes registered unchanged, and the
plain LightningDataModules, LightningModules and callbacks people write themselves."""

from __future__ import annotations

import threading

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks.progress.progress_bar import ProgressBar
from pytorch_lightning.demos.boring_classes import BoringDataModule, BoringModel, DemoModel, ManualOptimBoringModel
from pytorch_lightning.demos.mnist_datamodule import MNISTDataModule
from pytorch_lightning.loggers import CSVLogger
from torch.utils.data import DataLoader, Dataset, TensorDataset

import torchx.callbacks as callbacks
import torchx.datasets as datasets
import torchx.loggers as loggers
import torchx.models as models
import torchx.wrappers as wrappers

# Lightning's shipped demos, exactly as Lightning ships them
wrappers.register("boring_model")(BoringModel)
wrappers.register("demo_model")(DemoModel)
wrappers.register("manual_optim_boring_model")(ManualOptimBoringModel)
datasets.register("boring_datamodule")(BoringDataModule)
datasets.register("lightning_mnist")(MNISTDataModule)
loggers.register("lightning_csv")(CSVLogger)  # a Lightning logger torchx knows nothing of


def _digits(regression: bool) -> tuple[torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.data, dtype=torch.float32) / 16.0
    y = torch.tensor(bunch.target, dtype=torch.float32 if regression else torch.long)
    return x, y


class DictDataset(Dataset):
    """Samples as dicts, as many datasets (and Hugging Face's) give them."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "label": self.y[i], "index": i}


@datasets.register("digits_train_val")
class DigitsTrainVal(pl.LightningDataModule):
    """scikit-learn's digits as flat vectors: a train and a val loader, no test loader."""

    def __init__(self, batch_size: int = 64, regression: bool = False, dict_batches: bool = False,
                 n_val: int = 397) -> None:
        super().__init__()
        self.batch_size, self.regression, self.dict_batches, self.n_val = batch_size, regression, dict_batches, n_val

    def setup(self, stage: str) -> None:
        x, y = _digits(self.regression)
        cut = len(y) - self.n_val
        make = DictDataset if self.dict_batches else TensorDataset
        self.train_set, self.val_set = make(x[:cut], y[:cut]), make(x[cut:], y[cut:])

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size)


@datasets.register("digits_train_only")
class DigitsTrainOnly(DigitsTrainVal):
    """The same, with a train loader alone: no validation, no test."""

    val_dataloader = pl.LightningDataModule.val_dataloader


@datasets.register("digits_with_test")
class DigitsWithTest(DigitsTrainVal):
    """The same, with the val split doubling as a test loader."""

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.val_set, batch_size=self.batch_size)


@models.register("dict_head")
class DictHead(torch.nn.Module):
    """A linear classifier whose forward returns a dict, as Hugging Face models do."""

    def __init__(self, in_dim: int = 64, num_classes: int = 10) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(in_dim, num_classes)

    def forward(self, x: torch.Tensor) -> dict:
        return {"logits": self.layer(x), "features": x}


@wrappers.register("plain_classifier")
class PlainClassifier(pl.LightningModule):
    """A LightningModule as people write it: self.log in its steps, no logged_metrics()."""

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(64, 10)
        self.lr = lr

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = torch.nn.functional.cross_entropy(self.layer(x), y)
        self.log("loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", torch.nn.functional.cross_entropy(self.layer(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=self.lr)


@wrappers.register("locked_classifier")
class LockedClassifier(PlainClassifier):
    """The same, holding a lock (as code sharing state with a thread does): it cannot be copied."""

    def __init__(self, lr: float = 0.1) -> None:
        super().__init__(lr)
        self.lock = threading.Lock()


@callbacks.register("line_bar")
class LineBar(ProgressBar):
    """A user's own progress bar: one line per training epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.enabled = True

    def disable(self) -> None:
        self.enabled = False

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.enabled:
            print(f"line_bar: epoch {trainer.current_epoch} done at step {trainer.global_step}", flush=True)


@datasets.register("digits_folds")
class DigitsFolds(DigitsTrainVal):
    """The same, cut into folds by hand as a user would for cross-validation: every `folds`-th digit
    from the `fold`-th on validates, the rest trains."""

    def __init__(self, batch_size: int = 64, fold: int = 0, folds: int = 5) -> None:
        super().__init__(batch_size=batch_size)
        self.fold, self.folds = fold, folds

    def setup(self, stage: str) -> None:
        x, y = _digits(False)
        val = torch.arange(len(y)) % self.folds == self.fold
        self.train_set, self.val_set = TensorDataset(x[~val], y[~val]), TensorDataset(x[val], y[val])

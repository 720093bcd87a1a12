"""In-memory data modules: whole uint8 tensors, indexed a batch at a time.

The data order belongs to torchx, not to torch's global RNG: `EpochSampler` draws each
epoch's permutation from (seed, epoch) alone, so train_pl.py and train.py see the same
batches, a resumed run sees what it would have seen, and DDP ranks take disjoint shards.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from torchx.errors import ConfigError


class BatchKey(NamedTuple):
    """What EpochSampler yields: a batch's sample indices and where the batch stands, which is all
    that its random augmentation draws may depend on (see torchx.transforms.batch_seed)."""

    indices: list[int]
    epoch: int
    number: int  # the batch's position in its epoch; a resumed epoch's batches keep theirs
    rank: int


class EpochSampler(Sampler[BatchKey]):
    """Yields whole batches as BatchKeys; the order depends only on seed and epoch.

    With `world_size > 1` each rank takes every world_size-th index of the permutation. For
    training it is padded first, like DistributedSampler, so all ranks run the same number of
    batches; for evaluation (`pad=False`) it is not, so every sample is counted exactly once and
    ranks may differ by one sample.
    """

    def __init__(self, n: int, batch_size: int, shuffle: bool, seed: int, drop_last: bool = False,
                 rank: int = 0, world_size: int = 1, pad: bool = True) -> None:
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.drop_last, self.rank, self.world_size, self.pad = drop_last, rank, world_size, pad
        self.epoch = 0
        self.per_rank = math.ceil(n / world_size) if pad else len(range(rank, n, world_size))
        self.resume_at: tuple[int, int] | None = None  # (epoch, batches already seen in it)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        full, rest = divmod(self.per_rank, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g)
        else:
            order = torch.arange(self.n)
        pad = self.per_rank * self.world_size - self.n if self.pad else 0
        if pad:
            order = torch.cat([order, order[:pad]])
        order = order[self.rank::self.world_size].tolist()
        skip = 0
        if self.resume_at is not None:  # a mid-epoch checkpoint: serve only the batches not yet seen
            if self.resume_at[0] == self.epoch:
                skip = self.resume_at[1]
            self.resume_at = None
        for i in range(skip, len(self)):
            yield BatchKey(order[i * self.batch_size:(i + 1) * self.batch_size], self.epoch, i, self.rank)


class ResumableLoader(DataLoader):
    """A DataLoader whose position can be saved and restored, so a mid-epoch checkpoint resumes
    with exactly the batches the epoch had not served yet, in the same order.

    `consumed()` tells how many batches of the current epoch the training loop has processed
    (not how many were prefetched); pl.Trainer saves `state_dict()` in its checkpoints and
    calls `load_state_dict()` on resume, and torchx's plain loop does the same.
    """

    def __init__(self, *args: Any, consumed: Any = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._consumed = consumed

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.sampler.epoch, "batches": int(self._consumed()) if self._consumed else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.sampler.resume_at = (int(state["epoch"]), int(state["batches"]))


@dataclass
class LoaderFailure:
    """What a DataLoader worker returns instead of a batch it cannot make (a ConfigError: an image
    that does not decode, transforms that leave images of different sizes), so the main process
    raises the message alone; an exception raised in a worker arrives wrapped in its traceback."""

    message: str


class BatchTensorDataset(Dataset):
    """Indexed by a BatchKey (or a list of indices), returns a whole batch.

    Images stay uint8 in memory. Without transforms a batch is converted to float and normalised in
    one vectorised step, `(x, y)`. With a `pipeline`, its per-image ops run here and the batch leaves
    as uint8 `(x, y, Finish)`, for the data module's `on_after_batch_transfer` to run the batched ops
    on the training device.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: float, std: float,
                 pipeline: Any = None, seed: int = 0, train: bool = False) -> None:
        self.images, self.labels = images, labels
        self.scale = 1.0 / (255.0 * std)
        self.shift = mean / std
        self.pipeline, self.seed, self.train = pipeline, seed, train

    def __len__(self) -> int:
        return len(self.labels)

    def pick(self, index: torch.Tensor) -> Any:
        """The raw (uint8) images at `index`: a tensor, or a list of tensors of any sizes."""
        return self.images.index_select(0, index)

    def __getitem__(self, key: BatchKey | list[int]) -> tuple | LoaderFailure:
        try:
            return self.batch(key)
        except ConfigError as e:
            if get_worker_info() is None:
                raise
            return LoaderFailure(str(e))

    def batch(self, key: BatchKey | list[int]) -> tuple:
        idx = key.indices if isinstance(key, BatchKey) else key
        index = torch.as_tensor(idx, dtype=torch.long)
        if self.pipeline is None:
            x = self.images.index_select(0, index).float().mul_(self.scale).sub_(self.shift)
            return x, self.labels.index_select(0, index)
        from torchx.transforms import Finish, batch_seed

        seed = batch_seed(self.seed, *(key[1:] if isinstance(key, BatchKey) else (0, 0, 0)))
        x = self.pipeline.image_ops(self.pick(index), seed)
        # the device's draws get a stream of their own, unrelated to the per-image ones
        return x, self.labels.index_select(0, index), Finish(self.train, seed ^ 0x5DEECE66D)


class TensorDataModule(pl.LightningDataModule):
    """Base of torchx's image data modules; a subclass implements `load()`.

    `load()` returns {'train': (images, labels), 'test': (images, labels)} with images a uint8
    tensor [N, C, H, W] and labels int64 [N]; 'test' is optional. The validation set is the
    last `val_split` of a fixed permutation of train (a count if >= 1, else a fraction).

    With `folds` (k-fold cross-validation, see `fold_indices`) the train split is cut into that
    many folds, stratified by class; fold `fold` is the validation set, the others train, and
    val_split is not used. The test split is untouched.
    """

    mean: float = 0.5
    std: float = 0.5
    same_size = True  # whether a split's images all have one size as stored (see transforms.Pipeline)

    def __init__(self, batch_size: int = 64, num_workers: int = 0, val_split: float = 0.1,
                 pin_memory: bool = False, shuffle: bool = True, drop_last: bool = False,
                 split_seed: int = 0, eval_batch_size: int | None = None,
                 mean: float | None = None, std: float | None = None,
                 train_transforms: list[dict] | None = None, eval_transforms: list[dict] | None = None,
                 fold: int | None = None, folds: int | None = None, fold_seed: int = 0) -> None:
        super().__init__()
        check_folds(fold, folds, fold_seed)
        self.fold, self.folds, self.fold_seed = fold, folds, fold_seed
        if mean is not None:
            self.mean = mean  # e.g. mean 0.5, std 0.5 maps pixels to [-1, 1] for a tanh generator
        if std is not None:
            if not std > 0:
                raise ConfigError(f"std must be positive, got {std!r}")
            self.std = std
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"num_workers must be a non-negative integer, got {num_workers!r}")
        if not (isinstance(val_split, (int, float)) and val_split >= 0):
            raise ConfigError(f"val_split must be a count (>= 1) or a fraction in [0, 1), got {val_split!r}")
        self.batch_size, self.num_workers, self.val_split = batch_size, num_workers, val_split
        self.pin_memory, self.shuffle, self.drop_last = pin_memory, shuffle, drop_last
        self.split_seed = split_seed
        self.eval_batch_size = eval_batch_size or batch_size
        self.train_transforms, self.eval_transforms = train_transforms, eval_transforms
        self.pipelines = self.build_pipelines(train_transforms, eval_transforms)
        self.splits: dict[str, tuple[Any, torch.Tensor]] = {}
        self._samplers: dict[str, EpochSampler] = {}
        self.batches_seen = 0  # set by torchx's plain loop, which has no trainer to ask

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def build_pipelines(self, train: list[dict] | None, eval: list[dict] | None) -> dict[str, Any] | None:
        """The train and eval transform pipelines, checked now (before any data is read); None
        when neither is configured: batches are normalised in the loader, as they always were."""
        if train is None and eval is None:
            return None
        from torchx.transforms import Pipeline

        return {"train": Pipeline(train, self.mean, self.std, "data_module.args.train_transforms", self.same_size),
                "eval": Pipeline(eval, self.mean, self.std, "data_module.args.eval_transforms", self.same_size)}

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Run the batched transforms on a batch that reached the training device (both loops
        call this, as Lightning does); then the wrapper's own hook, if it has one."""
        from torchx.transforms import Finish

        if isinstance(batch, LoaderFailure):
            raise ConfigError(batch.message)
        if isinstance(batch, (tuple, list)) and len(batch) == 3 and isinstance(batch[2], Finish):
            x, y, finish = batch
            batch = self.pipelines["train" if finish.train else "eval"].device_ops(x, finish.seed), y
        module = getattr(getattr(self, "trainer", None), "lightning_module", None)
        own = pl.LightningModule.on_after_batch_transfer
        if module is not None and type(module).on_after_batch_transfer is not own:
            batch = module.on_after_batch_transfer(batch, dataloader_idx)
        return batch

    def pipeline_lines(self) -> list[str]:
        """The transforms each split's batches go through, for the run directory's data.txt."""
        if self.pipelines is None:
            return [f"all splits: float, normalised with mean {self.mean}, std {self.std} (no transforms configured)"]
        lines = []
        for split, pipeline in (("train", self.pipelines["train"]), ("val/test", self.pipelines["eval"])):
            lines += [f"{split}: {line}" for line in pipeline.describe()] or [f"{split}: (none)"]
        return lines

    def labels(self) -> torch.Tensor | None:
        """Every integer class label of every split (checked against the model's outputs), or None."""
        found = [y.reshape(-1) for _, y in self.splits.values() if isinstance(y, torch.Tensor)]
        if not found:
            return None
        labels = torch.cat(found)
        return None if labels.is_floating_point() else labels

    def data_files(self) -> list[Path]:
        """The files the data was read from (their checksums go into the run's data.txt); none here."""
        return []

    def split_size(self, split: str) -> int:
        return len(self.splits[split][1])

    def make_dataset(self, split: str, train: bool) -> Dataset:
        """The dataset of one split, indexed by BatchKeys; a subclass with other storage overrides it."""
        images, labels = self.splits[split]
        pipeline = self.pipelines["train" if train else "eval"] if self.pipelines else None
        return BatchTensorDataset(images, labels, self.mean, self.std, pipeline, self._seed(), train)

    def describe(self) -> str:
        """One line for --dry-run, without loading any data."""
        return (f"{type(self).__name__}(batch_size={self.batch_size}, val_split={self.val_split}, "
                f"num_workers={self.num_workers})")

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        data = self.load()
        images, labels = data["train"]
        if self.folds is not None:
            train_idx, val_idx = fold_indices(labels, self.folds, self.fold, self.fold_seed)
        else:
            n_val = int(self.val_split) if self.val_split >= 1 else int(round(len(labels) * self.val_split))
            if not 0 <= n_val < len(labels):
                raise ConfigError(f"val_split={self.val_split} leaves no training data "
                                  f"({len(labels)} training samples)")
            perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.split_seed))
            train_idx, val_idx = perm[: len(labels) - n_val], perm[len(labels) - n_val:]
        n_val = len(val_idx)
        self.splits["train"] = (images[train_idx], labels[train_idx])
        if n_val:
            self.splits["val"] = (images[val_idx], labels[val_idx])
        if "test" in data:
            self.splits["test"] = data["test"]

    def has_split(self, split: str) -> bool:
        return split in self.splits

    def _loader(self, split: str, train: bool) -> DataLoader:
        if split not in self.splits:
            self.setup()
        rank, world = self._rank_and_world()
        sampler = EpochSampler(self.split_size(split), self.batch_size if train else self.eval_batch_size,
                               shuffle=train and self.shuffle, seed=self._seed(),
                               drop_last=train and self.drop_last, rank=rank, world_size=world, pad=train)
        self._samplers[split] = sampler
        loader = ResumableLoader if train else DataLoader
        extra = {"consumed": self._consumed} if train else {}
        return loader(self.make_dataset(split, train), sampler=sampler,
                      batch_size=None, num_workers=self.num_workers, pin_memory=self.pin_memory,
                      persistent_workers=self.num_workers > 0,
                      generator=torch.Generator(), **extra)  # iterator creation must not touch the global RNG

    def _consumed(self) -> int:
        """Training batches of this epoch that pl.Trainer (or the plain loop) has processed."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return self.batches_seen
        return trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def _rank_and_world(self) -> tuple[int, int]:
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            return trainer.global_rank, trainer.world_size
        return 0, 1

    def _seed(self) -> int:
        # The run's seed (seed_everything / torch.manual_seed set it) decides the shuffle order.
        return torch.initial_seed() % (2**31)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader | list:
        return self._loader("val", train=False) if "val" in self.splits else []

    def test_dataloader(self) -> DataLoader | list:
        return self._loader("test", train=False) if "test" in self.splits else []


def check_folds(fold: Any, folds: Any, fold_seed: Any) -> None:
    """`fold` and `folds` come together: folds >= 2 and 0 <= fold < folds."""
    if folds is None and fold is None:
        return
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        raise ConfigError(f"folds={folds!r}: k-fold cross-validation needs a whole number of folds >= 2 (with fold, "
                          f"the one to validate on)")
    if not isinstance(fold, int) or isinstance(fold, bool) or not 0 <= fold < folds:
        raise ConfigError(f"fold={fold!r} is not a fold of folds={folds}; give a whole number from 0 to {folds - 1}")
    if not isinstance(fold_seed, int) or isinstance(fold_seed, bool) or fold_seed < 0:
        raise ConfigError(f"fold_seed={fold_seed!r} must be a non-negative integer")


def fold_indices(labels: Any, folds: int, fold: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(train, validation) indices of fold `fold` of `folds`: the samples are shuffled by `seed`
    and dealt to the folds in turn, class after class when there are integer class labels (so each
    fold has each class in proportion), else all together. Fold sizes differ by one at most."""
    n = len(labels)
    if folds > n:
        raise ConfigError(f"folds={folds} is more than the {n} training samples; use at most {n} folds")
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)
    if isinstance(labels, torch.Tensor) and labels.dim() == 1 and not labels.is_floating_point():
        order = order[torch.sort(labels[order], stable=True).indices]  # shuffled within each class
    assigned = torch.empty(n, dtype=torch.long)
    assigned[order] = torch.arange(n) % folds
    return torch.nonzero(assigned != fold).flatten(), torch.nonzero(assigned == fold).flatten()


class FileDataModule(TensorDataModule):
    """A TensorDataModule read from files in `root_dir`, fetched first when `download` is on and
    some are missing. A subclass gives `missing()` (the files not there), `fetch()`,
    `missing_message(missing)` (what to do about them) and `read()` (the splits, as `load`)."""

    def __init__(self, root_dir: str, download: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.root_dir = Path(root_dir)
        self.download = download

    def missing(self) -> list[str]:
        raise NotImplementedError

    def fetch(self) -> None:
        raise NotImplementedError

    def missing_message(self, missing: list[str]) -> str:
        raise NotImplementedError

    def read(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def prepare_data(self) -> None:
        if self.download and self.missing():
            self.fetch()

    def load(self) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        missing = self.missing()
        if missing and self.download:
            self.fetch()
            missing = self.missing()
        if missing:
            raise ConfigError(self.missing_message(missing))
        return self.read()

"""The `base` training wrapper: model + loss + optimizer (+ schedulers) for supervised training.

The math lives in plain methods (`training_loss`, `evaluate`, `epoch_metrics`,
`build_optimizers`) that pl.Trainer's hooks and torchx's plain loop both call, so the two
entry points compute the same numbers.

Batches are `(input, target)` pairs, or dicts (or longer tuples) from which `input_key` and
`target_key` pick the two; a model whose forward returns a dict (or a tuple) is read at
`output_key`. `check_batch` tries one real batch before anything is created, so a batch or
an output of another shape is one clear message instead of a crash mid-run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import nn

from torchx import losses, models
from torchx.distributed import gather_per_rank, rank_and_world
from torchx.errors import ConfigError, NonFiniteLoss, first_line
from torchx.metrics import make as make_metric
from torchx.optim import optimizers, schedulers
from torchx.wrappers import register


class EpochMeans:
    """Sample-weighted running means, kept as tensors so a step never waits on .item()."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.counts: dict[str, int] = {}

    def add(self, name: str, value: torch.Tensor, n: int) -> None:
        value = value.detach() * n
        self.sums[name] = self.sums[name] + value if name in self.sums else value
        self.counts[name] = self.counts.get(name, 0) + n

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sums, self.counts = dict(state["sums"]), dict(state["counts"])

    def pop(self, names: Sequence[str] | None = None, device: torch.device | None = None) -> dict[str, torch.Tensor]:
        """The means so far (summed over DDP ranks, weighted by samples), then reset.

        Under DDP every rank must reduce the same `names` in the same order, also a rank that saw
        no batch (an evaluation split that does not divide evenly): one all_reduce of all of them,
        on `device`. Without DDP, `names` defaults to what was added."""
        names = list(self.sums) if names is None else list(names)
        if dist.is_available() and dist.is_initialized() and names:
            zero = torch.zeros((), device=device)
            packed = torch.stack([torch.stack([self.sums.get(n, zero).float().to(zero.device).reshape(()),
                                               zero.new_tensor(float(self.counts.get(n, 0)))]) for n in names])
            dist.all_reduce(packed)
            out = {n: packed[i, 0] / packed[i, 1] for i, n in enumerate(names) if packed[i, 1] > 0}
        else:
            out = {n: self.sums[n].float() / self.counts[n] for n in names if self.counts.get(n)}
        self.sums.clear()
        self.counts.clear()
        return out


NONFINITE = ("stop", "skip", "ignore")
Key = str | int | None  # a dict key, or an index into a tuple batch


def _pick(container: Any, key: Key, what: str, arg: str) -> Any:
    """`container[key]` for a dict or a tuple batch (or model output), or a message saying what is there."""
    if isinstance(container, Mapping):
        if key is None or key not in container:
            keys = ", ".join(repr(k) for k in container)
            got = f"has no key {key!r}" if key is not None else "is a dict"
            raise ConfigError(f"the {what} {got} (keys: {keys}); set train_wrapper.args.{arg} to the key to use")
        return container[key]
    if isinstance(container, (list, tuple)):
        if not isinstance(key, int) or not -len(container) <= key < len(container):
            raise ConfigError(f"the {what} is a {type(container).__name__} of {len(container)}; set "
                              f"train_wrapper.args.{arg} to an index from 0 to {len(container) - 1}")
        return container[key]
    return container


def describe_tensor(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"{list(x.shape)} {str(x.dtype).replace('torch.', '')}"
    return type(x).__name__


def is_classification(out: Any, y: Any) -> bool:
    """Class scores [N, C] against integer labels [N]."""
    return (isinstance(out, torch.Tensor) and isinstance(y, torch.Tensor) and out.dim() == 2 and y.dim() == 1
            and not y.is_floating_point() and not y.dtype == torch.bool)


def _head(batch: Any, n: int) -> Any:
    """The first `n` samples of a batch (tensors, or dicts and tuples of them)."""
    if isinstance(batch, torch.Tensor):
        return batch[:n]
    if isinstance(batch, Mapping):
        return {k: _head(v, n) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_head(v, n) for v in batch) if not hasattr(batch, "_fields") else \
            type(batch)(*(_head(v, n) for v in batch))
    return batch


@register("base")
class BaseWrapper(pl.LightningModule):
    """Supervised training of `model_spec` with `loss_spec`; logs loss, and accuracy for class logits."""

    def __init__(self, model_spec: dict, loss_spec: dict, optim_spec: dict,
                 sched_spec: dict | list | None = None, metrics: list[dict] | None = None,
                 nonfinite_loss: str = "stop", input_key: str | int | None = None,
                 target_key: str | int | None = None, output_key: str | int | None = None) -> None:
        super().__init__()
        if nonfinite_loss not in NONFINITE:
            raise ConfigError(f"nonfinite_loss must be one of {', '.join(NONFINITE)}, got {nonfinite_loss!r}")
        for arg, key in (("input_key", input_key), ("target_key", target_key), ("output_key", output_key)):
            if key is not None and (isinstance(key, bool) or not isinstance(key, (str, int))):
                raise ConfigError(f"{arg} must be a dict key (a string) or a tuple index (an int), got {key!r}")
        self.nonfinite_loss = nonfinite_loss
        self.input_key, self.target_key, self.output_key = input_key, target_key, output_key
        self.classifies: bool | None = None  # class scores against integer labels (accuracy); None: not known yet
        self.save_hyperparameters()  # hparams.yaml and every checkpoint can rebuild the model
        self.model = models.make(model_spec)
        self.loss_fn = losses.make(loss_spec)
        self.optim_spec = optim_spec
        self.sched_spec = sched_spec
        self.means = {"train": EpochMeans(), "val": EpochMeans(), "test": EpochMeans()}
        # configured torchmetrics, one copy per stage (they accumulate state between update and compute)
        self.metrics = nn.ModuleDict({stage: nn.ModuleDict({spec["name"]: make_metric(spec) for spec in metrics or []})
                                      for stage in ("val", "test")})

    def forward(self, x: Any) -> Any:
        return self.model(x)

    # ---- plain methods, shared with torchx.loop

    def split(self, batch: Any) -> tuple[Any, torch.Tensor]:
        """(input, target) of a batch: a pair as it is, else what input_key / target_key pick."""
        if isinstance(batch, (list, tuple)) and len(batch) == 2 and self.input_key is None and self.target_key is None:
            return batch[0], batch[1]
        if not isinstance(batch, (Mapping, list, tuple)):
            raise ConfigError(f"the batch is a single {describe_tensor(batch)}, not an (input, target) pair; the "
                              f"base wrapper trains on pairs or dicts (set input_key and target_key), or register "
                              f"a wrapper of your own")
        return (_pick(batch, 0 if self.input_key is None and not isinstance(batch, Mapping) else self.input_key,
                      "batch", "input_key"),
                _pick(batch, 1 if self.target_key is None and not isinstance(batch, Mapping) else self.target_key,
                      "batch", "target_key"))

    def outputs(self, batch: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's output for a batch and its target, shaped alike where that is unambiguous: a
        regression head's [N, 1] against float targets [N] is read as [N]."""
        x, y = self.split(batch)
        out = self(x)
        if isinstance(out, (Mapping, list, tuple)):
            out = _pick(out, self.output_key, "model's output", "output_key")
        if (isinstance(out, torch.Tensor) and isinstance(y, torch.Tensor) and out.dim() == 2 and out.shape[1] == 1
                and y.dim() == 1 and y.is_floating_point()):
            out = out.squeeze(1)
        return out, y

    def training_loss(self, batch: Any) -> torch.Tensor | None:
        """Loss of one training batch, added to the epoch's running mean. A NaN or infinite loss
        raises NonFiniteLoss (`nonfinite_loss: stop`) or gives None: skip this batch (`skip`)."""
        out, y = self.outputs(batch)
        loss = self.loss_fn(out, y)
        if self.nonfinite_loss != "ignore" and not torch.isfinite(loss):
            if self.nonfinite_loss == "stop":
                raise NonFiniteLoss(float(loss))
            return None
        self.means["train"].add("loss", loss, len(y))
        return loss

    @torch.no_grad()
    def evaluate(self, batch: Any, stage: str) -> None:
        """Loss (and accuracy when the output is class scores) of one val/test batch."""
        out, y = self.outputs(batch)
        self.means[stage].add("loss", self.loss_fn(out, y), len(y))
        if self.classifies is not False and is_classification(out, y):
            self.means[stage].add("acc", (out.argmax(1) == y).float().mean(), len(y))
        for metric in self.metrics[stage].values() if stage in self.metrics else ():
            metric.update(out, y)

    @torch.no_grad()
    def check_batch(self, batch: Any, labels: torch.Tensor | None = None) -> None:
        """Try one training batch (its first two samples through the model, in eval mode) before
        anything is created: the batch's structure, the output's, the loss on them, and the
        labels (all of `labels`, else the batch's) against the number of classes the model scores.
        Also learns whether this is classification, so regression logs no empty `acc`."""
        x, y = self.split(batch)
        if not isinstance(y, torch.Tensor):
            raise ConfigError(f"the batch's target is a {type(y).__name__}, not a tensor; set target_key")
        was_training = self.training
        self.eval()  # the model and the loss see a trial, not training: no BatchNorm update, no call counted
        try:
            head = _head(batch, 2)
            try:
                out, y2 = self.outputs(head)
            except ConfigError:
                raise
            except Exception as e:  # a model that does not fit the data (sizes, channels, dtypes)
                raise ConfigError(f"model '{self.hparams.model_spec.get('name')}' cannot take a batch of the "
                                  f"training data (input {describe_tensor(self.split(head)[0])}): "
                                  f"{type(e).__name__}: {first_line(e)}") from e
            if not isinstance(out, torch.Tensor):
                raise ConfigError(f"the model's output is a {type(out).__name__}, not a tensor; set output_key")
            self.classifies = is_classification(out, y2)
            if self.classifies:  # before the loss, whose own message would name one bad label of two
                seen = (labels if labels is not None else y).detach()
                lo, hi, classes = int(seen.min()), int(seen.max()), out.shape[1]
                if lo < 0 or hi >= classes:
                    raise ConfigError(f"labels run from {lo} to {hi}, but the model scores {classes} classes "
                                      f"(output {describe_tensor(out)}); give the model {hi + 1} outputs, or fix "
                                      f"the labels")
            name = self.hparams.loss_spec.get("name")
            try:
                loss = self.loss_fn(out, y2)
            except Exception as e:  # torch's shape and dtype errors; the message names both sides
                raise ConfigError(f"loss '{name}' cannot take the model's output {describe_tensor(out)} with the "
                                  f"target {describe_tensor(y2)}: {first_line(e)}") from None
        finally:
            self.train(was_training)
        if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
            raise ConfigError(f"loss '{name}' must return a scalar tensor, got {describe_tensor(loss)}")

    def epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        """{'<stage>/loss': ..., '<stage>/acc': ...} for the epoch so far, then reset."""
        names = ["loss"] if stage == "train" or self.classifies is False else ["loss", "acc"]
        out = {f"{stage}/{k}": v for k, v in self.means[stage].pop(names, self.device).items()}
        for name, metric in self.metrics[stage].items() if stage in self.metrics else ():
            if metric.update_count:
                out[f"{stage}/{name}"] = metric.compute()
            metric.reset()
        return out

    def build_optimizers(self) -> tuple[torch.optim.Optimizer, list[dict]]:
        """The optimizer and Lightning-style scheduler dicts (scheduler, interval, frequency, ...)."""
        optimizer = optimizers.make(self.optim_spec, args={"params": self.parameters()})
        specs = self.sched_spec or []
        specs = specs if isinstance(specs, list) else [specs]
        scheds = []
        for spec in specs:
            entry = {"scheduler": schedulers.make(spec, args={"optimizer": optimizer}),
                     "interval": spec.get("interval", "epoch"), "frequency": spec.get("frequency", 1)}
            if "monitor" in spec:
                entry["monitor"] = spec["monitor"]
            if "strict" in spec:
                entry["strict"] = spec["strict"]
            scheds.append(entry)
        return optimizer, scheds

    # ---- Lightning hooks

    def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor | None:
        loss = self.training_loss(batch)
        if loss is None:
            return None  # Lightning skips the optimizer step
        if (self.trainer.global_step + 1) % self.trainer.log_every_n_steps == 0:  # when Lightning writes logs
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_dict(self.epoch_metrics("train"), sync_dist=True)  # already all-reduced: a no-op mean

    def validation_step(self, batch: Any, batch_idx: int) -> None:
        self.evaluate(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.epoch_metrics("val"), sync_dist=True)

    def test_step(self, batch: Any, batch_idx: int) -> None:
        self.evaluate(batch, "test")

    @torch.no_grad()
    def predict_step(self, batch: Any, batch_idx: int = 0, dataloader_idx: int = 0) -> Any:
        """The model's output for a batch, `output_key` applied as in `outputs()`, not reshaped.

        The batch is an (input, target) pair or a dict as in training, a dict or tuple without a
        target (`input_key` picks the input, else the tuple's first item), or the input alone, so
        pl.Trainer.predict and `python -m torchx predict` take labelled and unlabelled data alike."""
        if isinstance(batch, Mapping):
            x = _pick(batch, self.input_key, "batch", "input_key")
        elif isinstance(batch, (list, tuple)):
            x = _pick(batch, 0 if self.input_key is None else self.input_key, "batch", "input_key")
        else:
            x = batch
        out = self(x)
        if isinstance(out, (Mapping, list, tuple)):
            out = _pick(out, self.output_key, "model's output", "output_key")
        return out

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.epoch_metrics("test"), sync_dist=True)

    def configure_optimizers(self) -> Any:
        optimizer, scheds = self.build_optimizers()
        return {"optimizer": optimizer, "lr_scheduler": scheds[0]} if len(scheds) == 1 else \
            ([optimizer], scheds) if scheds else optimizer

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a mid-epoch checkpoint carries the epoch's running train mean, so a resumed epoch reports
        # the mean over all its batches, not only those after the resume; under DDP every rank's share
        # (all ranks save together; rank 0 writes the file)
        means = self.means["train"].state_dict()
        per_rank = gather_per_rank({"sums": {k: v.cpu() for k, v in means["sums"].items()}, "counts": means["counts"]})
        checkpoint["torchx_train_means"] = means if per_rank is None else {"per_rank": per_rank}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        means = checkpoint.get("torchx_train_means")
        if means is None:
            return
        if "per_rank" in means:
            rank, _ = rank_and_world()
            per_rank = means["per_rank"]
            means = per_rank[rank] if rank < len(per_rank) else {"sums": {}, "counts": {}}
            means = {"sums": {k: v.to(self.device) for k, v in means["sums"].items()}, "counts": means["counts"]}
        self.means["train"].load_state_dict(means)

    def logged_metrics(self) -> set[str]:
        """Every metric name this wrapper logs (checked against monitors before training)."""
        own = ("loss",) if self.classifies is False else ("loss", "acc")
        names = {f"{stage}/{m}" for stage in ("val", "test") for m in (*own, *self.metrics[stage])}
        return names | {"train/loss", "train/loss_step"}

    def describe(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        return f"{type(self.model).__name__}: {n:,} parameters"

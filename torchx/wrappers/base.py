"""The `base` training wrapper: model + loss + optimizer (+ schedulers) for supervised training.

The math lives in plain methods (`training_loss`, `evaluate`, `epoch_metrics`,
`build_optimizers`) that pl.Trainer's hooks and torchx's plain loop both call, so the two
entry points compute the same numbers.
"""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from torch import nn

from torchx import losses, models
from torchx.errors import ConfigError, NonFiniteLoss
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

    def pop(self) -> dict[str, torch.Tensor]:
        """The means so far (summed over DDP ranks), then reset."""
        out = {}
        for name, total in self.sums.items():
            if dist.is_available() and dist.is_initialized():
                packed = torch.stack([total.float(), total.new_tensor(self.counts[name], dtype=torch.float)])
                dist.all_reduce(packed)
                out[name] = packed[0] / packed[1]
            else:
                out[name] = total.float() / self.counts[name]
        self.sums.clear()
        self.counts.clear()
        return out


NONFINITE = ("stop", "skip", "ignore")


@register("base")
class BaseWrapper(pl.LightningModule):
    """Supervised training of `model_spec` with `loss_spec`; logs loss, and accuracy for class logits."""

    def __init__(self, model_spec: dict, loss_spec: dict, optim_spec: dict,
                 sched_spec: dict | list | None = None, metrics: list[dict] | None = None,
                 nonfinite_loss: str = "stop") -> None:
        super().__init__()
        if nonfinite_loss not in NONFINITE:
            raise ConfigError(f"nonfinite_loss must be one of {', '.join(NONFINITE)}, got {nonfinite_loss!r}")
        self.nonfinite_loss = nonfinite_loss
        self.save_hyperparameters()  # hparams.yaml and every checkpoint can rebuild the model
        self.model = models.make(model_spec)
        self.loss_fn = losses.make(loss_spec)
        self.optim_spec = optim_spec
        self.sched_spec = sched_spec
        self.means = {"train": EpochMeans(), "val": EpochMeans(), "test": EpochMeans()}
        # configured torchmetrics, one copy per stage (they accumulate state between update and compute)
        self.metrics = nn.ModuleDict({stage: nn.ModuleDict({spec["name"]: make_metric(spec) for spec in metrics or []})
                                      for stage in ("val", "test")})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    # ---- plain methods, shared with torchx.loop

    def training_loss(self, batch: Any) -> torch.Tensor | None:
        """Loss of one training batch, added to the epoch's running mean. A NaN or infinite loss
        raises NonFiniteLoss (`nonfinite_loss: stop`) or gives None: skip this batch (`skip`)."""
        x, y = batch
        loss = self.loss_fn(self(x), y)
        if self.nonfinite_loss != "ignore" and not torch.isfinite(loss):
            if self.nonfinite_loss == "stop":
                raise NonFiniteLoss(float(loss))
            return None
        self.means["train"].add("loss", loss, len(y))
        return loss

    @torch.no_grad()
    def evaluate(self, batch: Any, stage: str) -> None:
        """Loss (and accuracy when the output is class scores) of one val/test batch."""
        x, y = batch
        out = self(x)
        self.means[stage].add("loss", self.loss_fn(out, y), len(y))
        if out.dim() == 2 and y.dim() == 1 and not y.is_floating_point():
            self.means[stage].add("acc", (out.argmax(1) == y).float().mean(), len(y))
        for metric in self.metrics[stage].values() if stage in self.metrics else ():
            metric.update(out, y)

    def epoch_metrics(self, stage: str) -> dict[str, torch.Tensor]:
        """{'<stage>/loss': ..., '<stage>/acc': ...} for the epoch so far, then reset."""
        out = {f"{stage}/{k}": v for k, v in self.means[stage].pop().items()}
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

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.epoch_metrics("test"), sync_dist=True)

    def configure_optimizers(self) -> Any:
        optimizer, scheds = self.build_optimizers()
        return {"optimizer": optimizer, "lr_scheduler": scheds[0]} if len(scheds) == 1 else \
            ([optimizer], scheds) if scheds else optimizer

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # a mid-epoch checkpoint carries the epoch's running train mean, so a resumed epoch reports
        # the mean over all its batches, not only those after the resume (rank 0's share under DDP)
        checkpoint["torchx_train_means"] = self.means["train"].state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if "torchx_train_means" in checkpoint:
            self.means["train"].load_state_dict(checkpoint["torchx_train_means"])

    def logged_metrics(self) -> set[str]:
        """Every metric name this wrapper logs (checked against monitors before training)."""
        names = {f"{stage}/{m}" for stage in ("val", "test") for m in ("loss", "acc", *self.metrics[stage])}
        return names | {"train/loss", "train/loss_step"}

    def describe(self) -> str:
        n = sum(p.numel() for p in self.model.parameters())
        return f"{type(self.model).__name__}: {n:,} parameters"

"""The `gan` training wrapper: a generator and a discriminator, one optimizer each.

Manual optimization: every batch takes one discriminator (critic) step, and every
`n_critic`-th batch one generator step. Fixed noise, kept in the checkpoint, draws a sample
grid into `<run dir>/samples/` and TensorBoard every `sample_every_n_epochs` epochs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from pytorch_lightning.loggers import TensorBoardLogger

from torchx import models
from torchx.errors import ConfigError
from torchx.optim import optimizers
from torchx.wrappers import register
from torchx.wrappers.base import EpochMeans

LOSSES = ("bce", "wasserstein")


@register("gan")
class GANWrapper(pl.LightningModule):
    """Adversarial training of `generator_spec` against `discriminator_spec` (bce, or wasserstein + GP)."""

    def __init__(self, generator_spec: dict, discriminator_spec: dict, g_optim_spec: dict, d_optim_spec: dict,
                 loss: str = "bce", n_critic: int = 1, gp_weight: float = 10.0, latent_dim: int = 64,
                 sample_every_n_epochs: int = 1, n_samples: int = 64) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ConfigError(f"gan: loss must be one of {', '.join(LOSSES)}, got {loss!r}")
        if not isinstance(n_critic, int) or n_critic < 1:
            raise ConfigError(f"gan: n_critic must be a positive integer, got {n_critic!r}")
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = models.make(generator_spec)
        self.discriminator = models.make(discriminator_spec)
        self.loss, self.n_critic, self.gp_weight = loss, n_critic, gp_weight
        self.latent_dim, self.sample_every = latent_dim, sample_every_n_epochs
        noise = torch.randn(n_samples, latent_dim, generator=torch.Generator().manual_seed(0))
        self.register_buffer("fixed_noise", noise)  # in the checkpoint: samples stay comparable across resumes
        self.means = EpochMeans()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.generator(z)

    def configure_optimizers(self) -> list[torch.optim.Optimizer]:
        return [optimizers.make(self.hparams.g_optim_spec, args={"params": self.generator.parameters()}),
                optimizers.make(self.hparams.d_optim_spec, args={"params": self.discriminator.parameters()})]

    # ---- the losses, as plain methods

    def d_loss(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        real_score, fake_score = self.discriminator(real), self.discriminator(fake)
        if self.loss == "bce":
            return F.binary_cross_entropy_with_logits(real_score, torch.ones_like(real_score)) + \
                F.binary_cross_entropy_with_logits(fake_score, torch.zeros_like(fake_score))
        return fake_score.mean() - real_score.mean() + self.gp_weight * self.gradient_penalty(real, fake)

    def g_loss(self, fake: torch.Tensor) -> torch.Tensor:
        score = self.discriminator(fake)
        if self.loss == "bce":
            return F.binary_cross_entropy_with_logits(score, torch.ones_like(score))
        return -score.mean()

    def gradient_penalty(self, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
        """WGAN-GP: (|grad D(x_hat)| - 1)^2 on random points between real and fake images."""
        alpha = torch.rand(real.size(0), *([1] * (real.dim() - 1)), device=real.device)
        mixed = (alpha * real + (1 - alpha) * fake).requires_grad_(True)
        grad, = torch.autograd.grad(self.discriminator(mixed).sum(), mixed, create_graph=True)
        return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()

    # ---- Lightning hooks

    def training_step(self, batch: Any, batch_idx: int) -> None:
        real = batch[0] if isinstance(batch, (list, tuple)) else batch
        opt_g, opt_d = self.optimizers()
        z = torch.randn(real.size(0), self.latent_dim, device=real.device)
        fake = self.generator(z)
        d_loss = self.d_loss(real, fake.detach())
        opt_d.zero_grad(set_to_none=True)
        self.manual_backward(d_loss)
        opt_d.step()
        self.means.add("d_loss", d_loss, len(real))
        if (batch_idx + 1) % self.n_critic == 0:
            g_loss = self.g_loss(fake)
            opt_g.zero_grad(set_to_none=True)
            self.manual_backward(g_loss)
            opt_g.step()
            self.means.add("g_loss", g_loss, len(real))

    def on_train_epoch_end(self) -> None:
        self.log_dict({f"train/{k}": v for k, v in self.means.pop().items()}, sync_dist=True)
        epoch = self.current_epoch + 1
        if self.sample_every and epoch % self.sample_every == 0 and self.trainer.is_global_zero:
            self.save_samples(epoch)

    @torch.no_grad()
    def save_samples(self, epoch: int) -> Path | None:
        """The fixed-noise grid as samples/epoch=N.png in the run directory and in TensorBoard."""
        from torchvision.utils import make_grid, save_image

        was_training = self.generator.training
        self.generator.eval()
        images = (self.generator(self.fixed_noise) + 1) / 2  # tanh range -> [0, 1]
        self.generator.train(was_training)
        grid = make_grid(images.clamp(0, 1).cpu(), nrow=int(len(images) ** 0.5), padding=2)
        tb = next((lg for lg in self.trainer.loggers if isinstance(lg, TensorBoardLogger)), None)
        if tb is None:
            return None
        tb.experiment.add_image("samples", grid, self.global_step)
        path = Path(tb.save_dir) / "samples" / f"epoch={epoch:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid, path)
        return path

    def logged_metrics(self) -> set[str]:
        return {"train/d_loss", "train/g_loss"}

    def describe(self) -> str:
        g = sum(p.numel() for p in self.generator.parameters())
        d = sum(p.numel() for p in self.discriminator.parameters())
        return f"generator {type(self.generator).__name__}: {g:,} parameters; " \
               f"discriminator {type(self.discriminator).__name__}: {d:,} parameters"

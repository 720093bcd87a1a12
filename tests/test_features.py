"""Features usable from YAML alone: user callbacks, metrics.csv and plot, GAN, schedulers, metrics."""

from __future__ import annotations

import csv
import json
import math
import uuid

import pytest
import torch
from PIL import Image

from helpers import run_train, run_train_pl, scalars, tiny_config, write_config
from torchx import wrappers
from torchx.cli import tool_main

CALLBACK_MODULE = '''
from pathlib import Path
import pytorch_lightning as pl
import torchx.callbacks as callbacks

@callbacks.register("{name}")
class EpochCounter(pl.Callback):
    """Counts training epochs across resumes and writes the count at the end."""
    def __init__(self, out: str):
        self.out, self.epochs = out, 0
    def on_train_epoch_end(self, trainer, pl_module):
        self.epochs += 1
    def on_train_end(self, trainer, pl_module):
        Path(self.out).write_text(str(self.epochs))
    def state_dict(self):
        return {{"epochs": self.epochs}}
    def load_state_dict(self, state):
        self.epochs = state["epochs"]
'''


def test_user_callback_from_imports_keeps_state_across_resume(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module, name = f"user_cb_{uuid.uuid4().hex[:8]}", f"epoch_counter_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{module}.py").write_text(CALLBACK_MODULE.format(name=name))
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tiny_config()
    cfg.update(imports=[module], callbacks=[{"name": name, "args": {"out": str(tmp_path / "count.txt")}}])
    path = write_config(tmp_path / "cb.yaml", cfg)
    assert run_train_pl(["--config", str(path), "--save-dir", "save"]) == 0
    assert (tmp_path / "count.txt").read_text() == "2"
    assert run_train_pl(["--save-dir", "save", "--name", "cb", "--resume", "trainer_params.max_epochs=3"]) == 0
    assert (tmp_path / "count.txt").read_text() == "3"  # 2 restored from the checkpoint + 1 new


def test_early_stopping_stops_on_a_plateau(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(max_epochs=10)
    cfg["callbacks"] = [{"name": "early_stopping", "args": {"monitor": "val/loss", "patience": 1, "min_delta": 10.0}}]
    assert run_train_pl(["--config", str(write_config(tmp_path / "es.yaml", cfg)), "--save-dir", "save"]) == 0
    results = json.loads((tmp_path / "save" / "es" / "results.json").read_text())
    assert results["epochs"] == 2  # epoch 1 sets the best, epoch 2 fails to beat it by 10: stop


WARMUP_COSINE = {"name": "sequential", "interval": "step", "args": {"milestones": [4], "schedulers": [
    {"name": "LinearLR", "args": {"start_factor": 0.25, "total_iters": 4}},
    {"name": "CosineAnnealingLR", "args": {"T_max": 8}}]}}


def expected_lr(step: int, base: float = 0.1) -> float:
    if step < 4:
        return base * (0.25 + 0.75 * step / 4)
    return base * (1 + math.cos(math.pi * (step - 4) / 8)) / 2


def test_warmup_then_cosine_learning_rates_step_by_step():
    cfg = tiny_config()["train_wrapper"]
    cfg["args"]["sched_spec"] = WARMUP_COSINE
    optimizer, scheds = wrappers.make(cfg).build_optimizers()
    lrs = []
    for _ in range(12):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheds[0]["scheduler"].step()
    assert lrs == pytest.approx([expected_lr(s) for s in range(12)], rel=1e-6)


def test_warmup_cosine_from_yaml_under_both_loops(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(max_epochs=3, log_every_n_steps=1)
    cfg["train_wrapper"]["args"]["sched_spec"] = WARMUP_COSINE
    path = write_config(tmp_path / "lr.yaml", cfg)
    assert run_train_pl(["--config", str(path), "--save-dir", "save", "--name", "pl"]) == 0
    assert run_train(["--config", str(path), "--save-dir", "save", "--name", "plain"]) == 0
    # the last epoch's learning rate after 12 optimizer steps, read back from both checkpoints
    for name in ("pl", "plain"):
        ckpt = torch.load(tmp_path / "save" / name / "ckpt" / "last.ckpt", weights_only=True)
        assert ckpt["optimizer_states"][0]["param_groups"][0]["lr"] == pytest.approx(expected_lr(12), rel=1e-6)


METRICS = [{"name": "accuracy", "args": {"task": "multiclass", "num_classes": 10}},
           {"name": "f1_score", "args": {"task": "multiclass", "num_classes": 10, "average": "macro"}}]


@pytest.mark.parametrize("runner", [run_train_pl, run_train], ids=["train_pl", "train"])
def test_metrics_from_config_are_logged_and_monitorable(runner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config()
    cfg.update(metrics=METRICS, checkpoint={"monitor": "val/f1_score", "mode": "max"})
    assert runner(["--config", str(write_config(tmp_path / "m.yaml", cfg)), "--save-dir", "save"]) == 0
    run_dir = tmp_path / "save" / "m"
    tags = scalars(run_dir)
    assert len(tags["val/f1_score"]) == 2 and len(tags["test/accuracy"]) == 1
    # the wrapper's own accuracy and torchmetrics' agree
    assert [v for _, v in tags["val/accuracy"]] == pytest.approx([v for _, v in tags["val/acc"]], abs=1e-6)
    results = json.loads((run_dir / "results.json").read_text())
    assert results["best_model_score"] == pytest.approx(max(v for _, v in tags["val/f1_score"]), abs=1e-6)


def read_csv(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    return rows[0], rows[1:]


def test_metrics_csv_has_stable_columns_and_the_same_rows_in_both_loops(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "c.yaml", tiny_config(log_every_n_steps=2))
    assert run_train_pl(["--config", str(path), "--save-dir", "save", "--name", "pl"]) == 0
    assert run_train(["--config", str(path), "--save-dir", "save", "--name", "plain"]) == 0
    header, rows = read_csv(tmp_path / "save" / "pl" / "metrics.csv")
    assert header == ["step", "epoch", "test/acc", "test/loss", "train/loss", "train/loss_step",
                      "val/acc", "val/loss"]
    steps = [int(r[0]) for r in rows]
    assert steps == [1, 3, 5, 7, 8]  # loss_step every 2 steps, epoch ends merged into steps 3 and 7, test
    assert read_csv(tmp_path / "save" / "plain" / "metrics.csv") == (header, rows)


def test_plot_draws_one_panel_per_metric_and_refuses_non_runs(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "p.yaml", tiny_config())
    for name in ("a", "b"):
        assert run_train(["--config", str(path), "--save-dir", "save", "--name", name]) == 0
    out = tmp_path / "two.png"
    assert tool_main(["plot", "save/a", "save/b", "--metrics", "val/loss,val/acc", "-o", str(out)]) == 0
    assert Image.open(out).size == (1000, 350)  # 2 panels of 5 x 3.5 inches at 100 dpi
    assert tool_main(["plot", "save", "-o", str(tmp_path / "all.png")]) == 0  # a folder of runs
    assert Image.open(tmp_path / "all.png").size == (1500, 700)  # 6 metrics: 3 columns, 2 rows
    capsys.readouterr()
    assert tool_main(["plot", str(tmp_path), "save/a", "-o", str(out)]) == 2
    assert "is not a run directory" in capsys.readouterr().err
    assert tool_main(["plot", "save/a", "--metrics", "val/acc,val/f2", "-o", str(out)]) == 2
    assert "val/f2 not logged" in capsys.readouterr().err


def gan_config(loss: str, n_critic: int) -> dict:
    return {
        "data_module": {"name": "synthetic", "args": {"n_train": 96, "n_test": 0, "batch_size": 16, "val_split": 0,
                                                      "mean": 0.5, "std": 0.5, "drop_last": True}},
        "train_wrapper": {"name": "gan", "args": {
            "generator_spec": {"name": "dcgan_generator", "args": {"latent_dim": 8, "width": 4}},
            "discriminator_spec": {"name": "dcgan_discriminator",
                                   "args": {"width": 4, "norm": "none" if loss == "wasserstein" else "batch"}},
            "g_optim_spec": {"name": "Adam", "args": {"lr": 1e-3, "betas": [0.5, 0.9]}},
            "d_optim_spec": {"name": "Adam", "args": {"lr": 1e-3, "betas": [0.5, 0.9]}},
            "loss": loss, "n_critic": n_critic, "latent_dim": 8, "n_samples": 16}},
        "trainer_params": {"max_epochs": 2, "limit_train_batches": 3, "enable_progress_bar": False},
        "seed": 5,
    }


@pytest.mark.parametrize("loss, n_critic", [("bce", 1), ("wasserstein", 2)])
def test_gan_trains_writes_samples_and_resumes_both_optimizers(loss, n_critic, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "gan.yaml", gan_config(loss, n_critic))
    assert run_train_pl(["--config", str(path), "--save-dir", "save"]) == 0
    run_dir = tmp_path / "save" / "gan"
    assert sorted(p.name for p in (run_dir / "samples").iterdir()) == ["epoch=001.png", "epoch=002.png"]
    assert Image.open(run_dir / "samples" / "epoch=002.png").size == (4 * 30 + 2, 4 * 30 + 2)  # 4x4 grid
    assert run_train_pl(["--save-dir", "save", "--name", "gan", "--resume", "trainer_params.max_epochs=3"]) == 0
    assert (run_dir / "samples" / "epoch=003.png").is_file()
    ckpt = torch.load(run_dir / "ckpt" / "last.ckpt", weights_only=True)
    g_steps = {int(s["step"]) for s in ckpt["optimizer_states"][0]["state"].values()}
    d_steps = {int(s["step"]) for s in ckpt["optimizer_states"][1]["state"].values()}
    assert d_steps == {9}  # 3 batches x 3 epochs: the resumed run continued the saved Adam state
    assert g_steps == {3 * (3 // n_critic)}  # one generator step per n_critic batches
    lines = (run_dir / "log.txt").read_text().splitlines()
    assert len(lines) == 3 and all("train/d_loss" in ln and "train/g_loss" in ln for ln in lines)
    header, _ = read_csv(run_dir / "metrics.csv")
    assert header == ["step", "epoch", "train/d_loss", "train/g_loss"]


def test_gan_is_refused_by_the_plain_loop(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "gan.yaml", gan_config("bce", 1))
    assert run_train(["--config", str(path), "--save-dir", "save"]) == 2
    assert "run it with train_pl.py" in capsys.readouterr().err and not (tmp_path / "save").exists()

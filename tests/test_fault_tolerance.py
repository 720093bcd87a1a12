"""Fault tolerance: atomic checkpoints under kill -9, and resumed runs that end bitwise where
an uninterrupted run ends."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch

from helpers import ROOT, run_train, run_train_pl, tiny_config, write_config

RUNNERS = {"train_pl": run_train_pl, "train": run_train}
SCRIPTS = {"train_pl": "train_pl.py", "train": "train.py"}


def dropout_config(**trainer_params) -> dict:
    cfg = tiny_config(max_epochs=4, **trainer_params)
    cfg["train_wrapper"]["args"]["model_spec"]["args"]["dropout"] = 0.3  # draws from the global RNG
    return cfg


def weights(run_dir) -> dict[str, torch.Tensor]:
    return torch.load(run_dir / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]


def assert_bitwise_equal(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs"


@pytest.mark.parametrize("loop", RUNNERS)
def test_resume_at_an_epoch_boundary_is_bitwise_exact(loop, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run = RUNNERS[loop]
    path = write_config(tmp_path / "d.yaml", dropout_config())
    assert run(["--config", str(path), "--save-dir", "save", "--name", "full"]) == 0
    assert run(["--config", str(path), "--save-dir", "save", "--name", "cut", "trainer_params.max_epochs=1"]) == 0
    torch.manual_seed(12345)  # whatever the RNGs hold now, the checkpoint's states must win
    assert run(["--save-dir", "save", "--name", "cut", "--resume", "trainer_params.max_epochs=4"]) == 0
    assert_bitwise_equal(weights(tmp_path / "save" / "full"), weights(tmp_path / "save" / "cut"))

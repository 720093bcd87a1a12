"""train_pl.py end to end on tiny data: run directory, TensorBoard, resume, DDP, every config."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
import yaml

from helpers import (
    ROOT,
    SHARED_MNIST,
    assert_run_dir,
    run_train,
    run_train_pl,
    scalars,
    snapshot_files,
    tiny_config,
    write_config,
    write_fake_mnist,
)
from torchx.config import expand, load, sweep_keys


@pytest.fixture
def tiny(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return write_config(tmp_path / "tiny.yaml", tiny_config())


def test_run_directory_holds_everything(tiny, tmp_path):
    assert run_train_pl(["--config", str(tiny), "--save-dir", "save", "--name", "t"]) == 0
    run_dir = tmp_path / "save" / "t"
    results = assert_run_dir(run_dir, epochs=2)
    assert results["global_step"] == 8 and results["epochs"] == 2
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["train_wrapper"] == tiny_config()["train_wrapper"] and saved["seed"] == 7
    assert (run_dir / "src" / "tiny.yaml").is_file()  # the config file itself, wherever it lives
    assert (run_dir / "src" / "configs" / "digits.yaml").is_file()
    ckpts = {p.name for p in (run_dir / "ckpt").iterdir()}
    assert "last.ckpt" in ckpts and any(n.startswith("epoch=") for n in ckpts)


def test_hparams_yaml_alone_rebuilds_the_model(tiny, tmp_path):
    from torchx import models
    from torchx.wrappers.base import BaseWrapper

    assert run_train_pl(["--config", str(tiny), "--save-dir", "save", "--name", "t"]) == 0
    run_dir = tmp_path / "save" / "t"
    hparams = yaml.safe_load((run_dir / "default" / "version_0" / "hparams.yaml").read_text())
    model = models.make(hparams["model_spec"])
    state = torch.load(run_dir / "ckpt" / "last.ckpt", weights_only=True)
    assert state["hyper_parameters"]["model_spec"] == hparams["model_spec"]
    model.load_state_dict({k[len("model."):]: v for k, v in state["state_dict"].items() if k.startswith("model.")})
    wrapper = BaseWrapper.load_from_checkpoint(run_dir / "ckpt" / "last.ckpt")
    x = torch.randn(3, 1, 8, 8)
    model.eval(), wrapper.eval()
    assert torch.equal(model(x), wrapper(x))


def test_resume_continues_and_keeps_earlier_files(tiny, tmp_path, capsys):
    assert run_train_pl(["--config", str(tiny), "--save-dir", "save", "--name", "r",
                         "trainer_params.max_epochs=1"]) == 0
    run_dir = tmp_path / "save" / "r"
    before = snapshot_files(run_dir)
    # the same command again is refused and changes nothing
    assert run_train_pl(["--config", str(tiny), "--save-dir", "save", "--name", "r"]) == 2
    assert "already exists" in capsys.readouterr().err and snapshot_files(run_dir) == before
    assert run_train_pl(["--save-dir", "save", "--name", "r", "--resume", "trainer_params.max_epochs=3"]) == 0
    assert "trainer_params.max_epochs: 1 -> 3" in capsys.readouterr().err
    results = assert_run_dir(run_dir, epochs=3)
    assert results["epochs"] == 3 and results["global_step"] == 12
    after = snapshot_files(run_dir)
    for rel in ("config.yaml", "provenance.json", "src/torchx/registry.py"):
        assert after[rel] == before[rel], f"{rel} changed on resume"
    for rel in before:  # earlier TensorBoard event files are appended to, never replaced
        if "tfevents" in rel:
            assert after[rel].startswith(before[rel])
    assert yaml.safe_load(after["config-resume-1.yaml"])["trainer_params"]["max_epochs"] == 3
    # Lightning logs epoch-end scalars at the step of the epoch's last batch (global_step - 1)
    assert [s for s, _ in scalars(run_dir)["train/loss"]] == [3, 7, 11]


def test_resume_from_a_given_checkpoint_into_a_new_run(tiny, tmp_path):
    assert run_train_pl(["--config", str(tiny), "--save-dir", "save", "--name", "a"]) == 0
    ckpt = tmp_path / "save" / "a" / "ckpt" / "last.ckpt"
    assert run_train_pl(["--save-dir", "save", "--name", "b", "--resume", str(ckpt),
                         "trainer_params.max_epochs=3"]) == 0
    results = json.loads((tmp_path / "save" / "b" / "results.json").read_text())
    assert results["epochs"] == 3 and results["global_step"] == 12
    assert len((tmp_path / "save" / "b" / "log.txt").read_text().splitlines()) == 1


def test_two_process_cpu_ddp_writes_one_run_directory(tmp_path):
    cfg = tiny_config(accelerator="cpu", devices=2, strategy="ddp")
    path = write_config(tmp_path / "ddp.yaml", cfg)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "train_pl.py"), "--config", str(path),
                           "--save-dir", str(tmp_path / "save")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    assert [p.name for p in (tmp_path / "save").iterdir()] == ["ddp"]
    results = assert_run_dir(tmp_path / "save" / "ddp", epochs=2)
    assert results["global_step"] == 8  # limit_train_batches per process; each rank took its own shard


def shipped_configs() -> list:
    """The configs git tracks (a config of one's own placed in configs/ is not the project's to
    test), or every config when this is not a git checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "configs/*.yaml"], cwd=ROOT, capture_output=True, text=True,
                             timeout=30)
    except (OSError, subprocess.SubprocessError):
        out = None
    if out is not None and out.returncode == 0 and out.stdout.strip():
        return sorted(ROOT / line for line in out.stdout.split())
    return sorted((ROOT / "configs").glob("*.yaml"))


CONFIGS = shipped_configs()


def small_data(name: str, folder) -> list[str]:
    """Overrides pointing a shipped config's data module at small files in the real format."""
    if name in ("mnist", "fashion_mnist"):  # the fake files are valid for both
        return [f"data_module.args.root_dir={write_fake_mnist(folder / 'mnist')}", "data_module.args.val_split=32"]
    if name == "cifar10":
        from test_more_datasets import write_cifar10

        return [f"data_module.args.root_dir={write_cifar10(folder / 'cifar10')}", "data_module.args.val_split=32"]
    if name == "cluttered_mnist":  # made from the fake MNIST files, cached beside them
        return [f"data_module.args.mnist_dir={write_fake_mnist(folder / 'mnist')}",
                f"data_module.args.root_dir={folder / 'cluttered'}", "data_module.args.val_split=32"]
    if name == "div2k":  # two real photos and their crops, as PNGs in DIV2K's layout
        from test_sr import write_div2k

        return [f"data_module.args.root_dir={write_div2k(folder / 'div2k')}", "data_module.args.val_split=1",
                "data_module.args.samples_per_image=1"]
    if name == "image_folder":  # PNGs of four sizes, decoded per batch
        from test_image_folder import mixed, split_layout

        return [f"data_module.args.root_dir={split_layout(folder / 'images', rgb=True, size=mixed)}",
                "data_module.args.num_workers=0"]
    return []


@pytest.mark.parametrize("loop", ["train_pl", "train"])
@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_shipped_config_runs_a_few_batches(config, loop, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load(config)  # with its _base_ files
    argv = ["--config", str(config), "--save-dir", "save", "trainer_params.max_epochs=1",
            "trainer_params.limit_train_batches=2", "trainer_params.limit_val_batches=1",
            "trainer_params.limit_test_batches=1", "trainer_params.enable_progress_bar=false"]
    argv += small_data(cfg["data_module"]["name"], tmp_path)
    if cfg.get("trainer_params", {}).get("strategy") == "ddp":
        argv.append("trainer_params.strategy=auto")  # DDP itself is covered by the two-process test
    run_dir = tmp_path / "save" / config.stem
    if sweep_keys(cfg):  # a session: its first experiment, in its own process (tests/test_session.py has the rest)
        argv += ["--only", "0"]
        run_dir = run_dir / expand(cfg)[0][0]
    if cfg.get("search"):  # a search: one trial (tests/test_search.py has the rest)
        argv += ["search.n_trials=1", "search.pruner=none"]
    if cfg.get("cross_validation"):  # two folds, the first one's run directory checked
        argv += ["cross_validation.folds=2"]
        run_dir = run_dir / "fold=0"
    if loop == "train" and cfg["train_wrapper"]["name"] == "gan":  # the plain loop trains the base wrapper only
        assert run_train(argv) == 2 and not (tmp_path / "save").exists()
        return
    assert (run_train_pl if loop == "train_pl" else run_train)(argv) == 0
    if cfg.get("search"):
        (run_dir,) = run_dir.glob("t0,*")
    assert (run_dir / "ckpt" / "last.ckpt").is_file()


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="real MNIST files not present")
def test_real_mnist_short_run_trains_and_tests(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--config", str(ROOT / "configs" / "mnist-cnn.yaml"), "--save-dir", "save",
            f"data_module.args.root_dir={SHARED_MNIST}", "+trainer_params.limit_train_batches=100",
            "+trainer_params.enable_progress_bar=false"]
    assert run_train_pl(argv) == 0
    results = json.loads((tmp_path / "save" / "mnist-cnn" / "results.json").read_text())
    assert results["test"]["test/acc"] > 0.85

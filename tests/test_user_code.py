"""Code nobody here wrote, trained unchanged: Lightning's shipped demo classes, a plain
LightningDataModule without a test loader, Lightning's MNIST data module, stock callbacks, a
user's own progress bar, dict batches, dict outputs and a regression head, all registered from a
user module outside torchx (tests/user_project) through `imports:`.

Every run is checked as a user would check it: exit status, the run directory, metrics.csv read
strictly, results.json, and a resume.
"""

from __future__ import annotations

import fcntl
import gzip
import json
import os
import pty
import re
import shlex
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
import torch
import yaml

from helpers import (
    ROOT,
    SHARED_MNIST,
    read_metrics,
    run_train,
    run_train_pl,
    snapshot_files,
    tiny_config,
    write_config,
)

USER = Path(__file__).resolve().parent / "user_project"
RUNNERS = {"train_pl": run_train_pl, "train": run_train}
BASE = {"name": "base", "args": {
    "model_spec": {"name": "mlp", "args": {"in_dim": 64, "hidden": [32], "out_dim": 10}},
    "loss_spec": {"name": "ce"},
    "optim_spec": {"name": "SGD", "args": {"lr": 0.1}}}}


@pytest.fixture
def user(tmp_path, monkeypatch):
    """A user's working directory, with their project importable."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(USER))
    return tmp_path


def config(data: dict, wrapper: dict, **extra) -> dict:
    trainer = {"max_epochs": 2, "limit_train_batches": 4, "limit_val_batches": 2, "limit_test_batches": 2,
               "enable_model_summary": False}
    trainer.update(extra.pop("trainer_params", {}))
    return {"imports": ["lightning_user"], "data_module": data, "train_wrapper": wrapper,
            "trainer_params": trainer, "seed": 3, **extra}


def train(loop: str, cfg: dict, tmp_path: Path, name: str, *more: str) -> int:
    path = write_config(tmp_path / f"{name}.yaml", cfg)
    return RUNNERS[loop](["--config", str(path), "--save-dir", "save", "--name", name, *more])


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


# ---------------------------------------------------------------- a data module without a test loader


@pytest.mark.parametrize("loop", RUNNERS)
def test_a_datamodule_without_test_loader_trains_says_so_and_resumes(loop, user, capsys):
    cfg = config({"name": "digits_train_val", "args": {"batch_size": 32}}, BASE,
                 checkpoint={"monitor": "val/acc", "mode": "max"})
    assert train(loop, cfg, user, "r") == 0
    out = capsys.readouterr().out
    assert "test: skipped, the data module DigitsTrainVal has no test_dataloader" in out
    run_dir = user / "save" / "r"
    assert "test" not in results(run_dir) and results(run_dir)["global_step"] == 8
    rows = read_metrics(run_dir / "metrics.csv")
    assert not any(k.startswith("test/") for k in rows[0])  # no columns that stay empty
    assert [r["epoch"] for r in rows if r["val/acc"] is not None] == [0, 1]
    # a longer run from its last.ckpt, then a resume of the finished run, which changes nothing
    assert RUNNERS[loop](["--save-dir", "save", "--name", "r", "--resume", "trainer_params.max_epochs=3"]) == 0
    assert results(run_dir)["global_step"] == 12 and len((run_dir / "log.txt").read_text().splitlines()) == 3
    assert [r["epoch"] for r in read_metrics(run_dir / "metrics.csv") if r["val/acc"] is not None] == [0, 1, 2]
    before = snapshot_files(run_dir)
    capsys.readouterr()
    assert RUNNERS[loop](["--save-dir", "save", "--name", "r", "--resume"]) == 0
    assert "nothing left to do" in capsys.readouterr().out
    assert snapshot_files(run_dir) == before


@pytest.mark.parametrize("loop", RUNNERS)
def test_a_datamodule_with_a_train_loader_alone_trains_without_validation(loop, user, capsys):
    cfg = config({"name": "digits_train_only", "args": {"batch_size": 32}}, BASE)
    assert train(loop, cfg, user, "t") == 0
    run_dir = user / "save" / "t"
    rows = read_metrics(run_dir / "metrics.csv")
    assert [r["epoch"] for r in rows if r.get("train/loss") is not None] == [0, 1]
    assert not any(k.startswith(("val/", "test/")) for k in rows[0])
    assert results(run_dir)["global_step"] == 8 and (run_dir / "ckpt" / "last.ckpt").is_file()


# ---------------------------------------------------------------- Lightning's demo classes


def test_lightnings_boring_model_and_datamodule_train_test_and_resume(user):
    cfg = config({"name": "boring_datamodule"}, {"name": "boring_model"})
    assert train("train_pl", cfg, user, "boring") == 0
    run_dir = user / "save" / "boring"
    assert results(run_dir)["global_step"] == 8 and results(run_dir)["test"] == {}  # it tests, logging nothing
    assert len((run_dir / "log.txt").read_text().splitlines()) == 2
    assert (run_dir / "ckpt" / "last.ckpt").is_file() and list((run_dir / "src").rglob("lightning_user.py"))
    assert run_train_pl(["--save-dir", "save", "--name", "boring", "--resume", "trainer_params.max_epochs=3"]) == 0
    assert torch.load(run_dir / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 12


def test_lightnings_demo_model_without_validation_step(user, capsys):
    cfg = config({"name": "boring_datamodule"}, {"name": "demo_model", "args": {"out_dim": 4}})
    assert train("train_pl", cfg, user, "demo") == 0
    out = capsys.readouterr().out
    assert "test: skipped, the wrapper DemoModel has no test_step" in out
    assert results(user / "save" / "demo")["global_step"] == 8


def test_lightnings_manual_optimization_model_trains_and_resumes(user):
    cfg = config({"name": "boring_datamodule"}, {"name": "manual_optim_boring_model"})
    assert train("train_pl", cfg, user, "manual") == 0
    last = user / "save" / "manual" / "ckpt" / "last.ckpt"
    assert torch.load(last, weights_only=True)["optimizer_states"][0]["state"] == {}  # SGD without momentum
    assert run_train_pl(["--save-dir", "save", "--name", "manual", "--resume", "trainer_params.max_epochs=3"]) == 0
    assert torch.load(last, weights_only=True)["global_step"] == 12


@pytest.mark.parametrize("wrapper", ["boring_model", "manual_optim_boring_model"])
def test_the_plain_loop_refuses_lightning_only_modules_before_anything_exists(wrapper, user, capsys):
    cfg = config({"name": "boring_datamodule"}, {"name": wrapper})
    assert train("train", cfg, user, "x") == 2
    err = capsys.readouterr().err
    assert "run it with train_pl.py" in err and "Traceback" not in err
    assert not (user / "save").exists()


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_MNIST.is_dir(), reason="real MNIST files not present")
def test_lightnings_mnist_datamodule_on_the_real_files(user):
    """Lightning's MNISTDataModule reads torchvision's MNIST from ./data (it downloads only when the
    files are missing), as a user who already has them would run it."""
    raw = user / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in SHARED_MNIST.glob("*.gz"):
        (raw / gz.stem).write_bytes(gzip.decompress(gz.read_bytes()))
    model = {"name": "tiny_cnn", "args": {}}
    wrapper = {"name": "base", "args": {**BASE["args"], "model_spec": model}}
    cfg = config({"name": "lightning_mnist", "args": {"data_dir": str(user / "data"), "num_workers": 0,
                                                       "batch_size": 32}}, wrapper,
                 trainer_params={"max_epochs": 1, "limit_train_batches": 20})
    assert train("train_pl", cfg, user, "mnist") == 0
    res = results(user / "save" / "mnist")
    assert {"test/loss", "test/acc"} <= res["test"].keys()
    last_row = read_metrics(user / "save" / "mnist" / "metrics.csv")[-1]
    assert last_row["test/acc"] == pytest.approx(res["test"]["test/acc"])


# ---------------------------------------------------------------- stock callbacks, a user's bar, metrics.csv


def test_stock_callbacks_and_a_users_progress_bar(user, capsys, monkeypatch):
    monkeypatch.setenv("TORCHX_PROGRESS_EVERY", "0")  # torchx's plain progress would print every batch
    cfg = tiny_config(max_epochs=3, enable_progress_bar=True)
    cfg["imports"] = ["lightning_user"]
    cfg["callbacks"] = [{"name": "lr_monitor", "args": {"logging_interval": "epoch"}},
                        {"name": "early_stopping", "args": {"monitor": "val/loss", "patience": 5}},
                        {"name": "line_bar"}]
    assert train("train_pl", cfg, user, "cb") == 0
    out = capsys.readouterr().out
    assert "line_bar: epoch 0 done at step 4" in out and "line_bar: epoch 2 done" in out
    assert "| batch " not in out  # torchx's progress stepped aside for the user's bar
    run_dir = user / "save" / "cb"
    rows = read_metrics(run_dir / "metrics.csv")
    lrs = [r["lr-SGD"] for r in rows if r.get("lr-SGD") is not None]
    assert lrs == pytest.approx([0.1, 0.05, 0.025])  # StepLR halves it every epoch
    assert results(run_dir)["test"]["test/acc"] == rows[-1]["test/acc"]
    # resumed: EarlyStopping's state comes back, the file stays well formed
    assert run_train_pl(["--save-dir", "save", "--name", "cb", "--resume", "trainer_params.max_epochs=4"]) == 0
    rows = read_metrics(run_dir / "metrics.csv")
    assert len([r for r in rows if r.get("lr-SGD") is not None]) == 4
    ckpt = torch.load(run_dir / "ckpt" / "last.ckpt", weights_only=True)
    assert any(k.startswith("EarlyStopping") for k in ckpt["callbacks"])
    assert any(k.startswith("ModelCheckpoint{") for k in ckpt["callbacks"])  # the state key both loops read


def test_metrics_csv_stays_well_formed_whatever_appears_when(tmp_path):
    from torchx.loggers.csvlog import MetricsCSV, read

    path = tmp_path / "metrics.csv"
    log = MetricsCSV(path, {"train/loss", "val/loss"})
    log.log({"train/loss": 1.0, "epoch": 0}, step=3)
    log.log({"val/loss": 2.0, "epoch": 0}, step=3)  # the same step: one row
    log.log({"lr-Adam": 0.1, "epoch": 0, "step": 3}, step=3)  # an undeclared metric, and Lightning's step key
    log.log({"epoch": 1, "weird,name\"x": 5.0}, step=7)  # a new one at a new step, with CSV's special characters
    log.log({"train/loss": 0.5, "epoch": 1}, step=9)
    rows = read_metrics(path)
    assert [r["step"] for r in rows] == [3, 7, 9]
    assert rows[0] == {"step": 3, "epoch": 0, "lr-Adam": 0.1, "train/loss": 1.0, "val/loss": 2.0,
                       "weird,name\"x": None}
    assert rows[1]["weird,name\"x"] == 5.0 and rows[2]["train/loss"] == 0.5
    # a resume from step 7 drops what was logged from there on and keeps the header
    MetricsCSV(path, {"train/loss"}, drop_from=7)
    assert [r["step"] for r in read(path)] == [3] and len(read_metrics(path)[0]) == 6


# ---------------------------------------------------------------- a user's LightningModule and its monitors


def test_a_monitor_the_users_module_does_not_log_is_refused_before_anything_exists(user, capsys):
    cfg = config({"name": "digits_train_val"}, {"name": "plain_classifier"}, checkpoint={"monitor": "val_los"})
    assert train("train_pl", cfg, user, "m") == 2
    err = capsys.readouterr().err
    assert "checkpoint.monitor: 'val_los' is not logged by the wrapper (did you mean 'val_loss'?)" in err
    assert "logged: loss, val_loss" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (user / "save").exists()
    cfg["checkpoint"]["monitor"] = "val_loss"
    assert train("train_pl", cfg, user, "m") == 0
    assert results(user / "save" / "m")["best_model_score"] > 0


def test_a_missing_monitor_found_only_in_training_is_a_failed_run_that_restarts_in_place(user, capsys):
    """The trial step cannot copy this module (it holds a lock), so the missing metric is found after
    the first epoch: exit 1, the way on in the message, and --resume restarts the run in place."""
    cfg = config({"name": "digits_train_val"}, {"name": "locked_classifier"}, checkpoint={"monitor": "x"})
    argv = ["--config", str(write_config(user / "m.yaml", cfg)), "--save-dir", "runs/a b", "--name", "m"]
    assert run_train_pl(argv) == 1
    err = capsys.readouterr().err
    assert "training stopped: `ModelCheckpoint(monitor='x')` could not find the monitored key" in err
    suggested = re.search(r"restart it in place with (.*) --resume KEY=VALUE", err).group(1)
    assert suggested == "--name m --save-dir 'runs/a b'"  # names the run again, whatever --save-dir was
    run_dir = user / "runs" / "a b" / "m"
    assert not list((run_dir / "ckpt").glob("*.ckpt"))
    # a new run of that name is refused, saying how to go on
    assert run_train_pl(argv) == 2
    assert "has no checkpoint" in capsys.readouterr().err
    first = snapshot_files(run_dir)
    assert run_train_pl([*shlex.split(suggested), "--resume", "checkpoint.monitor=val_loss"]) == 0
    kept = run_dir / "attempts" / "1"
    assert snapshot_files(kept) == first  # the first attempt, whole
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["checkpoint"]["monitor"] == "val_loss"
    assert results(run_dir)["global_step"] == 8 and list((run_dir / "src").rglob("lightning_user.py"))


# ---------------------------------------------------------------- regression, dict batches, dict outputs


REGRESSION = {"name": "base", "args": {
    "model_spec": {"name": "mlp", "args": {"in_dim": 64, "hidden": [32], "out_dim": 1}},
    "loss_spec": {"name": "mse"}, "optim_spec": {"name": "Adam", "args": {"lr": 0.01}}}}


@pytest.mark.parametrize("loop", RUNNERS)
def test_a_regression_head_trains_on_float_targets_without_accuracy(loop, user):
    cfg = config({"name": "digits_with_test", "args": {"regression": True}}, REGRESSION,
                 metrics=[{"name": "mean_squared_error"}], checkpoint={"monitor": "val/loss"},
                 trainer_params={"max_epochs": 3, "limit_train_batches": 20})
    assert train(loop, cfg, user, "reg") == 0
    rows = read_metrics(user / "save" / "reg" / "metrics.csv")
    assert not any(k.endswith("/acc") for k in rows[0])
    val = [r for r in rows if r["val/loss"] is not None]
    # the wrapper's loss and torchmetrics' MSE agree: output [N, 1] was read as [N], not broadcast
    assert [r["val/loss"] for r in val] == pytest.approx([r["val/mean_squared_error"] for r in val], rel=1e-5)
    assert val[-1]["val/loss"] < 10  # a broadcast [N, N] loss stays near the targets' variance plus mean^2 (~30)
    assert results(user / "save" / "reg")["test"]["test/loss"] > 0


@pytest.mark.parametrize("loop", RUNNERS)
def test_a_regression_output_of_another_shape_is_refused_naming_both(loop, user, capsys):
    wrapper = json.loads(json.dumps(REGRESSION))
    wrapper["args"]["model_spec"]["args"]["out_dim"] = 2
    cfg = config({"name": "digits_train_val", "args": {"regression": True}}, wrapper)
    assert train(loop, cfg, user, "bad") == 2
    err = capsys.readouterr().err
    assert "loss 'mse'" in err and "output has shape [2, 2] and the target [2]" in err and "Traceback" not in err
    assert not (user / "save").exists()


DICT_WRAPPER = {"name": "base", "args": {
    "model_spec": {"name": "dict_head"}, "loss_spec": {"name": "ce"},
    "optim_spec": {"name": "SGD", "args": {"lr": 0.1}},
    "input_key": "image", "target_key": "label", "output_key": "logits"}}


@pytest.mark.parametrize("loop", RUNNERS)
def test_dict_batches_and_dict_outputs_train_test_and_resume(loop, user):
    cfg = config({"name": "digits_with_test", "args": {"dict_batches": True}}, DICT_WRAPPER,
                 checkpoint={"monitor": "val/acc", "mode": "max"})
    assert train(loop, cfg, user, "d") == 0
    res = results(user / "save" / "d")
    assert 0 < res["test"]["test/acc"] <= 1
    assert RUNNERS[loop](["--save-dir", "save", "--name", "d", "--resume", "trainer_params.max_epochs=3"]) == 0
    assert len(read_metrics(user / "save" / "d" / "metrics.csv")) >= 3


BAD_BATCHES = [  # (data module, wrapper args changed, the message)
    ("digits_train_val", {"input_key": None}, "the batch is a dict (keys: 'image', 'label', 'index'); set "
                                              "train_wrapper.args.input_key"),
    ("digits_train_val", {"target_key": "labels"}, "the batch has no key 'labels' (keys: 'image', 'label', 'index')"),
    ("digits_train_val", {"output_key": None}, "the model's output is a dict (keys: 'logits', 'features'); set "
                                               "train_wrapper.args.output_key"),
    ("digits_train_val", {"output_key": "logit"}, "the model's output has no key 'logit'"),
    ("digits_train_val", {"input_key": "label"}, "model 'dict_head' cannot take a batch"),
    ("boring_datamodule", {}, "the batch is a single [1, 32] float32, not an (input, target) pair"),
]


@pytest.mark.parametrize("loop", RUNNERS)
@pytest.mark.parametrize("data, change, message", BAD_BATCHES, ids=[m[:40] for _, _, m in BAD_BATCHES])
def test_batches_and_outputs_the_wrapper_cannot_read_are_refused_before_anything_exists(
        loop, data, change, message, user, capsys):
    wrapper = json.loads(json.dumps(DICT_WRAPPER))
    wrapper["args"].update(change)
    wrapper["args"] = {k: v for k, v in wrapper["args"].items() if v is not None}
    args = {"dict_batches": True} if data == "digits_train_val" else {}
    assert train(loop, config({"name": data, "args": args}, wrapper), user, "bad") == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not (user / "save").exists()


@pytest.mark.parametrize("loop", RUNNERS)
def test_labels_beyond_the_models_classes_are_refused(loop, user, capsys):
    cfg = tiny_config()
    cfg["train_wrapper"]["args"]["model_spec"]["args"]["out_dim"] = 5
    assert RUNNERS[loop](["--config", str(write_config(user / "c.yaml", cfg)), "--save-dir", "save"]) == 2
    err = capsys.readouterr().err
    assert "labels run from 0 to 9, but the model scores 5 classes" in err and not (user / "save").exists()


# ---------------------------------------------------------------- console output


def plain_output(text: str) -> None:
    assert "\r" not in text and "\x1b" not in text, "bar drawing codes in a log file"
    assert max(len(line) for line in text.splitlines()) < 400


@pytest.mark.parametrize("script", ["train_pl.py", "train.py"])
def test_output_to_a_file_is_plain_lines_with_the_eta(script, tmp_path):
    env = {**os.environ, "TORCHX_PROGRESS_EVERY": "0.001"}
    with open(tmp_path / "out.log", "w") as out:
        proc = subprocess.run([sys.executable, str(ROOT / script), "--config", str(ROOT / "configs" / "digits.yaml"),
                               "--save-dir", str(tmp_path / "save"), "trainer_params.max_epochs=2"],
                              stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env, timeout=300)
    text = (tmp_path / "out.log").read_text()
    assert proc.returncode == 0, text[-2000:]
    plain_output(text)
    progress = [line for line in text.splitlines() if "| batch " in line]
    assert progress and all("eta " in line for line in progress) and "steps/s | elapsed" in progress[-1]
    assert sum(line.startswith("epoch 2/2 | step 86 |") for line in text.splitlines()) == 1


def test_a_terminal_keeps_the_bar(tmp_path):
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))  # a terminal's size
    proc = subprocess.Popen([sys.executable, str(ROOT / "train_pl.py"), "--config",
                             str(ROOT / "configs" / "digits.yaml"), "--save-dir", str(tmp_path / "save"),
                             "trainer_params.max_epochs=1"],
                            stdout=follower, stderr=follower, cwd=tmp_path)
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 65536)
        except OSError:  # the other end closed
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait(timeout=300) == 0
    os.close(leader)
    text = b"".join(chunks).decode("utf-8", "replace")
    assert "Epoch 0:" in text and "eta=" in text  # tqdm's bar, with the run's ETA beside it


def test_a_sessions_experiment_logs_are_plain_lines(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("TORCHX_PROGRESS_EVERY", "0.001")
    cfg = tiny_config(max_epochs=1, enable_progress_bar=True)
    cfg["seed_"] = [1, 2]
    cfg.pop("seed")
    assert run_train(["--config", str(write_config(tmp_path / "s.yaml", cfg)), "--name", "s"]) == 0
    for log in (tmp_path / "save" / "s" / "logs").iterdir():
        text = log.read_text()
        plain_output(text)
        assert "| batch " in text


# ---------------------------------------------------------------- DDP: every sample counted once


def ddp(cfg: dict, tmp_path: Path, name: str) -> Path:
    path = write_config(tmp_path / f"{name}.yaml", cfg)
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "PL_GLOBAL_SEED")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(USER)])
    proc = subprocess.run([sys.executable, str(ROOT / "train_pl.py"), "--config", str(path), "--save-dir", "save",
                           "--name", name], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp_path / "save" / name


def evaluate_alone(ckpt: Path, loader) -> tuple[float, float]:
    """Loss and accuracy of a checkpoint on every sample of `loader`, in this one process."""
    from torchx.wrappers.base import BaseWrapper

    wrapper = BaseWrapper.load_from_checkpoint(ckpt, map_location="cpu")
    wrapper.eval()
    losses, correct, n = 0.0, 0, 0
    with torch.no_grad():
        for x, y in loader:
            out = wrapper(x)
            losses += float(torch.nn.functional.cross_entropy(out, y, reduction="sum"))
            correct, n = correct + int((out.argmax(1) == y).sum()), n + len(y)
    return losses / n, correct / n


@pytest.mark.slow
def test_ddp_test_and_validation_count_every_sample_once(tmp_path, monkeypatch):
    """297 test digits and 150 validation digits on 2 processes: the metrics are those of all
    samples, each once (a padded sampler repeats one of them)."""
    from torchx.datasets.digits import Digits

    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(accelerator="cpu", devices=2, strategy="ddp", max_epochs=1, limit_val_batches=1.0,
                      limit_test_batches=1.0)
    cfg["data_module"]["args"]["eval_batch_size"] = 64
    run_dir = ddp(cfg, tmp_path, "ddp")
    data = Digits(batch_size=16, eval_batch_size=64)
    data.setup()
    res = results(run_dir)
    loss, acc = evaluate_alone(Path(res["best_model_path"]), data.test_dataloader())
    assert res["test"]["test/loss"] == pytest.approx(loss, abs=1e-5)
    assert res["test"]["test/acc"] == pytest.approx(acc, abs=1e-6) and round(acc * 297) == acc * 297
    val = [r for r in read_metrics(run_dir / "metrics.csv") if r["val/loss"] is not None][-1]
    loss, acc = evaluate_alone(run_dir / "ckpt" / "last.ckpt", data.val_dataloader())
    assert val["val/loss"] == pytest.approx(loss, abs=1e-5) and val["val/acc"] == pytest.approx(acc, abs=1e-6)


@pytest.mark.slow
def test_ddp_counts_a_users_validation_samples_once(user, tmp_path):
    from lightning_user import DigitsWithTest

    cfg = config({"name": "digits_with_test", "args": {"batch_size": 32, "n_val": 397}}, BASE,
                 trainer_params={"accelerator": "cpu", "devices": 2, "strategy": "ddp", "max_epochs": 1,
                                 "limit_val_batches": 1.0, "limit_test_batches": 1.0})
    run_dir = ddp(cfg, tmp_path, "user")
    data = DigitsWithTest(batch_size=32, n_val=397)
    data.setup("fit")
    val = [r for r in read_metrics(run_dir / "metrics.csv") if r["val/loss"] is not None][-1]
    loss, acc = evaluate_alone(run_dir / "ckpt" / "last.ckpt", data.val_dataloader())
    assert val["val/loss"] == pytest.approx(loss, abs=1e-5) and val["val/acc"] == pytest.approx(acc, abs=1e-6)


@pytest.mark.parametrize("loop", RUNNERS)
@pytest.mark.parametrize("value", ["x", "-1", "inf", "nan", ""])
def test_a_bad_progress_interval_is_one_message_before_anything_exists(value, loop, user, monkeypatch, capsys):
    monkeypatch.setenv("TORCHX_PROGRESS_EVERY", value)
    assert train(loop, config({"name": "digits"}, BASE), user, "p") == 2
    err = capsys.readouterr().err
    assert f"TORCHX_PROGRESS_EVERY={value!r} must be a number of seconds >= 0" in err and err.count("\n") == 1
    assert not (user / "save").exists()


def test_rich_bar_without_rich_names_the_package(user, capsys, monkeypatch):
    """rich is not a requirement: naming rich_bar without it is bad input, with the fix. (comet_ml, a
    tracking extra, installs rich, so its absence is what Lightning's own flag says.)"""
    from pytorch_lightning.callbacks.progress import rich_progress

    monkeypatch.setattr(rich_progress, "_RICH_AVAILABLE", False)
    cfg = config({"name": "digits"}, BASE, callbacks=[{"name": "rich_bar"}])
    assert train("train_pl", cfg, user, "r") == 2
    err = capsys.readouterr().err
    assert "callbacks.0 (rich_bar" in err and "pip install -U rich" in err
    assert not (user / "save").exists()

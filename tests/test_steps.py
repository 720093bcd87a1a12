"""Iteration-based training: max_steps, val_check_interval, check_val_every_n_epoch, step
checkpoints and step logs, alike under train_pl.py and train.py, and resumable mid-run."""

from __future__ import annotations

import copy
import csv
import json
import re

import pytest
import torch

from helpers import ROOT, left_by_a_kill_after, run_train, run_train_pl, scalars, tiny_config, write_config

RUNNERS = {"train_pl": run_train_pl, "train": run_train}
PAIRS = [("train_pl", "train_pl"), ("train", "train"), ("train", "train_pl"), ("train_pl", "train")]


def steps_config(**changes) -> dict:
    """12 steps over epochs of 5 batches: validation every 4 training batches counted across epochs,
    a checkpoint every 6 steps (ranked by val/acc, all kept), train/loss_step every 2 steps."""
    cfg = tiny_config(max_epochs=-1, max_steps=12, limit_train_batches=5, val_check_interval=4,
                      check_val_every_n_epoch=None, log_every_n_steps=2)
    cfg["checkpoint"] = {"monitor": "val/acc", "mode": "max", "every_n_train_steps": 6, "save_top_k": -1}
    cfg["trainer_params"].update(changes)
    return cfg


def rows(run_dir) -> list[dict[str, str]]:
    with open(run_dir / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


def steps_with(run_dir, column: str) -> list[int]:
    return [int(r["step"]) for r in rows(run_dir) if r[column]]


def checkpoints(run_dir) -> dict[str, dict]:
    return {p.name: torch.load(p, weights_only=True) for p in sorted((run_dir / "ckpt").glob("*.ckpt"))}


def heads(run_dir) -> list[str]:
    """Each log.txt line without its metrics, elapsed time and ETA."""
    return [" | ".join(line.split(" | ")[:2]) for line in (run_dir / "log.txt").read_text().splitlines()]


def run(loop: str, cfg: dict, tmp_path, name: str, *extra: str) -> object:
    path = write_config(tmp_path / f"{name}.yaml", cfg)
    assert RUNNERS[loop](["--config", str(path), "--save-dir", "save", "--name", name, *extra]) == 0
    return tmp_path / "save" / name


@pytest.mark.parametrize("loop", RUNNERS)
def test_a_step_based_run_validates_logs_and_checkpoints_at_the_configured_steps(loop, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run_dir = run(loop, steps_config(), tmp_path, "s")
    assert json.loads((run_dir / "results.json").read_text())["global_step"] == 12
    # validation after steps 4, 8 and 12 (mid-epoch: epochs end at 5 and 10), logged as Lightning
    # logs it, at the step index of its batch (global step - 1)
    assert steps_with(run_dir, "val/loss") == [3, 7, 11]
    assert [s for s, _ in scalars(run_dir)["val/acc"]] == [3, 7, 11]
    assert steps_with(run_dir, "train/loss_step") == [1, 3, 5, 7, 9, 11]
    assert steps_with(run_dir, "train/loss") == [4, 9, 11]  # the epoch ends, and the cut-short last one
    ckpts = checkpoints(run_dir)
    assert {name: c["global_step"] for name, c in ckpts.items()} == \
        {"epoch=1-step=6.ckpt": 6, "epoch=2-step=12.ckpt": 12, "last.ckpt": 12}
    # a step checkpoint is ranked by the latest validation before it (step 4's for step 6)
    state = next(v for k, v in ckpts["last.ckpt"]["callbacks"].items() if k.startswith("ModelCheckpoint"))
    scores = {name.rsplit("/", 1)[1]: float(s) for name, s in state["best_k_models"].items()}
    val_acc = {int(r["step"]): float(r["val/acc"]) for r in rows(run_dir) if r["val/acc"]}
    assert scores == pytest.approx({"epoch=1-step=6.ckpt": val_acc[3], "epoch=2-step=12.ckpt": val_acc[7]})
    # one line per validation and per epoch end, headed by the step; the last step shows both
    assert heads(run_dir) == ["step 4/12 | epoch 1", "step 5/12 | epoch 1", "step 8/12 | epoch 2",
                              "step 10/12 | epoch 2", "step 12/12 | epoch 3"]
    lines = (run_dir / "log.txt").read_text().splitlines()
    assert ["val/acc" in line for line in lines] == [True, False, True, False, True]
    assert ["train/loss" in line for line in lines] == [False, True, False, True, True]
    assert all(re.search(r"\| eta (\d+:\d\d:\d\d|\?)$", line) for line in lines)


VARIANTS = {
    "int-across-epochs": steps_config(),
    "int-within-epochs": steps_config(check_val_every_n_epoch=1, val_check_interval=2),
    "fraction-with-plateau": tiny_config(max_epochs=3, limit_train_batches=6, val_check_interval=0.5),
}
VARIANTS["fraction-with-plateau"]["train_wrapper"]["args"]["sched_spec"] = [
    {"name": "ReduceLROnPlateau", "args": {"factor": 0.5, "patience": 0, "threshold": 0.5}, "monitor": "val/loss",
     "interval": "step", "frequency": 2, "strict": False},
    {"name": "StepLR", "args": {"step_size": 1, "gamma": 0.7}}]
VARIANTS["fraction-with-plateau"]["checkpoint"] = {"monitor": "val/loss", "save_top_k": 2}


@pytest.mark.parametrize("variant", VARIANTS)
def test_both_loops_write_the_same_run(variant, tmp_path, monkeypatch):
    """Same seed, same config: the same metrics.csv byte for byte, TensorBoard scalars, log lines,
    checkpoint files (names, progress, weights, top-k state) and results."""
    monkeypatch.chdir(tmp_path)
    cfg = VARIANTS[variant]
    pl_dir, plain_dir = run("train_pl", cfg, tmp_path, "pl"), run("train", cfg, tmp_path, "plain")
    assert (plain_dir / "metrics.csv").read_text() == (pl_dir / "metrics.csv").read_text()
    assert set(steps_with(pl_dir, "val/loss")) - set(steps_with(pl_dir, "train/loss"))  # mid-epoch validations
    tb_pl, tb_plain = scalars(pl_dir), scalars(plain_dir)
    for tag in ("train/loss", "train/loss_step", "val/loss", "val/acc", "test/acc"):
        assert tb_plain.get(tag) == tb_pl.get(tag), tag
    strip = re.compile(r" \| elapsed .*$")
    assert [strip.sub("", line) for line in (plain_dir / "log.txt").read_text().splitlines()] == \
        [strip.sub("", line) for line in (pl_dir / "log.txt").read_text().splitlines()]
    pl_ckpts, plain_ckpts = checkpoints(pl_dir), checkpoints(plain_dir)
    assert sorted(plain_ckpts) == sorted(pl_ckpts) and len(pl_ckpts) >= 3
    for name, ours in plain_ckpts.items():
        theirs = pl_ckpts[name]
        assert (ours["epoch"], ours["global_step"]) == (theirs["epoch"], theirs["global_step"]), name
        assert ours["loops"] == theirs["loops"], name  # what Lightning resumes from
        for k, w in theirs["state_dict"].items():
            assert torch.equal(ours["state_dict"][k], w), (name, k)
        assert ours["lr_schedulers"] == theirs["lr_schedulers"], name
        state = [{key: str(v).replace("/plain/", "/pl/") for key, v in s.items()}
                 for k, s in ours["callbacks"].items() if k.startswith("ModelCheckpoint")]
        assert state == [{key: str(v) for key, v in s.items()}
                         for k, s in theirs["callbacks"].items() if k.startswith("ModelCheckpoint")], name
    results = (plain_dir / "results.json").read_text().replace("/plain/", "/pl/")
    assert json.loads(results) == json.loads((pl_dir / "results.json").read_text())


@pytest.mark.parametrize("loop", RUNNERS)
def test_a_fractional_interval_validates_twice_an_epoch_and_saves_after_each(loop, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(max_epochs=2, limit_train_batches=6, val_check_interval=0.5)
    cfg["checkpoint"] = {"monitor": "val/loss", "save_top_k": -1}
    run_dir = run(loop, cfg, tmp_path, "f")
    assert steps_with(run_dir, "val/loss") == [2, 5, 8, 11]  # after batches 3 and 6 of each epoch
    # ModelCheckpoint saves after every validation, not at epoch ends, when it validates mid-epoch
    assert sorted(checkpoints(run_dir)) == ["epoch=0-step=3.ckpt", "epoch=0-step=6.ckpt", "epoch=1-step=12.ckpt",
                                            "epoch=1-step=9.ckpt", "last.ckpt"]
    assert heads(run_dir) == ["step 3/12 | epoch 1/2", "step 6/12 | epoch 1/2", "step 9/12 | epoch 2/2",
                              "step 12/12 | epoch 2/2"]


def weights(path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


RESUMABLE = {  # checkpoints taken right after a mid-epoch validation, or after a training batch
    "after-validation": {"save_top_k": -1},
    "every-n-steps": {"every_n_train_steps": 3, "save_top_k": -1},
}


# every pair of loops for the new kind; step checkpoints across loops (same-loop: test_fault_tolerance.py)
RESUMES = [(a, b, "after-validation") for a, b in PAIRS] + [(a, b, "every-n-steps") for a, b in PAIRS if a != b]


@pytest.mark.parametrize("first, second, kind", RESUMES, ids=[f"{k}-{a}-then-{b}" for a, b, k in RESUMES])
def test_resume_mid_run_ends_where_an_uninterrupted_run_ends(first, second, kind, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = steps_config()
    cfg["checkpoint"] = RESUMABLE[kind]
    cfg["train_wrapper"]["args"]["model_spec"]["args"]["dropout"] = 0.3  # draws from the global RNG
    cfg["train_wrapper"]["args"]["sched_spec"] = {"name": "OneCycleLR", "args": {"max_lr": 0.2, "total_steps": 20},
                                                  "interval": "step"}
    full = run(first, cfg, tmp_path, "full")
    cut = run(first, cfg, tmp_path, "cut", "trainer_params.max_steps=7")
    # a kill after step 4 (or 6) leaves last.ckpt as it was then: the top-k file of that step, which
    # was written at the same moment, with the checkpoint callback's last_model_path set to it (the
    # cut run itself ends with last.ckpt at step 7, its final state)
    step = 4 if kind == "after-validation" else 6
    left_by_a_kill_after(cut, step)
    last = torch.load(cut / "ckpt" / "last.ckpt", weights_only=True)
    mid = last["loops"]["fit_loop"]["epoch_loop.batch_progress"]["current"]
    assert last["global_step"] == step
    assert 0 < mid["processed"] < 5  # inside an epoch, not at its end
    torch.manual_seed(12345)  # whatever the RNGs hold now, the checkpoint's states must win
    assert RUNNERS[second](["--save-dir", "save", "--name", "cut", "--resume", "trainer_params.max_steps=12"]) == 0
    assert torch.load(cut / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 12
    full_weights, cut_weights = weights(full / "ckpt" / "last.ckpt"), weights(cut / "ckpt" / "last.ckpt")
    assert full_weights.keys() == cut_weights.keys()
    for k in full_weights:
        assert torch.equal(full_weights[k], cut_weights[k]), k
    # the resumed run's metrics.csv is the uninterrupted run's: what the cut run logged after its
    # checkpoint is dropped, and nothing logged before the checkpoint (the validation it follows,
    # the step's train/loss_step) is lost
    assert rows(cut) == rows(full)


def test_a_plateau_scheduler_resumes_as_lightning_resumes_it(tmp_path, monkeypatch):
    """Lightning does not step an epoch-interval ReduceLROnPlateau at the end of the first epoch after
    a resume (its metric is not in the checkpoint); train.py must not either, or the runs part."""
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(max_epochs=3, limit_train_batches=6, val_check_interval=0.5)
    cfg["checkpoint"] = {"save_top_k": -1}
    cfg["train_wrapper"]["args"]["sched_spec"] = {
        "name": "ReduceLROnPlateau", "args": {"factor": 0.5, "patience": 0, "threshold": 0.5},
        "monitor": "val/loss", "strict": False}
    cut = run("train_pl", cfg, tmp_path, "cut", "+trainer_params.max_steps=9")
    ckpt = cut / "ckpt" / "last.ckpt"
    assert torch.load(ckpt, weights_only=True)["global_step"] == 9  # after the validation inside epoch 2
    for name, loop in (("a", run_train_pl), ("b", run_train)):
        assert loop(["--save-dir", "save", "--name", name, "--resume", str(ckpt), "trainer_params.max_steps=-1"]) == 0
    a, b = (torch.load(tmp_path / "save" / n / "ckpt" / "last.ckpt", weights_only=True) for n in ("a", "b"))
    assert a["global_step"] == b["global_step"] == 18
    assert b["lr_schedulers"] == a["lr_schedulers"]
    # stepped after epoch 1 only: not after the resumed epoch 2, and epoch 3's step follows its last save
    assert a["lr_schedulers"][0]["last_epoch"] == 1
    for k, w in a["state_dict"].items():
        assert torch.equal(b["state_dict"][k], w), k


def test_the_shipped_step_config_runs_under_the_plain_loop(tmp_path, monkeypatch):
    """configs/digits-steps.yaml, shortened: 2 batches an epoch, validation and checkpoints every 3 steps."""
    monkeypatch.chdir(tmp_path)
    argv = ["--config", str(ROOT / "configs" / "digits-steps.yaml"), "--save-dir", "save",
            "trainer_params.max_steps=7", "trainer_params.val_check_interval=3", "checkpoint.every_n_train_steps=3",
            "+trainer_params.limit_train_batches=2", "+trainer_params.limit_val_batches=1",
            "+trainer_params.limit_test_batches=1", "+trainer_params.enable_progress_bar=false"]
    assert run_train(argv) == 0
    run_dir = tmp_path / "save" / "digits-steps"
    assert steps_with(run_dir, "val/loss") == [2, 5]
    assert sorted(checkpoints(run_dir)) == ["epoch=1-step=3.ckpt", "epoch=2-step=6.ckpt", "last.ckpt"]
    assert heads(run_dir)[-1] == "step 7/7 | epoch 4"


BAD = {
    "zero": (["+trainer_params.val_check_interval=0"], "val_check_interval must be an int >= 1", "got 0"),
    "fraction-above-one": (["+trainer_params.val_check_interval=1.5"], "or a float in (0.0, 1.0]", "got 1.5"),
    "a-string": (["+trainer_params.val_check_interval=every_4"], "val_check_interval must be", "got 'every_4'"),
    "longer-than-an-epoch": (["+trainer_params.val_check_interval=5"], "val_check_interval=5 is more than the 4",
                             "check_val_every_n_epoch=null"),
    "null-epochs-with-fraction": (["+trainer_params.check_val_every_n_epoch=null",
                                   "+trainer_params.val_check_interval=0.5"],
                                  "check_val_every_n_epoch=null counts val_check_interval", "got 0.5"),
}


@pytest.mark.parametrize("loop", RUNNERS)
@pytest.mark.parametrize("bad", BAD)
def test_bad_step_settings_are_refused_by_both_loops(bad, loop, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "b.yaml", copy.deepcopy(tiny_config()))
    extra, *phrases = BAD[bad]
    capsys.readouterr()
    assert RUNNERS[loop](["--config", str(path), "--save-dir", "save", *extra]) == 2
    err = capsys.readouterr().err
    assert all(p in err for p in phrases) and "Traceback" not in err, err
    assert not (tmp_path / "save").exists()

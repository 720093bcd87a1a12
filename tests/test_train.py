"""train.py (the plain loop) against train_pl.py: same losses, same run directory, cross-resume."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from helpers import assert_run_dir, run_train, run_train_pl, scalars, tiny_config, write_config

STEP_SCHED = {"name": "OneCycleLR", "args": {"max_lr": 0.2, "total_steps": 40}, "interval": "step", "frequency": 2}
PLATEAU = {"name": "ReduceLROnPlateau", "args": {"factor": 0.1, "patience": 0}, "monitor": "val/loss"}


def variant(**changes) -> dict:
    cfg = tiny_config(max_epochs=3)
    args = cfg["train_wrapper"]["args"]
    for key, value in changes.items():
        if key in ("sched_spec", "optim_spec", "model_spec"):
            args[key] = value
        else:
            cfg["trainer_params"][key] = value
    return cfg


PARITY = {
    "steplr+dropout": variant(model_spec={"name": "mlp", "args": {"in_dim": 64, "hidden": [32], "dropout": 0.3}}),
    "step-interval": variant(sched_spec=STEP_SCHED),
    "plateau": variant(sched_spec=PLATEAU),
    "two-schedulers": variant(sched_spec=[{"name": "ExponentialLR", "args": {"gamma": 0.9}}, STEP_SCHED]),
    "accumulate+clip": variant(accumulate_grad_batches=3, gradient_clip_val=0.05, limit_train_batches=5),
}


def epoch_losses(run_dir) -> dict[str, list[float]]:
    tags = scalars(run_dir)
    return {t: [round(v, 5) for _, v in tags[t]] for t in ("train/loss", "val/loss", "val/acc")}


@pytest.mark.parametrize("name", PARITY)
def test_same_losses_as_lightning(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "p.yaml", PARITY[name])
    assert run_train_pl(["--config", str(path), "--save-dir", "save", "--name", "pl"]) == 0
    assert run_train(["--config", str(path), "--save-dir", "save", "--name", "plain"]) == 0
    pl_losses, plain_losses = epoch_losses(tmp_path / "save" / "pl"), epoch_losses(tmp_path / "save" / "plain")
    assert len(plain_losses["train/loss"]) == 3
    assert plain_losses == pl_losses
    pl_res = json.loads((tmp_path / "save" / "pl" / "results.json").read_text())
    plain_res = json.loads((tmp_path / "save" / "plain" / "results.json").read_text())
    assert plain_res["global_step"] == pl_res["global_step"]
    assert plain_res["best_model_path"].replace("/plain/", "/pl/") == pl_res["best_model_path"]
    assert plain_res["test"] == pytest.approx(pl_res["test"], abs=1e-5)
    # epoch-end scalars sit at the same steps in both TensorBoard logs
    assert [s for s, _ in scalars(tmp_path / "save" / "plain")["val/loss"]] == \
           [s for s, _ in scalars(tmp_path / "save" / "pl")["val/loss"]]


def test_plain_run_directory_matches_lightnings(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "t.yaml", tiny_config())
    assert run_train(["--config", str(path), "--save-dir", "save", "--name", "t"]) == 0
    results = assert_run_dir(tmp_path / "save" / "t", epochs=2)
    assert results["global_step"] == 8
    ckpt = torch.load(tmp_path / "save" / "t" / "ckpt" / "last.ckpt", weights_only=True)
    assert {"epoch", "global_step", "state_dict", "optimizer_states", "lr_schedulers", "hyper_parameters",
            "loops", "callbacks", "pytorch-lightning_version"} <= ckpt.keys()
    assert ckpt["global_step"] == 8 and ckpt["epoch"] == 1  # Lightning's convention: index of the saved epoch


@pytest.mark.parametrize("first, second", [(run_train, run_train_pl), (run_train_pl, run_train)],
                         ids=["plain-then-lightning", "lightning-then-plain"])
def test_cross_resume_continues_epoch_step_and_losses(first, second, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = variant(sched_spec=[{"name": "StepLR", "args": {"step_size": 1, "gamma": 0.5}}, STEP_SCHED])
    path = write_config(tmp_path / "x.yaml", cfg)
    assert first(["--config", str(path), "--save-dir", "save", "--name", "full"]) == 0
    assert first(["--config", str(path), "--save-dir", "save", "--name", "a", "trainer_params.max_epochs=1"]) == 0
    ckpt = tmp_path / "save" / "a" / "ckpt" / "last.ckpt"
    assert second(["--config", str(path), "--save-dir", "save", "--name", "b", "--resume", str(ckpt)]) == 0
    results = json.loads((tmp_path / "save" / "b" / "results.json").read_text())
    assert results["epochs"] == 3 and results["global_step"] == 12
    full, resumed = epoch_losses(tmp_path / "save" / "full"), epoch_losses(tmp_path / "save" / "b")
    for tag in ("train/loss", "val/loss"):
        assert resumed[tag] == full[tag][1:], tag  # epochs 2 and 3 as if never interrupted
    assert [s for s, _ in scalars(tmp_path / "save" / "b")["train/loss"]] == [7, 11]
    w_full = torch.load(tmp_path / "save" / "full" / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    w_res = torch.load(tmp_path / "save" / "b" / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    for k in w_full:
        torch.testing.assert_close(w_res[k], w_full[k], rtol=1e-5, atol=1e-6)


def test_plain_resume_of_its_own_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "r.yaml", tiny_config())
    assert run_train(["--config", str(path), "--save-dir", "save", "--name", "r", "trainer_params.max_epochs=1"]) == 0
    assert run_train(["--save-dir", "save", "--name", "r", "--resume", "trainer_params.max_epochs=2"]) == 0
    results = assert_run_dir(tmp_path / "save" / "r", epochs=2)
    assert results["epochs"] == 2 and results["global_step"] == 8


BAD = {
    "unsupported-trainer-param": (["+trainer_params.profiler=simple"],
                                  "train.py does not support trainer_params.profiler"),
    "true-half-precision": (["+trainer_params.precision=bf16-true"],
                            "train.py trains in 32-true, bf16-mixed, 16-mixed"),
    "two-gpus": (["--gpu", "0,1"], "--gpu"),
    "lightning-callback": (["+callbacks=[{name: timer}]"], "train.py does not run Lightning callbacks (timer)"),
    "unsupported-checkpoint-key": (["+checkpoint.save_weights_only=true"],
                                   "train.py does not support checkpoint.save_weights_only"),
}


@pytest.mark.parametrize("extra, phrase", BAD.values(), ids=BAD.keys())
def test_plain_loop_refuses_what_it_cannot_do(extra, phrase, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "b.yaml", copy.deepcopy(tiny_config()))
    for argv in (["--dry-run"], []):
        assert run_train(["--config", str(path), "--save-dir", "save", *argv, *extra]) == 2
        err = capsys.readouterr().err
        assert phrase in err and "Traceback" not in err
    assert not (tmp_path / "save").exists()


def test_step_limited_run_agrees_with_lightning(tmp_path, monkeypatch):
    """max_steps ending mid-epoch: same stopping point, same losses, a log line for the last epoch."""
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(max_steps=6)
    del cfg["trainer_params"]["max_epochs"]
    path = write_config(tmp_path / "s.yaml", cfg)
    assert run_train_pl(["--config", str(path), "--save-dir", "save", "--name", "pl"]) == 0
    assert run_train(["--config", str(path), "--save-dir", "save", "--name", "plain"]) == 0
    for name in ("pl", "plain"):
        results = json.loads((tmp_path / "save" / name / "results.json").read_text())
        assert results["global_step"] == 6, name
        lines = (tmp_path / "save" / name / "log.txt").read_text().splitlines()
        assert len(lines) == 2 and "step 6" in lines[-1], (name, lines)
    assert epoch_losses(tmp_path / "save" / "plain") == epoch_losses(tmp_path / "save" / "pl")

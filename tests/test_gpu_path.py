"""What the GPU path adds, checked on the CPU: mixed precision in train.py as pl.Trainer applies it,
`compile: true` in both loops, their bad values, and bench/gpu.py's CPU path (so it cannot rot
between the runs on a GPU)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from helpers import ROOT, read_metrics, refused, run_train, run_train_pl, tiny_config, tree, write_config

RUNNERS = {"train_pl": run_train_pl, "train": run_train}


def losses(run_dir) -> list[tuple[int, float]]:
    return [(r["step"], r["train/loss"]) for r in read_metrics(run_dir / "metrics.csv") if r.get("train/loss")]


def dropout_config(**extra) -> dict:
    cfg = tiny_config(max_epochs=2, **extra)
    cfg["train_wrapper"]["args"]["model_spec"]["args"]["dropout"] = 0.2
    return cfg


def test_bf16_mixed_gives_the_same_losses_in_both_loops_and_differs_from_float32(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, precision in (("bf16", "bf16-mixed"), ("fp32", "32-true")):
        path = write_config(tmp_path / f"{name}.yaml", dropout_config(precision=precision))
        for loop, run in RUNNERS.items():
            assert run(["--config", str(path), "--save-dir", "save", "--name", f"{loop}-{name}"]) == 0
    save = tmp_path / "save"
    pl_bf16, plain_bf16 = losses(save / "train_pl-bf16"), losses(save / "train-bf16")
    assert [s for s, _ in pl_bf16] == [s for s, _ in plain_bf16] and len(pl_bf16) == 2
    assert all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(pl_bf16, plain_bf16)), (pl_bf16, plain_bf16)
    fp32 = losses(save / "train-fp32")
    assert any(abs(a - b) > 1e-6 for (_, a), (_, b) in zip(fp32, plain_bf16))  # autocast really ran


def test_float16_autocast_on_the_cpu_falls_back_to_bf16_in_both_loops_and_true_half_needs_lightning(
        tmp_path, monkeypatch, capsys):
    """pl.Trainer trains a 16-mixed config on the CPU in bf16-mixed (float16 autocast is CUDA's); train.py does
    the same and says so. bf16-true (weights in bfloat16) is Lightning's alone: train.py refuses it."""
    monkeypatch.chdir(tmp_path)
    for name, precision in (("half", "16-mixed"), ("bf16", "bf16-mixed")):
        path = write_config(tmp_path / f"{name}.yaml", tiny_config(precision=precision))
        for loop, run in RUNNERS.items():
            assert run(["--config", str(path), "--save-dir", "save", "--name", f"{loop}-{name}"]) == 0
    assert "on the CPU this run uses bf16-mixed" in capsys.readouterr().err
    for loop in RUNNERS:
        assert losses(tmp_path / "save" / f"{loop}-half") == losses(tmp_path / "save" / f"{loop}-bf16")
    line = refused("train", write_config(tmp_path / "true.yaml", tiny_config(precision="bf16-true")), capsys)
    assert "train.py trains in 32-true, bf16-mixed, 16-mixed; trainer_params.precision='bf16-true' needs train_pl.py" \
        in line


@pytest.mark.parametrize("first,second", [("train", "train"), ("train", "train_pl")])
def test_a_bf16_run_resumed_mid_way_ends_bitwise_equal(first, second, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = dropout_config(precision="bf16-mixed")
    cfg["trainer_params"]["max_epochs"] = 3
    path = write_config(tmp_path / "b.yaml", cfg)
    assert RUNNERS[first](["--config", str(path), "--save-dir", "save", "--name", "full"]) == 0
    assert RUNNERS[first](["--config", str(path), "--save-dir", "save", "--name", "cut",
                           "trainer_params.max_epochs=1"]) == 0
    assert RUNNERS[second](["--save-dir", "save", "--name", "cut", "--resume", "trainer_params.max_epochs=3"]) == 0
    full = torch.load(tmp_path / "save" / "full" / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    cut = torch.load(tmp_path / "save" / "cut" / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    for key in full:
        assert torch.equal(full[key], cut[key]), key


def test_compile_trains_the_same_numbers_in_both_loops_and_keeps_the_parameter_names(tmp_path, monkeypatch):
    """torch.compile (inductor, on the CPU) of the network: the losses of the uncompiled run to rounding,
    and checkpoints that load into an uncompiled model (no `_orig_mod.` prefix)."""
    import torchx

    monkeypatch.chdir(tmp_path)
    plain = write_config(tmp_path / "plain.yaml", tiny_config())
    compiled = write_config(tmp_path / "compiled.yaml", {**tiny_config(), "compile": True})
    for loop, run in RUNNERS.items():
        assert run(["--config", str(plain), "--save-dir", "save", "--name", f"{loop}-plain"]) == 0
        assert run(["--config", str(compiled), "--save-dir", "save", "--name", f"{loop}-compiled"]) == 0
        ref, got = losses(tmp_path / "save" / f"{loop}-plain"), losses(tmp_path / "save" / f"{loop}-compiled")
        assert [s for s, _ in ref] == [s for s, _ in got]
        assert all(abs(a - b) < 1e-5 for (_, a), (_, b) in zip(ref, got)), (loop, ref, got)
        ckpt = torch.load(tmp_path / "save" / f"{loop}-compiled" / "ckpt" / "last.ckpt", weights_only=True)
        names = torch.load(tmp_path / "save" / f"{loop}-plain" / "ckpt" / "last.ckpt", weights_only=True)
        assert ckpt["state_dict"].keys() == names["state_dict"].keys()
        model = torchx.load_model(tmp_path / "save" / f"{loop}-compiled" / "ckpt" / "last.ckpt")
        assert not hasattr(model, "_compiled_call_impl") or model._compiled_call_impl is None  # loads uncompiled


BAD = [  # (what, config change, message part)
    ("unknown precision", {"trainer_params": {"precision": "fp8"}}, "'precision': expected one of 64, 32, 16"),
    ("compile a string", {"compile": "yes"}, "compile must be true, false or a mapping"),
    ("compile unknown arg", {"compile": {"mdoe": "default"}}, "compile.mdoe is not an argument of torch.compile"),
    ("compile bad mode", {"compile": {"mode": "fast"}}, "compile.mode must be one of default"),
    ("timeout negative", {"distributed": {"timeout_s": -1}}, "distributed.timeout_s must be a number of seconds"),
    ("timeout text", {"distributed": {"timeout_s": "1h"}}, "distributed.timeout_s must be a number of seconds"),
    ("timeout huge", {"distributed": {"timeout_s": 1.0e12}}, "from 1 to 604800 (a week), got 1000000000000.0"),
    ("timeout under a second", {"distributed": {"timeout_s": 0.5}}, "from 1 to 604800 (a week), got 0.5"),
    ("timeout key", {"distributed": {"timeut_s": 5}}, "distributed.timeut_s is not a setting"),
    ("distributed scalar", {"distributed": 30}, "distributed must be a mapping"),
]


@pytest.mark.parametrize("loop", RUNNERS)
@pytest.mark.parametrize("what,change,message", BAD, ids=[b[0] for b in BAD])
def test_bad_values_are_one_message_before_anything_exists(loop, what, change, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config()
    for key, value in change.items():
        cfg[key] = {**cfg[key], **value} if isinstance(cfg.get(key), dict) and isinstance(value, dict) else value
    path = write_config(tmp_path / "bad.yaml", cfg)
    before = tree(tmp_path)
    line = refused(loop, path, capsys)
    assert message in line, line
    assert tree(tmp_path) == before and not (tmp_path / "save").exists()


@pytest.mark.slow
def test_the_gpu_benchmark_runs_its_cpu_path(tmp_path):
    """bench/gpu.py --quick --cpu: every row (both loops, bf16, compile, raw) and the verdict lines."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--quick", "--cpu"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    rows = [line.split()[0:2] for line in out.stdout.splitlines()]
    for variant in ("raw", "train.py", "train_pl.py"):
        for mode in ("", " bf16", " compile"):
            assert any(" ".join(r[:2 if mode else 1]) == f"{variant}{mode}" for r in rows), (variant, mode)
    assert "train.py / raw:" in out.stdout and "GPU against CPU not checked" in out.stdout

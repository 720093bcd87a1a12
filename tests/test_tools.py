"""`python -m torchx list|config`, and a user's own module from `imports:` end to end."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import ROOT, run_train_pl, tiny_config, write_config
from torchx.cli import tool_main


def test_list_shows_name_origin_and_docstring(capsys):
    assert tool_main(["list", "models"]) == 0
    out = capsys.readouterr().out
    line = next(row for row in out.splitlines() if row.strip().startswith("cnn "))
    assert "torchx.models.cnn:" in line and "classic PyTorch MNIST example" in line
    assert "resnet18" in out and "losses:" not in out


def test_list_all_kinds_includes_torch_optimizers(capsys):
    assert tool_main(["list"]) == 0
    out = capsys.readouterr().out
    for kind in ("models:", "losses:", "datasets:", "wrappers:", "callbacks:", "optimizers:", "schedulers:"):
        assert kind in out
    assert "  Adam " in out and "  early_stopping " in out and "  LambdaLR " not in out


def test_list_with_config_shows_user_modules(capsys):
    assert tool_main(["list", "models", "--config", str(ROOT / "configs" / "digits-custom.yaml")]) == 0
    assert "conv_digits" in capsys.readouterr().out


def test_config_prints_resolved_config_with_overrides(tmp_path, capsys):
    cfg = tiny_config()
    cfg["vars"] = {"bs": 24}
    cfg["data_module"]["args"]["batch_size"] = "${vars.bs}"
    path = write_config(tmp_path / "c.yaml", cfg)
    assert tool_main(["config", str(path), "vars.bs=48", "trainer_params.max_epochs=5"]) == 0
    out = capsys.readouterr().out
    assert "batch_size: 48" in out and "max_epochs: 5" in out and "${" not in out


def test_config_bad_input_is_exit_2(tmp_path, capsys):
    path = write_config(tmp_path / "c.yaml", tiny_config())
    assert tool_main(["config", str(path), "trainer_params.max_epoch=5"]) == 2
    assert "did you mean 'max_epochs'" in capsys.readouterr().err


def test_user_module_is_imported_trained_and_snapshotted(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # `imports: [examples.my_modules]` resolves from the project root
    argv = ["--config", str(ROOT / "configs" / "digits-custom.yaml"), "--save-dir", str(tmp_path),
            "trainer_params.max_epochs=1", "+trainer_params.limit_train_batches=2",
            "+trainer_params.enable_progress_bar=false"]
    assert run_train_pl(argv) == 0
    run_dir = tmp_path / "digits-custom"
    assert (run_dir / "src" / "examples" / "my_modules.py").is_file()
    assert "conv_digits" in (run_dir / "config.yaml").read_text()


@pytest.mark.parametrize("args", [["list", "nonsense"], ["frobnicate"]])
def test_tool_rejects_unknown_commands(args):
    proc = subprocess.run([sys.executable, "-m", "torchx", *args], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("argv", [
    ["--config", "c.yaml", "a.b=1", "--name", "n", "c=[1,2]"],
    ["a.b=1", "--config", "c.yaml", "c=[1,2]", "--name", "n"],
    ["--config", "c.yaml", "--name", "n", "a.b=1", "c=[1,2]"],
])
def test_overrides_may_sit_before_between_or_after_options(argv):
    from torchx.cli import parse_args

    args = parse_args(argv, "train_pl.py")
    assert (args.config, args.name, args.overrides) == ("c.yaml", "n", ["a.b=1", "c=[1,2]"])


def test_a_bare_resume_followed_by_an_override_keeps_the_override():
    from torchx.cli import parse_args

    args = parse_args(["--name", "n", "--resume", "trainer_params.max_epochs=20", "--jobs", "2", "x=1"], "train.py")
    assert (args.resume, args.overrides, args.jobs) == (True, ["trainer_params.max_epochs=20", "x=1"], 2)

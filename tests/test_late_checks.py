"""Mistakes that only built objects or real data reveal (an optimizer refusing its learning rate, a
val_split larger than the data, a bad value in one combination of a sweep) are found before the
run or session directory exists: exit 2, one line, no traceback, nothing created."""

from __future__ import annotations

import subprocess
import sys

import pytest

from helpers import ROOT, run_train, run_train_pl, tiny_config, write_config

RUNNERS = {"train_pl": run_train_pl, "train": run_train}
LR = ("train_wrapper", "args", "optim_spec", "args", "lr")


def put(cfg: dict, path: tuple, value) -> dict:
    node = cfg
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return cfg


def refused(loop: str, cfg: dict, tmp_path, capsys, *args: str) -> str:
    path = write_config(tmp_path / "c.yaml", cfg)
    assert RUNNERS[loop](["--config", str(path), "--save-dir", "save", *args]) == 2
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err and len(captured.err.strip().splitlines()) == 1, captured.err
    assert not (tmp_path / "save").exists()
    return captured.err


SINGLE = [  # (name, what to change, the message)
    ("negative-lr", (LR, -1.0), "Invalid learning rate: -1.0"),
    ("val-split-beyond-data", (("data_module", "args", "val_split"), 100000), "val_split=100000"),
    ("interval-longer-than-an-epoch", (("trainer_params", "val_check_interval"), 100),
     "val_check_interval=100 is more than the 4 training batches"),
    ("model-input-size", (("train_wrapper", "args", "model_spec", "args", "in_dim"), 65), "mat1 and mat2"),
]


@pytest.mark.parametrize("loop", RUNNERS)
@pytest.mark.parametrize("name, change, message", SINGLE, ids=[c[0] for c in SINGLE])
def test_a_value_only_a_built_object_refuses_creates_nothing(loop, name, change, message, tmp_path, monkeypatch,
                                                            capsys):
    monkeypatch.chdir(tmp_path)
    cfg = put(tiny_config(), *change)
    assert message in refused(loop, cfg, tmp_path, capsys)


SWEEPS = [  # (the sweep key's place, its values, what the message says)
    (LR, [0.001, -1.0], "experiment 1 (lr=-1.0): optimizer 'SGD' rejected its arguments"),
    (("data_module", "args", "batch_size"), [32, -4], "experiment 1 (batch_size=-4)"),
    (("data_module", "args", "val_split"), [0.1, 100000], "experiment 1 (val_split=100000)"),
    (("train_wrapper", "args", "model_spec", "args", "in_dim"), [64, 65], "experiment 1 (in_dim=65)"),
]


@pytest.mark.parametrize("where, values, message", SWEEPS, ids=[m.split(" (")[1].split(")")[0] for _, _, m in SWEEPS])
def test_every_combination_of_a_session_is_checked_before_the_session_exists(where, values, message, tmp_path,
                                                                             monkeypatch, capsys):
    """The good combinations do not train before a bad one fails: the session folder never appears."""
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config()
    node = cfg
    for part in where[:-1]:
        node = node[part]
    node.pop(where[-1], None)
    node[where[-1] + "_"] = values
    assert message in refused("train", cfg, tmp_path, capsys, "--name", "s")


INTERRUPTING = '''
raise KeyboardInterrupt
'''


def test_a_ctrl_c_before_training_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "interrupting.py").write_text(INTERRUPTING)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tiny_config()
    cfg["imports"] = ["interrupting"]
    assert run_train_pl(["--config", str(write_config(tmp_path / "c.yaml", cfg)), "--save-dir", "save"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "train_pl.py: interrupted" and not (tmp_path / "save").exists()


def test_a_refusal_after_the_trainer_is_built_is_the_only_output(tmp_path):
    """pl.Trainer prints its device lines ("GPU available: ...") when it is built; a refusal found
    after that (an interval longer than the epoch) is then the only thing the user sees."""
    path = write_config(tmp_path / "c.yaml", tiny_config(val_check_interval=100))
    proc = subprocess.run([sys.executable, str(ROOT / "train_pl.py"), "--config", str(path), "--save-dir", "save"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stdout == "" and proc.stderr.startswith("train_pl.py: error: trainer_params.val_check_interval=100")
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "save").exists()

"""Sessions: a config with `_`-keys runs every combination as a run directory under save/<name>/.

The experiments are real child processes of train.py (a few seconds each, mostly imports), so
the grids are small and one 2x2 session is shared by the tests that only read it.
"""

from __future__ import annotations

import csv
import datetime
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, assert_run_dir, rekey, run_train, snapshot_files, tiny_config, write_config
from torchx import session
from torchx.cli import tool_main
from torchx.config import load
from torchx.errors import ConfigError
from torchx.plot import _epoch_ends, _x, axis, run_dirs

LR = ("train_wrapper", "args", "optim_spec", "args")
BS = ("data_module", "args")


def sweep(cfg: dict, where: tuple, key: str, values: list) -> dict:
    """Turn `key` at `where` into the sweep key `key_`."""
    return rekey(cfg, where, key, key + "_", values)


def grid_config(**trainer_params) -> dict:
    """tiny_config with learning rate x batch size, one epoch each."""
    cfg = tiny_config(max_epochs=1, **trainer_params)
    sweep(cfg, LR, "lr", [0.1, 0.01])
    return sweep(cfg, BS, "batch_size", [16, 32])


def state(folder: Path) -> dict:
    return yaml.safe_load((folder / "session.yaml").read_text())


def when(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text)


def summary_rows(folder: Path) -> list[dict]:
    with open(folder / "summary.csv", newline="") as f:
        return list(csv.DictReader(f))


NAMES = ["batch_size=16,lr=0.1", "batch_size=16,lr=0.01", "batch_size=32,lr=0.1", "batch_size=32,lr=0.01"]


@pytest.fixture(scope="module")
def grid(tmp_path_factory) -> Path:
    """A 2x2 session run with --jobs 2; tests below only read it (or copy it)."""
    tmp = tmp_path_factory.mktemp("grid")
    config = write_config(tmp / "sweep.yaml", grid_config())
    code = run_train(["--config", str(config), "--save-dir", str(tmp / "save"), "--name", "s", "--jobs", "2"])
    assert code == 0, (tmp / "save" / "s" / "session.yaml").read_text()
    return tmp / "save" / "s"


def test_grid_runs_every_combination_as_a_run_directory(grid):
    doc = state(grid)
    assert [e["name"] for e in doc["experiments"]] == NAMES
    assert [(g["key"], g["values"]) for g in doc["grid"]] == [
        ("data_module.args.batch_size_", [16, 32]), ("train_wrapper.args.optim_spec.args.lr_", [0.1, 0.01])]
    for e in doc["experiments"]:
        assert (e["state"], e["exit_status"], e["error"], e["attempts"]) == ("done", 0, None, 1)
        run_dir = grid / e["name"]
        results = assert_run_dir(run_dir, epochs=1)
        assert results["global_step"] == 4
        saved = yaml.safe_load((run_dir / "config.yaml").read_text())
        assert saved["train_wrapper"]["args"]["optim_spec"]["args"] == {"momentum": 0.9, "lr": e["params"]["lr"]}
        assert saved["data_module"]["args"]["batch_size"] == e["params"]["batch_size"]
        assert (grid / "logs" / f"{e['name']}.log").read_text().count("==== attempt") == 1
    assert sorted(p.name for p in grid.iterdir() if p.is_dir()) == sorted([*NAMES, "configs", "logs"])


def test_grid_summary_has_a_row_per_experiment(grid):
    rows = summary_rows(grid)
    assert [r["name"] for r in rows] == NAMES
    assert [(r["batch_size"], r["lr"]) for r in rows] == [("16", "0.1"), ("16", "0.01"), ("32", "0.1"), ("32", "0.01")]
    for r in rows:
        metrics = [float(x) for x in (r["best"], r["val/acc"], r["test/acc"], r["train/loss"])]
        assert r["state"] == "done" and r["monitor"] == "val/acc" and r["best_epoch"] == "1"
        assert metrics[0] == metrics[1]  # one epoch: the best is the last
        assert 0 <= metrics[2] <= 1 and metrics[3] > 0 and float(r["wall_time_s"]) > 0
    table = (grid / "summary.md").read_text().splitlines()
    assert table[0].startswith("| # | batch_size | lr | state | best val/acc | epoch | train/loss |")
    assert len([line for line in table if line.startswith("| ") and "| done |" in line]) == 4


def test_jobs_2_runs_two_at_once_with_the_cores_split(grid):
    entries = state(grid)["experiments"]
    first, second = entries[0], entries[1]
    assert when(second["started"]) < when(first["finished"]) and when(first["started"]) < when(second["finished"])
    assert all(e["threads"] == max(1, session.cpu_count() // 2) for e in entries)


def test_resume_of_a_finished_session_runs_nothing(grid, capsys):
    before = {name: snapshot_files(grid / name) for name in NAMES}
    assert run_train(["--save-dir", str(grid.parent), "--name", "s", "--resume"]) == 0
    out = capsys.readouterr().out
    assert out.count("done already, skipped") == 4 and "started" not in out
    assert {name: snapshot_files(grid / name) for name in NAMES} == before
    assert all(e["attempts"] == 1 for e in state(grid)["experiments"])


def test_changed_grid_or_config_or_no_resume_is_refused(grid, capsys):
    before = snapshot_files(grid)
    base = ["--config", str(grid.parent.parent / "sweep.yaml"), "--save-dir", str(grid.parent), "--name", "s"]
    assert run_train([*base, "--resume", "train_wrapper.args.optim_spec.args.lr_=[0.1,0.001]"]) == 2
    assert ("the grid differs from the one session" in (err := capsys.readouterr().err)
            and "train_wrapper.args.optim_spec.args.lr_: [0.1, 0.01] -> [0.1, 0.001]" in err)
    assert run_train([*base, "--resume", "trainer_params.max_epochs=3"]) == 2
    assert "the config differs" in (err := capsys.readouterr().err) and "trainer_params.max_epochs: 1 -> 3" in err
    assert run_train(base) == 2
    assert "already exists" in (err := capsys.readouterr().err) and "--resume" in err
    assert "Traceback" not in err and snapshot_files(grid) == before


def test_plot_overlays_the_session_labelled_by_combination(grid, tmp_path):
    assert [d.name for d in run_dirs([str(grid)])] == NAMES  # the session's order, not the folders'
    out = tmp_path / "curves.png"
    assert tool_main(["plot", str(grid), "--metrics", "val/acc,train/loss", "-o", str(out)]) == 0
    assert out.stat().st_size > 10_000


def test_plot_uses_epochs_when_a_sweep_changes_the_steps_per_epoch():
    """A batch-size sweep: epoch 1 ends at step 3 in one run and step 1 in the other."""
    small = [{"step": 1.0, "epoch": 0.0, "train/loss_step": 2.0, "train/loss": None},
             {"step": 3.0, "epoch": 0.0, "train/loss_step": None, "train/loss": 1.5},
             {"step": 7.0, "epoch": 1.0, "train/loss_step": None, "train/loss": 1.0},
             {"step": 8.0, "epoch": 2.0, "train/loss_step": None, "train/loss": None, "test/acc": 0.9}]
    large = [{"step": 1.0, "epoch": 0.0, "train/loss": 1.4}, {"step": 3.0, "epoch": 1.0, "train/loss": 0.9}]
    ends = [_epoch_ends(small), _epoch_ends(large)]
    assert ends == [{0: 3.0, 1: 7.0}, {0: 1.0, 1: 3.0}]  # the test row (after training) is no epoch's end
    assert [_x(r, ends[0]) for r in small] == [0.5, 1.0, 2.0, 2.0]
    assert axis("auto", ends) == "epoch" and axis("auto", [ends[0], ends[0]]) == "step"
    assert axis("step", ends) == "step"


def test_mnist_sweep_config_sweeps_over_what_it_inherits():
    """configs/mnist-sweep.yaml sweeps keys that its _base_ also sets: the swept values win."""
    experiments = session.plan(load(ROOT / "configs" / "mnist-sweep.yaml"))
    assert [e.name for e in experiments] == ["batch_size=32,lr=0.01", "batch_size=32,lr=0.001",
                                             "batch_size=128,lr=0.01", "batch_size=128,lr=0.001"]
    for e in experiments:
        assert e.config["data_module"]["args"]["batch_size"] == e.params["batch_size"]
        assert e.config["train_wrapper"]["args"]["optim_spec"] == {"name": "Adam", "args": {"lr": e.params["lr"]}}
        assert "batch_size_" not in e.config["data_module"]["args"]


def test_dry_run_lists_the_experiments_and_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    config = write_config(tmp_path / "sweep.yaml", grid_config())
    assert run_train(["--config", str(config), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert [line.split() for line in out.splitlines() if line.startswith("    ")] == [
        [str(i), name] for i, name in enumerate(NAMES)]
    assert "experiments: 4 (batch_size [16, 32] x lr [0.1, 0.01])" in out and "nothing was created" in out
    assert run_train(["--config", str(config), "--dry-run", "--only", "2"]) == 0
    out = capsys.readouterr().out
    assert [line.split() for line in out.splitlines() if line.startswith("    ")] == [["2", NAMES[2]]]
    assert sorted(os.listdir(tmp_path)) == ["sweep.yaml"]


def test_a_typo_in_one_combination_fails_up_front_naming_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = sweep(tiny_config(), ("train_wrapper", "args", "optim_spec"), "name", ["SGD", "Adamm"])
    config = write_config(tmp_path / "sweep.yaml", cfg)
    assert run_train(["--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "experiment 1 (name=Adamm)" in err and "unknown optimizer 'Adamm' (did you mean 'Adam'" in err
    assert sorted(os.listdir(tmp_path)) == ["sweep.yaml"]


FLAKY_MODULE = '''
import torch
import torchx.models as models

@models.register("flaky_mlp")
class FlakyMLP(torch.nn.Module):
    """A linear model whose forward raises at its `fail_at`-th training call (0: never)."""
    def __init__(self, fail_at: int = 0):
        super().__init__()
        self.layer, self.fail_at, self.calls = torch.nn.Linear(64, 10), fail_at, 0
    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls == self.fail_at:
                raise RuntimeError(f"model code failed at training call {self.calls}")
        return self.layer(x.flatten(1))
'''


def test_failing_combination_is_recorded_and_the_others_finish(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "flaky.py").write_text(FLAKY_MODULE)
    cfg = tiny_config(max_epochs=1)
    cfg["imports"] = ["flaky"]
    cfg["train_wrapper"]["args"]["model_spec"] = {"name": "flaky_mlp", "args": {"fail_at_": [2, 0]}}
    config = write_config(tmp_path / "sweep.yaml", cfg)
    assert run_train(["--config", str(config), "--name", "f"]) == 1  # one experiment failed
    folder = tmp_path / "save" / "f"
    bad, good = state(folder)["experiments"]
    assert (bad["state"], bad["exit_status"]) == ("failed", 1)
    assert "RuntimeError: model code failed at training call 2" in bad["error"]
    assert (good["state"], good["exit_status"]) == ("done", 0)
    assert when(good["started"]) >= when(bad["finished"])  # one after another by default
    assert_run_dir(folder / "fail_at=0", epochs=1)
    assert [r["state"] for r in summary_rows(folder)] == ["failed", "done"]
    assert "training call 2" in (folder / "summary.md").read_text()
    assert "training call 2" in capsys.readouterr().out  # the summary printed at the end
    # --resume retries the failure; it crashed before its first checkpoint, so it starts over and
    # the folder of the first attempt is kept aside; the finished experiment is not run again
    done_before = snapshot_files(folder / "fail_at=0")
    assert run_train(["--name", "f", "--resume"]) == 1
    bad, good = state(folder)["experiments"]
    assert (bad["state"], bad["attempts"], bad["set_aside"]) == ("failed", 2, ["attempts/fail_at=2.1"])
    assert (folder / "attempts" / "fail_at=2.1" / "config.yaml").is_file() and (folder / "fail_at=2").is_dir()
    assert good["attempts"] == 1 and snapshot_files(folder / "fail_at=0") == done_before


def test_a_combination_that_cannot_train_is_refused_before_the_session_exists(tmp_path, monkeypatch, capsys):
    """A model input size that does not fit the data is found by the one-batch check of every
    experiment, not by a crash after the others have trained."""
    monkeypatch.chdir(tmp_path)
    cfg = sweep(tiny_config(max_epochs=1), ("train_wrapper", "args", "model_spec", "args"), "in_dim", [64, 65])
    config = write_config(tmp_path / "sweep.yaml", cfg)
    assert run_train(["--config", str(config), "--name", "f"]) == 2
    err = capsys.readouterr().err
    assert "experiment 1 (in_dim=65)" in err and "mat1 and mat2" in err and "Traceback" not in err
    assert not (tmp_path / "save").exists()


def test_interrupted_session_resumes_without_rerunning_finished(tmp_path, monkeypatch):
    """SIGTERM to the controller: the running experiment saves last.ckpt and stops (interrupted);
    --resume continues it from there and leaves the finished one alone."""
    monkeypatch.chdir(tmp_path)
    cfg = sweep(tiny_config(), ("trainer_params",), "max_epochs", [1, 40])
    config = write_config(tmp_path / "sweep.yaml", cfg)
    folder, slow = tmp_path / "save" / "sweep", tmp_path / "save" / "sweep" / "max_epochs=40"
    err = tmp_path / "controller.err"
    with open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 120
    while not (slow / "ckpt" / "last.ckpt").is_file():  # the slow one has trained an epoch
        assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 75, err.read_text()
    fast, interrupted = state(folder)["experiments"]
    assert fast["state"] == "done" and (interrupted["state"], interrupted["exit_status"]) == ("interrupted", 75)
    assert "preempted: SIGTERM received" in interrupted["error"]
    fast_files = snapshot_files(folder / "max_epochs=1")

    assert run_train(["--config", str(config), "--resume"]) == 0
    fast, resumed = state(folder)["experiments"]
    assert (resumed["state"], resumed["attempts"], fast["attempts"]) == ("done", 2, 1)
    assert snapshot_files(folder / "max_epochs=1") == fast_files
    assert (slow / "provenance-resume-1.json").is_file()  # continued in place, from its checkpoint
    assert assert_run_dir(slow, epochs=40)["global_step"] == 160


def test_only_runs_exactly_one_and_array_tasks_share_the_session(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cfg = sweep(tiny_config(max_epochs=1), LR, "lr", [0.1, 0.01])
    config = write_config(tmp_path / "sweep.yaml", cfg)
    assert run_train(["--config", str(config), "--only", "1"]) == 0
    folder = tmp_path / "save" / "sweep"
    first, second = state(folder)["experiments"]
    assert (first["state"], first["attempts"], second["state"]) == ("pending", 0, "done")
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == ["configs", "logs", "lr=0.01"]
    assert_run_dir(folder / "lr=0.01", epochs=1)
    # another task of the array joins the session; a finished task run again is skipped
    assert run_train(["--config", str(config), "--only", "lr=0.01"]) == 0
    assert "done already, skipped" in capsys.readouterr().out
    assert state(folder)["experiments"][1]["attempts"] == 1
    assert run_train(["--config", str(config), "--only", "2"]) == 2
    assert "--only '2' is not an experiment of this session; give an index from 0 to 1" in capsys.readouterr().err


def test_two_array_tasks_started_together_share_one_session(tmp_path):
    """Two `--only` processes racing to create the session: one creates it, the other joins."""
    cfg = sweep(tiny_config(max_epochs=1), LR, "lr", [0.1, 0.01])
    config = write_config(tmp_path / "sweep.yaml", cfg)
    errs = [tmp_path / f"task{k}.err" for k in (0, 1)]
    tasks = []
    for k, err in enumerate(errs):
        with open(err, "w") as stderr:
            tasks.append(subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--config", str(config),
                                           "--only", str(k)], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr))
    for task, err in zip(tasks, errs):
        assert task.wait(timeout=180) == 0, err.read_text()
    folder = tmp_path / "save" / "sweep"
    assert [(e["state"], e["attempts"]) for e in state(folder)["experiments"]] == [("done", 1), ("done", 1)]
    assert sorted(os.listdir(tmp_path / "save")) == ["sweep"]  # no temporary folder left behind
    for name in ("lr=0.1", "lr=0.01"):
        assert_run_dir(folder / name, epochs=1)


def test_gpu_groups_split_the_devices_among_jobs():
    assert session.gpu_groups([0, 1, 2, 3], 4, "train_pl.py") == [[0], [1], [2], [3]]
    assert session.gpu_groups([0, 1, 2, 3], 2, "train_pl.py") == [[0, 1], [2, 3]]
    assert session.gpu_groups([2, 3], 1, "train_pl.py") == [[2, 3]]  # one experiment at a time, DDP
    assert session.gpu_groups(None, 3, "train.py") == [None, None, None]
    with pytest.raises(ConfigError, match=r"--jobs 3 with --gpu 0,1,2,3: .* use --jobs 1 or 2 or 4"):
        session.gpu_groups([0, 1, 2, 3], 3, "train_pl.py")
    with pytest.raises(ConfigError, match=r"--jobs 5 with --gpu 0,1,2,3"):
        session.gpu_groups([0, 1, 2, 3], 5, "train_pl.py")
    with pytest.raises(ConfigError, match=r"train.py trains on one device; use --jobs 2"):
        session.gpu_groups([0, 1], 1, "train.py")


def test_experiment_names_become_safe_folder_names():
    seen: set[str] = set()
    assert session.folder_name("opt=a/b", 0, seen) == "opt=a_b"
    assert session.folder_name("opt=a\\b", 1, seen) == "opt=a_b,#1"  # unique after cleaning
    long = session.folder_name("x=" + "9" * 300, 2, seen)
    assert len(long.encode()) <= session.NAME_MAX and long.endswith(",#2")

"""After training: `python -m torchx test|validate|rerun RUN_DIR`, torchx.load_run and torchx.load_model,
on runs of both loops, of torchx's own modules and of a user's module that only the run's snapshot still
has. (predict and export have their own files.)"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from helpers import (
    ROOT,
    read_metrics,
    run_tool,
    run_train_pl,
    tiny_config,
    tool_refused,
    trained_run,
    tree,
    write_config,
)

USER = Path(__file__).resolve().parent / "user_project"
LOOPS = ("train_pl", "train")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One finished tiny digits run per loop, tested on the whole test split."""
    save = tmp_path_factory.mktemp("after") / "save"
    return {loop: trained_run(save, name=loop, loop=loop, limit_test_batches=1.0) for loop in LOOPS}


def evaluation(run_dir: Path, name: str) -> dict:
    return json.loads((run_dir / "eval" / name).read_text())


def fresh_copy(run_dir: Path, tmp_path: Path) -> Path:
    """A copy of a finished run as training left it (in a folder of its own, as a moved run directory is),
    to change freely."""
    copy = tmp_path / "moved" / run_dir.name
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("eval"))
    return copy


# ---------------------------------------------------------------- test / validate


@pytest.mark.parametrize("loop", LOOPS)
def test_test_reproduces_the_runs_results_exactly_and_never_overwrites(loop, runs, capsys):
    run_dir = runs[loop]
    results = json.loads((run_dir / "results.json").read_text())
    capsys.readouterr()
    assert run_tool(["test", str(run_dir)]) == 0
    out = capsys.readouterr().out
    first = evaluation(run_dir, "test-best.json")
    assert first["metrics"] == results["test"]  # bit for bit: the same batches through the same math
    assert first["checkpoint"] == results["best_model_path"] and first["samples"] == 297
    assert "results.json" in out and "wrote" in out  # the table shows the run's own numbers beside the new
    assert run_tool(["test", str(run_dir)]) == 0  # a second evaluation: a file of its own
    assert evaluation(run_dir, "test-best-2.json")["metrics"] == results["test"]
    assert evaluation(run_dir, "test-best.json") == first


@pytest.mark.parametrize("loop", LOOPS)
def test_validate_gives_the_score_the_best_checkpoint_was_ranked_by(loop, runs):
    run_dir = runs[loop]
    results = json.loads((run_dir / "results.json").read_text())
    assert run_tool(["validate", str(run_dir)]) == 0
    record = evaluation(run_dir, "val-best.json")
    assert record["split"] == "val" and record["samples"] == 32  # limit_val_batches: 2 of 16
    assert record["metrics"]["val/acc"] == pytest.approx(results["best_model_score"], abs=1e-7)
    assert run_tool(["validate", str(run_dir), "--ckpt", "last"]) == 0
    last_val = [r for r in read_metrics(run_dir / "metrics.csv") if r.get("val/loss") is not None][-1]
    assert evaluation(run_dir, "val-last.json")["metrics"]["val/loss"] == pytest.approx(last_val["val/loss"], abs=1e-6)


def test_overrides_change_what_is_evaluated_and_are_printed_and_recorded(runs, capsys):
    run_dir = runs["train_pl"]
    config_before = (run_dir / "config.yaml").read_text()
    capsys.readouterr()
    assert run_tool(["test", str(run_dir), "--ckpt", "last", "data_module.args.eval_batch_size=10",
                     "trainer_params.limit_test_batches=3"]) == 0
    out = capsys.readouterr().out
    assert "override: data_module.args.eval_batch_size: '<absent>' -> 10" in out
    assert "override: trainer_params.limit_test_batches: 1.0 -> 3" in out
    record = evaluation(run_dir, "test-last.json")
    assert record["samples"] == 30 and record["overrides"] == ["data_module.args.eval_batch_size=10",
                                                               "trainer_params.limit_test_batches=3"]
    assert len(record["changes"]) == 2 and (run_dir / "config.yaml").read_text() == config_before


def test_a_checkpoint_given_by_path_from_either_loop(runs):
    """A checkpoint of one loop's run evaluated in the other's run directory: both loops write one format."""
    other = next((runs["train"] / "ckpt").glob("epoch=*.ckpt"))
    assert run_tool(["test", str(runs["train_pl"]), "--ckpt", str(other)]) == 0
    record = evaluation(runs["train_pl"], f"test-{other.stem}.json")
    assert record["metrics"] == json.loads((runs["train"] / "results.json").read_text())["test"]


@pytest.mark.slow
def test_ddp_evaluation_counts_every_sample_once(runs, tmp_path):
    """Two CPU processes (gloo) over the 297 test digits, which do not split evenly: every sample once,
    the same numbers as one process."""
    run_dir = fresh_copy(runs["train_pl"], tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "torchx", "test", str(run_dir), "trainer_params.devices=2",
                          "trainer_params.strategy=ddp"], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    record = evaluation(run_dir, "test-best.json")
    assert record["devices"] == 2 and record["samples"] == 297
    single = json.loads((run_dir / "results.json").read_text())["test"]
    assert record["metrics"] == pytest.approx(single, abs=1e-6)
    assert len(list((run_dir / "eval").glob("*.json"))) == 1  # written once, by rank 0


# ---------------------------------------------------------------- Python API


def test_load_run_gives_config_model_data_logs_and_provenance(runs):
    import torchx

    run_dir = runs["train"]
    run = torchx.load_run(run_dir)
    assert run.config == yaml.safe_load((run_dir / "config.yaml").read_text())
    assert run.ckpt_label == "best" and run.ckpt_path.name.startswith("epoch=")
    assert not run.model.training and not run.wrapper.training
    saved = torch.load(run.ckpt_path, weights_only=True)["state_dict"]
    for key, value in run.wrapper.state_dict().items():
        assert torch.equal(value, saved[key]), key
    data = run.data_module()
    x, y = next(iter(data.test_dataloader()))
    with torch.no_grad():
        acc = (run.model(x).argmax(1) == y).float().mean().item()
    assert 0.0 <= acc <= 1.0 and data.split_size("test") == 297
    assert len(run.metrics) == len(read_metrics(run_dir / "metrics.csv")) and run.metrics[-1]["step"] == 8
    assert run.results["test"]["test/acc"] == run.metrics[-1]["test/acc"]
    assert run.provenance["seed"] == 7 and "torch" in run.provenance["versions"]
    last = torchx.load_run(run_dir, ckpt="last")
    assert last.ckpt_path == run_dir / "ckpt" / "last.ckpt"


def test_load_model_from_a_checkpoint_file_alone(runs, tmp_path):
    """The checkpoint carries its config: copied out of its run directory, it still rebuilds the model."""
    import torchx

    lone = tmp_path / "elsewhere" / "model.ckpt"
    lone.parent.mkdir()
    shutil.copy(runs["train_pl"] / "ckpt" / "last.ckpt", lone)
    model = torchx.load_model(lone)
    reference = torchx.load_run(runs["train_pl"], ckpt="last").model
    x = torch.randn(5, 1, 8, 8)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x)) and not model.training
    assert "config" in torch.load(lone, weights_only=True)["callbacks"]["torchx"]
    wrapper = torchx.load_model(lone, wrapper=True)
    assert type(wrapper).__name__ == "BaseWrapper"


def test_load_run_of_a_moved_run_directory_finds_its_best_checkpoint(runs, tmp_path):
    import torchx

    moved = fresh_copy(runs["train_pl"], tmp_path)
    shutil.rmtree(runs["train_pl"].parent / "unused", ignore_errors=True)
    run = torchx.load_run(moved)
    assert run.ckpt_path.parent == moved / "ckpt"  # results.json names the old path; found by name here


# ---------------------------------------------------------------- a user's module only the snapshot has


@pytest.fixture(scope="module")
def user_run(tmp_path_factory) -> Path:
    """A run whose model and data module come from a user's module (imports: [lightning_user]) in a
    project folder that is then deleted: only the run's src/ snapshot still has the module."""
    base = tmp_path_factory.mktemp("user")
    project = base / "project"
    project.mkdir()
    shutil.copy(USER / "lightning_user.py", project / "my_models.py")
    cfg = tiny_config()
    cfg["imports"] = ["my_models"]
    cfg["data_module"] = {"name": "digits_with_test", "args": {"batch_size": 16}}
    cfg["train_wrapper"]["args"]["model_spec"] = {"name": "dict_head", "args": {"in_dim": 64}}
    cfg["train_wrapper"]["args"]["output_key"] = "logits"
    write_config(project / "user.yaml", cfg)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "train_pl.py"), "--config", "user.yaml", "--save-dir",
                          str(base / "save")], cwd=project, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    shutil.rmtree(project)
    return base / "save" / "user"


def fresh(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, *code.split("\0")], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_test_of_a_run_whose_module_only_the_snapshot_has(user_run, tmp_path):
    out = fresh("\0".join(["-m", "torchx", "test", str(user_run)]), tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "'my_models' is not importable here; using the run's snapshot copy" in out.stderr
    assert str(user_run / "src" / "my_models.py") in out.stderr
    results = json.loads((user_run / "results.json").read_text())
    assert evaluation(user_run, "test-best.json")["metrics"] == results["test"]


def test_load_run_and_load_model_in_a_fresh_process_elsewhere(user_run, tmp_path):
    code = (f"import torch, torchx\n"
            f"run = torchx.load_run({str(user_run)!r})\n"
            f"model = torchx.load_model({str(run_ckpt(user_run))!r})\n"
            f"x = torch.rand(3, 64)\n"
            f"assert torch.equal(run.model(x)['logits'], model(x)['logits'])\n"
            f"print(type(run.model).__name__, type(model).__module__)\n")
    out = fresh("\0".join(["-c", code]), tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["DictHead", "my_models"]
    assert "using the run's snapshot copy" in out.stderr


def run_ckpt(run_dir: Path) -> Path:
    return run_dir / "ckpt" / "last.ckpt"


# ---------------------------------------------------------------- code nobody here wrote


def test_lightnings_demo_model_and_a_plain_module_without_test_step(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(USER))
    params = {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 2, "limit_test_batches": 2,
              "enable_model_summary": False, "enable_progress_bar": False}
    boring = {"imports": ["lightning_user"], "data_module": {"name": "boring_datamodule"},
              "train_wrapper": {"name": "boring_model"}, "trainer_params": params, "seed": 1}
    assert run_train_pl(["--config", str(write_config(tmp_path / "b.yaml", boring)), "--save-dir", "save"]) == 0
    assert run_tool(["test", "save/b", "--ckpt", "last"]) == 0
    # BoringDataModule's test batches hold one sample each
    assert evaluation(tmp_path / "save" / "b", "test-last.json")["samples"] == 2
    plain = {**boring, "data_module": {"name": "digits_train_val", "args": {"batch_size": 32}},
             "train_wrapper": {"name": "plain_classifier"}}
    assert run_train_pl(["--config", str(write_config(tmp_path / "p.yaml", plain)), "--save-dir", "save"]) == 0
    assert run_tool(["validate", "save/p", "--ckpt", "last"]) == 0
    assert set(evaluation(tmp_path / "save" / "p", "val-last.json")["metrics"]) == {"val_loss"}
    before = tree(tmp_path / "save" / "p")
    line = tool_refused(["test", "save/p", "--ckpt", "last"], capsys)
    assert "DigitsTrainVal has no test split" in line
    assert tree(tmp_path / "save" / "p") == before


# ---------------------------------------------------------------- rerun


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory) -> Path:
    """A digits run started as a user starts it, `python train.py --config ...`, so its provenance names
    the entry point."""
    base = tmp_path_factory.mktemp("rerun")
    write_config(base / "digits.yaml", tiny_config())
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", "digits.yaml", "--save-dir", "save"],
                         cwd=base, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return base / "save" / "digits"


def test_rerun_reports_identical_metrics(cli_run):
    out = fresh("\0".join(["-m", "torchx", "rerun", str(cli_run)]), cli_run.parent.parent)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "train.py from" in out.stdout and "identical:" in out.stdout
    new = cli_run.parent / "digits-rerun"
    assert (new / "metrics.csv").read_text() == (cli_run / "metrics.csv").read_text()
    prov = json.loads((new / "provenance.json").read_text())
    assert prov["command"][1].endswith(str(Path("digits") / "src" / "train.py")) and prov["seed"] == 7


def test_rerun_names_the_first_difference_when_the_snapshot_changed(cli_run, tmp_path):
    run_dir = fresh_copy(cli_run, tmp_path)
    mlp = run_dir / "src" / "torchx" / "models" / "mlp.py"
    mlp.write_text(mlp.read_text().replace("return self.net(x)", "return self.net(x) * 1.5"))
    prov = json.loads((run_dir / "provenance.json").read_text())
    prov["versions"]["numpy"] = "0.0.1"
    (run_dir / "provenance.json").write_text(json.dumps(prov))
    out = fresh("\0".join(["-m", "torchx", "rerun", str(run_dir), "--name", "changed"]), tmp_path)
    assert out.returncode == 1, out.stdout[-2000:] + out.stderr[-2000:]
    assert "numpy 0.0.1 -> " in out.stdout.split("rerun of")[0]  # listed before it starts
    assert "different: row 1 (step 3, epoch 0), column train/loss:" in out.stdout
    assert (run_dir.parent / "changed" / "metrics.csv").is_file()


def test_rerun_of_a_run_whose_module_only_the_snapshot_has(user_run, tmp_path):
    out = fresh("\0".join(["-m", "torchx", "rerun", str(user_run)]), tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "identical:" in out.stdout


# ---------------------------------------------------------------- bad input


def no_checkpoint(run_dir: Path) -> None:
    shutil.rmtree(run_dir / "ckpt")
    (run_dir / "ckpt").mkdir()


def best_gone(run_dir: Path) -> None:
    for p in (run_dir / "ckpt").glob("epoch=*.ckpt"):
        p.unlink()


def none_ranked(run_dir: Path) -> None:
    """A run that kept only last.ckpt (checkpoint.save_top_k: 0), as it recorded it."""
    cfg = tiny_config(max_epochs=1)
    cfg["checkpoint"] = {"save_top_k": 0}
    path = write_config(run_dir.parent.parent / "last_only.yaml", cfg)
    shutil.rmtree(run_dir)
    assert run_train_pl(["--config", str(path), "--save-dir", str(run_dir.parent), "--name", run_dir.name]) == 0


def other_model(run_dir: Path) -> Path:
    cfg = tiny_config(max_epochs=1)
    cfg["train_wrapper"]["args"]["model_spec"]["args"]["hidden"] = [16]
    path = write_config(run_dir.parent.parent / "other.yaml", cfg)
    assert run_train_pl(["--config", str(path), "--save-dir", str(run_dir.parent.parent / "o")]) == 0
    return run_dir.parent.parent / "o" / "other" / "ckpt" / "last.ckpt"


def corrupt(run_dir: Path) -> Path:
    path = run_dir.parent.parent / "bad.ckpt"
    path.write_bytes(os.urandom(3000))
    return path


def truncated(run_dir: Path) -> Path:
    path = run_dir.parent.parent / "cut.ckpt"
    data = (run_dir / "ckpt" / "last.ckpt").read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


BAD = [  # (what, command with {run} for the run directory, prepare(run_dir) -> extra {path}, message part)
    ("no such folder", ["test", "{run}/nope"], None, "does not exist; give a run directory"),
    ("a folder that is no run", ["test", "{run}/ckpt"], None, "is not a run directory: it has no config.yaml"),
    ("a file", ["validate", "{run}/config.yaml"], None, "is a file, not a run directory"),
    ("a checkpoint as the run", ["test", "{run}/ckpt/last.ckpt"], None, "is a checkpoint file; give its run"),
    ("no checkpoint", ["test", "{run}"], no_checkpoint, "has no checkpoint: its ckpt/ folder holds no .ckpt"),
    ("best when none ranked", ["test", "{run}"], none_ranked, "has no best checkpoint (the run had no"),
    ("best checkpoint deleted", ["test", "{run}"], best_gone, "no longer has it; use --ckpt last"),
    ("missing --ckpt", ["test", "{run}", "--ckpt", "{run}/ckpt/gone.ckpt"], None, "does not exist; give a"),
    ("another model", ["test", "{run}", "--ckpt", "{path}"], other_model, "is from another model than this"),
    ("corrupt checkpoint", ["validate", "{run}", "--ckpt", "{path}"], corrupt, "is not a readable PyTorch"),
    ("truncated checkpoint", ["test", "{run}", "--ckpt", "{path}"], truncated, "--ckpt: '"),
    ("unknown override", ["test", "{run}", "data_module.args.bogus_arg=1"], None, "bogus_arg"),
    ("no such split", ["test", "{run}", "data_module.args.test_split=0"], None, "has no test split"),
    ("no val split", ["validate", "{run}", "data_module.args.val_split=0"], None, "has no val split"),
    ("--gpu without CUDA", ["test", "{run}", "--gpu", "0"], None, "CUDA is not available"),
    ("--gpu garbage", ["test", "{run}", "--gpu", "x"], None, "is not a list of CUDA device ids"),
    ("session folder", ["test", "{session}"], None, "is a session folder, not one run"),
    ("rerun of no run", ["rerun", "{run}/ckpt"], None, "is not a run directory"),
    ("rerun without snapshot", ["rerun", "{run}"], lambda d: shutil.rmtree(d / "src"), "has no code snapshot"),
    ("rerun onto a run", ["rerun", "{run}", "--name", "{name}"], None, "already exists; torchx never overwrites"),
    ("rerun bad name", ["rerun", "{run}", "--name", "a/b"], None, "must be a plain folder name"),
]


@pytest.mark.skipif(torch.cuda.is_available(), reason="the --gpu case expects a machine without CUDA")
@pytest.mark.parametrize("what,argv,prepare,message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_message_and_changes_nothing(what, argv, prepare, message, runs, tmp_path, capsys):
    run_dir = fresh_copy(runs["train"], tmp_path)
    session = tmp_path / "moved" / "sess"
    session.mkdir()
    (session / "session.yaml").write_text("name: sess\n")
    extra = prepare(run_dir) if prepare else None
    before = tree(tmp_path)
    argv = [a.format(run=run_dir, path=extra, session=session, name=run_dir.name) for a in argv]
    line = tool_refused(argv, capsys)
    assert message in line, line
    assert tree(tmp_path) == before


def test_the_no_checkpoint_message_suggests_a_command_that_trains_it(tmp_path, monkeypatch, capsys):
    """A run that stopped before its first checkpoint: the command the message suggests restarts it in
    place, and then the run can be tested."""
    import re
    import shlex

    monkeypatch.chdir(tmp_path)
    run_dir = tmp_path / "save" / "r"
    (run_dir / "ckpt").mkdir(parents=True)
    write_config(run_dir / "config.yaml", tiny_config(max_epochs=1))  # as a crash before the first checkpoint
    line = tool_refused(["test", "save/r"], capsys)
    command = shlex.split(re.search(r"train it first: (python train_pl\.py .*)$", line).group(1))
    assert command[:2] == ["python", "train_pl.py"]
    assert run_train_pl(command[2:]) == 0
    assert run_tool(["test", "save/r"]) == 0

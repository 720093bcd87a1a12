"""Experiment tracking against the real backends, read back with their own readers: MLflow's
client on its SQLite store and on a real `mlflow server`, W&B's offline files (`wandb leet
inspect`), Comet's offline archive, Sacred's FileStorageObserver folder and SqlObserver database.

Most tests read one module-scoped pair of runs (train_pl.py and train.py, every backend at
once); the resume, session and server tests make their own runs."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from helpers import (
    ROOT,
    left_by_a_kill_after,
    read_metrics,
    refused,
    run_train,
    run_train_pl,
    scalars,
    tiny_config,
    tree,
    write_config,
)

HAS = {name: importlib.util.find_spec(module) is not None
       for name, module in (("mlflow", "mlflow"), ("wandb", "wandb"), ("comet", "comet_ml"), ("sacred", "sacred"),
                            ("system", "psutil"))}
needs = {name: pytest.mark.skipif(not found, reason=f"the {name} extra is not installed")
         for name, found in HAS.items()}
RUNNERS = {"train_pl": run_train_pl, "train": run_train}
USER = Path(__file__).resolve().parent / "user_project"


def tracked(*loggers: dict, **trainer_params) -> dict:
    """tiny_config with trackers; log_every_n_steps 2 so that train/loss_step is logged too."""
    cfg = tiny_config(**{"log_every_n_steps": 2, **trainer_params})
    cfg["loggers"] = list(loggers)
    return cfg


def csv_series(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """metrics.csv as {metric: [(step, value)]}, the empty cells left out."""
    out: dict[str, list[tuple[int, float]]] = {}
    for row in read_metrics(run_dir / "metrics.csv"):
        for key, value in row.items():
            if key != "step" and value is not None:
                out.setdefault(key, []).append((int(row["step"]), value))
    return out


def series_of(points) -> dict[str, list[tuple[int, float]]]:
    """(step, metric, value) points as {metric: [(step, value)]}, hardware metrics left out."""
    out: dict[str, list[tuple[int, float]]] = {}
    for step, name, value in points:
        if not name.startswith("system/"):
            out.setdefault(name, []).append((step, value))
    return out


def close(a: dict[str, list[tuple[int, float]]], b: dict[str, list[tuple[int, float]]]) -> None:
    assert a.keys() == b.keys(), (sorted(a), sorted(b))
    for key in a:
        assert [s for s, _ in a[key]] == [s for s, _ in b[key]], key
        assert all(abs(x - y) < 1e-6 for (_, x), (_, y) in zip(a[key], b[key])), key


def run_id(run_dir: Path, backend: str) -> str:
    return json.loads((run_dir / "tracking.json").read_text())[backend]["run_id"]


@pytest.fixture(scope="module")
def empty_store(tmp_path_factory) -> Path | None:
    """An empty MLflow SQLite store, made once: MLflow's schema migrations take seconds, and every
    test's save directory starts from a copy (the file MLflow itself makes for a new save/mlflow.db)."""
    if not HAS["mlflow"]:
        return None
    from mlflow.tracking import MlflowClient

    path = tmp_path_factory.mktemp("store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def with_store(save: Path, store: Path | None, name: str = "mlflow.db") -> Path:
    save.mkdir(parents=True, exist_ok=True)
    if store is not None:
        shutil.copy(store, save / name)
    return save


def mlflow_client(save: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(f"sqlite:///{(save / 'mlflow.db').resolve()}")


def mlflow_series(client, rid: str, system: bool = False) -> dict[str, list[tuple[int, float]]]:
    out = {}
    for key in client.get_run(rid).data.metrics:
        if key.startswith("system/") and not system:
            continue
        history = sorted(client.get_metric_history(rid, key), key=lambda m: m.step)
        out[key] = [(m.step, m.value) for m in history]
    return out


# ---------------------------------------------------------------- every backend, both loops


@pytest.fixture(scope="module")
def runs(tmp_path_factory, empty_store):
    """One run per loop into one save directory, to every installed backend at once, with hardware
    metrics sampled at every new logging step."""
    home = tmp_path_factory.mktemp("tracking")
    save = with_store(home / "save", empty_store)
    loggers = []
    if HAS["mlflow"]:
        loggers.append({"name": "mlflow", "args": {"log_checkpoints": True, "flush_every_s": 0.2}})
    if HAS["wandb"]:
        loggers.append({"name": "wandb", "args": {"project": "digits", "mode": "offline"}})
    if HAS["comet"]:
        loggers.append({"name": "comet", "args": {"project": "digits", "online": False}})
    if HAS["sacred"]:
        loggers.append({"name": "sacred", "args": {"url": f"sqlite:///{save / 'sacred.db'}"}})
    cfg = tracked(*loggers)
    if HAS["system"]:
        cfg["system_metrics"] = {"every_s": 0.001}
    path = write_config(home / "c.yaml", cfg)
    for loop, run in RUNNERS.items():
        assert run(["--config", str(path), "--save-dir", str(save), "--name", loop]) == 0
    return save


@needs["mlflow"]
@pytest.mark.parametrize("loop", RUNNERS)
def test_mlflow_metric_histories_equal_metrics_csv(runs, loop):
    client = mlflow_client(runs)
    series = mlflow_series(client, run_id(runs / loop, "mlflow"))
    close(series, csv_series(runs / loop))
    assert {"train/loss", "train/loss_step", "val/acc", "test/acc", "epoch"} <= series.keys()
    run = client.get_run(run_id(runs / loop, "mlflow"))
    assert run.info.status == "FINISHED" and run.info.run_name == loop


@needs["mlflow"]
def test_both_loops_give_mlflow_the_same_names_steps_and_values(runs):
    client = mlflow_client(runs)
    close(mlflow_series(client, run_id(runs / "train_pl", "mlflow")),
          mlflow_series(client, run_id(runs / "train", "mlflow")))


@needs["mlflow"]
def test_mlflow_params_are_the_flattened_config_and_tags_name_the_run(runs):
    from torchx.config import read_yaml
    from torchx.loggers.context import flatten

    run = mlflow_client(runs).get_run(run_id(runs / "train_pl", "mlflow"))
    expected = {k: str(v) for k, v in flatten(read_yaml(runs / "train_pl" / "config.yaml")).items()}
    assert run.data.params == expected
    assert run.data.params["train_wrapper.args.optim_spec.args.lr"] == "0.1"
    assert run.data.params["loggers.0.name"] == "mlflow"
    prov = json.loads((runs / "train_pl" / "provenance.json").read_text())
    tags = run.data.tags
    assert tags["torchx.run_name"] == "train_pl" and tags["torchx.entry"] == "train_pl.py"
    assert tags["torchx.host"] == prov["host"] and tags["torchx.git_commit"] == (prov["git"] or {}).get("commit")
    assert "torchx.session" not in tags and "mlflow.parentRunId" not in tags


@needs["mlflow"]
@pytest.mark.parametrize("loop", RUNNERS)
def test_mlflow_artifacts_hold_config_provenance_results_and_the_best_checkpoint(runs, loop):
    client = mlflow_client(runs)
    rid = run_id(runs / loop, "mlflow")
    assert {a.path for a in client.list_artifacts(rid)} >= {"config.yaml", "provenance.json", "results.json",
                                                             "checkpoints"}
    results = json.loads((runs / loop / "results.json").read_text())
    assert [a.path for a in client.list_artifacts(rid, "checkpoints")] == \
        [f"checkpoints/{Path(results['best_model_path']).name}"]
    local = Path(client.download_artifacts(rid, "results.json", str(runs.parent / f"dl-{loop}")))
    assert json.loads(local.read_text()) == results
    assert (runs / "mlflow-artifacts").is_dir()  # beside the database, not in the working directory


@needs["mlflow"]
@needs["system"]
def test_system_metrics_reach_mlflow_and_tensorboard_not_metrics_csv(runs):
    client = mlflow_client(runs)
    system = {k: v for k, v in mlflow_series(client, run_id(runs / "train", "mlflow"), system=True).items()
              if k.startswith("system/")}
    assert {"system/cpu_percent", "system/memory_percent", "system/process_rss_mb"} <= system.keys()
    steps = [s for s, _ in system["system/process_rss_mb"]]
    assert steps == sorted(set(steps)) and set(steps) <= {s for s, _ in csv_series(runs / "train")["epoch"]}
    assert all(v > 0 for _, v in system["system/process_rss_mb"])
    for loop in RUNNERS:
        assert "system/process_rss_mb" in scalars(runs / loop)
        assert not any(k.startswith("system/") for k in read_metrics(runs / loop / "metrics.csv")[0])


@needs["wandb"]
@pytest.mark.parametrize("loop", RUNNERS)
def test_wandb_offline_run_read_back_with_wandbs_reader(runs, loop):
    from torchx.loggers.wandb import history

    rid = run_id(runs / loop, "wandb")
    parts = list((runs / "wandb").glob(f"offline-run-*-{rid}"))
    assert len(parts) == 1
    series = series_of((step, key, value) for step, row in history(parts[0]) for key, value in row.items())
    close(series, csv_series(runs / loop))
    assert (parts[0] / "files" / "config.yaml").is_file() and (parts[0] / "files" / "results.json").is_file()


@needs["comet"]
@pytest.mark.parametrize("loop", RUNNERS)
def test_comet_offline_archive_holds_the_metrics(runs, loop):
    import zipfile

    from torchx.loggers.comet import metrics

    key = run_id(runs / loop, "comet")
    archives = list((runs / "comet").glob(f"{key}-*.zip"))
    assert len(archives) == 1
    series = series_of(p for p in metrics(archives[0]) if p[1] != "process duration")  # Comet's own metric
    close(series, csv_series(runs / loop))
    messages = zipfile.ZipFile(archives[0]).read("messages.json").decode()
    assert '"paramName":"train_wrapper.args.optim_spec.args.lr"' in messages.replace(" ", "")


@needs["sacred"]
@pytest.mark.parametrize("loop", RUNNERS)
def test_sacred_file_storage_holds_run_json_config_and_metrics_json(runs, loop):
    folder = runs / "sacred" / run_id(runs / loop, "sacred")
    run = json.loads((folder / "run.json").read_text())
    assert run["status"] == "COMPLETED" and run["experiment"]["name"] == "torchx"
    assert {"config.yaml", "provenance.json", "results.json"} <= set(run["artifacts"])
    assert json.loads((folder / "config.json").read_text())["train_wrapper"]["args"]["optim_spec"]["args"]["lr"] == 0.1
    saved = json.loads((folder / "metrics.json").read_text())
    series = {k: list(zip(v["steps"], v["values"])) for k, v in saved.items() if not k.startswith("system/")}
    close(series, csv_series(runs / loop))


@needs["sacred"]
def test_sacred_sql_observer_database_read_back(runs):
    import sqlalchemy as sa

    engine = sa.create_engine(f"sqlite:///{runs / 'sacred.db'}")
    with engine.connect() as db:
        rows = db.execute(sa.text("SELECT run_id, status, config, info, result FROM run ORDER BY id")).all()
        artifacts = {r[0] for r in db.execute(sa.text("SELECT filename FROM artifact")).all()}
    assert [(r.run_id, r.status) for r in rows] == [(run_id(runs / loop, "sacred"), "COMPLETED") for loop in RUNNERS]
    info = json.loads(rows[0].info)
    last = csv_series(runs / "train_pl")
    assert info["metrics"]["val/acc"] == {"value": pytest.approx(last["val/acc"][-1][1]),
                                          "step": last["val/acc"][-1][0]}
    assert rows[0].result == pytest.approx(json.loads((runs / "train_pl" / "results.json").read_text())[
        "best_model_score"])
    assert json.loads(rows[0].config)["seed"] == 7
    assert any(a.endswith("results.json") for a in artifacts)


# ---------------------------------------------------------------- resume


@needs["mlflow"]
@pytest.mark.parametrize("first,second", [("train_pl", "train")])
def test_resume_after_a_kill_continues_the_run_without_logging_a_step_twice(first, second, tmp_path, monkeypatch,
                                                                           empty_store):
    """What a kill right after the checkpoint at step 3 leaves: the tracked run holds steps up to 8
    (logged after the checkpoint); the resume replays them, across the two loops, and MLflow gets
    none of them a second time."""
    monkeypatch.chdir(tmp_path)
    cfg = tracked({"name": "mlflow", "args": {"flush_every_s": 0.2}}, max_epochs=3)
    cfg["checkpoint"] = {"save_top_k": -1}
    path = write_config(tmp_path / "c.yaml", cfg)
    with_store(tmp_path / "save", empty_store)
    assert RUNNERS[first](["--config", str(path), "--save-dir", "save", "--name", "r"]) == 0
    run_dir = tmp_path / "save" / "r"
    before = mlflow_series(mlflow_client(tmp_path / "save"), run_id(run_dir, "mlflow"))
    rid = run_id(run_dir, "mlflow")
    left_by_a_kill_after(run_dir, 4)
    (run_dir / "results.json").unlink()
    assert RUNNERS[second](["--save-dir", "save", "--name", "r", "--resume"]) == 0
    assert run_id(run_dir, "mlflow") == rid
    client = mlflow_client(tmp_path / "save")
    after = mlflow_series(client, rid)
    for key, points in after.items():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), (key, steps)
    close(after, before)  # resume is bitwise exact: the replayed steps held the same values already
    close(after, csv_series(run_dir))
    run = client.get_run(rid)
    assert run.info.status == "FINISHED" and "provenance-resume-1.json" in {a.path for a in client.list_artifacts(rid)}


def faulty(cfg: dict) -> dict:
    """The config with tests/user_project/faults.py's MLP, armed by the environment."""
    cfg["imports"] = ["faults"]
    cfg["train_wrapper"]["args"]["model_spec"]["name"] = "mlp_with_faults"
    return cfg


@needs["mlflow"]
def test_sigkill_then_resume_with_the_other_loop_appends_to_the_same_run(tmp_path, empty_store):
    """train.py is killed with SIGKILL two steps after its first checkpoint, once MLflow holds those
    steps; train_pl.py resumes: one MLflow run, every step once, in order, with metrics.csv's values."""
    cfg = faulty(tracked({"name": "mlflow", "args": {"flush_every_s": 0.1}}, max_epochs=3, log_every_n_steps=1))
    path = write_config(tmp_path / "c.yaml", cfg)
    with_store(tmp_path / "save", empty_store)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(USER)]), "FAULT_KILL_AT": "8",
           "FAULT_WAIT_AT": "8", "FAULT_WAIT_FOR": str(tmp_path / "save" / "r" / "tracking.json")}
    done = subprocess.run([sys.executable, str(ROOT / "train.py"), "--config", str(path), "--save-dir", "save",
                           "--name", "r"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    run_dir = tmp_path / "save" / "r"
    rid = run_id(run_dir, "mlflow")
    client = mlflow_client(tmp_path / "save")
    held = [m.step for m in client.get_metric_history(rid, "train/loss_step")]
    import torch

    assert torch.load(run_dir / "ckpt" / "last.ckpt", weights_only=True)["global_step"] == 4 and max(held) == 5
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(USER))
        assert run_train_pl(["--save-dir", str(tmp_path / "save"), "--name", "r", "--resume"]) == 0
    assert run_id(run_dir, "mlflow") == rid
    series = mlflow_series(client, rid)
    for key, points in series.items():
        steps = [s for s, _ in points]
        assert steps == sorted(set(steps)), (key, steps)
    close(series, csv_series(run_dir))  # the replayed steps 4 and 5 held metrics.csv's values already
    assert client.get_run(rid).info.status == "FINISHED"
    assert len(client.search_runs([client.get_run(rid).info.experiment_id])) == 1


# ---------------------------------------------------------------- a session


@needs["mlflow"]
def test_a_session_is_a_parent_run_with_one_child_per_experiment(tmp_path, monkeypatch, empty_store):
    monkeypatch.chdir(tmp_path)
    with_store(tmp_path / "save", empty_store)
    cfg = tracked({"name": "mlflow"}, max_epochs=1)
    cfg["train_wrapper"]["args"]["optim_spec"]["args"] = {"lr_": [0.1, 0.05]}
    path = write_config(tmp_path / "sweep.yaml", cfg)
    assert run_train_pl(["--config", str(path), "--save-dir", "save", "--name", "sweep", "--jobs", "2"]) == 0
    client = mlflow_client(tmp_path / "save")
    runs = client.search_runs([client.get_experiment_by_name("torchx").experiment_id])
    parent = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(parent) == 1 and parent[0].info.run_name == "sweep" and parent[0].data.params == {
        "sweep.lr": "[0.1, 0.05]"}
    assert len(children) == 2 and {c.data.tags["mlflow.parentRunId"] for c in children} == {parent[0].info.run_id}
    assert sorted(c.data.params["sweep.lr"] for c in children) == ["0.05", "0.1"]
    assert {c.data.tags["torchx.session"] for c in children} == {"sweep"}
    assert sorted(c.data.tags["torchx.experiment"] for c in children) == ["lr=0.05", "lr=0.1"]
    assert all(c.info.status == "FINISHED" for c in children)
    assert [a.path for a in client.list_artifacts(parent[0].info.run_id)] == ["session.yaml"]
    for c in children:  # each experiment's own run directory points at its run
        assert run_id(tmp_path / "save" / "sweep" / c.info.run_name, "mlflow") == c.info.run_id


# ---------------------------------------------------------------- a real server


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(folder: Path, store: Path | None):
    """`mlflow server` on 127.0.0.1 with an SQLite backend, serving artifacts; yields (URL, process)."""
    import urllib.request

    with_store(folder, store, "server.db")
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mlflow", "server", "--backend-store-uri",
                             f"sqlite:///{folder / 'server.db'}", "--artifacts-destination", str(folder / "artifacts"),
                             "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
                            cwd=folder, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            with contextlib.suppress(OSError):
                if urllib.request.urlopen(f"{url}/health", timeout=2).status == 200:
                    break
            assert proc.poll() is None and time.monotonic() < deadline, "mlflow server did not start"
            time.sleep(0.2)
        yield url, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@needs["mlflow"]
def test_a_real_mlflow_server_then_its_death_mid_run(tmp_path, monkeypatch, capsys, empty_store):
    """Train against `mlflow server`'s URL and read the run back through the server; then kill the
    server while a second run trains: the run finishes, says once what failed, and its TensorBoard
    events and metrics.csv are complete."""
    from mlflow.tracking import MlflowClient

    monkeypatch.chdir(tmp_path)
    with mlflow_server(tmp_path / "server", empty_store) as (url, server):
        cfg = tracked({"name": "mlflow", "args": {"tracking_uri": url, "flush_every_s": 0.2}})
        path = write_config(tmp_path / "c.yaml", cfg)
        assert run_train_pl(["--config", str(path), "--save-dir", "save", "--name", "a"]) == 0
        client = MlflowClient(url)
        rid = run_id(tmp_path / "save" / "a", "mlflow")
        close(mlflow_series(client, rid), csv_series(tmp_path / "save" / "a"))
        assert {a.path for a in client.list_artifacts(rid)} >= {"config.yaml", "provenance.json", "results.json"}
        assert not (tmp_path / "save" / "mlflow.db").exists()  # the server's store, not the embedded one

        # the second run pauses at its 6th step until the server is killed, then goes on
        cfg = faulty(tracked({"name": "mlflow", "args": {"tracking_uri": url, "flush_every_s": 0.1}},
                             max_epochs=3, log_every_n_steps=1))
        path = write_config(tmp_path / "b.yaml", cfg)
        run_dir, dead = tmp_path / "save" / "b", tmp_path / "server-killed"
        monkeypatch.syspath_prepend(str(USER))
        monkeypatch.setenv("FAULT_WAIT_AT", "6")
        monkeypatch.setenv("FAULT_WAIT_FOR", str(dead))

        def kill_when_started() -> None:
            while not (run_dir / "tracking.json").is_file():
                time.sleep(0.02)
            time.sleep(0.3)  # the first steps reach the server
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
            dead.touch()

        killer = threading.Thread(target=kill_when_started, daemon=True)
        killer.start()
        capsys.readouterr()
        assert run_train(["--config", str(path), "--save-dir", "save", "--name", "b"]) == 0
        killer.join(timeout=10)
        err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith("torchx: mlflow:")]
    assert len(said) == 1 and "failed" in said[0] and "Training goes on" in said[0], err
    assert "Traceback" not in err
    rows = read_metrics(run_dir / "metrics.csv")
    assert [r["step"] for r in rows if r["val/acc"] is not None] == [3, 7, 11]
    assert len([r for r in rows if r["train/loss_step"] is not None]) == 12
    assert len(scalars(run_dir)["train/loss_step"]) == 12 and (run_dir / "results.json").is_file()


@needs["mlflow"]
def test_a_server_unreachable_at_start_costs_the_run_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    path = write_config(tmp_path / "c.yaml", tracked({"name": "mlflow", "args": {"tracking_uri": url}}))
    capsys.readouterr()
    assert run_train_pl(["--config", str(path), "--save-dir", "save", "--name", "r"]) == 0
    err = capsys.readouterr().err
    said = [line for line in err.splitlines() if line.startswith("torchx: mlflow:")]
    assert len(said) == 1 and said[0].startswith(f"torchx: mlflow: starting its run ({url}) failed"), err
    run_dir = tmp_path / "save" / "r"
    assert [r["step"] for r in read_metrics(run_dir / "metrics.csv") if r["val/acc"] is not None] == [3, 7]
    assert (run_dir / "results.json").is_file() and not (run_dir / "tracking.json").exists()


# ---------------------------------------------------------------- code nobody here wrote


@needs["mlflow"]
def test_a_user_lightningmodules_undeclared_metrics_reach_the_tracker(tmp_path, monkeypatch, empty_store):
    monkeypatch.chdir(tmp_path)
    with_store(tmp_path / "save", empty_store)
    monkeypatch.syspath_prepend(str(USER))
    cfg = {"imports": ["lightning_user"], "data_module": {"name": "digits_train_val", "args": {"batch_size": 32}},
           "train_wrapper": {"name": "plain_classifier"}, "seed": 3,
           "trainer_params": {"max_epochs": 2, "limit_train_batches": 4, "limit_val_batches": 2,
                              "log_every_n_steps": 1, "enable_progress_bar": False, "enable_model_summary": False},
           "loggers": [{"name": "mlflow"}]}
    path = write_config(tmp_path / "u.yaml", cfg)
    assert run_train_pl(["--config", str(path), "--save-dir", "save", "--name", "u"]) == 0
    run_dir = tmp_path / "save" / "u"
    series = mlflow_series(mlflow_client(tmp_path / "save"), run_id(run_dir, "mlflow"))
    assert {"loss", "val_loss"} <= series.keys() and len(series["loss"]) == 8
    close(series, csv_series(run_dir))


@pytest.mark.parametrize("loop", RUNNERS)
def test_a_users_own_lightning_logger_gets_what_tensorboard_gets(loop, tmp_path, monkeypatch):
    """Lightning's CSVLogger, registered by a user's module as `lightning_csv`, driven by either loop."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(USER))
    cfg = tracked({"name": "lightning_csv", "args": {"save_dir": "theirs"}})
    cfg["imports"] = ["lightning_user"]
    path = write_config(tmp_path / "c.yaml", cfg)
    assert RUNNERS[loop](["--config", str(path), "--save-dir", "save", "--name", "r"]) == 0
    import csv

    with open(tmp_path / "theirs" / "lightning_logs" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    # their file has a row per call (the epoch repeated at an epoch's end); metrics.csv one per step
    last = {(int(r["step"]), k): float(v) for r in rows for k, v in r.items() if k != "step" and v != ""}
    close(series_of((step, k, v) for (step, k), v in sorted(last.items())), csv_series(tmp_path / "save" / "r"))
    hparams = yaml.safe_load((tmp_path / "theirs" / "lightning_logs" / "version_0" / "hparams.yaml").read_text())
    if loop == "train":  # pl.Trainer gives a logger the wrapper's hparams; train.py the flattened config
        assert hparams["train_wrapper.args.optim_spec.args.lr"] == 0.1


# ---------------------------------------------------------------- bad input


BAD = {
    "unknown logger": ({"name": "mlfow"}, "unknown logger 'mlfow' (did you mean 'mlflow'?)"),
    "always on": ({"name": "tensorboard"}, "'tensorboard' is always on"),
    "not a spec": ("mlflow", "loggers.0 must be a spec {name: ..., args: {...}}, got 'mlflow'"),
    "unknown argument": ({"name": "mlflow", "args": {"trackin_uri": "x"}},
                         "unknown argument 'trackin_uri' (did you mean 'tracking_uri'?)"),
    "bad uri": ({"name": "mlflow", "args": {"tracking_uri": "ftp://host/x"}},
                "tracking_uri 'ftp://host/x' is not a tracking URI"),
    "bad type": ({"name": "mlflow", "args": {"log_checkpoints": "yes"}},
                 "argument 'log_checkpoints': expected bool, got 'yes'"),
    "bad flush": ({"name": "mlflow", "args": {"flush_every_s": 0}}, "flush_every_s must be a number of seconds > 0"),
    "huge flush": ({"name": "mlflow", "args": {"flush_every_s": 1.0e308}}, "at most 86400 (a day), got 1e+308"),
    "string flush": ({"name": "mlflow", "args": {"flush_every_s": "5"}},
                     "argument 'flush_every_s': expected float, got '5'"),
    "wandb mode": ({"name": "wandb", "args": {"mode": "offlne"}}, "mode 'offlne' is not one of online, offline"),
    "wandb project": ({"name": "wandb", "args": {"project": "a/b"}}, "project 'a/b' is not a W&B project name"),
    "comet online": ({"name": "comet", "args": {"online": "no"}}, "argument 'online': expected bool or null, got 'no'"),
    "sacred url": ({"name": "sacred", "args": {"url": "not a url"}}, "url 'not a url' is not a database URL"),
    "sacred nothing": ({"name": "sacred", "args": {"file_storage": False}}, "give Sacred at least one observer"),
}
SYSTEM_BAD = {
    "every_s": ({"every_s": -1}, "system_metrics.every_s must be a number of seconds > 0, got -1"),
    "key": ({"every": 10}, "system_metrics must be a mapping like {every_s: 10}"),
}


@pytest.mark.parametrize("case", BAD)
def test_a_bad_logger_is_refused_before_anything_exists(case, tmp_path, monkeypatch, capsys):
    spec, says = BAD[case]
    backend = spec["name"] if isinstance(spec, dict) else "mlflow"
    if backend in HAS and not HAS[backend]:
        pytest.skip(f"the {backend} extra is not installed")
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "c.yaml", tracked(spec))
    before = tree(tmp_path)
    err = refused("train_pl", path, capsys)
    assert says in err and "loggers.0" in err
    assert tree(tmp_path) == before and not (tmp_path / "save").exists()


@pytest.mark.parametrize("case", SYSTEM_BAD)
def test_bad_system_metrics_are_refused_in_both_loops(case, tmp_path, monkeypatch, capsys):
    section, says = SYSTEM_BAD[case]
    monkeypatch.chdir(tmp_path)
    cfg = tracked()
    cfg["system_metrics"] = section
    path = write_config(tmp_path / "c.yaml", cfg)
    for loop in RUNNERS:
        assert says in refused(loop, path, capsys)
    assert not (tmp_path / "save").exists()


def test_a_logger_listed_twice_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    path = write_config(tmp_path / "c.yaml", tracked({"name": "sacred"}, {"name": "sacred"}))
    assert "loggers.1: 'sacred' is listed twice" in refused("train", path, capsys)


MISSING = {"mlflow": ("mlflow", "pip install 'mlflow==3.17.2'"), "wandb": ("wandb", "pip install 'wandb==0.31.0'"),
           "comet": ("comet_ml", "pip install 'comet_ml==3.58.8'"), "sacred": ("sacred", "pip install 'sacred==0.8.7'")}
HIDE = """
import contextlib, io, json, sys
import torchx, torchx.loggers, torchx.fit, torchx.loop
imported = [m for m in ('mlflow', 'wandb', 'comet_ml', 'sacred', 'psutil') if m in sys.modules]
hidden = json.loads(sys.argv[1])
for module in hidden.values():
    sys.modules[module] = None  # as if it were not installed
from torchx.cli import main
out = {"imported": imported}
for name in hidden:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["--config", f"{name}.yaml", "--save-dir", "save"], "train_pl.py", "torchx.fit")
    out[name] = [code, err.getvalue()]
print(json.dumps(out))
"""


def test_a_missing_package_names_the_pip_install_that_fixes_it(tmp_path):
    """In a fresh process where each backend's package (and psutil) cannot be imported; before that,
    importing torchx and both loops has imported none of them."""
    hidden = {name: module for name, (module, _) in MISSING.items()} | {"system": "psutil"}
    for name in MISSING:
        write_config(tmp_path / f"{name}.yaml", tracked({"name": name}))
    cfg = tracked()
    cfg["system_metrics"] = {"every_s": 5}
    write_config(tmp_path / "system.yaml", cfg)
    done = subprocess.run([sys.executable, "-c", HIDE, json.dumps(hidden)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(done.stdout.strip().splitlines()[-1])
    assert results["imported"] == []
    for name, (module, pip) in MISSING.items():
        code, err = results[name]
        assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert f"logger '{name}' needs the {module} package, which is not installed" in err and pip in err, err
    code, err = results["system"]
    assert code == 2 and "pip install 'psutil==7.2.2'" in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "save").exists()


def test_after_training_tools_need_no_tracker_package(runs, monkeypatch, capsys):
    """`python -m torchx test` of a tracked run, where none of the trackers' packages can be imported."""
    from helpers import run_tool

    for module in ("mlflow", "wandb", "comet_ml", "sacred"):
        monkeypatch.setitem(sys.modules, module, None)
    capsys.readouterr()
    assert run_tool(["test", str(runs / "train"), "--ckpt", "last"]) == 0, capsys.readouterr().err
    assert "test/acc" in capsys.readouterr().out


def test_a_saved_config_with_loggers_reads_back(runs):
    """The run directory's config.yaml keeps the loggers list as written."""
    saved = yaml.safe_load((runs / "train_pl" / "config.yaml").read_text())
    assert [spec["name"] for spec in saved["loggers"]] == [n for n in ("mlflow", "wandb", "comet", "sacred") if HAS[n]]

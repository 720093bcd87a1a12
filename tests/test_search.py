"""Search sessions on Optuna and k-fold cross-validation: real studies in SQLite (and PostgreSQL
when one runs), real child processes, tiny digits runs.

The sessions are small (2-3 trials of 1-3 epochs of a few batches) and each is run once by a
module fixture that several tests read.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from helpers import ROOT, assert_run_dir, refused, rekey, run_train, run_train_pl, tiny_config, tree, write_config
from torchx.session import space
from torchx.session.search import preview
from torchx.trial import driver_url, open_storage

optuna = pytest.importorskip("optuna")

USER = Path(__file__).resolve().parent / "user_project"
LR = ("train_wrapper", "args", "optim_spec", "args")


def searched(cfg: dict, where: tuple, key: str, dist: dict) -> dict:
    """Turn `key` at `where` into the search key `key~`."""
    return rekey(cfg, where, key, key + "~", dist)


def state(folder: Path) -> dict:
    return yaml.safe_load((folder / "session.yaml").read_text())


def study(folder: Path, name: str) -> optuna.Study:
    return optuna.load_study(study_name=name, storage=f"sqlite:///{folder / 'study.db'}")


def ranking(folder: Path) -> list[dict]:
    with open(folder / "ranking.csv", newline="") as f:
        return list(csv.DictReader(f))


def search_config(method: str, n_trials: int, seed: int = 0, pruner: object = "none", **trainer) -> dict:
    cfg = searched(tiny_config(**trainer), LR, "lr", {"loguniform": [1.0e-3, 0.5]})
    searched(cfg, LR, "momentum", {"uniform": [0.0, 0.9]})
    cfg["search"] = {"method": method, "n_trials": n_trials, "seed": seed, "pruner": pruner}
    return cfg


# ---------------------------------------------------------------- a TPE session, read by many tests


@pytest.fixture(scope="module")
def tpe(tmp_path_factory) -> Path:
    """Three TPE trials of train.py, two at a time."""
    tmp = tmp_path_factory.mktemp("tpe")
    config = write_config(tmp / "tpe.yaml", search_config("tpe", 3, seed=5, max_epochs=2))
    code = run_train(["--config", str(config), "--save-dir", str(tmp / "save"), "--name", "s", "--jobs", "2"])
    assert code == 0, (tmp / "save" / "s" / "session.yaml").read_text()
    return tmp / "save" / "s"


def test_tpe_trials_are_experiments_named_after_their_values(tpe):
    doc = state(tpe)
    assert doc["search"]["method"] == "tpe" and doc["search"]["metric"] == "val/acc"
    assert [d["label"] for d in doc["space"]] == ["lr", "momentum"]
    assert [e["trial"] for e in doc["experiments"]] == [0, 1, 2]
    for e in doc["experiments"]:
        lr, momentum = e["params"]["lr"], e["params"]["momentum"]
        assert 1e-3 <= lr <= 0.5 and 0 <= momentum <= 0.9
        assert e["name"] == f"t{e['trial']},lr={float(f'{lr:.4g}')},momentum={float(f'{momentum:.4g}')}"
        assert e["state"] == "done"
        assert_run_dir(tpe / e["name"], epochs=2)
        run_cfg = yaml.safe_load((tpe / e["name"] / "config.yaml").read_text())
        assert run_cfg["train_wrapper"]["args"]["optim_spec"]["args"] == {"lr": lr, "momentum": momentum}
        assert "search" not in run_cfg


def test_the_study_holds_each_trial_with_its_value_and_curve(tpe):
    trials = study(tpe, "s").trials
    assert [t.state.name for t in trials] == ["COMPLETE"] * 3
    for t, e in zip(trials, state(tpe)["experiments"]):
        with open(tpe / e["name"] / "metrics.csv", newline="") as f:
            accs = [float(r["val/acc"]) for r in csv.DictReader(f) if r["val/acc"]]
        assert t.value == pytest.approx(max(accs))  # the best val/acc of its run
        assert list(t.intermediate_values.values()) == pytest.approx(accs)  # reported after each validation
        assert t.params["train_wrapper.args.optim_spec.args.lr"] == e["params"]["lr"]


def test_trials_are_drawn_reproducibly_from_the_seed(tpe):
    """TPE's first trials are its seeded startup draws: the session drew exactly what --dry-run
    previews for that seed, though two ran at once; another seed draws others."""
    cfg = search_config("tpe", 3, seed=5)
    drawn = [(e["params"]["lr"], e["params"]["momentum"]) for e in state(tpe)["experiments"]]
    assert [tuple(v) for _, _, v in preview(space.search_settings(cfg), 3)] == drawn
    cfg["search"]["seed"] = 6
    assert [tuple(v) for _, _, v in preview(space.search_settings(cfg), 3)] != drawn


def test_summary_ranks_the_trials_and_best_yaml_trains(tpe, tmp_path, monkeypatch):
    rows = ranking(tpe)
    values = [float(r["value"]) for r in rows]
    assert [r["rank"] for r in rows] == ["1", "2", "3"] and values == sorted(values, reverse=True)
    best_trial = int(rows[0]["trial"])
    assert study(tpe, "s").best_trial.number == best_trial or \
        study(tpe, "s").best_value == float(rows[0]["value"])  # ties: either of the tied trials
    md = (tpe / "summary.md").read_text()
    assert md.startswith("Trials ranked by val/acc (maximize):") and "| rank | trial | lr | momentum |" in md
    best = yaml.safe_load((tpe / "best.yaml").read_text())
    params = next(e["params"] for e in state(tpe)["experiments"] if e["trial"] == best_trial)
    assert best["train_wrapper"]["args"]["optim_spec"]["args"] == {"lr": params["lr"], "momentum": params["momentum"]}
    assert "search" not in best and not (tpe / "best.yaml").read_text().count("~")
    monkeypatch.chdir(tmp_path)
    assert run_train_pl(["--config", str(tpe / "best.yaml"), "--name", "best"]) == 0
    assert_run_dir(tmp_path / "save" / "best", epochs=2)


def test_plot_adds_the_objective_per_trial_and_each_parameter(tpe, tmp_path):
    from torchx.plot import search_trials

    found = search_trials(tpe)
    assert [n for n, _, _, _ in found["trials"]] == [0, 1, 2] and found["metric"] == "val/acc"
    assert [v for _, _, v, _ in found["trials"]] == [t.value for t in study(tpe, "s").trials]
    out = tmp_path / "search.png"
    from helpers import run_tool

    assert run_tool(["plot", str(tpe), "-o", str(out)]) == 0
    import matplotlib.image

    height, width = matplotlib.image.imread(out).shape[:2]
    assert (width, height) == (1500, 1050)  # 5 metrics + objective + 2 parameters: 3 x 3 panels


# ---------------------------------------------------------------- pruning in both loops


# Both stop the second trial at its first validation (step 4: 4 batches an epoch), where it trails
# the first. Hyperband with one bracket (max_resource / min_resource < reduction_factor) is successive
# halving: at its first rung (step 4) a trial goes on only if it is the best 1 of every 4 there.
PRUNERS = {"median": {"name": "median", "args": {"n_startup_trials": 1}},
           "hyperband": {"name": "hyperband", "args": {"min_resource": 4, "max_resource": 12, "reduction_factor": 4}}}


def pruning_config(method: str, seed: int, pruner: str = "median") -> dict:
    """Trial 0 learns (lr 0.5), trial 1 does not (lr 1e-9): the pruner stops it at its first
    validation, where it trails trial 0."""
    cfg = searched(tiny_config(max_epochs=3), LR, "lr", {"choice": [0.5, 1.0e-9]})
    cfg["search"] = {"method": method, "n_trials": 2, "seed": seed, "pruner": PRUNERS[pruner]}
    return cfg


@pytest.mark.parametrize("loop, method, seed, pruner", [("train_pl", "random", 4, "median"),
                                                        ("train", "grid", 0, "median"),
                                                        ("train", "grid", 0, "hyperband")])
def test_a_pruned_trial_stops_cleanly_at_that_step(loop, method, seed, pruner, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = pruning_config(method, seed, pruner)
    assert [p["lr"] for _, p, _ in preview(space.search_settings(cfg), 2)] == [0.5, 1e-9]
    config = write_config(tmp_path / "p.yaml", cfg)
    assert (run_train_pl if loop == "train_pl" else run_train)(["--config", str(config)]) == 0
    folder = tmp_path / "save" / "p"
    good, bad = state(folder)["experiments"]
    assert (good["state"], bad["state"], bad["exit_status"], bad["error"]) == ("done", "pruned", 0, None)
    run = folder / bad["name"]
    results = json.loads((run / "results.json").read_text())
    assert results["pruned"] == {"step": 4, "epoch": 0, "value": results["best_model_score"]}
    assert results["global_step"] == 4 and "test" not in results  # stopped after epoch 1 of 3, untested
    assert (run / "ckpt" / "last.ckpt").is_file() and len((run / "log.txt").read_text().splitlines()) == 1
    trials = study(folder, "p").trials
    assert [t.state.name for t in trials] == ["COMPLETE", "PRUNED"]
    assert trials[1].intermediate_values == {4: results["pruned"]["value"]}
    assert "| 1 | 1e-09 | pruned at epoch 1, step 4 |" in (folder / "summary.md").read_text()
    assert ranking(folder)[1]["pruned_at_step"] == "4"


# ---------------------------------------------------------------- resume and workers

SLOW_MODULE = '''
import time
import torch
import torchx.models as models

@models.register("slow_mlp")
class SlowMLP(torch.nn.Module):
    """digits' linear model, 50 ms a training batch: a trial lasts long enough to be stopped."""
    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(64, 10)
    def forward(self, x):
        if self.training:
            time.sleep(0.05)
        return self.layer(x.flatten(1))
'''


def slow_config(n_trials: int) -> dict:
    cfg = search_config("random", n_trials, seed=2, max_epochs=3)
    cfg["imports"] = ["slow"]
    cfg["train_wrapper"]["args"]["model_spec"] = {"name": "slow_mlp"}
    return cfg


def worker_config(n_trials: int, storage: str | None = None) -> dict:
    cfg = search_config("random", n_trials, seed=2, max_epochs=1)
    if storage:
        cfg["search"]["storage"] = storage
    return cfg


def test_an_interrupted_search_resumes_to_exactly_n_trials(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "slow.py").write_text(SLOW_MODULE)
    config = write_config(tmp_path / "r.yaml", slow_config(3))
    folder = tmp_path / "save" / "r"
    err = tmp_path / "controller.err"
    with open(err, "w") as stderr:
        proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--config", str(config)],
                                stdout=subprocess.DEVNULL, stderr=stderr)
    deadline = time.monotonic() + 120
    while not list(folder.glob("t1,*/ckpt/last.ckpt")):  # trial 1 has a checkpoint: stop the session now
        assert proc.poll() is None and time.monotonic() < deadline, err.read_text()
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 75, err.read_text()
    first, second = state(folder)["experiments"]
    assert (first["state"], second["state"]) == ("done", "interrupted")
    assert [t.state.name for t in study(folder, "r").trials] == ["COMPLETE", "RUNNING"]

    assert run_train(["--config", str(config), "--resume"]) == 0
    entries = state(folder)["experiments"]
    assert [(e["trial"], e["state"]) for e in entries] == [(0, "done"), (1, "done"), (2, "done")]
    assert (entries[0]["attempts"], entries[1]["attempts"]) == (1, 2)
    assert (folder / second["name"] / "provenance-resume-1.json").is_file()  # continued from its checkpoint
    assert [t.state.name for t in study(folder, "r").trials] == ["COMPLETE"] * 3
    assert run_train(["--config", str(config), "--resume"]) == 0  # nothing left: no fourth trial
    assert len(state(folder)["experiments"]) == 3 and len(study(folder, "r").trials) == 3


def run_workers(tmp_path: Path, config: Path, n: int = 2) -> None:
    """`n` processes of the same `--worker` command, started together."""
    errs = [tmp_path / f"worker{k}.err" for k in range(n)]
    procs = []
    for err in errs:
        with open(err, "w") as stderr:
            procs.append(subprocess.Popen([sys.executable, str(ROOT / "train.py"), "--config", str(config),
                                           "--worker"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr))
    for proc, err in zip(procs, errs):
        assert proc.wait(timeout=300) == 0, err.read_text()


def check_shared(folder: Path, trials: list, n_trials: int) -> None:
    """Each trial ran once, all of them: the study and the session folder agree."""
    assert [t.number for t in trials] == list(range(n_trials))
    assert [t.state.name for t in trials] == ["COMPLETE"] * n_trials
    entries = state(folder)["experiments"]
    assert sorted(e["trial"] for e in entries) == list(range(n_trials))
    assert all(e["attempts"] == 1 and e["state"] == "done" for e in entries)
    for e in entries:
        assert (folder / "logs" / f"{e['name']}.log").read_text().count("==== attempt") == 1


def open_at_once(url: str, n: int) -> tuple[list, list[str]]:
    """`n` threads open the storage at `url` at the same instant: (storages opened, errors)."""
    import threading

    barrier, opened, errors = threading.Barrier(n), [], []

    def open_it() -> None:
        barrier.wait()
        try:
            opened.append(open_storage(url))
        except Exception as e:  # the test reports whatever failed
            errors.append(f"{type(e).__name__}: {str(e).splitlines()[0]}")

    threads = [threading.Thread(target=open_it) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    return opened, errors


def test_workers_opening_a_new_study_database_at_once_all_get_it(tmp_path):
    """The tasks of a job array start together and each opens the study's new database: they race to
    create its tables and record its schema version, and the losers must open it again, not fail
    (Optuna's own RDBStorage, opened this way, fails for most of them)."""
    import sqlalchemy

    for round_ in range(3):
        opened, errors = open_at_once(f"sqlite:///{tmp_path / f'study{round_}.db'}", 6)
        assert errors == [] and len(opened) == 6
        opened[0].create_new_study([optuna.study.StudyDirection.MINIMIZE], "s")
        assert [s.study_name for s in opened[5].get_all_studies()] == ["s"]
    with pytest.raises(sqlalchemy.exc.OperationalError):  # another error is raised, not taken for the race
        open_storage(f"sqlite:///{tmp_path / 'no such folder' / 'study.db'}")


def test_two_workers_share_one_sqlite_study_without_running_a_trial_twice(tmp_path):
    config = write_config(tmp_path / "w.yaml", worker_config(3))
    run_workers(tmp_path, config)
    folder = tmp_path / "save" / "w"
    check_shared(folder, study(folder, "w").trials, 3)


POSTGRES = os.environ.get("TORCHX_TEST_POSTGRES")
DATABASE = driver_url(POSTGRES) if POSTGRES else None  # psycopg2's driver, as torchx connects


def postgres_reason() -> str:
    if not POSTGRES:
        return "TORCHX_TEST_POSTGRES is not set (.ci/run starts PostgreSQL on 127.0.0.1 and sets it)"
    try:
        import sqlalchemy

        with sqlalchemy.create_engine(DATABASE).connect():
            return ""
    except Exception as e:
        return f"PostgreSQL at TORCHX_TEST_POSTGRES does not answer: {str(e).splitlines()[0]}"


def test_two_workers_share_one_postgresql_study(tmp_path):
    reason = postgres_reason()
    if reason:
        pytest.skip(reason)
    name = f"w{os.getpid()}{time.monotonic_ns() % 10**6}"
    config = write_config(tmp_path / f"{name}.yaml", worker_config(3, storage=POSTGRES))
    try:
        run_workers(tmp_path, config)
        folder = tmp_path / "save" / name
        assert not (folder / "study.db").exists()
        check_shared(folder, optuna.load_study(study_name=name, storage=DATABASE).trials, 3)
    finally:
        if name in optuna.get_all_study_names(DATABASE):
            optuna.delete_study(study_name=name, storage=DATABASE)


# ---------------------------------------------------------------- k-fold cross-validation


@pytest.fixture(scope="module")
def kfold(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("kfold")
    cfg = tiny_config(max_epochs=1)
    cfg["cross_validation"] = {"folds": 3, "seed": 1}
    config = write_config(tmp / "cv.yaml", cfg)
    assert run_train(["--config", str(config), "--save-dir", str(tmp / "save"), "--jobs", "2"]) == 0
    return tmp / "save" / "cv"


def test_kfold_runs_one_experiment_per_fold_on_disjoint_stratified_folds(kfold):
    entries = state(kfold)["experiments"]
    assert [(e["name"], e["params"], e["state"]) for e in entries] == [
        (f"fold={k}", {"fold": k}, "done") for k in range(3)]
    vals = []
    for k in range(3):
        args = yaml.safe_load((kfold / f"fold={k}" / "config.yaml").read_text())["data_module"]["args"]
        assert (args["fold"], args["folds"], args["fold_seed"]) == (k, 3, 1)
        from torchx.datasets.digits import Digits

        d = Digits(**args)
        d.setup()
        vals.append(d.splits["val"][1])
        assert len(d.splits["train"][1]) + len(d.splits["val"][1]) == 1500 and len(d.splits["test"][1]) == 297
    import torch

    counts = torch.stack([torch.bincount(v, minlength=10) for v in vals])
    assert sum(len(v) for v in vals) == 1500 and (counts.max(0).values - counts.min(0).values).max() <= 1


def test_kfold_summary_gives_means_and_deviations_of_the_folds_results(kfold):
    results = [json.loads((kfold / f"fold={k}" / "results.json").read_text()) for k in range(3)]
    (row,) = ranking(kfold)
    best = [r["best_model_score"] for r in results]
    test_acc = [r["test"]["test/acc"] for r in results]
    assert float(row["value"]) == pytest.approx(statistics.fmean(best))
    assert float(row["std"]) == pytest.approx(statistics.stdev(best))
    assert float(row["test/acc mean"]) == pytest.approx(statistics.fmean(test_acc))
    assert float(row["test/acc std"]) == pytest.approx(statistics.stdev(test_acc))
    md = (kfold / "summary.md").read_text()
    assert md.startswith("Experiments ranked by best val/acc, mean ± std over 3 folds:")
    assert f"{statistics.fmean(test_acc):.4g} ± {statistics.stdev(test_acc):.4g}" in md
    best_cfg = yaml.safe_load((kfold / "best.yaml").read_text())
    assert "cross_validation" not in best_cfg and "fold" not in best_cfg["data_module"]["args"]


def test_a_users_lightning_datamodule_with_fold_arguments_is_cross_validated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(USER))
    monkeypatch.syspath_prepend(str(USER))
    cfg = tiny_config(max_epochs=1)
    cfg.update(imports=["lightning_user"], data_module={"name": "digits_folds", "args": {"batch_size": 32}},
               cross_validation={"folds": 2})
    config = write_config(tmp_path / "u.yaml", cfg)
    assert run_train_pl(["--config", str(config)]) == 0
    folder = tmp_path / "save" / "u"
    assert [e["state"] for e in state(folder)["experiments"]] == ["done", "done"]
    for k in range(2):
        args = yaml.safe_load((folder / f"fold={k}" / "config.yaml").read_text())["data_module"]["args"]
        assert args == {"batch_size": 32, "fold": k, "folds": 2}  # no fold_seed: the module does not take one
    scores = [json.loads((folder / f"fold={k}" / "results.json").read_text())["best_model_score"] for k in range(2)]
    assert float(ranking(folder)[0]["value"]) == pytest.approx(statistics.fmean(scores))


# ---------------------------------------------------------------- bad input: one message, exit 2, nothing created


def bad(cfg_change) -> dict:
    cfg = search_config("random", 2)
    cfg_change(cfg)
    return cfg


def set_lr(dist):
    return lambda c: c["train_wrapper"]["args"]["optim_spec"]["args"].update({"lr~": dist})


BAD = {
    "low-not-below-high": (set_lr({"uniform": [0.5, 0.1]}), ["lr~: uniform [0.5, 0.1] has low >= high",
                                                              "low < high"]),
    "loguniform-at-zero": (set_lr({"loguniform": [0, 0.1]}), ["loguniform [0, 0.1] needs both bounds > 0"]),
    "unknown-distribution": (set_lr({"loguniformm": [1e-3, 0.1]}), ["unknown distribution 'loguniformm'",
                                                                   "did you mean 'loguniform'", "choice"]),
    "int-of-floats": (set_lr({"int": [0.5, 2]}), ["int needs [low, high], two finite integers"]),
    "unknown-method": (lambda c: c["search"].update(method="bayes"), ["search.method 'bayes'",
                                                                     "valid: random, tpe, grid"]),
    "unknown-pruner": (lambda c: c["search"].update(pruner="mediann"), ["search.pruner 'mediann'",
                                                                       "did you mean 'median'",
                                                                       "valid: none, median, hyperband"]),
    "pruner-argument": (lambda c: c["search"].update(pruner={"name": "median", "args": {"warmup": 1}}),
                        ["search.pruner median", "n_warmup_steps"]),
    "sampler-argument": (lambda c: c["search"].update(method={"name": "tpe", "args": {"startup": 3}}),
                         ["search.method tpe", "n_startup_trials"]),
    "n-trials-missing": (lambda c: c["search"].pop("n_trials"), ["search.n_trials is missing; method random",
                                                                 "positive whole number"]),
    "tpe-n-trials-missing": (lambda c: c["search"].update(method="tpe", n_trials=None),
                             ["search.n_trials is missing; method tpe"]),
    "grid-of-a-range": (lambda c: c["search"].update(method="grid"), ["search.method grid", "is loguniform",
                                                                      "{choice: [...]}"]),
    "metric-not-logged": (lambda c: c["search"].update(metric="val/accuracy", direction="maximize"),
                          ["search.metric: the wrapper does not log 'val/accuracy'", "did you mean 'val/acc'"]),
    "metric-on-test": (lambda c: c["search"].update(metric="test/acc", direction="maximize"),
                       ["search.metric 'test/acc'", "val/"]),
    "direction-unknown": (lambda c: c["search"].update(direction="up"), ["search.direction 'up'",
                                                                        "maximize, minimize"]),
    "unknown-search-key": (lambda c: c["search"].update(trials=3), ["search.trials is not a setting of search",
                                                                    "did you mean 'n_trials'"]),
    "search-without-space": (lambda c: c["train_wrapper"]["args"]["optim_spec"].update(
        args={"lr": 0.1}), ["search: section but no key ending in '~'"]),
    "unreachable-storage": (lambda c: c["search"].update(storage="postgresql://u:secret@127.0.0.1:1/db"),
                            ["search.storage postgresql://u:***@127.0.0.1:1/db: cannot reach the database"]),
    "storage-not-a-url": (lambda c: c["search"].update(storage="study.db"), ["search.storage 'study.db' is not "
                                                                             "a database URL"]),
    "sqlite-in-missing-folder": (lambda c: c["search"].update(storage="sqlite:///no/such/folder/s.db"),
                                 ["the folder 'no/such/folder' of the SQLite file does not exist"]),
    "folds-of-one": (lambda c: c.update(cross_validation={"folds": 1}), ["cross_validation.folds must be a "
                                                                         "whole number of folds >= 2, got 1"]),
    "folds-with-pruner": (lambda c: c.update(cross_validation={"folds": 2}) or c["search"].update(pruner="median"),
                          ["search.pruner median with cross_validation"]),
    "folds-on-a-module-without-them": (
        lambda c: c.update(cross_validation={"folds": 2}, imports=["lightning_user"],
                           data_module={"name": "digits_train_val"}),
        ["cross_validation: data module 'digits_train_val' takes no fold and folds arguments"]),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_search_input_is_one_message_and_nothing_created(case, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(USER))
    change, expect = BAD[case]
    config = write_config(tmp_path / "cfg.yaml", bad(change))
    before = tree(tmp_path)
    err = refused("train", config, capsys)
    for text in expect:
        assert text in err, err
    assert "secret" not in err
    assert tree(tmp_path) == before


def test_a_search_key_from_the_command_line_and_a_changed_space_on_resume(tmp_path, monkeypatch, capsys):
    """`lr~=...` turns a config's lr into a search key; --resume with another space is refused."""
    monkeypatch.chdir(tmp_path)
    cfg = tiny_config(max_epochs=1)
    cfg["search"] = {"method": "random", "n_trials": 1}
    config = write_config(tmp_path / "c.yaml", cfg)
    lr = "train_wrapper.args.optim_spec.args.lr~={loguniform: [1.e-3, 1.e-1]}"
    assert run_train(["--config", str(config), lr, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "space     : lr: loguniform [0.001, 0.1]" in out and "t0  lr=" in out and not (tmp_path / "save").exists()
    assert run_train(["--config", str(config), lr]) == 0
    folder = tmp_path / "save" / "c"
    before = tree(folder)
    code = run_train(["--config", str(config), "--resume", "train_wrapper.args.optim_spec.args.lr~={loguniform: "
                                                           "[1.e-4, 1.e-1]}"])
    err = capsys.readouterr().err
    assert code == 2 and "the search space differs from the one session" in err, err
    assert "train_wrapper.args.optim_spec.args.lr~: {loguniform: [0.001, 0.1]} -> {loguniform: [0.0001, 0.1]}" in err
    assert tree(folder) == before


def test_without_optuna_a_search_names_the_install(tmp_path):
    """Optuna hidden from a fresh interpreter (a None entry in sys.modules makes its import fail):
    the search is refused naming the install, a grid session still runs its checks."""
    config = write_config(tmp_path / "c.yaml", search_config("random", 2))
    code = ("import sys; sys.modules['optuna'] = None; sys.argv = ['train.py', '--config', sys.argv[1], "
            "'--dry-run']; from torchx.cli import main; sys.exit(main(None, 'train.py', 'torchx.loop'))")
    done = subprocess.run([sys.executable, "-c", code, str(config)], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "runs on Optuna, which is not installed: pip install 'torchx[search]'" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "save").exists()
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1
    imported = subprocess.run([sys.executable, "-c", "import torchx, torchx.cli, torchx.session, torchx.fit, sys; "
                               "print('optuna' in sys.modules)"], capture_output=True, text=True, cwd=ROOT)
    assert imported.stdout.strip() == "False"


def test_grid_keys_beside_search_keys_give_each_grid_point_its_study(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = search_config("random", 1, max_epochs=1)
    rekey(cfg, ("train_wrapper", "args", "model_spec", "args"), "hidden", "hidden_", [[16], [32]])
    config = write_config(tmp_path / "g.yaml", cfg)
    assert run_train(["--config", str(config), "--jobs", "2"]) == 0
    folder = tmp_path / "save" / "g"
    entries = state(folder)["experiments"]
    assert [(e["point"], e["trial"], e["params"]["hidden"]) for e in entries] == [(0, 0, [16]), (1, 0, [32])]
    assert [e["name"].split(",t0,")[0] for e in entries] == ["hidden=[16]", "hidden=[32]"]
    for e in entries:
        point = study(folder, f"g/{e['name'].split(',t0,')[0]}")
        assert [t.state.name for t in point.trials] == ["COMPLETE"]
        assert point.trials[0].params["train_wrapper.args.optim_spec.args.lr"] == e["params"]["lr"]


def test_session_options_that_do_not_fit_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    search = write_config(tmp_path / "s.yaml", search_config("random", 2))
    grid = write_config(tmp_path / "g.yaml", rekey(tiny_config(), LR, "lr", "lr_", [0.1, 0.01]))
    for argv, says in (([str(search), "--only", "0"], "--only 0 runs one experiment of a grid; a search draws"),
                       ([str(grid), "--worker"], "--worker draws trials of a search"),
                       ([str(write_config(tmp_path / "one.yaml", tiny_config())), "--worker"],
                        "--worker applies to a session")):
        assert run_train(["--config", *argv]) == 2
        assert says in capsys.readouterr().err
    assert not (tmp_path / "save").exists()

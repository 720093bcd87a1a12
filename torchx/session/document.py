"""session.yaml: the session's config, its grid and each experiment's state, read and written
atomically under a file lock shared by every process of the session (a controller's job threads,
the tasks of a job array on a shared file system)."""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import os
import shutil
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from torchx import config as C
from torchx.errors import ConfigError
from torchx.run import config_diff
from torchx.session.summary import write_atomic, write_summary

if TYPE_CHECKING:
    from torchx.session.plan import Experiment
    from torchx.session.space import Folds, Search

SESSION_FILE = "session.yaml"
LOCK_FILE = ".session.lock"


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def new_document(name: str, prog: str, argv: list[str], config_file: str | None, cfg: dict,
                 experiments: list[Experiment], search: Search | None = None, folds: Folds | None = None) -> dict:
    doc = {
        "session": name,
        "entry": prog,
        "command": [prog, *argv],
        "created": now(),
        "config_file": config_file,
        "grid": [{"key": key, "label": label, "values": values} for key, label, values in C.sweep_labels(cfg)],
        "experiments": [entry(e) for e in experiments],
        "config": cfg,  # as given: before expansion and interpolation
    }
    if search is not None:  # the trials are added to `experiments` as they are drawn
        doc["search"] = search.record()
        doc["space"] = space_record(search)
    if folds is not None:
        doc["cross_validation"] = {"folds": folds.folds, "seed": folds.seed}
    return doc


def entry(e: Experiment) -> dict:
    """An experiment's record in session.yaml, before it first runs."""
    record = {"index": e.index, "name": e.name, "params": e.params, "state": "pending", "exit_status": None,
              "error": None, "attempts": 0, "started": None, "finished": None, "wall_time_s": 0.0, "host": None,
              "pid": None, "gpu": None, "threads": None}
    if e.trial is not None:
        record.update(trial=e.trial, point=e.point)
    if e.fold is not None:
        record.update(point=e.point, fold=e.fold)
    return record


def space_record(search: Search) -> list[dict]:
    return [{"key": d.key, "label": d.label, d.kind: list(d.args)} for d in search.space]


def _dist(record: dict) -> str:
    return ", ".join(f"{{{k}: {v}}}" for k, v in record.items() if k not in ("key", "label"))


def read_document(folder: Path) -> dict:
    doc = C.read_yaml(folder / SESSION_FILE)
    if not isinstance(doc.get("experiments"), list) or not isinstance(doc.get("config"), dict):
        raise ConfigError(f"'{folder / SESSION_FILE}' is not a session file torchx wrote (no experiments or config)")
    return doc


_thread_lock = threading.Lock()


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[dict]:
    """session.yaml read under an exclusive lock, and written back if the block ends without error.

    The lock (flock on .session.lock) holds across processes: a controller's job threads and the
    tasks of a job array running `--only K` on a shared file system each change their own entry.
    """
    with _thread_lock, open(folder / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc = read_document(folder)
        yield doc
        write_atomic(folder / SESSION_FILE, C.dump_yaml(doc))


def compare(doc: dict, cfg: dict, folder: Path, from_file: bool, search: Search | None = None) -> None:
    """A session keeps the grid, the search space and the config it started with; a change is
    refused, not mixed in."""
    old_space = doc.get("space") or []
    new_space = space_record(search) if search is not None else []
    if old_space != new_space:
        before, after = {d["key"]: d for d in old_space}, {d["key"]: d for d in new_space}
        shown = [f"{k}: {_dist(before[k])} -> {_dist(after[k])}" for k in after
                 if k in before and before[k] != after[k]]
        shown += [f"{k} added" for k in after if k not in before] + [f"{k} removed" for k in before if k not in after]
        raise ConfigError(f"the search space differs from the one session '{folder}' started with "
                          f"({'; '.join(shown) or 'the order of the keys changed'}); its trials were drawn from "
                          f"that space: continue it as recorded in {SESSION_FILE} (drop the changes), or start a "
                          f"new session with --name <other name>")
    old = [(g["key"], g["values"]) for g in doc.get("grid") or []]
    new = [(key, values) for key, _, values in C.sweep_labels(cfg)]
    if old != new:
        lines = [f"{k}: {dict(old)[k]} -> {v}" for k, v in new if k in dict(old) and dict(old)[k] != v]
        lines += [f"{k} added" for k, _ in new if k not in dict(old)]
        lines += [f"{k} removed" for k, _ in old if k not in dict(new)]
        raise ConfigError(f"the grid differs from the one session '{folder}' started with "
                          f"({'; '.join(lines) or 'the order of the keys changed'}); a session's grid is fixed: "
                          f"start a new session with --name <other name>")
    diff = config_diff(doc["config"], cfg)
    if diff:
        shown = "; ".join(diff[:4]) + (f"; +{len(diff) - 4} more" if len(diff) > 4 else "")
        how = "--config and overrides" if from_file else "overrides"
        raise ConfigError(f"the config differs from the one session '{folder}' started with ({shown}); a session "
                          f"runs one config: drop the {how} to continue it as recorded in {SESSION_FILE}, or start "
                          f"a new session with --name <other name>")


def create(folder: Path, doc: dict, experiments: list[Experiment]) -> bool:
    """Make the session directory, complete, with one rename: False if another process (a task of
    the same job array) made it first. An existing directory is never touched."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        (tmp / "configs").mkdir(parents=True)
        (tmp / "logs").mkdir()
        for e in experiments:
            (tmp / "configs" / f"{e.name}.yaml").write_text(C.dump_yaml(e.config), encoding="utf-8")
        write_atomic(tmp / SESSION_FILE, C.dump_yaml(doc))
        write_summary(tmp, doc)
        if folder.exists():
            raise FileExistsError(errno.EEXIST, "exists")
        os.rename(tmp, folder)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY) and folder.exists():
            if (folder / SESSION_FILE).is_file():
                return False
            raise ConfigError(f"'{folder}' was created by another process just now and is not a session; "
                              f"start again with another --name") from None
        raise ConfigError(f"cannot create session directory '{folder}': {e.strerror}") from None
    return True



def tally(doc: dict) -> str:
    counts: dict[str, int] = {}
    for e in doc["experiments"]:
        counts[e["state"]] = counts.get(e["state"], 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items())


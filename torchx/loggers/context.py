"""What a tracker is told about a run: its names, its session, its tags and parameters, and
`tracking.json`, where each backend's run id is kept so that --resume continues that run."""

from __future__ import annotations

import contextlib
import fcntl
import json
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

TRACKING_FILE = "tracking.json"  # in a run directory: {backend: {run id, ...}}; in a session's: its group
LOCK_FILE = ".tracking.lock"  # beside the embedded stores: one process at a time creates them
SESSION_FILE = "session.yaml"  # what a session folder holds (torchx.session writes it)
_record_lock = threading.Lock()


@dataclass
class Context:
    """A run as trackers see it. `save_root` is where embedded stores live (save/mlflow.db, ...):
    the --save-dir of a single run, the folder above a session for its experiments."""

    run_dir: Path
    config: dict
    save_root: Path
    entry: str = "train_pl.py"
    session: str | None = None
    session_dir: Path | None = None
    experiment: str | None = None  # the experiment's folder name in its session
    swept: dict[str, Any] = field(default_factory=dict)  # label -> value of each sweep key
    resume_step: int | None = None
    resumes: int = 0
    git_commit: str | None = None
    host: str = field(default_factory=socket.gethostname)
    started_ms: int = field(default_factory=lambda: int(time.time() * 1000))  # when this start of the run began

    @property
    def name(self) -> str:
        """The run's name: its folder name (an experiment's label in a session)."""
        return self.run_dir.name

    def tags(self) -> dict[str, str]:
        tags = {"torchx.run_name": self.name, "torchx.run_dir": str(self.run_dir.resolve()),
                "torchx.entry": self.entry, "torchx.host": self.host}
        if self.session:
            tags["torchx.session"] = self.session
            tags["torchx.experiment"] = self.experiment or self.name
        if self.git_commit:
            tags["torchx.git_commit"] = self.git_commit
        return tags

    def params(self) -> dict[str, Any]:
        """The resolved config flattened to dotted keys, and each swept value as `sweep.<label>`."""
        flat = flatten(self.config)
        flat.update({f"sweep.{label}": value for label, value in self.swept.items()})
        return flat

    def ids(self) -> dict[str, Any]:
        """tracking.json of the run directory: what each backend's run is called."""
        return read_json(self.run_dir / TRACKING_FILE)

    def record(self, backend: str, entry: dict[str, Any]) -> None:
        """Keep `entry` (the backend's run id, ...) in tracking.json, written whole or not at all
        (only this process writes there, one backend thread at a time: the lock is this process's)."""
        with _record_lock:
            data = self.ids()
            data[backend] = entry
            write_json(self.run_dir / TRACKING_FILE, data)

    def start_files(self) -> list[Path]:
        """What a tracker keeps as artifacts when a run starts or resumes: its config and provenance
        (and those of every resume)."""
        found = [*sorted(self.run_dir.glob("config*.yaml")), *sorted(self.run_dir.glob("provenance*.json"))]
        return [p for p in found if p.is_file()]


def context(run: Any, entry: str) -> Context:
    """The Context of a claimed run (torchx.run.Run): its provenance says the commit and host."""
    from torchx.config import read_yaml
    from torchx.errors import ConfigError

    prov = read_json(run.dir / "provenance.json")
    ctx = Context(run_dir=run.dir, config=run.config, save_root=run.dir.parent, entry=entry,
                  resume_step=run.resume_step, resumes=run.resumes,
                  git_commit=(prov.get("git") or {}).get("commit"), host=prov.get("host") or socket.gethostname())
    session_file = run.dir.parent / SESSION_FILE
    if session_file.is_file():  # an experiment of a session: save/<session>/<experiment>/
        try:
            doc = read_yaml(session_file)
        except ConfigError:
            return ctx
        ctx.session, ctx.session_dir = str(doc.get("session") or run.dir.parent.name), run.dir.parent
        ctx.save_root, ctx.experiment = run.dir.parent.parent, run.dir.name
        for e in doc.get("experiments") or []:
            if isinstance(e, dict) and e.get("name") == run.dir.name:
                ctx.swept = dict(e.get("params") or {})
    return ctx


def flatten(cfg: Any, prefix: str = "") -> dict[str, Any]:
    """Nested mappings (and lists of mappings, by index) to dotted keys; other lists as JSON text."""
    out: dict[str, Any] = {}
    items = cfg.items() if isinstance(cfg, dict) else enumerate(cfg)
    for key, value in items:
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flatten(value, dotted + "."))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            out.update(flatten(value, dotted + "."))
        elif isinstance(value, (list, dict)):
            out[dotted] = json.dumps(value, default=str)
        else:
            out[dotted] = value
    return out


def read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def update_json(path: Path, key: str, value: Any) -> None:
    """Set `key` in the JSON object at `path` (under a lock: parallel experiments share a session's)."""
    with locked(path.parent):
        data = read_json(path)
        data[key] = value
        write_json(path, data)


def write_json(path: Path, data: dict[str, Any]) -> None:
    from torchx.run import atomic_write

    atomic_write(path, lambda f: f.write((json.dumps(data, indent=2) + "\n").encode()))


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on `folder/.tracking.lock` across processes (flock)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)

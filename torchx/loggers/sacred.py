"""Sacred: a Sacred run record per torchx run, kept by Sacred's own observers.

    loggers: [{name: sacred}]                                       # FileStorageObserver: save/sacred/<id>/
    loggers: [{name: sacred, args: {url: sqlite:///save/sacred.db}}]  # and a SqlObserver on that database

Training is not a Sacred main function, so torchx plays the part of Sacred's Run towards the
observers, through their event interface (started, heartbeat, log_metrics, artifact, completed or
failed): the folder and the database hold what `ex.run()` would write, with the resolved config
as the run's config. Sacred's SqlObserver keeps no metric series (a limit of Sacred's schema): its
run's `info` holds each metric's latest value and step; FileStorageObserver's metrics.json holds
every one. On resume the same run id is reopened (status RUNNING again) and its metrics go on.
"""

from __future__ import annotations

import datetime
import json
import os
import warnings
from pathlib import Path
from typing import Any

from torchx import loggers
from torchx.errors import ConfigError
from torchx.loggers.base import Row, Tracker

SQL_REQUIREMENT = "sqlalchemy==2.1.9"


@loggers.register("sacred")
class Sacred(Tracker):
    """Sacred: config, metrics, artifacts and the run's status through its observers; resumes its run."""

    backend, package, requirement, extra = "sacred", "sacred", "sacred==0.8.7", "sacred"

    def __init__(self, experiment_name: str = "torchx", file_storage: str | bool = True, url: str | None = None,
                 log_checkpoints: bool = False, flush_every_s: float = 5.0) -> None:
        super().__init__(log_checkpoints=log_checkpoints, flush_every_s=flush_every_s)
        if not isinstance(experiment_name, str) or not experiment_name.strip():
            raise ConfigError(f"sacred: experiment_name must be a non-empty name, got {experiment_name!r}")
        if not (isinstance(file_storage, bool) or isinstance(file_storage, str) and file_storage):
            raise ConfigError(f"sacred: file_storage must be true (<save dir>/sacred), false or a folder, "
                              f"got {file_storage!r}")
        if url is not None:
            try:
                from sqlalchemy.engine import make_url
            except ImportError:
                raise ConfigError(f"sacred: url needs the sqlalchemy package, which cannot be imported; install "
                                  f"it with: pip install '{SQL_REQUIREMENT}'") from None
            try:
                make_url(url)
            except Exception:
                raise ConfigError(f"sacred: url {url!r} is not a database URL; give one like "
                                  f"sqlite:///save/sacred.db or postgresql://user@host/db") from None
        if file_storage is False and url is None:
            raise ConfigError("sacred: file_storage is false and there is no url: give Sacred at least one "
                              "observer (a folder, or a database URL)")
        self.experiment_name, self.file_storage, self.url = experiment_name, file_storage, url
        self.observers: list[Any] = []
        self.info: dict[str, Any] = {}
        self.result: float | None = None

    def folder(self) -> Path | None:
        if self.file_storage is False:
            return None
        return self.ctx.save_root / "sacred" if self.file_storage is True else Path(self.file_storage)

    def where(self) -> str:
        return ", ".join(x for x in (str(self.folder() or ""), self.url or "") if x)

    def start(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        with warnings.catch_warnings():  # Sacred's imports warn about pkg_resources and SQLAlchemy 2
            warnings.simplefilter("ignore")
            from sacred.host_info import get_host_info
            from sacred.observers import FileStorageObserver, SqlObserver
        ctx = self.ctx
        self.info = {"torchx": ctx.tags(), **({"sweep": ctx.swept} if ctx.swept else {})}
        run_id = previous.get("run_id") if previous else None
        files = FileStorageObserver(str(self.folder())) if self.folder() is not None else None
        sql = SqlObserver(self.url) if self.url else None
        started = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        args = (self._ex_info(), ctx.entry, get_host_info(), started, ctx.config,
                {"command": ctx.entry, "comment": ctx.name, "options": {}})
        warnings.filterwarnings("ignore", module="sacred")  # SQLAlchemy 2 notices inside Sacred's own code
        if files is not None:
            if run_id is not None and (Path(files.basedir) / str(run_id) / "run.json").is_file():
                reopen_files(files, str(run_id), ctx.config)
            else:
                run_id = files.started_event(*args, None)
            self.observers.append(files)
        if sql is not None:
            if run_id is None or not reopen_sql(sql, str(run_id)):
                run_id = sql.started_event(*args, run_id)
            self.observers.append(sql)
        return {"run_id": str(run_id), **({"file_storage": str(Path(files.basedir).resolve())} if files else {}),
                **({"url": self.url} if self.url else {})}

    def _ex_info(self) -> dict[str, Any]:
        from torchx.loggers.context import read_json

        prov = read_json(self.ctx.run_dir / "provenance.json")
        git = prov.get("git") or {}
        return {"name": self.experiment_name, "base_dir": str(self.ctx.run_dir.resolve()), "sources": [],
                "dependencies": sorted(f"{k}=={v}" for k, v in (prov.get("versions") or {}).items()),
                "repositories": [{"url": str(self.ctx.run_dir.resolve()), "commit": git["commit"],
                                  "dirty": bool(git.get("dirty"))}] if git.get("commit") else [],
                "mainfile": self.ctx.entry}

    def logged(self) -> dict[str, int]:
        files = next((o for o in self.observers if hasattr(o, "basedir")), None)
        path = Path(files.dir) / "metrics.json" if files is not None else None
        if path is None or not path.is_file():
            return {}
        return {k: max(v.get("steps") or [-1]) for k, v in json.loads(path.read_text()).items()}

    def write(self, rows: list[Row]) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        series: dict[str, dict[str, list]] = {}
        latest = self.info.setdefault("metrics", {})
        for step, row, ms in rows:
            when = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).replace(tzinfo=None)
            for k, v in row.items():
                s = series.setdefault(k, {"values": [], "steps": [], "timestamps": []})
                s["values"].append(v)
                s["steps"].append(step)
                s["timestamps"].append(when)
                latest[k] = {"value": v, "step": step}
        for o in self.observers:
            if hasattr(o, "log_metrics"):
                o.log_metrics(series, self.info)
            o.heartbeat_event(self.info, "", now, self.result)

    def artifact(self, path: Path, folder: str = "") -> None:
        if path.name == "results.json":
            from torchx.loggers.context import read_json

            score = read_json(path).get("best_model_score")
            self.result = float(score) if isinstance(score, (int, float)) else None
        for o in self.observers:
            o.artifact_event(path.name, str(path))

    def finish(self, status: str) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
        for o in self.observers:
            o.heartbeat_event(self.info, "", now, self.result)
            if status == "FINISHED":
                o.completed_event(now, self.result)
            elif status == "KILLED":
                o.interrupted_event(now, "INTERRUPTED")
            else:
                o.failed_event(now, ["training failed; see the run directory's log"])


def reopen_files(files: Any, run_id: str, config: dict) -> None:
    """Reattach a FileStorageObserver to its run folder, as its started_event would have left it."""
    files.dir = os.path.join(files.basedir, run_id)
    with open(os.path.join(files.dir, "run.json")) as f:
        files.run_entry = json.load(f)
    files.run_entry["status"] = "RUNNING"
    files.run_entry.pop("stop_time", None)
    files.config, files.info, files.cout, files.cout_write_cursor = config, {}, "", 0
    files.save_json(files.run_entry, "run.json")


def reopen_sql(sql: Any, run_id: str) -> bool:
    """Reattach a SqlObserver to its run row; False when the database does not hold it."""
    from sacred.observers.sql_bases import Base, Run

    Base.metadata.create_all(sql.engine)
    row = sql.session.query(Run).filter_by(run_id=run_id).first()
    if row is None:
        return False
    sql.run, row.status, row.stop_time = row, "RUNNING", None
    sql.save()
    return True

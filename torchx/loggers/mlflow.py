"""MLflow: each run a tracked run; by default in an SQLite database in the save directory.

    loggers: [{name: mlflow}]                      # sqlite:///<save dir>/mlflow.db, artifacts beside it
    loggers: [{name: mlflow, args: {tracking_uri: http://127.0.0.1:5000, log_checkpoints: true}}]

`mlflow ui --backend-store-uri sqlite:///save/mlflow.db` shows every run without a server. The
experiments of a session are children of one parent run named after the session (MLflow's
nested runs), in the same MLflow experiment as single runs.

Writes go through the Tracker's thread in batches (MlflowClient.log_batch, up to 1000 metrics a
call). HTTP requests to a server are retried twice with 1 s backoff (MLflow's own retries,
unless MLFLOW_HTTP_REQUEST_MAX_RETRIES / _BACKOFF_FACTOR / _TIMEOUT are set), so a dead server
is given up within seconds instead of MLflow's default of minutes.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from torchx import loggers
from torchx.errors import ConfigError
from torchx.loggers.base import Row, Tracker
from torchx.loggers.context import TRACKING_FILE, locked, read_json, update_json

SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "mssql", "databricks")
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
                 "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
MAX_BATCH = 1000  # MLflow's limit of metrics per log_batch call
MAX_PARAMS = 100  # ... and of params or tags
_BAD_NAME = re.compile(r"[^/\w.\- :]")  # MLflow accepts letters, digits and _ - . space / : in names


def name_for_mlflow(name: str) -> str:
    return _BAD_NAME.sub("_", name)[:250]


@loggers.register("mlflow")
class MLflow(Tracker):
    """MLflow tracking: metrics, the flattened config as params, tags, artifacts; resumes its run."""

    backend, package, requirement, extra = "mlflow", "mlflow", "mlflow==3.17.2", "mlflow"

    def __init__(self, tracking_uri: str | None = None, experiment_name: str = "torchx",
                 tags: dict[str, str] | None = None, log_checkpoints: bool = False,
                 flush_every_s: float = 5.0) -> None:
        super().__init__(log_checkpoints=log_checkpoints, flush_every_s=flush_every_s)
        if tracking_uri is not None:
            scheme = urlparse(str(tracking_uri)).scheme.split("+")[0] if isinstance(tracking_uri, str) else ""
            if scheme not in SCHEMES:
                raise ConfigError(f"mlflow: tracking_uri {tracking_uri!r} is not a tracking URI MLflow reads; give "
                                  f"one starting with {', '.join(s + ':' for s in SCHEMES)} (e.g. "
                                  f"http://127.0.0.1:5000 or sqlite:///save/mlflow.db), or leave it out for "
                                  f"sqlite:///<save dir>/mlflow.db")
        if not isinstance(experiment_name, str) or not experiment_name.strip():
            raise ConfigError(f"mlflow: experiment_name must be a non-empty name, got {experiment_name!r}")
        if tags is not None and not isinstance(tags, dict):
            raise ConfigError(f"mlflow: tags must be a mapping of tag names to values, got {tags!r}")
        self.tracking_uri, self.experiment_name, self.extra_tags = tracking_uri, experiment_name, tags or {}
        self.client: Any = None

    def uri(self) -> str:
        if self.tracking_uri is not None:
            return self.tracking_uri
        return f"sqlite:///{(self.ctx.save_root / 'mlflow.db').resolve()}"

    def where(self) -> str:
        return self.uri()

    def _embedded(self) -> bool:
        return urlparse(self.uri()).scheme in ("sqlite", "file")

    def start(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        from mlflow.tracking import MlflowClient

        for key, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(key, value)
        for noisy in ("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database tables..."
            logging.getLogger(noisy).setLevel(logging.WARNING)
        ctx, uri = self.ctx, self.uri()
        # one process at a time creates the database (MLflow's schema migrations cannot run twice at
        # once), the experiment and a session's parent run
        with locked(ctx.save_root):
            self.client = MlflowClient(uri)
            self.client.search_experiments(max_results=1)  # creates the store's tables on first use
            run_id = previous.get("run_id") if previous and previous.get("tracking_uri") == uri else None
            if run_id is not None and self._alive(run_id):
                self.client.update_run(run_id, status="RUNNING")
                self._params(run_id, resumed=True)
                return {**previous, "run_id": run_id}
            experiment_id = self._experiment()
            parent = self._parent(experiment_id) if ctx.session else None
        tags = {**ctx.tags(), **{str(k): str(v) for k, v in self.extra_tags.items()}}
        if ctx.git_commit:
            tags["mlflow.source.git.commit"] = ctx.git_commit
        if parent:
            tags["mlflow.parentRunId"] = parent
        run = self.client.create_run(experiment_id, start_time=ctx.started_ms, run_name=ctx.name, tags=tags)
        self._params(run.info.run_id, resumed=False)
        return {"run_id": run.info.run_id, "experiment_id": experiment_id, "tracking_uri": uri,
                **({"parent_run_id": parent} if parent else {})}

    def _alive(self, run_id: str) -> bool:
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id).info.lifecycle_stage == "active"
        except MlflowException:  # deleted, or another database: a new run is started
            return False

    def _experiment(self) -> str:
        found = self.client.get_experiment_by_name(self.experiment_name)
        if found is not None and found.lifecycle_stage == "active":
            return found.experiment_id
        location = (self.ctx.save_root / "mlflow-artifacts").resolve().as_uri() if self._embedded() else None
        # the kind tells MLflow's UI to open it on its training runs table rather than its GenAI overview
        return self.client.create_experiment(self.experiment_name, artifact_location=location,
                                             tags={"mlflow.experimentKind": "custom_model_development"})

    def _parent(self, experiment_id: str) -> str:
        """The session's parent run, made by the first of its experiments (recorded in the session's
        tracking.json), with the grid as its params and session.yaml as an artifact."""
        ctx = self.ctx
        entry = read_json(ctx.session_dir / TRACKING_FILE).get(self.backend) or {}
        if entry.get("tracking_uri") == self.uri() and self._alive(str(entry.get("parent_run_id"))):
            return entry["parent_run_id"]
        tags = {"torchx.session": ctx.session, "torchx.run_dir": str(ctx.session_dir.resolve()),
                "torchx.host": ctx.host}
        run = self.client.create_run(experiment_id, start_time=ctx.started_ms, run_name=ctx.session, tags=tags)
        from mlflow.entities import Param

        grid = [Param(name_for_mlflow(f"sweep.{k}"), str(v)[:6000]) for k, v in _grid(ctx.session_dir).items()]
        for i in range(0, len(grid), MAX_PARAMS):
            self.client.log_batch(run.info.run_id, params=grid[i:i + MAX_PARAMS])
        self.client.log_artifact(run.info.run_id, str(ctx.session_dir / "session.yaml"))
        self.client.set_terminated(run.info.run_id, "FINISHED")
        update_json(ctx.session_dir / TRACKING_FILE, self.backend,
                    {"parent_run_id": run.info.run_id, "tracking_uri": self.uri()})
        return run.info.run_id

    def _params(self, run_id: str, resumed: bool) -> None:
        """The flattened config as params. MLflow's params never change: on resume, keys it lacks are
        added and a changed value is kept as a tag `torchx.resume-<n>.<key>`."""
        from mlflow.entities import Param, RunTag

        params = {name_for_mlflow(k): str(v)[:6000] for k, v in self.ctx.params().items()}
        held = self.client.get_run(run_id).data.params if resumed else {}
        new = [Param(k, v) for k, v in params.items() if k not in held]
        changed = [RunTag(f"torchx.resume-{self.ctx.resumes}.{k}"[:250], f"{held[k]} -> {v}"[:8000])
                   for k, v in params.items() if k in held and held[k] != v]
        for i in range(0, len(new), MAX_PARAMS):
            self.client.log_batch(run_id, params=new[i:i + MAX_PARAMS])
        for i in range(0, len(changed), MAX_PARAMS):
            self.client.log_batch(run_id, tags=changed[i:i + MAX_PARAMS])

    def logged(self) -> dict[str, int]:
        run = self.client.get_run(self.run_id)
        return {key: max((m.step for m in self.client.get_metric_history(self.run_id, key)), default=-1)
                for key in run.data.metrics}

    def write(self, rows: list[Row]) -> None:
        from mlflow.entities import Metric

        metrics = [Metric(name_for_mlflow(k), v, ms, step) for step, row, ms in rows for k, v in row.items()]
        for i in range(0, len(metrics), MAX_BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[i:i + MAX_BATCH])

    def artifact(self, path: Path, folder: str = "") -> None:
        self.client.log_artifact(self.run_id, str(path), folder or None)

    def finish(self, status: str) -> None:
        self.client.set_terminated(self.run_id, status)
        parent = (self.ctx.ids().get(self.backend) or {}).get("parent_run_id")
        if parent:  # the session's run ends when its latest experiment does
            self.client.set_terminated(parent, "FINISHED")


def _grid(session_dir: Path) -> dict[str, Any]:
    from torchx.config import read_yaml

    doc = read_yaml(session_dir / "session.yaml")
    return {g["label"]: g["values"] for g in doc.get("grid") or [] if isinstance(g, dict)}

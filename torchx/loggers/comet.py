"""Comet: one Comet experiment per torchx run, resumed by its experiment key.

    loggers: [{name: comet, args: {project: digits, online: false}}]   # then: comet upload save/comet/<key>-*.zip

Offline, each start (and each resume) writes its own archive `<save dir>/comet/<key>-<suffix>.zip`
when it ends; after a resume torchx sends only steps after the last one the earlier archives hold.
Comet has no run groups: a session's experiments carry its name as a tag and a parameter.
Comet's automatic logging (stdout, code, environment, git, CO2) is off: torchx sends what it means.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Any

from torchx import loggers
from torchx.errors import ConfigError
from torchx.loggers.base import Row, Tracker, last_steps, say


@loggers.register("comet")
class Comet(Tracker):
    """Comet: metrics, the flattened config as parameters, tags, assets; resumes its experiment."""

    backend, package, requirement, extra = "comet", "comet_ml", "comet_ml==3.58.8", "comet"
    one_counter = True

    def __init__(self, project: str = "torchx", workspace: str | None = None, online: bool | None = None,
                 offline_directory: str | None = None, tags: list[str] | None = None,
                 log_checkpoints: bool = False, flush_every_s: float = 5.0) -> None:
        super().__init__(log_checkpoints=log_checkpoints, flush_every_s=flush_every_s)
        if not isinstance(project, str) or not project.strip():
            raise ConfigError(f"comet: project must be a non-empty name, got {project!r}")
        if online is not None and not isinstance(online, bool):
            raise ConfigError(f"comet: online must be true, false or left out (Comet's own setting), got {online!r}")
        if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
            raise ConfigError(f"comet: tags must be a list of strings, got {tags!r}")
        self.project, self.workspace, self.online = project, workspace, online
        self.offline_directory, self.tags = offline_directory, tags or []
        self.exp: Any = None

    def where(self) -> str:
        return f"project {self.project!r}, {'offline' if self.online is False else 'online'}"

    def folder(self) -> Path:
        return Path(self.offline_directory) if self.offline_directory else self.ctx.save_root / "comet"

    def start(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        import comet_ml

        logging.getLogger("comet_ml").setLevel(logging.ERROR)  # its notices about offline mode, per message
        ctx = self.ctx
        labels = [f"{k.removeprefix('torchx.')}:{v}" for k, v in ctx.tags().items()
                  if k in ("torchx.session", "torchx.experiment", "torchx.host", "torchx.git_commit")]
        config = comet_ml.ExperimentConfig(
            offline_directory=str(self.folder()), name=ctx.name, tags=[*labels, *self.tags], display_summary_level=0,
            auto_output_logging=None, log_code=False, log_graph=False, auto_param_logging=False,
            auto_metric_logging=False, auto_log_co2=False, log_git_metadata=False, log_git_patch=False,
            log_env_details=False, log_env_gpu=False, log_env_host=False, log_env_cpu=False, log_env_network=False,
            log_env_disk=False, parse_args=False)
        key = previous.get("run_id") if previous else None
        self.exp = comet_ml.start(project_name=self.project, workspace=self.workspace, online=self.online,
                                  experiment_key=key, experiment_config=config)
        self.exp.log_parameters(ctx.params())
        self.exp.log_others(ctx.tags())
        return {"run_id": self.exp.get_key(), "project": self.project,
                **({"offline_directory": str(self.folder().resolve())} if self.offline() else {})}

    def offline(self) -> bool:
        return type(self.exp).__name__.startswith("Offline")

    def logged(self) -> dict[str, int]:
        archives = sorted(self.folder().glob(f"{self.exp.get_key()}-*.zip"))
        return last_steps((step, name) for archive in archives for step, name, _ in metrics(archive))

    def write(self, rows: list[Row]) -> None:
        for step, row, _ in rows:
            self.exp.log_metrics(row, step=step)

    def artifact(self, path: Path, folder: str = "") -> None:
        self.exp.log_asset(str(path), file_name=f"{folder}/{path.name}" if folder else path.name)

    def finish(self, status: str) -> None:
        if status != "FINISHED":
            self.exp.log_other("torchx.status", status)
        self.exp.end()
        if self.offline():
            say(f"comet: offline experiment {self.exp.get_key()} in {self.folder()}; upload it with: "
                f"comet upload {self.folder()}/{self.exp.get_key()}-*.zip")


def metrics(archive: Path) -> list[tuple[int, str, float]]:
    """(step, name, value) of every metric in a Comet offline archive (its messages.json lines)."""
    out = []
    with zipfile.ZipFile(archive) as z:
        for line in z.read("messages.json").decode().splitlines():
            message = json.loads(line)
            if message.get("type") == "metric_msg":
                m = message["payload"]["metric"]
                out.append((int(m.get("step") or 0), m["metricName"], float(m["metricValue"])))
    return out

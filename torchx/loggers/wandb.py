"""Weights & Biases: one W&B run per torchx run; a session's experiments share a W&B group.

    loggers: [{name: wandb, args: {project: digits, mode: offline}}]   # then: wandb sync save/wandb/offline-run-*

The run is written under `<save dir>/wandb/` (`dir` to change). W&B counts steps with one counter
that only grows, so after a resume torchx sends only steps after the last one the W&B run holds
(read back from its earlier offline files with `wandb leet inspect`; online, from the resumed
run's step). W&B's own system sampling is off: `system_metrics` is torchx's.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from torchx import loggers
from torchx.errors import ConfigError
from torchx.loggers.base import Row, Tracker, last_steps, say

MODES = ("online", "offline", "disabled")
_BAD_PROJECT = set("/\\#?%:")


@loggers.register("wandb")
class WandB(Tracker):
    """Weights & Biases: metrics, the flattened config, tags, files; resumes its run by id."""

    backend, package, requirement, extra = "wandb", "wandb", "wandb==0.31.0", "wandb"
    one_counter = True

    def __init__(self, project: str = "torchx", entity: str | None = None, mode: str | None = None,
                 dir: str | None = None, tags: list[str] | None = None, log_checkpoints: bool = False,
                 flush_every_s: float = 5.0) -> None:
        super().__init__(log_checkpoints=log_checkpoints, flush_every_s=flush_every_s)
        if not isinstance(project, str) or not project or _BAD_PROJECT & set(project) or len(project) > 128:
            raise ConfigError(f"wandb: project {project!r} is not a W&B project name: 1 to 128 characters, none of "
                              f"{' '.join(sorted(_BAD_PROJECT))}")
        if mode is not None and mode not in MODES:
            raise ConfigError(f"wandb: mode {mode!r} is not one of {', '.join(MODES)} (or leave it out for W&B's "
                              f"default, WANDB_MODE or online)")
        if tags is not None and (not isinstance(tags, list) or not all(isinstance(t, str) for t in tags)):
            raise ConfigError(f"wandb: tags must be a list of strings, got {tags!r}")
        self.project, self.entity, self.mode, self.dir, self.tags = project, entity, mode, dir, tags or []
        self.run: Any = None

    def where(self) -> str:
        return f"project {self.project!r}, {self.mode or 'default'} mode"

    def folder(self) -> Path:
        return Path(self.dir) if self.dir else self.ctx.save_root

    def start(self, previous: dict[str, Any] | None) -> dict[str, Any]:
        import wandb

        ctx = self.ctx
        folder = self.folder()
        folder.mkdir(parents=True, exist_ok=True)
        run_id = previous.get("run_id") if previous else None
        labels = [f"{k.removeprefix('torchx.')}:{v}"[:64] for k, v in ctx.tags().items()
                  if k in ("torchx.session", "torchx.experiment", "torchx.host", "torchx.git_commit")]
        settings = wandb.Settings(console="off", x_disable_stats=True, silent=True, disable_git=False)
        self.run = wandb.init(project=self.project, entity=self.entity, dir=str(folder),
                              id=run_id or uuid.uuid4().hex[:16], resume="allow", name=ctx.name,
                              group=ctx.session, job_type=ctx.entry,
                              tags=[*labels, *self.tags], config={**ctx.params(), **ctx.tags()},
                              allow_val_change=True, mode=self.mode, settings=settings, reinit="create_new")
        if self.run.settings.mode == "offline":
            files = Path(self.run.dir).parent
            say(f"wandb: offline run in {files}; upload it with: wandb sync {files}")
        return {"run_id": self.run.id, "project": self.project, "dir": str(folder.resolve())}

    def logged(self) -> dict[str, int]:
        if self.run.settings.mode != "offline":  # online: the resumed run knows its next step
            return {"_step": self.run.step - 1} if self.run.step else {}
        current = Path(self.run.dir).parent.resolve()
        parts = [p for p in sorted(self.folder().glob(f"wandb/offline-run-*-{self.run.id}")) if p.resolve() != current]
        return last_steps((step, key) for part in parts for step, row in history(part) for key in row)

    def write(self, rows: list[Row]) -> None:
        for step, row, _ in rows:
            self.run.log(row, step=step)

    def artifact(self, path: Path, folder: str = "") -> None:
        """A copy in the run's files folder, which W&B uploads (offline: on `wandb sync`)."""
        target = Path(self.run.dir) / folder / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)

    def finish(self, status: str) -> None:
        self.run.finish(exit_code=0 if status == "FINISHED" else 1)


def history(part: Path) -> list[tuple[int, dict[str, float]]]:
    """The (step, metrics) rows of one W&B run folder's .wandb file, read with W&B's own reader."""
    files = sorted(part.glob("run-*.wandb"))
    if not files:
        return []
    out = subprocess.run([sys.executable, "-m", "wandb", "leet", "inspect", "--json", str(files[0])],
                         capture_output=True, text=True, timeout=120)
    rows = []
    for line in out.stdout.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("type") == "history":
            item = record["history"]["item"]
            rows.append((int(item["_step"]), {k: v for k, v in item.items() if not k.startswith("_")}))
    return rows

"""A search trial's side of pruning, in the experiment's own process (both loops).

A search session starts each trial's process with TORCHX_TRIAL set (the study's storage URL,
its name, the trial number, the metric and the pruner). After each validation the loop calls
`Trial.report`: the metric goes to the study at the run's global step, and the study's pruner
says whether the trial stops there. A run started without TORCHX_TRIAL reports nothing and
never imports Optuna.
"""

from __future__ import annotations

import inspect
import json
import os
from typing import Any

from torchx.errors import ConfigError, first_line

ENV = "TORCHX_TRIAL"


class Trial:
    """Reports a metric to one trial of an Optuna study and asks its pruner."""

    def __init__(self, spec: dict) -> None:
        self.spec, self.metric = spec, spec["metric"]
        self._trial: Any = None
        self.pruned: dict | None = None  # where it stopped: {step, epoch, value}

    def _open(self) -> Any:
        if self._trial is None:
            import optuna

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            storage = open_storage(driver_url(self.spec["storage"]))
            study = optuna.load_study(study_name=self.spec["study"], storage=storage,
                                      pruner=make_pruner(self.spec["pruner"]))
            study_id = storage.get_study_id_from_name(self.spec["study"])
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, self.spec["trial"])
            self._trial = optuna.trial.Trial(study, trial_id)
        return self._trial

    def report(self, metrics: dict[str, float], step: int, epoch: int) -> bool:
        """Report the metric (if this validation logged it); True when the pruner stops the trial here."""
        value = metrics.get(self.metric)
        if value is None:
            return False
        trial = self._open()
        trial.report(float(value), step)
        if trial.should_prune():
            self.pruned = {"step": int(step), "epoch": int(epoch), "value": float(value)}
            return True
        return False

    def message(self) -> str:
        p = self.pruned or {}
        return (f"pruned: trial {self.spec['trial']} stopped by the search's {self.spec['pruner']['name']} pruner "
                f"after the validation at step {p.get('step')} (epoch {p.get('epoch')}), "
                f"{self.metric} {p.get('value'):.4g}; its checkpoints and logs are kept")


def driver_url(url: str) -> str:
    """`postgresql://...` with the psycopg2 driver when psycopg (3), SQLAlchemy 2.1's default for a
    bare postgresql URL, is not installed: torchx[search] installs psycopg2-binary."""
    import importlib.util

    if url.startswith("postgresql://") and importlib.util.find_spec("psycopg") is None and \
            importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def engine_kwargs(url: str) -> dict:
    # SQLite: writers from several processes wait for each other instead of failing at once
    return {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}


def open_storage(url: str, attempts: int = 6) -> Any:
    """Optuna's RDBStorage at `url`. Several processes opening a new database at once (the workers of a
    job array) race to create its tables and record its schema version: the losers see "table already
    exists" or a unique-constraint failure. The winner has then done the work, so a loser opens it
    again after a short, randomised wait; any other error, or the same one `attempts` times, is raised."""
    import random
    import time

    import optuna
    from sqlalchemy import exc

    for attempt in range(1, attempts):
        try:
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))
        except (exc.IntegrityError, exc.OperationalError, exc.ProgrammingError) as e:
            text = str(getattr(e, "orig", None) or e).lower()
            if not (isinstance(e, exc.IntegrityError) or "already exists" in text):
                raise
            time.sleep(random.uniform(0.05, 0.25) * attempt)
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url))  # the last try: its error is raised


def make_pruner(spec: dict) -> Any:
    """Optuna's pruner named by search.pruner, its args checked against its signature."""
    import optuna

    pruners = optuna.pruners
    cls = {"none": pruners.NopPruner, "median": pruners.MedianPruner, "hyperband": pruners.HyperbandPruner}[
        spec["name"]]
    try:
        inspect.signature(cls).bind(**spec["args"])
        return cls(**spec["args"])
    except (TypeError, ValueError) as e:
        takes = ", ".join(inspect.signature(cls).parameters)
        raise ConfigError(f"search.pruner {spec['name']}: {first_line(e)}; Optuna's {cls.__name__} takes: "
                          f"{takes or '(nothing)'}") from None


def from_environment() -> Trial | None:
    spec = os.environ.get(ENV)
    return Trial(json.loads(spec)) if spec else None

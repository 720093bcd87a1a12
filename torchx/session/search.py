"""Search sessions on Optuna: a study per grid point, kept in a database (by default study.db in
the session folder), its trials drawn one at a time as job slots free up.

Each trial is an experiment of the session (with cross_validation, one per fold): its config is
the session's with the drawn values in place of the `~` keys, checked like any experiment's,
written to configs/<name>.yaml and run as a child process. The child reports the metric to its
trial after each validation (torchx.trial); when it ends the session tells the study the trial's
value (the best value of the metric in its run, or the mean over its folds) or that it was pruned.

The sampler is made anew for every draw, seeded from (search.seed, grid point, trial number): the
values a trial gets depend only on those and on the results the study holds, so a session draws
the same trials again from the same seed, whichever process draws them.
"""

from __future__ import annotations

import copy
import inspect
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from torchx import config as C
from torchx.errors import ConfigError, first_line
from torchx.session import space
from torchx.session.document import entry, locked
from torchx.session.plan import Experiment, Point, checked, fold_name, fold_param, folder_name, with_fold
from torchx.session.summary import summarize, write_atomic
from torchx.trial import ENV as TRIAL_ENV
from torchx.trial import driver_url, engine_kwargs, make_pruner, open_storage

INSTALL = "pip install 'torchx[search]' (Optuna 5.1.0; psycopg2-binary for PostgreSQL)"
STUDY_FILE = "study.db"


def optuna() -> Any:
    """Optuna, imported when a search needs it; its absence is a config error naming the install."""
    try:
        import optuna
    except ImportError:
        raise ConfigError(f"a search (keys ending in '~', or a search: section) runs on Optuna, which is not "
                          f"installed: {INSTALL}") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage_url(search: space.Search, folder: Path) -> str:
    return driver_url(search.storage) if search.storage else f"sqlite:///{folder.resolve() / STUDY_FILE}"


def shown_url(url: str) -> str:
    """The URL without its password, for messages."""
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def check_storage(search: space.Search) -> None:
    """search.storage must be a database this process can reach; checked before anything is created
    (an SQLite file is not: connecting would create it, so its folder is checked instead)."""
    if search.storage is None:
        return
    url = driver_url(search.storage)
    optuna()
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    where = f"search.storage {shown_url(search.storage)}"
    try:
        parsed = make_url(url)
    except Exception as e:
        raise ConfigError(f"{where} is not a database URL ({first_line(e)}); give one like "
                          f"postgresql://user:password@host/db or sqlite:///path/study.db") from None
    if parsed.get_backend_name() == "sqlite":
        parent = Path(parsed.database or "").parent
        if not parsed.database or not parent.is_dir():
            raise ConfigError(f"{where}: the folder '{parent}' of the SQLite file does not exist; create it, or leave "
                              f"search.storage out for the session folder's {STUDY_FILE}")
        return
    try:
        engine = create_engine(url, **engine_kwargs(url))
    except ModuleNotFoundError as e:
        raise ConfigError(f"{where}: the database driver '{e.name}' is not installed: {INSTALL}") from None
    except Exception as e:
        raise ConfigError(f"{where}: {first_line(e)}; give a URL SQLAlchemy knows, like "
                          f"postgresql://user:password@host/db") from None
    try:
        with engine.connect():
            pass
    except Exception as e:
        raise ConfigError(f"{where}: cannot reach the database ({_reason(e)}); check that the server runs and "
                          f"takes this user and database, or leave search.storage out for the session folder's "
                          f"{STUDY_FILE}") from None
    finally:
        engine.dispose()


def _reason(e: Exception) -> str:
    text = str(getattr(e, "orig", None) or e).strip()
    return " ".join(text.split())[:300] or type(e).__name__


def check_metric(metric: str, data: Any, wrapper: Any, read: bool) -> None:
    """search.metric must be a validation metric the wrapper logs (what it declares, or else what
    one trial step and validation batch log, as checkpoint.monitor is checked)."""
    from torchx import build, checks
    from torchx.registry import close_matches

    if metric.startswith("test/"):
        raise ConfigError(f"search.metric {metric!r} is measured once training ends, on the test split; a search "
                          f"scores and prunes trials on what each validation logs: use a val/ metric")
    known = build.declared_metrics(wrapper)
    if not known and read:
        known = checks.trial_logged(data, wrapper)
    if known and metric not in known:
        names = sorted(m for m in known if m not in ("epoch", "step"))
        raise ConfigError(f"search.metric: the wrapper does not log '{metric}'{close_matches(metric, names)}; it "
                          f"logs: {', '.join(names)}")


def make_sampler(search: space.Search, seed: int) -> Any:
    samplers = optuna().samplers
    if search.method == "grid":
        return numbered_grid(search)
    cls = samplers.RandomSampler if search.method == "random" else samplers.TPESampler
    try:
        return cls(**search.sampler_args, seed=seed)
    except (TypeError, ValueError) as e:
        takes = ", ".join(k for k in inspect.signature(cls).parameters if k != "seed")
        raise ConfigError(f"search.method {search.method}: {first_line(e)}; Optuna's {cls.__name__} takes: "
                          f"{takes or '(nothing but the seed)'}") from None


def numbered_grid(search: space.Search) -> Any:
    """`method: grid`: trial n takes the n-th point of the grid, in the order of a `_`-key grid (the
    last key varies fastest). Optuna's GridSampler picks an unvisited point at random, and trials
    running at once (--jobs, workers) may pick the same one; a trial number is never given twice."""
    import itertools

    points = list(itertools.product(*[d.grid_values() for d in search.space]))
    names = [d.name for d in search.space]

    class NumberedGrid(optuna().samplers.BaseSampler):
        def infer_relative_search_space(self, study: Any, trial: Any) -> dict:
            return {}

        def sample_relative(self, study: Any, trial: Any, search_space: dict) -> dict:
            return {}

        def sample_independent(self, study: Any, trial: Any, param_name: str, param_distribution: Any) -> Any:
            return points[trial.number % len(points)][names.index(param_name)]

    return NumberedGrid()


def seed_for(search: space.Search, point: int, number: int) -> int:
    return (search.seed * 1_000_003 + point * 10_007 + number) % 2**32


def suggest(trial: Any, d: space.Dist) -> Any:
    if d.kind == "choice":
        return trial.suggest_categorical(d.name, list(d.args))
    if d.kind == "int":
        return trial.suggest_int(d.name, *d.args)
    return trial.suggest_float(d.name, *d.args, log=d.kind == "loguniform")


def first_values(search: space.Search) -> list:
    """A value for each search key to check the configs with before anything runs: the first that
    the sampler would draw for trial 0 of an empty study."""
    return [draw[2] for draw in preview(search, 1)][0]


def preview(search: space.Search, n: int, point: int = 0) -> list[tuple[int, dict, list]]:
    """The first `n` trials the sampler would draw at grid point `point` of a new study (before any
    result comes back): (number, {label: value}, values), in an in-memory study."""
    study = optuna().create_study(direction=search.direction)
    drawn = []
    for number in range(n):
        study.sampler = make_sampler(search, seed_for(search, point, number))
        trial = study.ask()
        values = [suggest(trial, d) for d in search.space]
        drawn.append((number, {d.label: v for d, v in zip(search.space, values)}, values))
    return drawn


def trial_name(point: Point, number: int, width: int, search: space.Search, values: list) -> str:
    parts = [point.name] if point.name else []
    parts.append(f"t{number:0{width}d}")
    parts += [f"{d.label}={C.value_text(_short(v))}" for d, v in zip(search.space, values)]
    return ",".join(parts)


def _short(value: Any) -> Any:
    return float(f"{value:.4g}") if isinstance(value, float) else value


class Search:
    """The Optuna side of a session run: draws trials into session.yaml, tells the study how they ended."""

    def __init__(self, folder: Path, session: str, search: space.Search, points: list[Point],
                 folds: space.Folds | None, config_file: str | None) -> None:
        self.folder, self.session, self.search, self.points = folder, session, search, points
        self.folds, self.config_file = folds, config_file
        self.url = storage_url(search, folder)
        self.width = len(str(search.n_trials - 1))
        optuna()
        try:
            self.storage = open_storage(self.url)
        except Exception as e:
            raise ConfigError(f"search.storage {shown_url(self.url)}: cannot open the study ({_reason(e)})") from None
        self._studies: dict[int, Any] = {}

    def study_name(self, point: Point) -> str:
        return f"{self.session}/{point.name}" if point.name else self.session

    def study(self, point: Point) -> Any:
        """The grid point's study, created if it is new; one made with another space or method is refused."""
        if point.index not in self._studies:
            name = self.study_name(point)
            study = optuna().create_study(study_name=name, storage=self.storage, direction=self.search.direction,
                                          pruner=make_pruner(self.search.pruner), load_if_exists=True)
            recorded = {"space": [d.describe() for d in self.search.space], "method": self.search.method,
                        "metric": self.search.metric}
            if "torchx" not in study.user_attrs:
                study.set_user_attr("torchx", recorded)
            elif study.user_attrs["torchx"] != recorded:
                raise ConfigError(f"study '{name}' in {shown_url(self.url)} was started with another search "
                                  f"({study.user_attrs['torchx']}); this session searches {recorded}: use another "
                                  f"--name, or the same search")
            self._studies[point.index] = study
        return self._studies[point.index]

    def trials(self, resume: bool) -> Iterator[Experiment]:
        """What to run: with `resume`, this folder's unfinished trials first; then new trials, drawn
        while the study has fewer than n_trials, grid point after grid point."""
        if resume:
            with locked(self.folder) as doc:
                self.tell_finished(doc)
                # (a trial whose values made a config torchx refused has no config to run: it stays failed)
                todo = [x for x in doc["experiments"] if x["state"] not in ("done", "pruned")
                        and (self.folder / "configs" / f"{x['name']}.yaml").is_file()]
            for x in todo:
                yield self.experiment(x)
        for point in self.points:
            while (drawn := self.draw(point)) is not None:
                yield from drawn

    def experiment(self, x: dict) -> Experiment:
        resolved = C.read_yaml(self.folder / "configs" / f"{x['name']}.yaml")
        return Experiment(x["index"], x["name"], x["params"], resolved, trial=x.get("trial"),
                          point=x.get("point", 0), fold=x.get("fold"))

    def draw(self, point: Point) -> list[Experiment] | None:
        """Ask the study for a new trial and add its experiments to session.yaml; None when the study
        has n_trials trials. Under the session's lock, so processes sharing the folder draw in turn."""
        trial_state = optuna().trial.TrialState
        with locked(self.folder) as doc:
            study = self.study(point)
            count = len(study.get_trials(deepcopy=False))
            if count >= self.search.n_trials:
                return None
            study.sampler = make_sampler(self.search, seed_for(self.search, point.index, count))
            trial = study.ask()
            if trial.number >= self.search.n_trials:  # a worker elsewhere drew the last one just now
                trial.set_user_attr("surplus", "drawn after the study had n_trials; never run")
                study.tell(trial, state=trial_state.FAIL)
                return None
            if trial.number != count:
                study.sampler = make_sampler(self.search, seed_for(self.search, point.index, trial.number))
            values = [suggest(trial, d) for d in self.search.space]
            trial.set_user_attr("session_folder", str(self.folder.resolve()))
            params = {**point.params, **{d.label: v for d, v in zip(self.search.space, values)}}
            base = trial_name(point, trial.number, self.width, self.search, values)
            template = copy.deepcopy(point.config)
            for d, v in zip(self.search.space, values):
                C.assign(template, d.path, v)
            seen = {x["name"] for x in doc["experiments"]}
            drawn = []
            for fold in range(self.folds.folds) if self.folds else [None]:
                index = len(doc["experiments"])
                name = folder_name(fold_name(base, fold), index, seen)
                e = Experiment(index, name, {**params, **fold_param(fold)}, {}, trial=trial.number,
                               point=point.index, fold=fold)
                record = entry(e)
                doc["experiments"].append(record)
                try:
                    e.config = checked(with_fold(template, self.folds, fold), f"trial {trial.number} ({name})",
                                       self.config_file)
                except ConfigError as err:  # these values make a config that cannot run: the trial fails
                    record.update(state="failed", error=str(err))
                    continue
                write_atomic(self.folder / "configs" / f"{name}.yaml", C.dump_yaml(e.config))
                drawn.append(e)
            if len(drawn) < len(range(self.folds.folds) if self.folds else [None]):
                study.tell(trial, state=trial_state.FAIL)
                drawn = []
        return drawn

    def env(self, e: Experiment) -> dict[str, str]:
        """What the child process of a trial needs to report to it (none for folds: a trial's folds
        would report the same steps)."""
        if e.trial is None or self.folds is not None:
            return {}
        spec = {"storage": self.url, "study": self.study_name(self.points[e.point]), "trial": e.trial,
                "metric": self.search.metric, "pruner": self.search.pruner}
        return {TRIAL_ENV: json.dumps(spec)}

    def on_finish(self, e: Experiment, state: str) -> None:
        if e.trial is None or state not in ("done", "pruned"):
            return  # a failed or interrupted trial stays open in the study: --resume runs it again
        with locked(self.folder) as doc:
            self.tell_finished(doc)

    def tell_finished(self, doc: dict) -> None:
        """Tell the study each trial of this folder whose experiments have all ended: pruned, or its value."""
        trial_state = optuna().trial.TrialState
        groups: dict[tuple[int, int], list[dict]] = {}
        for x in doc["experiments"]:
            if x.get("trial") is not None:
                groups.setdefault((x.get("point", 0), x["trial"]), []).append(x)
        for (point, number), xs in groups.items():
            if not all(x["state"] in ("done", "pruned") for x in xs):
                continue
            study = self.study(self.points[point])
            known = study.get_trials(deepcopy=False)
            if number >= len(known) or known[number].state != trial_state.RUNNING:
                continue
            if any(x["state"] == "pruned" for x in xs):
                study.tell(number, state=trial_state.PRUNED, skip_if_finished=True)
                continue
            objective = (self.search.metric, self.search.mode)
            values = [summarize(self.folder, x, objective)["best"] for x in xs]
            if None in values:  # the metric was never logged: nothing to score the trial by
                study.tell(number, state=trial_state.FAIL, skip_if_finished=True)
            else:
                study.tell(number, sum(values) / len(values), skip_if_finished=True)

"""What a session searches and how: the keys ending in `~` (each a distribution), the `search:`
section and the `cross_validation:` section, read and checked without Optuna.

    train_wrapper.args.optim_spec.args.lr~: {loguniform: [1.e-4, 1.e-1]}
    train_wrapper.args.model_spec.args.dropout~: {uniform: [0, 0.5]}
    train_wrapper.args.model_spec.args.depth~: {int: [2, 8]}
    data_module.args.batch_size~: {choice: [32, 64, 128]}
    search: {method: tpe, n_trials: 20, metric: val/acc, direction: maximize, seed: 0, pruner: median}
    cross_validation: {folds: 5, seed: 0}
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any

from torchx import config as C
from torchx.errors import ConfigError, short_repr
from torchx.registry import close_matches

KINDS = {"uniform": "a float drawn evenly from [low, high]",
         "loguniform": "a float drawn evenly on a log scale from [low, high], both > 0",
         "int": "an integer from low to high, both included",
         "choice": "one of a list of values"}
METHODS = ("random", "tpe", "grid")
PRUNERS = ("none", "median", "hyperband")
DIRECTIONS = ("maximize", "minimize")
SEARCH_KEYS = ("method", "n_trials", "metric", "direction", "seed", "pruner", "storage")
CV_KEYS = ("folds", "seed")
GRID_MAX = 100_000  # points a `grid` search may enumerate
EXAMPLE = "{loguniform: [1.e-4, 1.e-1]}"


@dataclass(frozen=True)
class Dist:
    """One search key: where it is, its short label, and its distribution."""

    path: tuple
    label: str
    kind: str
    args: tuple

    @property
    def key(self) -> str:
        return C.dotted(self.path)

    @property
    def name(self) -> str:
        """The parameter's name in the Optuna study: the dotted key without its `~` (unique, stable)."""
        return self.key[:-1]

    def grid_values(self) -> list:
        if self.kind == "choice":
            return list(self.args)
        if self.kind == "int":
            return list(range(self.args[0], self.args[1] + 1))
        raise ConfigError(f"search.method grid enumerates every value, and {self.key} is {self.kind} (a continuous "
                          f"range); use {{choice: [...]}} or {{int: [low, high]}} there, or method random or tpe")

    def describe(self) -> str:
        return f"{self.label}: {self.kind} {list(self.args)}"


@dataclass
class Search:
    """The `search:` section, checked, with its defaults filled in."""

    method: str
    n_trials: int
    metric: str
    direction: str
    seed: int
    pruner: dict  # {"name": none|median|hyperband, "args": {...}}
    storage: str | None
    space: list[Dist] = field(default_factory=list)
    sampler_args: dict = field(default_factory=dict)  # for Optuna's RandomSampler or TPESampler

    @property
    def mode(self) -> str:
        return "max" if self.direction == "maximize" else "min"

    def record(self) -> dict:
        """What session.yaml keeps of it (the storage URL is in the config, as given)."""
        return {"method": self.method, "sampler_args": self.sampler_args, "n_trials": self.n_trials,
                "metric": self.metric, "direction": self.direction, "seed": self.seed, "pruner": self.pruner}


@dataclass
class Folds:
    folds: int
    seed: int


def distributions(cfg: dict) -> list[Dist]:
    """Every `~`-key of `cfg`, checked: one bad one is one message naming it and what is valid."""
    found = C.search_keys(cfg)
    labels = C.labels([p for p, _ in found])
    return [check_distribution(path, label, value) for (path, value), label in zip(found, labels)]


def check_distribution(path: tuple, label: str, value: Any) -> Dist:
    key = C.dotted(path)
    kinds = ", ".join(KINDS)
    if not isinstance(value, dict) or len(value) != 1:
        raise ConfigError(f"{key} holds {short_repr(value)}; a key ending in '~' holds one distribution like "
                          f"{EXAMPLE} (kinds: {kinds})")
    kind, args = next(iter(value.items()))
    if kind not in KINDS:
        raise ConfigError(f"{key}: unknown distribution {kind!r}{close_matches(str(kind), list(KINDS))}; valid: "
                          f"{'; '.join(f'{k} ({what})' for k, what in KINDS.items())}")
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise ConfigError(f"{key}: choice needs a non-empty list of values, got {short_repr(args)}")
        bad = [v for v in args if v is not None and not isinstance(v, (bool, int, float, str))]
        if bad:
            raise ConfigError(f"{key}: choice value {short_repr(bad[0])} is not a number, string, boolean or null; "
                              f"Optuna draws among plain values (to choose among lists, sweep them with a '_' key)")
        if len({repr(v) for v in args}) != len(args):
            raise ConfigError(f"{key}: choice lists a value twice ({short_repr(args)})")
        return Dist(path, label, kind, tuple(args))
    number = int if kind == "int" else (int, float)
    what = "integers" if kind == "int" else "numbers"
    if not isinstance(args, list) or len(args) != 2 or not all(
            isinstance(v, number) and not isinstance(v, bool) and math.isfinite(v) for v in args):
        raise ConfigError(f"{key}: {kind} needs [low, high], two finite {what}, got {short_repr(args)} "
                          f"(e.g. {{{kind}: {'[2, 8]' if kind == 'int' else '[1.e-4, 1.e-1]'}}})")
    low, high = args
    if low >= high:
        raise ConfigError(f"{key}: {kind} [{low}, {high}] has low >= high; give [low, high] with low < high")
    if kind == "loguniform" and low <= 0:
        raise ConfigError(f"{key}: loguniform [{low}, {high}] needs both bounds > 0 (a log scale has no 0 or "
                          f"negatives); use uniform for a range that includes {low}")
    return Dist(path, label, kind, (low, high) if kind == "int" else (float(low), float(high)))


def search_settings(cfg: dict) -> Search | None:
    """The session's search, or None when the config has no `~`-key and no `search:` section."""
    space = distributions(cfg)
    section = cfg.get("search")
    if section is None and not space:
        return None
    section = checked_section("search", {} if section is None else section, SEARCH_KEYS)
    if not space:
        raise ConfigError("the config has a search: section but no key ending in '~' to search; give one a "
                          f"distribution, e.g. train_wrapper.args.optim_spec.args.lr~: {EXAMPLE}")
    method, sampler_args = named_spec(section.get("method", "tpe"), "search.method", METHODS,
                                      "{name: tpe, args: {n_startup_trials: 4}}")
    if method == "grid" and sampler_args:
        raise ConfigError(f"search.method grid takes no args, got {short_repr(sampler_args)}")
    if method not in METHODS:
        raise ConfigError(f"search.method {short_repr(method)} is not a search method"
                          f"{close_matches(str(method), METHODS)}; valid: {', '.join(METHODS)}")
    n_trials = section.get("n_trials")
    if method == "grid":
        size = math.prod(len(d.grid_values()) for d in space)
        if size > GRID_MAX:
            raise ConfigError(f"search.method grid: the space has {size} points, more than {GRID_MAX}; narrow the "
                              f"int ranges or use method random or tpe")
        n_trials = size if n_trials is None else n_trials
        if _count(n_trials) and n_trials > size:
            raise ConfigError(f"search.n_trials {n_trials} is more than the {size} points of the grid; give at most "
                              f"{size}, or leave n_trials out to run them all")
    if n_trials is None:
        raise ConfigError(f"search.n_trials is missing; method {method} draws trials until it has run n_trials of "
                          f"them: give a positive whole number, e.g. search.n_trials: 20")
    if not _count(n_trials):
        raise ConfigError(f"search.n_trials must be a positive whole number of trials, got {short_repr(n_trials)}")
    metric, direction = _metric(cfg, section)
    seed = checked_seed(section.get("seed", 0), "search.seed")
    storage = section.get("storage")
    if storage is not None and (not isinstance(storage, str) or "://" not in storage):
        raise ConfigError(f"search.storage {short_repr(storage)} is not a database URL; give one like "
                          f"postgresql://user:password@host/db or sqlite:///path/study.db, or leave it out "
                          f"for the session folder's study.db")
    return Search(method, n_trials, metric, direction, seed, pruner_spec(section.get("pruner", "none")), storage,
                  space, sampler_args)


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _metric(cfg: dict, section: dict) -> tuple[str, str]:
    """search.metric (default: checkpoint.monitor) and direction (default: from checkpoint.mode)."""
    ckpt = cfg.get("checkpoint") if isinstance(cfg.get("checkpoint"), dict) else {}
    metric = section.get("metric", ckpt.get("monitor"))
    if metric is None:
        raise ConfigError("search.metric is missing and the config has no checkpoint.monitor to default to; give "
                          "the metric each trial is scored by, e.g. search.metric: val/acc")
    if not isinstance(metric, str) or not metric:
        raise ConfigError(f"search.metric must be the name of a logged metric like val/acc, got {short_repr(metric)}")
    direction = section.get("direction")
    if direction is None:
        if metric != ckpt.get("monitor"):
            raise ConfigError(f"search.direction is missing for search.metric {metric!r}; give maximize or minimize")
        direction = "maximize" if ckpt.get("mode", "min") == "max" else "minimize"
    if direction not in DIRECTIONS:
        raise ConfigError(f"search.direction {short_repr(direction)} is not a direction"
                          f"{close_matches(str(direction), DIRECTIONS)}; valid: maximize, minimize")
    return metric, direction


def named_spec(value: Any, where: str, names: tuple[str, ...], example: str) -> tuple[Any, dict]:
    """`name`, or `{name: ..., args: {...}}`: (name, args)."""
    if isinstance(value, dict) and "name" in value and set(value) <= {"name", "args"} and \
            isinstance(value.get("args") or {}, dict):
        return value["name"], dict(value.get("args") or {})
    if isinstance(value, dict):
        raise ConfigError(f"{where} {short_repr(value)} must be a name ({', '.join(names)}) or {example}")
    return value, {}


def pruner_spec(value: Any) -> dict:
    """`median`, or `{name: median, args: {n_startup_trials: 4}}` with the arguments of Optuna's
    pruner of that name (checked against its signature when Optuna is imported)."""
    name, args = named_spec("none" if value is None else value, "search.pruner", PRUNERS,
                            "{name: median, args: {n_startup_trials: 4}}")
    spec = {"name": name, "args": args}
    name = spec["name"]
    if name not in PRUNERS:
        raise ConfigError(f"search.pruner {short_repr(name)} is not a pruner{close_matches(str(name), PRUNERS)}; "
                          f"valid: {', '.join(PRUNERS)}")
    if name == "none" and spec.get("args"):
        raise ConfigError(f"search.pruner none takes no args, got {short_repr(spec['args'])}")
    return {"name": name, "args": dict(spec.get("args") or {})}


def folds_settings(cfg: dict) -> Folds | None:
    section = cfg.get("cross_validation")
    if section is None:
        return None
    section = checked_section("cross_validation", section, CV_KEYS)
    folds = section.get("folds")
    if not isinstance(folds, int) or isinstance(folds, bool) or folds < 2:
        raise ConfigError(f"cross_validation.folds must be a whole number of folds >= 2, got {short_repr(folds)}")
    return Folds(folds, checked_seed(section.get("seed", 0), "cross_validation.seed"))


def checked_section(name: str, section: Any, keys: tuple[str, ...]) -> dict:
    """A session section: a mapping of known settings."""
    if not isinstance(section, dict):
        raise ConfigError(f"{name} must be a mapping of {', '.join(keys)}, got {short_repr(section)}")
    for key in section:
        if key not in keys:
            raise ConfigError(f"{name}.{key} is not a setting of {name}{close_matches(str(key), keys)}; valid: "
                              f"{', '.join(keys)}")
    return section


def checked_seed(seed: Any, where: str) -> int:
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed <= C.SEED_MAX:
        raise ConfigError(f"{where} must be an integer from 0 to {C.SEED_MAX}, got {short_repr(seed)}")
    return seed


def fold_args(cfg: dict, folds: Folds, fold: int) -> dict:
    """The data module arguments that select fold `fold`: `fold` and `folds`, and `fold_seed` where the
    data module takes it. A data module that takes no `fold` and `folds` cannot be cross-validated."""
    from torchx import datasets

    spec = cfg.get("data_module")
    name = spec.get("name") if isinstance(spec, dict) else None
    C.import_modules(cfg)  # a data module of the user's registers itself there
    try:
        ctor = datasets.registry.get(name)
    except ConfigError:
        return {"fold": fold, "folds": folds.folds}  # the config check names the unknown data module
    params = inspect.signature(ctor).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    if not takes_any and not {"fold", "folds"} <= params.keys():
        raise ConfigError(f"cross_validation: data module '{name}' takes no fold and folds arguments, so it cannot "
                          f"give the folds of its training data; a data module takes part by accepting `fold` (0 "
                          f"to folds-1, the fold to validate on) and `folds` (torchx's image data modules do)")
    args = {"fold": fold, "folds": folds.folds}
    if takes_any or "fold_seed" in params:
        args["fold_seed"] = folds.seed
    elif folds.seed != 0:
        raise ConfigError(f"cross_validation.seed {folds.seed}: data module '{name}' takes no fold_seed argument, so "
                          f"it draws its folds its own way; leave cross_validation.seed out")
    return args


def strip(cfg: dict) -> dict:
    """A session's config without the sections that only the session reads."""
    return {k: v for k, v in cfg.items() if k not in ("search", "cross_validation")}

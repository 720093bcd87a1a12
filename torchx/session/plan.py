"""A session's plan: whether a command is a session, its experiments (every combination, resolved
and checked), their folder names, and how the jobs share the GPUs and cores."""

from __future__ import annotations

import argparse
import copy
import os
import re
from dataclasses import dataclass
from pathlib import Path

from torchx import config as C
from torchx.errors import ConfigError
from torchx.run import check_run_name, check_save_dir
from torchx.session import space
from torchx.session.document import SESSION_FILE

NAME_MAX = 200  # bytes of an experiment's folder name (file systems allow 255)


@dataclass
class Experiment:
    index: int
    name: str  # its folder name under the session directory
    params: dict  # label -> value of each sweep key (and search key, and `fold`)
    config: dict  # resolved and checked
    trial: int | None = None  # a search's trial number (in the study of grid point `point`)
    point: int = 0
    fold: int | None = None


@dataclass
class Point:
    """One combination of the grid keys (the whole config when there are none): a search runs a
    study of its own at each."""

    index: int
    name: str
    params: dict
    config: dict  # as given: interpolations unresolved, search keys still in it


def session_name(args: argparse.Namespace) -> str | None:
    return args.name if args.name is not None else (Path(args.config).stem if args.config else None)


def is_session(args: argparse.Namespace) -> bool:
    """A session: `SAVE_DIR/NAME` holds session.yaml, or the config (with overrides) has sweep keys,
    search keys or a `search:` or `cross_validation:` section."""
    name = session_name(args)
    if name is None:
        return False  # the single-run path says what is missing
    check_run_name(name)
    check_save_dir(args.save_dir)
    folder = Path(args.save_dir) / name
    if (folder / SESSION_FILE).is_file():
        return True
    if args.resume and (folder / "config.yaml").is_file():
        return False  # resuming a single run: its saved config decides, --config is not read
    if not args.config:
        return False
    return has_session_keys(C.apply_overrides(C.load(args.config), args.overrides))


def has_session_keys(cfg: dict) -> bool:
    return bool(C.sweep_keys(cfg) or C.search_keys(cfg) or cfg.get("search") is not None
                or cfg.get("cross_validation") is not None)


def refuse_session_options(args: argparse.Namespace) -> None:
    """--jobs, --only and --worker mean nothing to a single run."""
    for flag, value in (("--jobs", args.jobs), ("--only", args.only), ("--worker", args.worker or None)):
        if value is not None:
            what = f"'{args.config}' has none" if args.config else "and there is no session to continue"
            flag = flag if value is True else f"{flag} {value}"
            raise ConfigError(f"{flag} applies to a session, a config with sweep keys (keys ending in "
                              f"'_', like lr_: [0.1, 0.01]) or search keys (ending in '~'); {what}")



def plan(cfg: dict, config_file: str | None = None) -> list[Experiment]:
    """Every combination (times every fold, with `cross_validation`), resolved, its imports imported
    and checked: a typo fails here, before anything exists on disk, naming the experiment it is in."""
    folds = space.folds_settings(cfg)
    experiments: list[Experiment] = []
    seen: set[str] = set()
    for point in points(cfg):
        for fold in range(folds.folds) if folds else [None]:
            i = len(experiments)
            name = fold_name(point.name, fold)
            c = with_fold(point.config, folds, fold)
            experiments.append(Experiment(i, folder_name(name, i, seen), {**point.params, **fold_param(fold)},
                                          checked(c, f"experiment {i} ({name})", config_file), point=point.index,
                                          fold=fold))
    return experiments


def points(cfg: dict) -> list[Point]:
    """The combinations of the grid keys, their configs as given (search keys still in them)."""
    return [Point(i, name, params, c) for i, (name, params, c) in enumerate(C.combinations(space.strip(cfg)))]


def checked(c: dict, where: str, config_file: str | None = None) -> dict:
    """One experiment's config resolved, its imports imported, and checked; a mistake names `where`."""
    try:
        resolved = C.resolve(c)
        C.import_modules(resolved)
        C.check(resolved, config_file=config_file)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None
    return resolved


def with_fold(c: dict, folds: space.Folds | None, fold: int | None) -> dict:
    """`c` with the data module arguments that select fold `fold` (a copy; `c` itself without folds)."""
    if folds is None or fold is None:
        return c
    c = copy.deepcopy(c)
    if isinstance(c.get("data_module"), dict):  # else the config check says what is wrong
        c["data_module"]["args"] = {**(c["data_module"].get("args") or {}), **space.fold_args(c, folds, fold)}
    return c


def fold_name(name: str, fold: int | None) -> str:
    return name if fold is None else f"{name},fold={fold}" if name else f"fold={fold}"


def fold_param(fold: int | None) -> dict:
    return {} if fold is None else {"fold": fold}


_UNSAFE = re.compile(r"[^A-Za-z0-9_.+\-\[\]{}:,=#@%]")


def folder_name(name: str, index: int, seen: set[str]) -> str:
    """The combination's name as a folder name: no '/', not hidden, short enough, unique."""
    safe = _UNSAFE.sub("_", name).lstrip(".-") or f"experiment{index}"
    if len(safe.encode()) > NAME_MAX:
        safe = safe[: NAME_MAX - 12] + f",#{index}"
    if safe in seen:
        safe = f"{safe},#{index}"
    seen.add(safe)
    return safe


def pick(only: str, experiments: list[Experiment]) -> int:
    """`--only K`: a 0-based index (as SLURM_ARRAY_TASK_ID counts with --array=0-N) or a name."""
    if re.fullmatch(r"[0-9]+", only.strip()) and int(only) < len(experiments):
        return int(only)
    for e in experiments:
        if only == e.name:
            return e.index
    names = ", ".join(e.name for e in experiments[:8]) + (", ..." if len(experiments) > 8 else "")
    raise ConfigError(f"--only {only!r} is not an experiment of this session; give an index from 0 to "
                      f"{len(experiments) - 1} or one of the names: {names}")


def parse_jobs(text: str | None) -> int | None:
    if text is None:
        return None
    if not re.fullmatch(r"\s*[0-9]+\s*", text) or int(text) < 1:
        raise ConfigError(f"--jobs {text!r} must be a positive whole number of experiments to run at once, like 2")
    return int(text)


def gpu_groups(gpus: list[int] | None, jobs: int, prog: str) -> list[list[int] | None]:
    """The devices of each job slot: the --gpu list split into `jobs` equal groups."""
    if not gpus:
        return [None] * jobs
    if jobs > len(gpus) or len(gpus) % jobs:
        fits = [str(n) for n in range(1, len(gpus) + 1) if len(gpus) % n == 0]
        raise ConfigError(f"--jobs {jobs} with --gpu {','.join(map(str, gpus))}: every job gets its own GPUs, "
                          f"the same number each; use --jobs {' or '.join(fits)}")
    size = len(gpus) // jobs
    if size > 1 and prog == "train.py":
        raise ConfigError(f"--jobs {jobs} with --gpu {','.join(map(str, gpus))} gives each experiment {size} GPUs, "
                          f"and train.py trains on one device; use --jobs {len(gpus)}, or train_pl.py for DDP")
    return [gpus[i * size:(i + 1) * size] for i in range(jobs)]


def cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


"""A session's plan: whether a command is a session, its experiments (every combination, resolved
and checked), their folder names, and how the jobs share the GPUs and cores."""

from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path

from torchx import config as C
from torchx.errors import ConfigError
from torchx.run import check_run_name, check_save_dir
from torchx.session.document import SESSION_FILE

NAME_MAX = 200  # bytes of an experiment's folder name (file systems allow 255)


@dataclass
class Experiment:
    index: int
    name: str  # its folder name under the session directory
    params: dict  # label -> value of each sweep key
    config: dict  # resolved and checked



def session_name(args: argparse.Namespace) -> str | None:
    return args.name if args.name is not None else (Path(args.config).stem if args.config else None)


def is_session(args: argparse.Namespace) -> bool:
    """A session: `SAVE_DIR/NAME` holds session.yaml, or the config (with overrides) has sweep keys."""
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
    return bool(C.sweep_keys(C.apply_overrides(C.load(args.config), args.overrides)))


def refuse_session_options(args: argparse.Namespace) -> None:
    """--jobs and --only mean nothing to a single run."""
    for flag, value in (("--jobs", args.jobs), ("--only", args.only)):
        if value is not None:
            what = f"'{args.config}' has none" if args.config else "and there is no session to continue"
            raise ConfigError(f"{flag} {value} applies to a session, a config with sweep keys (keys ending in "
                              f"'_', like lr_: [0.1, 0.01]); {what}")



def plan(cfg: dict, config_file: str | None = None) -> list[Experiment]:
    """Every combination, resolved, its imports imported and checked: a typo fails here, before
    anything exists on disk, naming the experiment it is in."""
    experiments, seen = [], set()
    for i, (name, params, c) in enumerate(C.combinations(cfg)):
        try:
            resolved = C.resolve(c)
            C.import_modules(resolved)
            C.check(resolved, config_file=config_file)
        except ConfigError as e:
            raise ConfigError(f"experiment {i} ({name}): {e}") from None
        experiments.append(Experiment(i, folder_name(name, i, seen), params, resolved))
    return experiments


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


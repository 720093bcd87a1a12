"""A run directory read back: its config, a checkpoint's weights in the model, its data and logs.

    run = torchx.load_run("save/digits")            # ckpt="best" | "last" | a path
    run.model(x)                                   # in eval mode, with the checkpoint's weights
    data = run.data_module()                       # the run's data module, set up
    run.metrics[-1], run.results["test"], run.provenance["git"]

    model = torchx.load_model("save/digits/ckpt/last.ckpt")   # the checkpoint alone

Every checkpoint carries the run's resolved config (ckpt["callbacks"]["torchx"]["config"]), so a
file copied out of its run still rebuilds its model. A module named under `imports:` that cannot
be imported where this runs is imported from the run's `src/` snapshot instead, and a message says
so. The after-training commands (`python -m torchx test|validate|predict|export|rerun`) stand on
the same functions, so a bad run directory or checkpoint is the same ConfigError everywhere.
"""

from __future__ import annotations

import csv
import importlib
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchx import config as C
from torchx.errors import ConfigError
from torchx.run import checkpoints, config_diff, inspect_checkpoint, is_run_dir, run_args

CKPT_NAMES = ("best", "last")


def run_dir_of(path: str | Path) -> Path:
    """`path` as a run directory (it holds config.yaml), or a message saying what it is instead."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"'{p}' does not exist; give a run directory, the folder train_pl.py or train.py "
                          f"wrote (save/<name> by default)")
    if p.is_file():
        if p.suffix == ".ckpt" and is_run_dir(p.parent.parent):
            raise ConfigError(f"'{p}' is a checkpoint file; give its run directory and the checkpoint: "
                              f"{p.parent.parent} --ckpt {p}")
        raise ConfigError(f"'{p}' is a file, not a run directory (a folder holding config.yaml, ckpt/, ...)")
    if (p / "session.yaml").is_file():
        runs = sorted(q.name for q in p.iterdir() if q.is_dir() and is_run_dir(q))
        shown = ", ".join(runs[:6]) + (f" (+{len(runs) - 6} more)" if len(runs) > 6 else "")
        raise ConfigError(f"'{p}' is a session folder, not one run; give one of its experiments' run "
                          f"directories, e.g. {p / runs[0] if runs else p / '<experiment>'}"
                          + (f" (there: {shown})" if runs else ""))
    if not is_run_dir(p):
        raise ConfigError(f"'{p}' is not a run directory: it has no config.yaml (train_pl.py and train.py write "
                          f"one into every run directory, save/<name> by default)")
    return p


def pick_checkpoint(run_dir: Path, ckpt: str | Path = "best") -> tuple[Path, str]:
    """The checkpoint file `ckpt` names in `run_dir` ('best', 'last' or a path) and a short label of
    it for file names ('best', 'last', or the file's stem)."""
    found = checkpoints(run_dir)
    if str(ckpt) not in CKPT_NAMES:
        path = Path(ckpt)
        if path.is_dir():
            raise ConfigError(f"--ckpt '{path}' is a folder; give a checkpoint file, 'best' or 'last'")
        if not path.is_file():
            here = f" (checkpoints in {run_dir / 'ckpt'}: {', '.join(p.name for p in found)})" if found else ""
            raise ConfigError(f"--ckpt '{path}' does not exist; give a checkpoint file, 'best' or 'last'{here}")
        return path, path.stem
    if not found:
        raise ConfigError(f"'{run_dir}' has no checkpoint: its ckpt/ folder holds no .ckpt file (the run stopped "
                          f"before its first one, or ran with enable_checkpointing off); train it first: "
                          f"python train_pl.py {run_args(run_dir)} --resume")
    last = run_dir / "ckpt" / "last.ckpt"
    if ckpt == "last":
        if not last.is_file():
            raise ConfigError(f"'{run_dir}' has no ckpt/last.ckpt (checkpoint.save_last was off); pick one with "
                              f"--ckpt PATH: {', '.join(str(p) for p in found)}")
        return last, "last"
    best, named = best_checkpoint(run_dir)
    if named and best is None:
        raise ConfigError(f"--ckpt best: the run ranked {Path(named).name} best, but {run_dir / 'ckpt'} no longer "
                          f"has it; use --ckpt last, or --ckpt PATH with one of: {', '.join(str(p) for p in found)}")
    if best is None:
        monitor = ((C.read_yaml(run_dir / "config.yaml").get("checkpoint") or {}).get("monitor"))
        why = (f"checkpoint.monitor is {monitor!r}, but no checkpoint was ranked by it yet" if monitor else
               "the run had no checkpoint.monitor, so no checkpoint was ranked")
        raise ConfigError(f"--ckpt best: '{run_dir}' has no best checkpoint ({why}); use --ckpt last, or "
                          f"--ckpt PATH with one of: {', '.join(str(p) for p in found)}")
    return best, "best"


def best_checkpoint(run_dir: Path) -> tuple[Path | None, str | None]:
    """The checkpoint the run ranked best: results.json's best_model_path, else the one last.ckpt's
    ModelCheckpoint state names (a run stopped before the end). Looked up in the run's own ckpt/
    folder by name, so a run directory that was moved or copied still finds it. Returns the file
    (None if missing) and the path the run recorded (None if it ranked none)."""
    named = (read_json(run_dir / "results.json") or {}).get("best_model_path")
    if not named and (run_dir / "ckpt" / "last.ckpt").is_file():
        import torch

        try:
            state = torch.load(run_dir / "ckpt" / "last.ckpt", map_location="cpu", weights_only=True, mmap=True)
        except Exception:  # unreadable: say so when it is loaded, not here
            return None, None
        for key, value in (state.get("callbacks") or {}).items():
            if str(key).startswith("ModelCheckpoint") and isinstance(value, dict) and value.get("monitor"):
                named = value.get("best_model_path") or None
                break
    if not named:
        return None, None
    path = run_dir / "ckpt" / Path(named).name
    return (path if path.is_file() else None), named


def read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """metrics.csv's rows, numbers as floats (step and epoch as ints), empty cells left out."""
    path = run_dir / "metrics.csv"
    if not path.is_file():
        return []
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            out: dict[str, Any] = {}
            for key, value in row.items():
                if value in ("", None) or key is None:
                    continue
                try:
                    out[key] = int(value) if key in ("step", "epoch") else float(value)
                except ValueError:
                    out[key] = value
            rows.append(out)
    return rows


def import_run_modules(cfg: dict, run_dir: Path | None, quiet: bool = False) -> list[str]:
    """Import the config's `imports:` modules; one that is not importable here comes from the run's
    src/ snapshot, which is what the run trained with. Returns the files imported."""
    names = cfg.get("imports") or []
    names = [names] if isinstance(names, str) else names
    snapshot = run_dir / "src" if run_dir is not None else None
    files: list[str] = []
    for name in names:
        try:
            files += C.import_modules({"imports": [name]})
            continue
        except ConfigError as e:
            if snapshot is None or not snapshot.is_dir() or "no module named" not in str(e):
                raise
            first = e
        if str(snapshot) not in sys.path:
            sys.path.append(str(snapshot))  # after everything else: the installed torchx stays the one used
        importlib.invalidate_caches()
        try:
            imported = C.import_modules({"imports": [name]})
        except ConfigError:
            raise ConfigError(f"{first}; the run's snapshot {snapshot} does not have it either") from None
        files += imported
        if not quiet:
            print(f"imports: '{name}' is not importable here; using the run's snapshot copy "
                  f"{imported[0] if imported else snapshot}", file=sys.stderr)
    return files


def checkpoint_config(ckpt: dict, path: Path) -> dict:
    """The run config a checkpoint carries; for one written before checkpoints carried it, the
    config.yaml of the run directory it sits in."""
    state = (ckpt.get("callbacks") or {}).get("torchx") or {}
    if isinstance(state.get("config"), dict):
        return state["config"]
    beside = path.resolve().parent.parent / "config.yaml"
    if beside.is_file():
        return C.read_yaml(beside)
    raise ConfigError(f"'{path}' carries no config (it was written by an older torchx) and is not inside a run "
                      f"directory; load it with torchx.load_run(RUN_DIR, ckpt='{path}')")


@dataclass
class LoadedRun:
    """A run directory with one checkpoint's weights loaded (see load_run)."""

    dir: Path
    config: dict
    ckpt_path: Path
    ckpt_label: str
    wrapper: Any
    metrics: list[dict[str, Any]] = field(default_factory=list)
    results: dict | None = None
    provenance: dict | None = None

    @property
    def model(self) -> Any:
        """The wrapper's network (`wrapper.model`), or the wrapper itself when it has none by that name."""
        return model_of(self.wrapper)

    def data_module(self, stage: str | None = "test", **args: Any) -> Any:
        """The run's data module, with `args` replacing its configured ones, prepared and set up for
        `stage` ('fit', 'validate', 'test', 'predict'; None: constructed only)."""
        from torchx import build

        cfg = self.config
        if args:
            cfg = {**cfg, "data_module": {**cfg["data_module"],
                                          "args": {**(cfg["data_module"].get("args") or {}), **args}}}
        data = build.data_module(cfg)
        if stage is not None:
            data.prepare_data()
            data.setup(stage)
        return data

    def __repr__(self) -> str:
        return (f"LoadedRun('{self.dir}', ckpt='{self.ckpt_path}', model={type(self.model).__name__}, "
                f"{len(self.metrics)} metrics rows)")


def model_of(wrapper: Any) -> Any:
    import torch

    inner = getattr(wrapper, "model", None)
    return inner if isinstance(inner, torch.nn.Module) else wrapper


def run_config(run_dir: Path, overrides: list[str] = ()) -> tuple[dict, list[str]]:
    """The run's saved config with `overrides` applied, and the lines saying what they changed."""
    saved = C.read_yaml(run_dir / "config.yaml")
    cfg = C.resolve(C.apply_overrides(saved, list(overrides))) if overrides else saved
    return cfg, config_diff(saved, cfg)


def build_loaded(run_dir: Path | None, cfg: dict, path: Path, ckpt: dict, what: str = "--ckpt") -> Any:
    """Import, check and build the config's wrapper and load the checkpoint's weights into it (eval mode)."""
    from torchx import build
    from torchx.run import check_fits

    import_run_modules(cfg, run_dir)
    # where the run's metrics went does not matter to loading it: no tracker package is needed
    C.check({k: v for k, v in cfg.items() if k not in ("loggers", "system_metrics")})
    if C.data_refs(cfg):  # ${data:...} left in a config (one written by hand): answer them first
        C.resolve_data_refs(cfg, build.data_module(cfg))
    with build.reported_as(f"train_wrapper {cfg['train_wrapper'].get('name')}"):
        wrapper = build.wrapper(cfg)
    check_fits(ckpt, wrapper.state_dict(), path, what)
    wrapper.load_state_dict(ckpt["state_dict"])
    wrapper.eval()
    return wrapper


def load_run(path: str | Path, ckpt: str | Path = "best", overrides: list[str] = (),
             trust_checkpoint: bool = False) -> LoadedRun:
    """Read the run directory `path` back, with the weights of checkpoint `ckpt` ('best': the one
    the run ranked best, 'last', or a file) in its model, from any working directory.

    `overrides` are KEY=VALUE lines applied to the saved config, as on the command line."""
    run_dir = run_dir_of(path)
    cfg, _ = run_config(run_dir, overrides)
    ckpt_path, label = pick_checkpoint(run_dir, ckpt)
    loaded = inspect_checkpoint(ckpt_path, trust=trust_checkpoint, what="--ckpt")
    wrapper = build_loaded(run_dir, cfg, ckpt_path, loaded)
    return LoadedRun(dir=run_dir, config=cfg, ckpt_path=ckpt_path, ckpt_label=label, wrapper=wrapper,
                     metrics=read_metrics(run_dir), results=read_json(run_dir / "results.json"),
                     provenance=read_json(run_dir / "provenance.json"))


def load_model(ckpt_path: str | Path, trust_checkpoint: bool = False, wrapper: bool = False) -> Any:
    """The model a checkpoint file holds, built from the config it carries, in eval mode with its
    weights (`wrapper=True`: the whole training wrapper)."""
    path = Path(ckpt_path)
    if not path.is_file():
        raise ConfigError(f"checkpoint '{path}' does not exist" if not path.is_dir() else
                          f"'{path}' is a folder; torchx.load_model takes a checkpoint file (for a run directory "
                          f"use torchx.load_run)")
    loaded = inspect_checkpoint(path, trust=trust_checkpoint, what="checkpoint")
    cfg = checkpoint_config(loaded, path)
    run_dir = path.resolve().parent.parent
    built = build_loaded(run_dir if is_run_dir(run_dir) else None, cfg, path, loaded, what="checkpoint")
    return built if wrapper else model_of(built)

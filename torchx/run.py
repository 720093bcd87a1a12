"""The run directory `<save_dir>/<name>/`: naming, resume lookup, code snapshot, provenance.

Shared by train_pl.py and train.py. Only global rank 0 writes; every rank computes the same
path from --save-dir and --name, so they agree without talking to each other. An existing
directory is never overwritten: a new run claims its directory with an atomic mkdir.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from torchx.errors import ConfigError

SNAPSHOT_MAX_BYTES = 1_000_000  # files larger than this are not copied into src/
SNAPSHOT_SKIP = {"__pycache__", ".git", "load", "save", ".pytest_cache", ".ruff_cache", "lightning_logs"}
PACKAGES = ("torch", "torchvision", "pytorch-lightning", "torchmetrics", "omegaconf", "tensorboardX",
            "numpy", "PyYAML")


def is_rank_zero() -> bool:
    """Whether this process is global rank 0, as the launchers (Lightning, torchrun, SLURM) announce it."""
    return all(os.environ.get(var, "0") == "0" for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"))


@dataclass
class Run:
    """Where a run lives and how it starts: fresh, or resumed from `ckpt_path`."""

    dir: Path
    config: dict
    ckpt_path: Path | None = None
    config_file: Path | None = None
    imported_files: list[str] = field(default_factory=list)
    resumes: int = 0  # how many times this directory was resumed before this start
    resume_step: int | None = None  # the logging step the checkpoint was taken at; later logs are replayed
    trust_checkpoint: bool = False  # load --resume with full unpickling (only for files one trusts)
    ckpt: dict | None = None  # the --resume checkpoint, memory-mapped

    @property
    def ckpt_dir(self) -> Path:
        return self.dir / "ckpt"

    @property
    def is_resume(self) -> bool:
        return self.ckpt_path is not None


def locate(save_dir: str, name: str, resume: str | bool | None) -> tuple[Path, Path | None]:
    """The run directory and the checkpoint to resume from; refuses to reuse a directory silently."""
    run_dir = Path(save_dir) / name
    if Path(save_dir).exists() and not Path(save_dir).is_dir():
        raise ConfigError(f"--save-dir '{save_dir}' is a file, not a folder; pick another --save-dir")
    if not resume:
        if run_dir.exists() and is_rank_zero():
            raise ConfigError(f"run directory '{run_dir}' already exists; torchx never overwrites a run. "
                              f"Continue it with --resume, or start a new one with --name <other name>")
        return run_dir, None
    if resume is True:
        last = run_dir / "ckpt" / "last.ckpt"
        if not last.is_file():
            found = sorted(p.name for p in (run_dir / "ckpt").glob("*.ckpt")) if run_dir.is_dir() else []
            hint = (f"checkpoints there: {', '.join(found)}; pass one with --resume PATH" if found
                    else "there is nothing to resume; drop --resume to start a new run")
            raise ConfigError(f"--resume: no checkpoint '{last}' ({hint})")
        return run_dir, last
    ckpt = Path(resume)
    if not ckpt.is_file():
        raise ConfigError(f"--resume: checkpoint '{ckpt}' does not exist")
    return run_dir, ckpt


def inspect_checkpoint(path: Path, trust: bool = False) -> dict:
    """Open a checkpoint (memory-mapped; weights only unless `trust`) and check it has what
    resume needs and was written by a compatible torchx."""
    import pickle
    import zipfile

    import torch

    import torchx

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=not trust, mmap=True)
    except pickle.UnpicklingError as e:  # readable, but holds objects beyond tensors and plain data
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"--resume: '{path}' holds Python objects that only full unpickling can load, and "
                          f"unpickling runs code from the file ({first[:200]}). If you trust where it came "
                          f"from, add --trust-checkpoint") from None
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError) as e:  # truncated, not a zip, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"--resume: '{path}' is not a readable PyTorch checkpoint; it may be truncated or "
                          f"not a checkpoint at all ({reason[:200]})") from None
    if not isinstance(ckpt, dict):
        raise ConfigError(f"--resume: '{path}' holds a {type(ckpt).__name__}, not a training checkpoint")
    missing = [k for k in ("state_dict", "epoch", "global_step", "optimizer_states") if k not in ckpt]
    if missing:
        raise ConfigError(f"--resume: '{path}' is not a training checkpoint (missing {', '.join(missing)}); "
                          f"resume needs one written by train_pl.py or train.py")
    written_by = ((ckpt.get("callbacks") or {}).get("torchx") or {}).get("version")
    if written_by and written_by.split(".")[:2] != torchx.__version__.split(".")[:2]:
        raise ConfigError(f"--resume: '{path}' was written by torchx {written_by}; this is torchx "
                          f"{torchx.__version__}, whose checkpoints differ. Resume it with torchx {written_by}")
    return ckpt


def check_fits(ckpt: dict, model_state: dict, path: Path) -> None:
    """The checkpoint's weights must match the model the config builds, key for key, shape for shape."""
    saved = ckpt["state_dict"]
    missing = sorted(set(model_state) - set(saved))
    unexpected = sorted(set(saved) - set(model_state))
    shapes = sorted(k for k in set(saved) & set(model_state) if tuple(saved[k].shape) != tuple(model_state[k].shape))
    if missing or unexpected or shapes:
        def some(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" (+{len(keys) - 8} more)" if len(keys) > 8 else "")

        parts = [f"missing from the checkpoint: {some(missing)}" if missing else "",
                 f"not in this model: {some(unexpected)}" if unexpected else "",
                 "different shapes: " + some([f"{k} {list(saved[k].shape)} vs {list(model_state[k].shape)}"
                                              for k in shapes]) if shapes else ""]
        raise ConfigError(f"--resume: '{path}' is from another model than this config builds; "
                          + "; ".join(p for p in parts if p))


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """`write(f)` into a temporary file beside `path`, flushed and fsynced, then renamed over
    `path` and the folder fsynced: a crash or kill -9 at any moment leaves the old file or the
    new one, whole, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)  # the rename itself survives a power cut
    finally:
        os.close(fd)


def logging_step(ckpt: dict) -> int:
    """The first logging step a resume from `ckpt` writes again: what was logged from it on by
    the run that wrote `ckpt` is dropped (TensorBoard's purge_step, metrics.csv's drop_from).

    That is the count of batches that stepped (under manual optimization global_step counts
    every optimizer's steps instead). A checkpoint taken after a training batch (a step
    checkpoint, or one after a validation inside the epoch) is written before Lightning counts
    that batch: its count is one short of global_step, and what was logged at that step (the
    validation, the step's train loss) belongs to the checkpoint, so the next step is the first
    to drop."""
    loop = (ckpt.get("loops") or {}).get("fit_loop") or {}
    stepped = loop.get("epoch_loop.state_dict", {}).get("_batches_that_stepped")
    if stepped is None:
        return int(ckpt["global_step"])
    return int(stepped) + 1 if int(stepped) + 1 == ckpt["global_step"] else int(stepped)


def saved_config(run_dir: Path) -> dict | None:
    path = run_dir / "config.yaml"
    if not path.is_file():
        return None
    from torchx.config import read_yaml

    return read_yaml(path)


def config_diff(old: dict, new: dict, prefix: str = "") -> list[str]:
    """Lines `key: old -> new` for every leaf that differs."""
    lines = []
    for key in sorted(set(old) | set(new), key=str):
        a, b, k = old.get(key, "<absent>"), new.get(key, "<absent>"), f"{prefix}{key}"
        if isinstance(a, dict) and isinstance(b, dict):
            lines += config_diff(a, b, k + ".")
        elif a != b:
            lines.append(f"{k}: {a!r} -> {b!r}")
    return lines


def claim(run: Run) -> None:
    """Rank 0: create the run directory (atomically for a new run) and record how it started."""
    if not is_rank_zero():
        return
    if run.is_resume and run.dir.exists():
        run.resumes = len(list(run.dir.glob("provenance*.json")))
        suffix = f"-resume-{run.resumes}"
        for stale in run.ckpt_dir.glob(".*.tmp"):  # half-written by a process that was killed
            stale.unlink()
    else:
        try:
            run.dir.parent.mkdir(parents=True, exist_ok=True)
            run.dir.mkdir()
        except FileExistsError:
            raise ConfigError(f"run directory '{run.dir}' was created by another process just now; "
                              f"start again with another --name") from None
        except OSError as e:
            raise ConfigError(f"cannot create run directory '{run.dir}': {e.strerror}") from None
        suffix = ""
        snapshot(run)
    _write_yaml(run.dir / f"config{suffix}.yaml", run.config)
    (run.dir / f"provenance{suffix}.json").write_text(json.dumps(provenance(run), indent=2) + "\n")
    run.ckpt_dir.mkdir(exist_ok=True)


def _write_yaml(path: Path, data: Any) -> None:
    from torchx.config import dump_yaml  # quotes what YAML 1.2 would read back as another type

    path.write_text(dump_yaml(data))


def project_root() -> Path:
    """The folder holding train_pl.py: beside the torchx package in a checkout, else the
    entry script's folder, else the working directory."""
    import torchx

    script = Path(sys.argv[0]).resolve().parent if sys.argv and sys.argv[0] else None
    for folder in (Path(torchx.__file__).resolve().parent.parent, script, Path.cwd()):
        if folder is not None and (folder / "train_pl.py").is_file():
            return folder
    return Path.cwd()


def snapshot(run: Run) -> None:
    """Copy the code that runs into src/: torchx, entry points, configs, imported user modules."""
    import torchx

    src, root = run.dir / "src", project_root()
    _copy_tree(Path(torchx.__file__).parent, src / "torchx")
    for entry in ("train_pl.py", "train.py"):
        if (root / entry).is_file():
            shutil.copy2(root / entry, src / entry)
    if (root / "configs").is_dir():
        _copy_tree(root / "configs", src / "configs")
    if run.config_file and run.config_file.is_file():
        shutil.copy2(run.config_file, src / run.config_file.name)
    for file in run.imported_files:
        path = Path(file).resolve()
        folder = path.parent if path.name == "__init__.py" else None
        try:
            rel = (folder or path).relative_to(root)
        except ValueError:
            rel = Path((folder or path).name)
        if folder:
            _copy_tree(folder, src / rel)
        elif path.stat().st_size <= SNAPSHOT_MAX_BYTES:
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / rel)


def _copy_tree(source: Path, dest: Path) -> None:
    for path in sorted(source.rglob("*")):
        rel = path.relative_to(source)
        if any(part in SNAPSHOT_SKIP for part in rel.parts) or not path.is_file():
            continue
        if path.stat().st_size > SNAPSHOT_MAX_BYTES:
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest / rel)


def provenance(run: Run) -> dict:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    import torchx

    versions["torchx"] = torchx.__version__
    return {
        "command": [sys.executable, *sys.argv],
        "cwd": os.getcwd(),
        "start_time": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "versions": versions,
        "seed": run.config.get("seed"),
        "resumed_from": str(run.ckpt_path) if run.ckpt_path else None,
        "git": git_state(run, project_root()),
    }


def git_state(run: Run, root: Path) -> dict | None:
    """Commit and dirty diff of the checkout the code runs from; the diff goes to src/git.diff."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return None
    diff = git("diff", "HEAD") or ""
    if diff:
        (run.dir / "src").mkdir(exist_ok=True)
        (run.dir / "src" / "git.diff").write_text(diff)
    return {"commit": commit.strip(), "dirty": bool(diff), "diff_file": "src/git.diff" if diff else None}

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
import shlex
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

from torchx.errors import ConfigError, first_line

SNAPSHOT_MAX_BYTES = 1_000_000  # files larger than this are not copied into src/
DEFAULT_SAVE_DIR = "./save"  # --save-dir when none is given
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
    restart: bool = False  # --resume of a run with no checkpoint: it starts again in its own directory
    data_record: str | None = None  # data.txt: what data the run sees (build.data_record)
    launch: dict | None = None  # how its processes were started (strategy, cluster environment, world size)

    @property
    def ckpt_dir(self) -> Path:
        return self.dir / "ckpt"

    @property
    def is_resume(self) -> bool:
        return self.ckpt_path is not None


def locate(save_dir: str, name: str, resume: str | bool | None) -> tuple[Path, Path | None]:
    """The run directory and the checkpoint to resume from; refuses to reuse a directory silently.

    A bare --resume of a run that stopped before its first checkpoint gives no checkpoint: the run
    restarts in place (see `claim`), its earlier files kept under attempts/."""
    run_dir = Path(save_dir) / name
    if Path(save_dir).exists() and not Path(save_dir).is_dir():
        raise ConfigError(f"--save-dir '{save_dir}' is a file, not a folder; pick another --save-dir")
    if not resume:
        if run_dir.exists() and is_rank_zero():
            if is_run_dir(run_dir) and not checkpoints(run_dir):
                raise ConfigError(f"run directory '{run_dir}' already exists and has no checkpoint (it stopped "
                                  f"before its first one); torchx never overwrites a run. Restart it in place with "
                                  f"--resume (its files are kept under {run_dir / 'attempts'}), or start a new one "
                                  f"with --name <other name>")
            raise ConfigError(f"run directory '{run_dir}' already exists; torchx never overwrites a run. "
                              f"Continue it with --resume, or start a new one with --name <other name>")
        return run_dir, None
    if resume is True:
        last = run_dir / "ckpt" / "last.ckpt"
        if last.is_file():
            return run_dir, last
        if not run_dir.is_dir():
            raise ConfigError(f"--resume: there is no run '{run_dir}' to resume; drop --resume to start it")
        if not is_run_dir(run_dir):
            raise ConfigError(f"--resume: '{run_dir}' is not a run directory (it has no config.yaml); pick the "
                              f"run with --name and --save-dir")
        found = checkpoints(run_dir)
        if found:
            raise ConfigError(f"--resume: no checkpoint '{last}' (checkpoints there: "
                              f"{', '.join(p.name for p in found)}; pass one with --resume PATH)")
        return run_dir, None  # nothing to continue from: restart in place
    ckpt = Path(resume)
    if ckpt.is_dir():
        hint = f", or continue that run with --name {ckpt.name} --resume" if is_run_dir(ckpt) else ""
        raise ConfigError(f"--resume: '{ckpt}' is a folder; --resume PATH takes a checkpoint file such as "
                          f"{ckpt / 'ckpt' / 'last.ckpt' if is_run_dir(ckpt) else ckpt / 'last.ckpt'}{hint}")
    if not ckpt.is_file():
        raise ConfigError(f"--resume: checkpoint '{ckpt}' does not exist")
    return run_dir, ckpt


def run_args(run_dir: Path) -> str:
    """The arguments that name `run_dir` again, for a command a message suggests: --name, and
    --save-dir unless it is the default."""
    save = "" if run_dir.parent == Path(DEFAULT_SAVE_DIR) else f" --save-dir {shlex.quote(str(run_dir.parent))}"
    return f"--name {shlex.quote(run_dir.name)}{save}"


def is_run_dir(path: Path) -> bool:
    return (path / "config.yaml").is_file()


def checkpoints(run_dir: Path) -> list[Path]:
    return sorted((run_dir / "ckpt").glob("*.ckpt")) if (run_dir / "ckpt").is_dir() else []


def training_done(ckpt: dict, cfg: dict) -> bool:
    """Whether resuming `ckpt` under `cfg` leaves nothing to train (max_steps or max_epochs reached,
    as pl.Trainer and train.py decide it)."""
    params = cfg.get("trainer_params") or {}
    max_steps = params.get("max_steps", -1)
    max_epochs = params.get("max_epochs")
    if max_epochs is None:
        max_epochs = -1 if max_steps != -1 else 1000  # Lightning's default when neither is set
    if max_steps not in (None, -1) and ckpt["global_step"] >= max_steps:
        return True
    epochs = (((ckpt.get("loops") or {}).get("fit_loop") or {}).get("epoch_progress") or {}).get("current", {})
    finished = epochs.get("processed")
    return finished is not None and max_epochs != -1 and finished >= max_epochs


def inspect_checkpoint(path: Path, trust: bool = False, what: str = "--resume") -> dict:
    """Open a checkpoint (memory-mapped; weights only unless `trust`) and check it has what
    resume needs, is undamaged, and was written by a compatible torchx. `what` names the option the
    path came from in messages (--resume, or --ckpt of the after-training tools)."""
    import pickle
    import zipfile

    import torch

    import torchx

    head = _head(path)
    is_zip = head.startswith(ZIP_MAGIC)
    try:  # only the zip format can be memory-mapped; a legacy-format file is read whole
        ckpt = torch.load(path, map_location="cpu", weights_only=not trust, mmap=not head.startswith(LEGACY_MAGIC))
    except pickle.UnpicklingError as e:  # readable, but holds objects beyond tensors and plain data
        raise ConfigError(f"{what}: '{path}' holds Python objects that only full unpickling can load, and "
                          f"unpickling runs code from the file ({first_line(e, 200)}). If you trust where it came "
                          f"from, add --trust-checkpoint") from None
    except (RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError) as e:  # truncated, not a zip, ...
        raise ConfigError(f"{what}: '{path}' is not a readable PyTorch checkpoint; it may be truncated or "
                          f"not a checkpoint at all ({first_line(e, 200)})") from None
    if is_zip:
        check_archive(path, what)
    if not isinstance(ckpt, dict):
        raise ConfigError(f"{what}: '{path}' holds a {type(ckpt).__name__}, not a training checkpoint")
    missing = [k for k in ("state_dict", "epoch", "global_step", "optimizer_states") if k not in ckpt]
    if missing:
        raise ConfigError(f"{what}: '{path}' is not a training checkpoint (missing {', '.join(missing)}); "
                          f"{_use(what)} one written by train_pl.py or train.py")
    check_contents(ckpt, path, what)
    written_by = ((ckpt.get("callbacks") or {}).get("torchx") or {}).get("version")
    if written_by and written_by.split(".")[:2] != torchx.__version__.split(".")[:2]:
        raise ConfigError(f"{what}: '{path}' was written by torchx {written_by}; this is torchx "
                          f"{torchx.__version__}, whose checkpoints differ. "
                          f"{'Resume' if what == '--resume' else 'Load'} it with torchx {written_by}")
    return ckpt


def _use(what: str) -> str:
    """How a message tells the user to go on with another checkpoint."""
    return "resume from" if what == "--resume" else "load"


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since torch 1.6: a zip archive (torch.load's own test)
# the legacy format: a pickle (protocol 2, torch.save's default) of torch's magic number, then the data
LEGACY_MAGIC = b"\x80\x02\x8a\n" + 0x1950A86A20F9469CFC6C.to_bytes(10, "little")


def _head(path: Path) -> bytes:
    """The first bytes of `path`, which tell its format; empty if it cannot be read (torch.load says why)."""
    try:
        with open(path, "rb") as f:
            return f.read(len(LEGACY_MAGIC))
    except OSError:
        return b""


def check_archive(path: Path, what: str = "--resume") -> None:
    """Every member of a zip-format checkpoint must match its CRC-32. torch.load does not check them,
    so a bit flipped on disk in a tensor's bytes would load as a silently wrong weight. Reading the
    whole file costs about 30 ms per 100 MB from the page cache."""
    import zipfile
    import zlib

    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error, NotImplementedError, RuntimeError, ValueError) as e:
        raise ConfigError(f"{what}: '{path}' is corrupt: its zip archive cannot be read through "
                          f"({first_line(e, 200)}); {_use(what)} another checkpoint") from None
    if bad is not None:
        raise ConfigError(f"{what}: '{path}' is corrupt: the bytes of its member '{bad}' do not match their "
                          f"CRC-32 checksum (the file was damaged after it was written); resume from another "
                          f"checkpoint, such as another one in its ckpt/ folder")


_MISSING = object()  # a key a checkpoint lacks, told apart from one holding None

# counters of Lightning's loop progress (and torchx's plain loop, which writes the same): resume
# counts epochs, batches and steps from them
PROGRESS_COUNTERS = {"ready", "started", "processed", "completed", "_batches_that_stepped"}


def check_contents(ckpt: dict, path: Path, what: str = "--resume") -> None:
    """The parts of a checkpoint that resume reads must have the types both loops write; the right
    keys with wrong contents would otherwise fail inside Lightning, after the run directory exists."""
    import torch

    def wrong(where: str, got: Any, expected: str) -> ConfigError:
        state = "is missing; it must be" if got is _MISSING else f"is {_shown(got)}, not"
        return ConfigError(f"{what}: '{path}' is not a usable training checkpoint: {where} {state} "
                           f"{expected}; {_use(what)} a checkpoint written by train_pl.py or train.py")

    def count(value: Any) -> bool:
        return isinstance(value, int) and not isinstance(value, bool) and value >= 0

    weights = ckpt["state_dict"]
    if not isinstance(weights, dict):
        raise wrong("state_dict", weights, "a mapping of parameter names to tensors")
    for key, value in weights.items():
        if not isinstance(key, str):
            raise wrong("a key of state_dict", key, "a parameter name (a string)")
        if not isinstance(value, torch.Tensor):
            raise wrong(f"state_dict[{key!r}]", value, "a tensor")
    for key in ("epoch", "global_step"):
        if not count(ckpt[key]):
            raise wrong(key, ckpt[key], "a whole number >= 0")
    optimizers = ckpt["optimizer_states"]
    if not isinstance(optimizers, list):
        raise wrong("optimizer_states", optimizers, "a list of optimizer states")
    for i, opt in enumerate(optimizers):
        where = f"optimizer_states[{i}]"
        if not isinstance(opt, dict):
            raise wrong(where, opt, "an optimizer's state_dict (a dict with 'state' and 'param_groups')")
        if not isinstance(opt.get("state", _MISSING), dict):
            raise wrong(f"{where}['state']", opt.get("state", _MISSING), "a dict of per-parameter state")
        groups = opt.get("param_groups", _MISSING)
        if not isinstance(groups, list) or not groups:
            raise wrong(f"{where}['param_groups']", groups, "a non-empty list of parameter groups")
        for j, group in enumerate(groups):
            if not isinstance(group, dict):
                raise wrong(f"{where}['param_groups'][{j}]", group, "a dict holding 'params'")
            params = group.get("params", _MISSING)
            if not isinstance(params, list) or not all(count(p) for p in params):
                raise wrong(f"{where}['param_groups'][{j}]['params']", params, "a list of parameter indices")
    schedulers = ckpt.get("lr_schedulers", [])
    if not isinstance(schedulers, list):
        raise wrong("lr_schedulers", schedulers, "a list of scheduler states")
    for i, sched in enumerate(schedulers):
        if not isinstance(sched, dict):
            raise wrong(f"lr_schedulers[{i}]", sched, "a scheduler's state_dict (a dict)")
    for key in ("loops", "callbacks"):
        if key in ckpt and not isinstance(ckpt[key], dict):
            raise wrong(key, ckpt[key], "a dict")
    for name, loop in (ckpt.get("loops") or {}).items():
        if not isinstance(loop, dict):
            raise wrong(f"loops[{name!r}]", loop, "a dict")
        _check_progress(loop, f"loops[{name!r}]", wrong, count)
    state = (ckpt.get("callbacks") or {}).get("torchx", {})
    if not isinstance(state, dict):
        raise wrong("callbacks['torchx']", state, "a dict")
    if not isinstance(state.get("version", ""), str):
        raise wrong("callbacks['torchx']['version']", state["version"], "a version string")
    if not isinstance(state.get("rng", {}), dict):
        raise wrong("callbacks['torchx']['rng']", state["rng"], "a dict of RNG states")


def _check_progress(value: Any, where: str, wrong: Callable[..., ConfigError], count: Callable[[Any], bool]) -> None:
    """Every progress counter inside a loop's state must be a whole number >= 0."""
    if isinstance(value, dict):
        for key, inner in value.items():
            inside = f"{where}[{key!r}]"
            if key in PROGRESS_COUNTERS and not count(inner):
                raise wrong(inside, inner, "a whole number >= 0")
            _check_progress(inner, inside, wrong, count)
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            _check_progress(inner, f"{where}[{i}]", wrong, count)


def _shown(value: Any, limit: int = 60) -> str:
    """A value for a message: its repr, cut short, with its type where the repr does not say it."""
    if isinstance(value, (str, bytes)):
        return repr(value) if len(value) <= limit else f"{value[:limit]!r}..."
    text = repr(value)
    text = text if len(text) <= limit else text[:limit] + "..."
    if value is None:
        return text
    kind = type(value).__name__
    article = "an" if kind[0].lower() in "aeiou" else "a"
    return text if text.startswith(kind) else f"{text} ({article} {kind})"


MAX_NAME_BYTES = 255  # NAME_MAX of Linux and macOS file systems
MAX_PATH_BYTES = 4000  # under PATH_MAX (4096), leaving room for the run's own files below it


def check_run_name(name: str) -> None:
    """`--name` must be one plain folder name the file system can hold."""
    shown = _shown(name)
    _check_unicode(name, f"--name {shown}", "the name")
    if not name:
        raise ConfigError("--name '' is empty; give the run a folder name such as --name test "
                          "(or leave --name out to use the config file's name)")
    if name in (".", "..") or any(c in name for c in "/\\\0"):
        raise ConfigError(f"--name {shown} must be a plain folder name, without '/', '\\' or NUL "
                          f"and not '.' or '..', e.g. --name test")
    size = len(name.encode("utf-8"))
    if size > MAX_NAME_BYTES:
        raise ConfigError(f"--name {shown} is {size} bytes long in UTF-8; a folder name holds at most "
                          f"{MAX_NAME_BYTES}, pick a shorter name")


def check_save_dir(save_dir: str) -> None:
    """`--save-dir` must be a path the file system can hold, with room for the run directories."""
    shown = _shown(save_dir)
    _check_unicode(save_dir, f"--save-dir {shown}", "the path")
    if not save_dir:
        raise ConfigError("--save-dir '' is empty; give the folder for run directories, e.g. --save-dir save")
    if "\0" in save_dir:
        raise ConfigError(f"--save-dir {shown} holds a NUL byte, which no path may; pick another --save-dir")
    for part in save_dir.split(os.sep):
        size = len(part.encode("utf-8"))
        if size > MAX_NAME_BYTES:
            raise ConfigError(f"--save-dir {shown}: the folder name {_shown(part)} is {size} bytes long in "
                              f"UTF-8; a folder name holds at most {MAX_NAME_BYTES}, pick a shorter --save-dir")
    # as an absolute path, as Lightning records the checkpoints' paths
    size = len(os.path.abspath(save_dir).encode("utf-8"))
    if size > MAX_PATH_BYTES:
        raise ConfigError(f"--save-dir {shown} is {size} bytes long as an absolute path; paths hold at most "
                          f"{MAX_PATH_BYTES}, pick a shorter --save-dir")


def _check_unicode(text: str, what: str, subject: str) -> None:
    """Command-line bytes that are not UTF-8 arrive as lone surrogates (surrogateescape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        char = ord(text[e.start])
        byte = f" (byte 0x{char - 0xDC00:02x})" if 0xDC80 <= char <= 0xDCFF else ""
        raise ConfigError(f"{what} is not valid UTF-8{byte}; {subject} must be valid UTF-8 text") from None


def check_fits(ckpt: dict, model_state: dict, path: Path, what: str = "--resume") -> None:
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
        raise ConfigError(f"{what}: '{path}' is from another model than this config builds; "
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
    if run.restart:
        kept = set_aside(run.dir)
        print(f"{run.dir} had no checkpoint to resume from: it starts again from the beginning; its earlier "
              f"files are kept in {kept}", file=sys.stderr)
        suffix = ""
        snapshot(run)
    elif run.is_resume and run.dir.exists():
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
    if run.data_record is not None:
        (run.dir / f"data{suffix}.txt").write_text(run.data_record)
    run.ckpt_dir.mkdir(exist_ok=True)


def set_aside(run_dir: Path) -> Path:
    """Move what `run_dir` holds into `run_dir/attempts/N/` (the next free N); nothing is deleted."""
    attempts = run_dir / "attempts"
    n = 1
    while (attempts / str(n)).exists():
        n += 1
    kept = attempts / str(n)
    kept.mkdir(parents=True)
    for entry in sorted(run_dir.iterdir()):
        if entry.name != "attempts":
            os.rename(entry, kept / entry.name)
    return kept


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
        rel = import_path(folder or path, root)
        if folder:
            _copy_tree(folder, src / rel)
        elif path.stat().st_size <= SNAPSHOT_MAX_BYTES:
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / rel)


def import_path(path: Path, root: Path) -> Path:
    """Where an imported module's file goes under src/: its path below the sys.path entry it was
    imported from, so that src/ on sys.path imports it by the same dotted name (what the
    after-training tools do when the module is not importable elsewhere)."""
    for entry in [*sys.path, str(root)]:  # in the order Python searches them
        folder = Path(entry or os.getcwd()).resolve()
        if folder in path.parents:
            return path.relative_to(folder)
    return Path(path.name)


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
        "distributed": run.launch,
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

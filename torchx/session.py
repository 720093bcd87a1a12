"""Sessions: a config with `_`-keys runs every combination as its own run directory.

    python train_pl.py --config sweep.yaml --name s [--jobs N] [--gpu 0,1,2,3] [--only K] [--resume]

    save/s/
      session.yaml            the session's config, its grid, and each experiment's state
      summary.csv summary.md  one row per experiment, rewritten whenever one finishes
      configs/<exp>.yaml      each experiment's resolved config: what its process is given
      logs/<exp>.log          each experiment's console output, every attempt appended
      <exp>/                  one full run directory per experiment, as a single run writes it
      attempts/<exp>.N/       an earlier attempt that stopped before its first checkpoint, kept

Every combination is resolved and checked before anything is created. Each experiment runs
as a child process of the same entry point (train_pl.py or train.py), so a crash in one
cannot take down the others. session.yaml is rewritten atomically under a file lock, so the
tasks of a cluster job array (`--only K`) can share one session.
"""

from __future__ import annotations

import argparse
import codecs
import contextlib
import datetime
import errno
import fcntl
import json
import os
import queue
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from torchx import config as C
from torchx.errors import ConfigError
from torchx.run import atomic_write, check_run_name, check_save_dir, config_diff, project_root

SESSION_FILE = "session.yaml"
LOCK_FILE = ".session.lock"
HOST = socket.gethostname()
NAME_MAX = 200  # bytes of an experiment's folder name (file systems allow 255)
EXIT_FAILED, EXIT_PREEMPTED, EXIT_INTERRUPTED = 1, 75, 130  # as train_pl.py's own statuses
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1")


@dataclass
class Experiment:
    index: int
    name: str  # its folder name under the session directory
    params: dict  # label -> value of each sweep key
    config: dict  # resolved and checked


# ---------------------------------------------------------------- is this a session?


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


# ---------------------------------------------------------------- planning


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


# ---------------------------------------------------------------- session.yaml


def now() -> str:
    return datetime.datetime.now().astimezone().isoformat(timespec="seconds")


def new_document(name: str, prog: str, argv: list[str], config_file: str | None, cfg: dict,
                 experiments: list[Experiment]) -> dict:
    return {
        "session": name,
        "entry": prog,
        "command": [prog, *argv],
        "created": now(),
        "config_file": config_file,
        "grid": [{"key": key, "label": label, "values": values} for key, label, values in C.sweep_labels(cfg)],
        "experiments": [{"index": e.index, "name": e.name, "params": e.params, "state": "pending",
                         "exit_status": None, "error": None, "attempts": 0, "started": None, "finished": None,
                         "wall_time_s": 0.0, "host": None, "pid": None, "gpu": None, "threads": None}
                        for e in experiments],
        "config": cfg,  # as given: before expansion and interpolation
    }


def read_document(folder: Path) -> dict:
    doc = C.read_yaml(folder / SESSION_FILE)
    if not isinstance(doc.get("experiments"), list) or not isinstance(doc.get("config"), dict):
        raise ConfigError(f"'{folder / SESSION_FILE}' is not a session file torchx wrote (no experiments or config)")
    return doc


def write_atomic(path: Path, text: str) -> None:
    """Readers (other array tasks, a user's `cat`) see the old file or the new one, never half."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


_thread_lock = threading.Lock()


@contextlib.contextmanager
def locked(folder: Path) -> Iterator[dict]:
    """session.yaml read under an exclusive lock, and written back if the block ends without error.

    The lock (flock on .session.lock) holds across processes: a controller's job threads and the
    tasks of a job array running `--only K` on a shared file system each change their own entry.
    """
    with _thread_lock, open(folder / LOCK_FILE, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc = read_document(folder)
        yield doc
        write_atomic(folder / SESSION_FILE, C.dump_yaml(doc))


def compare(doc: dict, cfg: dict, folder: Path, from_file: bool) -> None:
    """A session keeps the grid and the config it started with; a change is refused, not mixed in."""
    old = [(g["key"], g["values"]) for g in doc.get("grid") or []]
    new = [(key, values) for key, _, values in C.sweep_labels(cfg)]
    if old != new:
        lines = [f"{k}: {dict(old)[k]} -> {v}" for k, v in new if k in dict(old) and dict(old)[k] != v]
        lines += [f"{k} added" for k, _ in new if k not in dict(old)]
        lines += [f"{k} removed" for k, _ in old if k not in dict(new)]
        raise ConfigError(f"the grid differs from the one session '{folder}' started with "
                          f"({'; '.join(lines) or 'the order of the keys changed'}); a session's grid is fixed: "
                          f"start a new session with --name <other name>")
    diff = config_diff(doc["config"], cfg)
    if diff:
        shown = "; ".join(diff[:4]) + (f"; +{len(diff) - 4} more" if len(diff) > 4 else "")
        how = "--config and overrides" if from_file else "overrides"
        raise ConfigError(f"the config differs from the one session '{folder}' started with ({shown}); a session "
                          f"runs one config: drop the {how} to continue it as recorded in {SESSION_FILE}, or start "
                          f"a new session with --name <other name>")


def create(folder: Path, doc: dict, experiments: list[Experiment]) -> bool:
    """Make the session directory, complete, with one rename: False if another process (a task of
    the same job array) made it first. An existing directory is never touched."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.parent / f".{folder.name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        (tmp / "configs").mkdir(parents=True)
        (tmp / "logs").mkdir()
        for e in experiments:
            (tmp / "configs" / f"{e.name}.yaml").write_text(C.dump_yaml(e.config), encoding="utf-8")
        write_atomic(tmp / SESSION_FILE, C.dump_yaml(doc))
        write_summary(tmp, doc)
        if folder.exists():
            raise FileExistsError(errno.EEXIST, "exists")
        os.rename(tmp, folder)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY) and folder.exists():
            if (folder / SESSION_FILE).is_file():
                return False
            raise ConfigError(f"'{folder}' was created by another process just now and is not a session; "
                              f"start again with another --name") from None
        raise ConfigError(f"cannot create session directory '{folder}': {e.strerror}") from None
    return True


# ---------------------------------------------------------------- the command


def main(args: argparse.Namespace, prog: str, loop: str, argv: list[str]) -> int:
    """Check every experiment, claim or join SAVE_DIR/NAME, run what is to run, print the summary."""
    name = session_name(args)
    folder = Path(args.save_dir) / name
    if Path(args.save_dir).exists() and not Path(args.save_dir).is_dir():
        raise ConfigError(f"--save-dir '{args.save_dir}' is a file, not a folder; pick another --save-dir")
    if isinstance(args.resume, str):
        raise ConfigError(f"--resume {args.resume}: a session continues with a bare --resume (each experiment from "
                          f"its own last.ckpt); to start from a checkpoint, run one experiment on its own")
    jobs = args.jobs or 1
    if args.only is not None and args.jobs is not None:
        raise ConfigError(f"--jobs {args.jobs} runs several experiments at once and --only {args.only} runs one; "
                          f"give one of them")
    doc = read_document(folder) if (folder / SESSION_FILE).is_file() else None
    if doc is None and folder.exists():
        raise ConfigError(f"'{folder}' exists and is not a session (it has no {SESSION_FILE}); torchx never "
                          f"overwrites it: start the session with --name <other name>")
    if doc is not None and not args.resume and args.only is None and not args.dry_run:
        raise ConfigError(f"session '{folder}' already exists; torchx never overwrites it. Continue it with "
                          f"--resume, or start a new session with --name <other name>")
    cfg = C.apply_overrides(C.load(args.config) if args.config else doc["config"], args.overrides)
    if doc is not None:
        compare(doc, cfg, folder, from_file=bool(args.config))
    elif not C.sweep_keys(cfg):
        raise ConfigError(f"'{args.config}' has no sweep keys; it is a single run, not a session")
    experiments = plan(cfg, config_file=args.config)
    if args.gpus:
        from torchx.build import check_gpus

        check_gpus(args.gpus)
    groups = gpu_groups(args.gpus, jobs, prog)
    only = pick(args.only, experiments) if args.only is not None else None
    if doc is None and args.resume and only is None:
        raise ConfigError(f"--resume: there is no session '{folder}' to resume; drop --resume to start it")
    # every combination gets the checks a single run gets, before the session folder exists
    dry_build(folder, [experiments[only]] if only is not None else experiments, args, loop, groups[0])
    if args.dry_run:
        list_experiments(folder, cfg, experiments, doc, only)
        return 0
    if doc is None:
        doc = new_document(name, prog, argv, args.config, cfg, experiments)
        if not create(folder, doc, experiments):  # another task of the job array was first: join it
            compare(read_document(folder), cfg, folder, from_file=bool(args.config))
    todo = [experiments[only]] if only is not None else experiments
    controller = Controller(folder, args, prog, loop, groups, echo=jobs == 1)
    code = controller.run(todo)
    with locked(folder) as doc:
        table = write_summary(folder, doc)
    print(f"\nsession {folder}: {tally(doc)}\n\n{table}", end="")
    if only is not None:
        return controller.statuses.get(only, 0)
    return code


def dry_build(folder: Path, experiments: list[Experiment], args: argparse.Namespace, loop: str,
              gpus: list[int] | None) -> None:
    """The checks a single run makes before it creates anything (`checks.dry`: every component
    built, one batch through the model, a negative learning rate or a bad val_split found), for
    every experiment; experiments with the same data_module share its data. Creates nothing."""
    import copy
    import importlib

    from torchx import checks
    from torchx.run import Run

    module = importlib.import_module(loop)
    child = copy.copy(args)
    child.gpus = gpus  # what one experiment's process is given
    cache: dict = {}
    for e in experiments:
        cfg = {**e.config, "seed": e.config.get("seed") if e.config.get("seed") is not None else 0}
        try:
            checks.dry(child, Run(dir=folder / e.name, config=cfg), module, cache)
        except ConfigError as err:
            raise ConfigError(f"experiment {e.index} ({e.name}): {err}") from None


def list_experiments(folder: Path, cfg: dict, experiments: list[Experiment], doc: dict | None,
                     only: int | None) -> None:
    states = {e["index"]: e["state"] for e in doc["experiments"]} if doc else {}
    print(f"session   : {folder} ({tally(doc) if doc else 'new'})")
    grid = " x ".join(f"{label} {values}" for _, label, values in C.sweep_labels(cfg))
    print(f"experiments: {len(experiments)} ({grid})")
    for e in experiments:
        if only is None or e.index == only:
            print(f"  {e.index:>3}  {e.name}" + (f"  [{states.get(e.index, 'pending')}]" if doc else ""))
    print("dry run: nothing was created")


def tally(doc: dict) -> str:
    counts: dict[str, int] = {}
    for e in doc["experiments"]:
        counts[e["state"]] = counts.get(e["state"], 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items())


# ---------------------------------------------------------------- running


class Controller:
    """Runs experiments as child processes, `len(groups)` at a time, and keeps session.yaml current.

    SIGINT, SIGTERM and SIGUSR1 stop it: no new experiment starts, and the running ones get
    SIGTERM, on which they save ckpt/last.ckpt at the next step and exit 75 (interrupted, so
    --resume continues them). A second Ctrl-C kills them.
    """

    def __init__(self, folder: Path, args: argparse.Namespace, prog: str, loop: str,
                 groups: list[list[int] | None], echo: bool) -> None:
        self.folder, self.args, self.prog, self.loop, self.echo = folder, args, prog, loop, echo
        self.slots: queue.Queue = queue.Queue()
        for g in groups:
            self.slots.put(g)
        self.jobs = len(groups)
        self.threads = max(1, cpu_count() // self.jobs) if self.jobs > 1 else None
        self.procs: dict[int, subprocess.Popen] = {}
        self.statuses: dict[int, int] = {}  # index -> exit status, for what ran in this invocation
        self.states: dict[int, str] = {}
        self.stopping: str | None = None

    def run(self, todo: list[Experiment]) -> int:
        previous = self._install_signals()
        try:
            with ThreadPoolExecutor(max_workers=min(self.jobs, len(todo)) or 1) as pool:
                futures = [pool.submit(self.work, e) for e in todo]
                pending = set(futures)
                while pending:  # the main thread stays free to handle signals
                    _, pending = wait(pending, timeout=0.2)
            for f in futures:
                f.result()  # a refusal (ConfigError) in a job surfaces here
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        if self.stopping:
            return EXIT_INTERRUPTED if self.stopping == "SIGINT" else EXIT_PREEMPTED
        states = set(self.states.values())
        return EXIT_FAILED if "failed" in states else EXIT_PREEMPTED if "interrupted" in states else 0

    def work(self, e: Experiment) -> None:
        gpus = self.slots.get()
        try:
            if self.stopping:
                return
            started = self.start(e, gpus)
            if started is None:
                return
            proc, log, t0 = started
            tail = bytearray()
            err = threading.Thread(target=pump, args=(proc.stderr, log, sys.stderr if self.echo else None, tail),
                                   daemon=True)
            err.start()
            pump(proc.stdout, log, sys.stdout if self.echo else None, None)
            code = proc.wait()
            err.join()
            log.close()
            self.finish(e, code, last_line(tail), time.monotonic() - t0)
        finally:
            self.slots.put(gpus)

    def start(self, e: Experiment, gpus: list[int] | None) -> tuple[subprocess.Popen, IO[bytes], float] | None:
        """Claim the experiment in session.yaml and start its process, or say why it is skipped."""
        with locked(self.folder) as doc:
            entry = doc["experiments"][e.index]
            how = self.decide(e, entry)
            if how is None:
                return None
            cmd = self.command(e, gpus, resume=how == "resume")
            log = open(self.folder / "logs" / f"{e.name}.log", "ab")
            log.write(f"==== attempt {entry['attempts'] + 1}, {now()}: {' '.join(cmd)}\n".encode())
            log.flush()
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # output reaches the log as it is written
            if self.threads:  # the cores are shared by the jobs running at once
                env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(self.threads)
            # its own session: a Ctrl-C at the terminal reaches the controller, which stops children cleanly
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=env, start_new_session=True)
            self.procs[e.index] = proc
            entry.update(state="running", exit_status=None, error=None, attempts=entry["attempts"] + 1,
                         started=now(), finished=None, host=HOST, pid=proc.pid,
                         gpu=",".join(map(str, gpus)) if gpus else None, threads=self.threads)
        if self.stopping:  # a signal came while it started
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
        self.say(e, f"{'resumed' if how == 'resume' else 'started'}"
                    f"{' on GPU ' + ','.join(map(str, gpus)) if gpus else ''}"
                    f"{f' with {self.threads} thread(s)' if self.threads else ''}")
        return proc, log, time.monotonic()

    def decide(self, e: Experiment, entry: dict) -> str | None:
        """'fresh', 'resume', or None (skip), from the recorded state and what is on disk."""
        run_dir = self.folder / e.name
        if (run_dir / "results.json").is_file() or entry["state"] == "done":  # finished, whatever was recorded
            if entry["state"] != "done":
                entry.update(state="done", error=None)
            self.say(e, "done already, skipped")
            return None
        state = entry["state"]
        if state == "running" and alive(entry):
            if self.args.only is not None:
                raise ConfigError(f"--only {self.args.only}: experiment {e.index} ({e.name}) is running in process "
                                  f"{entry['pid']} on this machine; it is not started twice")
            self.say(e, f"running in process {entry['pid']}, skipped")
            return None
        if state != "pending" and not self.args.resume:
            raise ConfigError(f"--only {self.args.only}: experiment {e.index} ({e.name}) is {state} in session "
                              f"'{self.folder}'; --resume continues it")
        if not run_dir.exists():
            return "fresh"
        if (run_dir / "ckpt" / "last.ckpt").is_file():
            return "resume"
        # stopped before its first checkpoint: nothing to resume from, so it starts over, and the
        # folder of that attempt is kept, not deleted
        n = 1
        while (self.folder / "attempts" / f"{e.name}.{n}").exists():
            n += 1
        aside = self.folder / "attempts" / f"{e.name}.{n}"
        aside.parent.mkdir(exist_ok=True)
        os.rename(run_dir, aside)
        entry.setdefault("set_aside", []).append(str(aside.relative_to(self.folder)))
        self.say(e, f"had no checkpoint to resume from; its folder is kept as {aside}, and it starts over")
        return "fresh"

    def command(self, e: Experiment, gpus: list[int] | None, resume: bool) -> list[str]:
        script = project_root() / self.prog
        if script.is_file():
            cmd = [sys.executable, str(script)]
        else:  # an installed torchx without the entry scripts
            cmd = [sys.executable, "-c", f"import sys; from torchx.cli import main; "
                                         f"sys.exit(main(None, {self.prog!r}, {self.loop!r}))"]
        cmd += ["--save-dir", str(self.folder), "--name", e.name]
        if not resume:
            cmd += ["--config", str(self.folder / "configs" / f"{e.name}.yaml")]
        if gpus:
            cmd += ["--gpu", ",".join(map(str, gpus))]
        if self.args.trust_checkpoint:
            cmd.append("--trust-checkpoint")
        if resume:
            cmd.append("--resume")
        return cmd

    def finish(self, e: Experiment, code: int, error: str, elapsed: float) -> None:
        self.procs.pop(e.index, None)
        if code == 0:
            state = "done"
        elif code in (EXIT_PREEMPTED, EXIT_INTERRUPTED) or (code < 0 and self.stopping):
            state = "interrupted"
        else:
            state = "failed"
        if code < 0:
            error = error or f"killed by {signal.Signals(-code).name}"
        status = code if code >= 0 else 128 - code
        with locked(self.folder) as doc:
            doc["experiments"][e.index].update(
                state=state, exit_status=status, error=None if state == "done" else error or None, finished=now(),
                pid=None, wall_time_s=round(doc["experiments"][e.index]["wall_time_s"] + elapsed, 1))
            write_summary(self.folder, doc)
        self.statuses[e.index], self.states[e.index] = status, state
        detail = f" (exit status {status}): {error}" if state != "done" else ""
        self.say(e, f"{state} in {duration(elapsed)}{detail}")

    def say(self, e: Experiment, what: str) -> None:
        print(f"[session {e.index}] {e.name}: {what}", flush=True)

    def _install_signals(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}
        for name in STOP_SIGNALS:
            sig = getattr(signal, name, None)
            if sig is not None:
                previous[sig] = signal.signal(sig, self._on_signal)
        return previous

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.stopping and name == "SIGINT":
            print("session: second Ctrl-C: killing the running experiments", file=sys.stderr, flush=True)
            self._signal_children(signal.SIGKILL)
            return
        if not self.stopping:
            self.stopping = name
            print(f"session: {name}: no new experiment starts; the running ones save a checkpoint and stop "
                  f"(--resume continues them; Ctrl-C again kills them)", file=sys.stderr, flush=True)
        self._signal_children(signal.SIGTERM)

    def _signal_children(self, sig: int) -> None:
        for proc in list(self.procs.values()):
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)


def alive(entry: dict) -> bool:
    """Whether the process recorded for a running experiment still exists (only knowable on its host)."""
    if entry.get("host") != HOST or not entry.get("pid"):
        return False
    try:
        os.kill(int(entry["pid"]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def pump(stream: IO[bytes], log: IO[bytes], echo: IO[str] | None, tail: bytearray | None) -> None:
    """Copy a child's output to its log (and the terminal); keep the last few KB of it in `tail`."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    while chunk := stream.read1(65536):
        log.write(chunk)
        log.flush()
        if echo is not None:
            echo.write(decoder.decode(chunk))
            echo.flush()
        if tail is not None:
            tail += chunk
            del tail[:-8192]


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def last_line(tail: bytes) -> str:
    """The last non-blank line a child wrote to stderr: its error, if it failed."""
    text = _ANSI.sub("", bytes(tail).decode("utf-8", "replace"))
    lines = [s.strip() for s in re.split(r"[\r\n]", text) if s.strip()]
    return lines[-1][:500] if lines else ""


def duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} m {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} m"


# ---------------------------------------------------------------- summary


def summarize(folder: Path, entry: dict) -> dict:
    """One experiment's row: its monitored metric at best and the final metrics, from its run directory."""
    from torchx.csvlog import FIXED, read

    run = folder / entry["name"]
    row: dict[str, Any] = {"monitor": None, "mode": None, "best": None, "best_epoch": None, "final": {},
                           "epochs": None}
    cfg_file = run / "config.yaml" if (run / "config.yaml").is_file() else folder / "configs" / f"{entry['name']}.yaml"
    try:
        cfg = C.read_yaml(cfg_file) if cfg_file.is_file() else {}
        rows = read(run / "metrics.csv") if (run / "metrics.csv").is_file() else []
        results = json.loads((run / "results.json").read_text()) if (run / "results.json").is_file() else {}
    except (OSError, ValueError, ConfigError):  # a file being written right now: leave the row empty
        return row
    monitor, mode = (cfg.get("checkpoint") or {}).get("monitor"), (cfg.get("checkpoint") or {}).get("mode", "min")
    if monitor is None and any(r.get("val/loss") is not None for r in rows):
        monitor, mode = "val/loss", "min"
    row["monitor"], row["mode"] = monitor, mode
    scored = [(r[monitor], r["epoch"]) for r in rows if monitor and r.get(monitor) is not None]
    if scored:
        best = (max if mode == "max" else min)(scored, key=lambda p: p[0])
        row["best"] = best[0]
        row["best_epoch"] = int(best[1]) + 1 if best[1] is not None else None  # counted from 1, as log.txt does
    for r in rows:
        for k, v in r.items():
            if k not in FIXED and v is not None and not k.endswith("_step"):
                row["final"][k] = v
    row["final"].update({k: float(v) for k, v in (results.get("test") or {}).items()})
    epochs = [r["epoch"] for r in rows if r.get("epoch") is not None]
    row["epochs"] = results.get("epochs", int(max(epochs)) + 1 if epochs else None)
    return row


def _metric_order(name: str) -> tuple:
    stage = name.split("/")[0]
    return ({"train": 0, "val": 1, "test": 2}.get(stage, 3), name)


def write_summary(folder: Path, doc: dict) -> str:
    """summary.csv (every column) and summary.md (a table to read); returns the Markdown."""
    import csv
    import io

    entries = doc["experiments"]
    rows = [summarize(folder, e) for e in entries]
    labels = [g["label"] for g in doc.get("grid") or []]
    metrics = sorted({k for r in rows for k in r["final"]}, key=_metric_order)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["index", "name", *labels, "state", "exit_status", "monitor", "best", "best_epoch", *metrics,
                     "epochs", "wall_time_s", "error"])
    for e, r in zip(entries, rows):
        writer.writerow([e["index"], e["name"], *[_cell(e["params"].get(k)) for k in labels], e["state"],
                         _cell(e.get("exit_status")), _cell(r["monitor"]), _cell(r["best"]), _cell(r["best_epoch"]),
                         *[_cell(r["final"].get(m)) for m in metrics], _cell(r["epochs"]),
                         _cell(e.get("wall_time_s")), _cell(e.get("error"))])
    write_atomic(folder / "summary.csv", out.getvalue())
    table = markdown(entries, rows, labels, metrics)
    write_atomic(folder / "summary.md", table)
    return table


def markdown(entries: list[dict], rows: list[dict], labels: list[str], metrics: list[str]) -> str:
    monitors = {r["monitor"] for r in rows if r["monitor"]}
    best_head = f"best {next(iter(monitors))}" if len(monitors) == 1 else "best"
    head = ["#", *labels, "state", best_head, "epoch", *metrics, "time"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for e, r in zip(entries, rows):
        best = _num(r["best"]) if len(monitors) <= 1 or r["best"] is None else f"{r['monitor']} {_num(r['best'])}"
        cells = [str(e["index"]), *[_cell(e["params"].get(k)) for k in labels],
                 e["state"] + (f" ({e['exit_status']})" if e["state"] in ("failed", "interrupted") else ""),
                 best, _cell(r["best_epoch"]), *[_num(r["final"].get(m)) for m in metrics],
                 duration(e["wall_time_s"]) if e.get("wall_time_s") else ""]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    errors = [f"- {e['index']} `{e['name']}`: {e['error']}" for e in entries if e.get("error")]
    return "\n".join(lines) + "\n" + ("\n" + "\n".join(errors) + "\n" if errors else "")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4g}"


"""Running a session's experiments as child processes, `--jobs` at a time, and recording each
one's state in session.yaml."""

from __future__ import annotations

import argparse
import codecs
import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, wait
from pathlib import Path
from typing import IO, Any

from torchx.errors import ConfigError
from torchx.run import checkpoints, project_root
from torchx.session.document import locked, now
from torchx.session.plan import Experiment, cpu_count
from torchx.session.summary import duration, write_summary

HOST = socket.gethostname()
EXIT_FAILED, EXIT_PREEMPTED, EXIT_INTERRUPTED = 1, 75, 130  # as train_pl.py's own statuses
STOP_SIGNALS = ("SIGINT", "SIGTERM", "SIGUSR1")


class Controller:
    """Runs experiments as child processes, `len(groups)` at a time, and keeps session.yaml current.

    SIGINT, SIGTERM and SIGUSR1 stop it: no new experiment starts, and the running ones get
    SIGTERM, on which they save ckpt/last.ckpt at the next step and exit 75 (interrupted, so
    --resume continues them). A second Ctrl-C kills them.

    A search hands it `env` (what a child needs to report to its trial) and `on_finish` (told each
    experiment's final state, to score its trial), and gives `run` a generator that draws trials
    as job slots free up.
    """

    def __init__(self, folder: Path, args: argparse.Namespace, prog: str, loop: str,
                 groups: list[list[int] | None], echo: bool,
                 env: Callable[[Experiment], dict[str, str]] | None = None,
                 on_finish: Callable[[Experiment, str], None] | None = None) -> None:
        self.folder, self.args, self.prog, self.loop, self.echo = folder, args, prog, loop, echo
        self.env, self.on_finish = env, on_finish
        self.slots: queue.Queue = queue.Queue()
        for g in groups:
            self.slots.put(g)
        self.jobs = len(groups)
        self.threads = max(1, cpu_count() // self.jobs) if self.jobs > 1 else None
        self.procs: dict[int, subprocess.Popen] = {}
        self.statuses: dict[int, int] = {}  # index -> exit status, for what ran in this invocation
        self.states: dict[int, str] = {}
        self.stopping: str | None = None

    def run(self, todo: Iterable[Experiment]) -> int:
        """Run `todo` in order, `jobs` at a time: each job slot takes the next experiment when it is
        free (a generator is asked only then, so a search draws a trial knowing the latest results)."""
        previous = self._install_signals()
        source, taking = iter(todo), threading.Lock()
        errors: list[BaseException] = []

        def take() -> Experiment | None:
            with taking:
                return None if self.stopping else next(source, None)

        def job() -> None:
            while (e := take()) is not None:
                try:
                    self.work(e)
                except ConfigError as err:  # a refusal; the other experiments go on
                    errors.append(err)

        try:
            with ThreadPoolExecutor(max_workers=self.jobs) as pool:
                futures = [pool.submit(job) for _ in range(self.jobs)]
                pending = set(futures)
                while pending:  # the main thread stays free to handle signals
                    _, pending = wait(pending, timeout=0.2)
            for f in futures:
                f.result()
            if errors:
                raise errors[0]  # a refusal (ConfigError) in a job surfaces here
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
            cmd = self.command(e, gpus, resume=resume_from(self.folder / e.name) if how == "resume" else None)
            log = open(self.folder / "logs" / f"{e.name}.log", "ab")
            log.write(f"==== attempt {entry['attempts'] + 1}, {now()}: {' '.join(cmd)}\n".encode())
            log.flush()
            env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # output reaches the log as it is written
            if self.env is not None:
                env.update(self.env(e))
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
        ended = ended_as(run_dir)
        if ended or entry["state"] in ("done", "pruned"):  # finished, whatever was recorded
            if ended and entry["state"] != ended:
                entry.update(state=ended, error=None)
            self.say(e, f"{entry['state']} already, skipped")
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
        if resume_from(run_dir) is not None:
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

    def command(self, e: Experiment, gpus: list[int] | None, resume: Path | None) -> list[str]:
        script = project_root() / self.prog
        if script.is_file():
            cmd = [sys.executable, str(script)]
        else:  # an installed torchx without the entry scripts
            cmd = [sys.executable, "-c", f"import sys; from torchx.cli import main; "
                                         f"sys.exit(main(None, {self.prog!r}, {self.loop!r}))"]
        cmd += ["--save-dir", str(self.folder), "--name", e.name]
        if resume is None:
            cmd += ["--config", str(self.folder / "configs" / f"{e.name}.yaml")]
        if gpus:
            cmd += ["--gpu", ",".join(map(str, gpus))]
        if self.args.trust_checkpoint:
            cmd.append("--trust-checkpoint")
        if resume is not None:
            cmd += ["--resume"] if resume.name == "last.ckpt" else ["--resume", str(resume)]
        return cmd

    def finish(self, e: Experiment, code: int, error: str, elapsed: float) -> None:
        self.procs.pop(e.index, None)
        if code == 0:
            state = ended_as(self.folder / e.name) or "done"
        elif code in (EXIT_PREEMPTED, EXIT_INTERRUPTED) or (code < 0 and self.stopping):
            state = "interrupted"
        else:
            state = "failed"
        if code < 0:
            error = error or f"killed by {signal.Signals(-code).name}"
        status = code if code >= 0 else 128 - code
        with locked(self.folder) as doc:
            doc["experiments"][e.index].update(
                state=state, exit_status=status, error=None if state in ("done", "pruned") else error or None,
                finished=now(), pid=None, wall_time_s=round(doc["experiments"][e.index]["wall_time_s"] + elapsed, 1))
            write_summary(self.folder, doc)
        self.statuses[e.index], self.states[e.index] = status, state
        detail = f" (exit status {status}): {error}" if state not in ("done", "pruned") else ""
        self.say(e, f"{state} in {duration(elapsed)}{detail}")
        if self.on_finish is not None:
            self.on_finish(e, state)

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


def ended_as(run_dir: Path) -> str | None:
    """'done' or 'pruned' when the run directory holds the results.json of a run that ended, else None."""
    try:
        results = json.loads((run_dir / "results.json").read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return "done"  # written, though not readable now: it ended all the same
    return "pruned" if isinstance(results, dict) and results.get("pruned") else "done"


def resume_from(run_dir: Path) -> Path | None:
    """The checkpoint an interrupted experiment continues from: ckpt/last.ckpt, or, when its process was
    killed after writing a step checkpoint but before last.ckpt (Lightning writes them one after the
    other, each whole), the newest checkpoint written; None when there is none."""
    last = run_dir / "ckpt" / "last.ckpt"
    if last.is_file():
        return last
    found = checkpoints(run_dir)
    return max(found, key=lambda p: (p.stat().st_mtime_ns, p.name)) if found else None


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


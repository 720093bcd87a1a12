"""What every benchmark here shares: interleaved rounds, medians, paired ratios and target lines.

Only ratios measured side by side in one run mean anything on a shared machine. So every
script runs each of its variants once per round, rotates the order from round to round, drops
a warm-up round, and reports a variant's median over the rounds; a ratio divides two medians,
and the per-round ratios (the two variants' runs of the same round, paired) show the noise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOISY = 0.10  # per-round ratios further apart than this: the verdict is within this run's noise
# glibc serves large blocks (a batch, an activation) with mmap below a threshold that it moves
# by itself as blocks are freed, so one variant's allocation history can make the next one's
# steps 10-20% slower or faster. Fixed thresholds make every variant allocate the same way.
ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": str(64 << 20), "MALLOC_TRIM_THRESHOLD_": str(128 << 20)}


def steady_allocator() -> None:
    """Run this script again with ALLOCATOR in the environment (Linux; once). Set
    TORCHX_BENCH_NATIVE_ALLOCATOR=1 to measure with glibc's own moving thresholds."""
    if sys.platform != "linux" or os.environ.get("TORCHX_BENCH_NATIVE_ALLOCATOR") or \
            all(os.environ.get(k) == v for k, v in ALLOCATOR.items()):
        return
    os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **ALLOCATOR})


def allocator_note() -> str:
    fixed = all(os.environ.get(k) == v for k, v in ALLOCATOR.items())
    return "glibc malloc thresholds fixed (harness.ALLOCATOR)" if fixed else "glibc malloc thresholds: native"


def interleave(variants: dict[str, Callable[[], float]], rounds: int, warmup: bool = True,
               label: str = "") -> dict[str, list[float]]:
    """`rounds` measurements of every variant (what its callable returns), round-robin with the
    order rotated by one each round, after one dropped warm-up round."""
    names = list(variants)
    if warmup:
        for name in names:
            variants[name]()
        progress(f"{label}warm-up round done (dropped)")
    values: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            values[name].append(variants[name]())
        progress(f"{label}round {r + 1}/{rounds} done")
    return values


def ratio(values: dict[str, list[float]], a: str, b: str) -> float:
    """The figure: the median of `a` over the median of `b`."""
    return statistics.median(values[a]) / statistics.median(values[b])


def paired(values: dict[str, list[float]], a: str, b: str) -> tuple[float, float, float]:
    """Median, min and max over rounds of a / b taken within one round."""
    rs = [x / y for x, y in zip(values[a], values[b])]
    return statistics.median(rs), min(rs), max(rs)


def target(values: dict[str, list[float]], a: str, b: str, limit: float | None, at_least: bool = False,
           note: str = "") -> bool:
    """Print `target a / b <= limit` (or `>=` with at_least) with its verdict and the per-round
    spread, or with limit None the ratio alone, for information; return whether it passes."""
    value, (med, lo, hi) = ratio(values, a, b), paired(values, a, b)
    ok = limit is None or (value >= limit if at_least else value <= limit)
    noisy = f"; NOISY: rounds differ by more than {NOISY:.2f}" if hi - lo > NOISY and not at_least else ""
    head = f"{a} / {b}: {value:.3f}" if limit is None else \
        f"target {a} / {b} {'>=' if at_least else '<='} {limit:g}: {value:.3f} {'PASS' if ok else 'FAIL'}"
    print(f"{head}   [per round {med:.3f} ({lo:.3f}..{hi:.3f}){noisy}]{note}")
    return ok


def table(values: dict[str, list[float]], reference: str, unit: str, scale: float = 1.0,
          digits: int = 4, extra: tuple[str, dict[str, float]] | None = None) -> None:
    """One row per variant: its median, its ratio to `reference` and the per-round ratios, and
    `extra` (a heading, and a value per variant) as a last column."""
    head = f"{extra[0]:>16}" if extra else ""
    print(f"\n{'variant':<24} {'median ' + unit:>16} {'ratio to ' + reference:>22} {'per round (min..max)':>24} {head}")
    for name, vs in values.items():
        med, lo, hi = paired(values, name, reference)
        last = f"{extra[1][name]:>16.3f}" if extra else ""
        print(f"{name:<24} {statistics.median(vs) * scale:>16.{digits}f} {ratio(values, name, reference):>22.3f} "
              f"{f'{med:.3f} ({lo:.3f}..{hi:.3f})':>24} {last}")


@contextlib.contextmanager
def patched(obj, name: str, value):
    """`obj.name = value` for the duration (removed again if obj had no own attribute of that name)."""
    had, old = name in vars(obj), vars(obj).get(name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if had:
            setattr(obj, name, old)
        else:
            delattr(obj, name)


def mark_epochs(stack: contextlib.ExitStack, prog: str, mark: Callable[..., None]) -> str:
    """Have `mark()` called at every epoch start and at the end of training of `prog` run in this
    process by torchx.cli.main (train_pl.py: hooks added to its TorchxState callback; train.py:
    around torchx.loop.train_epoch, which fit looks up each epoch, and fit); the patches last as
    long as `stack`. Returns the loop module cli.main takes for `prog`."""
    import torchx.loop
    from torchx.checkpoint import TorchxState

    if prog == "train_pl.py":
        for hook in ("on_train_epoch_start", "on_train_end"):
            stack.enter_context(patched(TorchxState, hook, mark))
        return "torchx.fit"
    train_epoch, fit = torchx.loop.train_epoch, torchx.loop.fit

    def marked_epoch(*args, **kwargs):
        mark()
        return train_epoch(*args, **kwargs)

    def marked_fit(*args, **kwargs):
        fit(*args, **kwargs)
        mark()

    stack.enter_context(patched(torchx.loop, "train_epoch", marked_epoch))
    stack.enter_context(patched(torchx.loop, "fit", marked_fit))
    return "torchx.loop"


def add_round_options(p: argparse.ArgumentParser, quick: str) -> None:
    """--quick (`quick` says what it shrinks), --rounds and --threads, as every per-step script takes them."""
    p.add_argument("--quick", action="store_true", help=quick)
    p.add_argument("--rounds", type=int, help="timed rounds (default 5, --quick 3); at least 3")
    p.add_argument("--threads", type=int, default=1, help="torch.set_num_threads for every variant (default 1)")


def rounds_of(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """The rounds to run; also sets torch's threads and silences advice warnings for the measurement."""
    import warnings

    import torch

    rounds = args.rounds or (3 if args.quick else 5)
    if rounds < 3:
        p.error("--rounds must be at least 3")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")  # Lightning's advice about workers and log intervals
    return rounds


def progress(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def quiet():
    """stdout and stderr (epoch lines, progress bars, Lightning's notices) to /dev/null."""
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null), contextlib.redirect_stderr(null):
        yield


@contextlib.contextmanager
def scratch():
    path = Path(tempfile.mkdtemp(prefix="torchx-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def shared_mnist() -> Path | None:
    """The real MNIST IDX files beside the repository, if they are there."""
    path = (ROOT / ".." / "shared" / "data" / "mnist").resolve()
    return path if path.is_dir() else None


# Run before the script: stop the clock at the end of the first optimizer step, then leave at once.
FIRST_STEP = textwrap.dedent("""
    import os, runpy, sys, time
    from torch.optim.optimizer import register_optimizer_step_post_hook

    def first_step(optimizer, args, kwargs):
        with open(os.environ["BENCH_FIRST_STEP"], "w") as f:
            f.write(repr(time.time()))
        os._exit(0)

    register_optimizer_step_post_hook(first_step)
    sys.argv = sys.argv[1:]
    sys.path[0] = os.path.dirname(os.path.abspath(sys.argv[0]))
    runpy.run_path(sys.argv[0], run_name="__main__")
""")


def first_step_seconds(cmd: list[str], work: Path) -> float:
    """Wall seconds from spawning `python <cmd>` to the end of its first optimizer step."""
    stamp = work / "first-step"
    stamp.unlink(missing_ok=True)
    env = {**os.environ, "BENCH_FIRST_STEP": str(stamp)}
    start = time.time()
    done = subprocess.run([sys.executable, "-c", FIRST_STEP, *cmd], cwd=ROOT, env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    if not stamp.exists():
        raise RuntimeError(f"{' '.join(cmd)} ended (exit {done.returncode}) before its first optimizer step:\n"
                           f"{done.stderr[-2000:]}")
    return float(stamp.read_text()) - start

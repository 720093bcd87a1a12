"""What checkpoints cost: the epoch-end checkpoint as a share of epoch time, and resume to first step
against a fresh start, for both entry points.

    python bench/checkpoint.py [--quick] [--rounds N]

1. Epoch-end share. Each entry point trains, in this process through its real command line
   (`torchx.cli.main`, run directory and all), the tiny CNN with Adam (so the optimizer state
   is in every file too) on MNIST-sized synthetic data (55,000 training images, 5,000
   validation, batch 64: 860 steps an epoch), 2 epochs, with
   `checkpoint: {monitor: val/acc, mode: max, save_last: true}`: every epoch writes the new
   best and last.ckpt, each atomically (temp file, fsync, rename). Timed: all the epoch-end
   checkpoint work (train_pl.py: ModelCheckpoint's `on_validation_end` and
   `on_train_epoch_end` hooks, which gather the state, write, fsync and remove the superseded
   file; train.py: the same two hooks of its `Checkpoints`), against the epoch's wall time (from one epoch's
   start to the next, validation included). A run's share = checkpoint time / epoch time.
2. Resume. Command to first optimizer step (as bench/startup.py times it) of
   `--resume` of a finished 1-epoch run with trainer_params.max_epochs=2 (find the run, read its
   config and checkpoint, check it fits, restore weights, optimizer, loops and data position)
   against a fresh start of the same config, 8192 in-memory samples.

--quick: 8192 training samples (128 steps an epoch), 1 epoch a run, the resume part for
train_pl.py only, and no warm-up round. Its epochs are ~7x shorter than a real MNIST epoch, so
its share is ~7x too large: it is printed for information, without a verdict.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import logging
import os
import statistics
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import (  # noqa: E402
    ROOT,
    allocator_note,
    first_step_seconds,
    interleave,
    mark_epochs,
    patched,
    quiet,
    scratch,
    steady_allocator,
    table,
    target,
)

steady_allocator()  # before anything is imported or allocated

sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from pytorch_lightning.callbacks import ModelCheckpoint  # noqa: E402

import torchx.loop  # noqa: E402
from torchx import cli  # noqa: E402

LIMIT = 0.01


def config(n_train: int, n_val: int, epochs: int) -> str:
    return f"""data_module:
  name: synthetic
  args: {{n_train: {n_train + n_val}, n_test: 64, val_split: {n_val}, batch_size: 64}}
train_wrapper:
  name: base
  args:
    model_spec: {{name: tiny_cnn}}
    loss_spec: {{name: ce}}
    optim_spec: {{name: Adam, args: {{lr: 1.e-3}}}}
trainer_params: {{max_epochs: {epochs}}}
checkpoint: {{monitor: val/acc, mode: max, save_last: true}}
seed: 0
"""


class Watch:
    """Epoch starts, the end of training, and the seconds spent in checkpoint work."""

    def __init__(self) -> None:
        self.marks: list[float] = []
        self.ckpt = 0.0

    def mark(self, *args, **kwargs) -> None:
        self.marks.append(time.perf_counter())

    def share(self) -> tuple[float, float]:
        """(checkpoint seconds / epoch seconds, mean epoch seconds) of the run."""
        epochs = self.marks[-1] - self.marks[0]
        return self.ckpt / epochs, epochs / (len(self.marks) - 1)


def timing(fn, watch_of):
    """`fn` with its seconds added to the current Watch."""
    @functools.wraps(fn)
    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            watch_of().ckpt += time.perf_counter() - start
    return timed


def epoch_share(prog: str, cfg_file: Path, save: Path, name: str) -> tuple[float, float, float]:
    """Train `prog` on cfg_file in this process; (share, mean epoch s, bytes of last.ckpt)."""
    watch = Watch()
    current = lambda: watch  # noqa: E731
    checkpointer = ModelCheckpoint if prog == "train_pl.py" else torchx.loop.Checkpoints  # train.py's copy of it
    with contextlib.ExitStack() as stack:
        loop = mark_epochs(stack, prog, watch.mark)
        for hook in ("on_validation_end", "on_train_epoch_end"):
            stack.enter_context(patched(checkpointer, hook, timing(getattr(checkpointer, hook), current)))
        with quiet():
            code = cli.main(["--config", str(cfg_file), "--save-dir", str(save), "--name", name], prog, loop)
    if code != 0:
        raise RuntimeError(f"{prog} exited {code}")
    share, epoch_s = watch.share()
    return share, epoch_s, (save / name / "ckpt" / "last.ckpt").stat().st_size


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="128 steps an epoch, no warm-up round")
    p.add_argument("--rounds", type=int, help="timed rounds (default 3, --quick 3); at least 3")
    args = p.parse_args()
    rounds = args.rounds or 3
    if rounds < 3:
        p.error("--rounds must be at least 3")
    warnings.filterwarnings("ignore")
    for name in ("pytorch_lightning", "lightning_fabric"):  # their notices go to handlers quiet() cannot reach
        logging.getLogger(name).setLevel(logging.ERROR)
    torch.set_num_threads(1)
    n_train = 8192 if args.quick else 55000
    print(f"torchx checkpoint benchmark{' --quick' if args.quick else ''}: torch {torch.__version__}, "
          f"{os.cpu_count()} CPU cores, torch.set_num_threads(1), {allocator_note()}")
    ok = True
    with scratch() as work:
        epochs = 1 if args.quick else 2
        (work / "epochs.yaml").write_text(config(n_train, n_train // 11, epochs))
        runs = iter(range(10**6))
        found: dict[str, list[tuple[float, float, float]]] = {"train_pl.py": [], "train.py": []}

        def measure(prog: str) -> float:
            found[prog].append(epoch_share(prog, work / "epochs.yaml", work / "save", f"run{next(runs)}"))
            return found[prog][-1][0]

        interleave({prog: functools.partial(measure, prog) for prog in found}, rounds,
                   warmup=not args.quick, label="epoch-end share: ")
        print(f"\n1. epoch-end checkpoint / epoch time: tiny CNN + Adam, {n_train} training and {n_train // 11} "
              f"validation samples (synthetic, in memory), batch 64, {epochs} epoch(s) a run; {rounds} rounds, "
              f"interleaved")
        print(f"{'entry point':<14} {'share (median)':>15} {'per round (min..max)':>22} {'epoch s':>9} "
              f"{'checkpoint ms':>14} {'last.ckpt KiB':>14}")
        for prog, rows in found.items():
            rows = rows[-rounds:]  # the warm-up round's run is not counted
            share = statistics.median(r[0] for r in rows)
            epoch_s = statistics.median(r[1] for r in rows)
            print(f"{prog:<14} {share:>14.3%} {f'{min(r[0] for r in rows):.3%}..{max(r[0] for r in rows):.3%}':>22} "
                  f"{epoch_s:>9.2f} {share * epoch_s * 1000:>14.1f} {rows[-1][2] / 1024:>14.1f}")
            verdict = share <= LIMIT
            if args.quick:
                print(f"{prog} epoch-end checkpoint / epoch time: {share:.3%} (--quick: short epochs, information)")
                continue
            ok &= verdict
            print(f"target {prog} epoch-end checkpoint / epoch time <= {LIMIT:.0%}: {share:.3%} "
                  f"{'PASS' if verdict else 'FAIL'}")

        (work / "resume.yaml").write_text(config(8192, 0, 1))
        save = work / "save"
        entry_points = (("train_pl.py", "torchx.fit"),) if args.quick else (("train_pl.py", "torchx.fit"),
                                                                             ("train.py", "torchx.loop"))
        for prog, loop in entry_points:
            with quiet():
                if cli.main(["--config", str(work / "resume.yaml"), "--save-dir", str(save), "--name", f"base-{prog}",
                             "+trainer_params.enable_progress_bar=false"], prog, loop) != 0:
                    raise RuntimeError(f"{prog}: the run to resume failed")

        def fresh(prog: str) -> float:
            return first_step_seconds([prog, "--config", str(work / "resume.yaml"), "--save-dir", str(save),
                                       "--name", f"fresh{next(runs)}", "trainer_params.max_epochs=2"], work)

        def resume(prog: str) -> float:
            return first_step_seconds([prog, "--save-dir", str(save), "--name", f"base-{prog}", "--resume",
                                       "trainer_params.max_epochs=2"], work)

        starts = interleave({f"{prog} {kind}": functools.partial(fn, prog) for prog, _ in entry_points
                             for kind, fn in (("fresh", fresh), ("resume", resume))},
                            rounds, warmup=not args.quick, label="resume: ")
    print(f"\n2. command to first optimizer step, fresh start against --resume (8192 in-memory samples); "
          f"{rounds} rounds, interleaved")
    table(starts, "train_pl.py fresh", "s", digits=2)
    for prog, _ in entry_points:
        target(starts, f"{prog} resume", f"{prog} fresh", None, note="  (information)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

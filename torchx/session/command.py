"""The session command: check every experiment, claim or join SAVE_DIR/NAME, run what is to run,
print the summary."""

from __future__ import annotations

import argparse
from pathlib import Path

from torchx import config as C
from torchx.errors import ConfigError
from torchx.session.controller import Controller
from torchx.session.document import SESSION_FILE, compare, create, locked, new_document, read_document, tally
from torchx.session.plan import Experiment, gpu_groups, pick, plan, session_name
from torchx.session.summary import write_summary


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


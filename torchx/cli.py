"""The command line of train_pl.py and train.py, and `python -m torchx list|config`.

Every mistake in a config or an argument ends here as one line on stderr and exit status 2;
set TORCHX_DEBUG=1 to see the traceback behind it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import random
import sys
from pathlib import Path
from typing import Any

import yaml

from torchx import config as C
from torchx import session
from torchx.errors import ConfigError, NothingToDo, TorchxError
from torchx.run import (
    DEFAULT_SAVE_DIR,
    Run,
    check_run_name,
    check_save_dir,
    config_diff,
    inspect_checkpoint,
    locate,
    logging_step,
    saved_config,
    training_done,
)

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def parser(prog: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description="Train the experiment a YAML config describes.",
        epilog="KEY=VALUE overrides use dotted keys and YAML values, e.g. trainer_params.max_epochs=3; "
               "a new key under a spec's args, trainer_params or checkpoint needs nothing more "
               "(data_module.args.download=true); +KEY=VALUE adds a key anywhere else.")
    p.add_argument("--config", help="experiment config (YAML)")
    p.add_argument("--name", help="run name: the run directory is SAVE_DIR/NAME (default: config file stem)")
    p.add_argument("--gpu", help="CUDA device ids, e.g. 0 or 1,2 (several: DDP); default: CPU")
    p.add_argument("--resume", nargs="?", const=True, default=None, metavar="CKPT",
                   help="continue SAVE_DIR/NAME from ckpt/last.ckpt, or from CKPT")
    p.add_argument("--trust-checkpoint", action="store_true",
                   help="load a --resume checkpoint that holds pickled Python objects (runs code from the file)")
    p.add_argument("--save-dir", default=DEFAULT_SAVE_DIR,
                   help=f"where run directories go (default: {DEFAULT_SAVE_DIR})")
    p.add_argument("--dry-run", action="store_true",
                   help="check and build everything, print the resolved config, create nothing "
                        "(a session: do so for every experiment and list them)")
    p.add_argument("--jobs", metavar="N",
                   help="a session (a config with sweep or search keys): run N experiments at once (default: 1)")
    p.add_argument("--only", metavar="K",
                   help="a session: run only experiment K (0-based index or name), e.g. one task of a job array")
    p.add_argument("--worker", action="store_true",
                   help="a search session: join it (creating it if it is new) and draw trials until its study has "
                        "n_trials; several workers, on several machines with search.storage, share one study")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides")
    return p


def parse_args(argv: list[str], prog: str) -> argparse.Namespace:
    args = parser(prog).parse_intermixed_args(argv)  # overrides may come before or after options
    # `--resume a.b=1` means a bare --resume followed by an override, not a checkpoint named a.b=1
    if isinstance(args.resume, str) and "=" in args.resume and not Path(args.resume).exists():
        args.overrides.insert(0, args.resume)
        args.resume = True
    args.gpus = parse_gpus(args.gpu)
    args.jobs = session.parse_jobs(args.jobs)
    return args


def parse_gpus(text: str | None) -> list[int] | None:
    """`--gpu 0` or `--gpu 1,2`: CUDA device indices written in ASCII digits, each once."""
    if text is None:
        return None
    max_index = 1023  # far beyond any machine; stops a thousand-digit id before int() refuses it
    shown = repr(text) if len(text) <= 40 else f"{text[:20]!r}... ({len(text)} characters)"
    usage = f"--gpu {shown} is not a list of CUDA device ids like 0 or 1,2"
    if not text.strip():
        raise ConfigError(f"{usage}: it is empty")
    gpus = []
    for p in (p.strip() for p in text.split(",")):
        if not p:
            raise ConfigError(f"{usage}: an id is empty (a comma too many?)")
        # str.isdigit and int() also take other scripts' digits ('٣' is 3) and superscripts
        if not (p.isascii() and p.isdigit()):
            if p.startswith("-") and p[1:].strip().isdigit():
                raise ConfigError(f"{usage}: device ids are not negative ({p!r})")
            part = repr(p) if len(p) <= 20 else f"{p[:10]!r}..."
            raise ConfigError(f"{usage}: {part} is not a number written in the digits 0-9")
        digits = p.lstrip("0") or "0"
        if len(digits) > len(str(max_index)) or int(digits) > max_index:
            part = p if len(p) <= 20 else f"{p[:10]}... ({len(p)} digits)"
            raise ConfigError(f"{usage}: device id {part} is out of range (0 to {max_index})")
        gpus.append(int(digits))
    if len(set(gpus)) != len(gpus):
        raise ConfigError(f"--gpu {text!r} names a device twice")
    return gpus


def prepare(args: argparse.Namespace) -> Run:
    """Resolve, import and check the config; find the run directory. Creates nothing."""
    name = args.name if args.name is not None else (Path(args.config).stem if args.config else None)
    if name is None:
        raise ConfigError("give --config FILE (and optionally --name NAME), or --name NAME with --resume")
    check_run_name(name)
    check_save_dir(args.save_dir)
    run_dir, ckpt = locate(args.save_dir, name, args.resume)
    # resuming: this run's saved config; else --config; else the config saved beside the checkpoint
    saved = saved_config(run_dir) if args.resume else None
    if saved is None and isinstance(args.resume, str) and not args.config:
        saved = saved_config(Path(args.resume).resolve().parent.parent)
    if saved is not None:
        if args.config:
            print(f"resuming with the saved config of '{run_dir}'; --config {args.config} is not read",
                  file=sys.stderr)
        cfg = C.resolve(C.apply_overrides(saved, args.overrides))
        for line in config_diff(saved, cfg):
            print(f"override on resume: {line}", file=sys.stderr)
    elif args.config:
        cfg = C.load_config(args.config, args.overrides)
    else:
        raise ConfigError(f"--config FILE is required: '{run_dir}' has no saved config.yaml to resume with")
    if args.gpus:
        from torchx.build import check_gpus

        check_gpus(args.gpus)
    imported = C.import_modules(cfg)
    C.check(cfg, config_file=args.config if saved is None else None)
    loaded = inspect_checkpoint(ckpt, trust=args.trust_checkpoint) if ckpt is not None else None
    if args.resume is True and loaded is not None and (run_dir / "results.json").is_file() \
            and training_done(loaded, cfg):
        params = cfg.get("trainer_params") or {}
        raise NothingToDo(f"{run_dir} has finished: it trained to step {loaded['global_step']} (max_epochs="
                          f"{params.get('max_epochs')}, max_steps={params.get('max_steps', -1)}) and wrote "
                          f"results.json; nothing left to do, nothing was changed. To train longer, raise the "
                          f"limit: --resume trainer_params.max_epochs=N")
    if cfg.get("seed") is None:  # every run has a seed; DDP children inherit the parent's
        cfg["seed"] = int(os.environ.get("PL_GLOBAL_SEED", random.randrange(2**31)))
    return Run(dir=run_dir, config=cfg, ckpt_path=ckpt, ckpt=loaded,
               resume_step=logging_step(loaded) if loaded is not None else None,
               trust_checkpoint=args.trust_checkpoint, restart=bool(args.resume) and ckpt is None,
               config_file=Path(args.config) if args.config else None, imported_files=imported)


def dry_run(args: argparse.Namespace, run: Run, loop: Any) -> None:
    """Build and check every component as a run does before it creates anything (`checks.dry`), then
    print the resolved config and a summary."""
    from torchx import build, checks

    cfg = run.config
    data, wrapper, read = checks.dry(args, run, loop)
    optimizers, scheds = build.optimizers_of(wrapper)
    cbs = build.user_callbacks(cfg)
    print(yaml.safe_dump(cfg, sort_keys=False), end="")
    print("---")
    print(f"run directory : {run.dir} ({'resume from ' + str(run.ckpt_path) if run.ckpt_path else 'new'})")
    print(f"data_module   : {build.describe(data)}" + ("" if read else " (not read: download is on)"))
    print(f"train_wrapper : {build.describe(wrapper)}")
    for opt in optimizers:
        shown = ", ".join(f"{k}={v}" for k, v in opt.defaults.items() if k in ("lr", "momentum", "weight_decay"))
        print(f"optimizer     : {type(opt).__name__}({shown})")
    for s in scheds:
        print(f"lr_scheduler  : {type(s['scheduler']).__name__} every {s.get('frequency', 1)} "
              f"{s.get('interval', 'epoch')}(s)")
    for cb in cbs:
        print(f"callback      : {type(cb).__name__}")
    print("dry run: nothing was created")


def main(argv: list[str] | None, prog: str, loop: str) -> int:
    """Parse, prepare, then `<loop>.train(args, run)`; bad input becomes one message and exit 2.

    A config with sweep keys (or a session directory) goes to `torchx.session` instead.

    `loop` names the module that trains (torchx.fit or torchx.loop); it is imported only
    after the command line and the config have been checked, so mistakes fail fast.
    """
    try:
        argv = sys.argv[1:] if argv is None else argv
        args = parse_args(argv, prog)
        if session.is_session(args):  # sweep keys: every combination runs as its own child process
            return session.main(args, prog, loop, argv)
        session.refuse_session_options(args)
        run = prepare(args)
        module = importlib.import_module(loop)
        if args.dry_run:
            dry_run(args, run, module)
            return 0
        return module.train(args, run)
    except NothingToDo as e:
        print(f"{prog}: {e}")
        return 0
    except TorchxError as e:
        return fail(prog, e)
    except KeyboardInterrupt:  # before training started (imports, reading data): no traceback for a Ctrl-C
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def fail(prog: str, e: BaseException) -> int:
    if os.environ.get("TORCHX_DEBUG"):
        raise e
    print(f"{prog}: error: {e}", file=sys.stderr)
    return EXIT_BAD_INPUT


# ---------------------------------------------------------------- python -m torchx

KINDS = ("models", "losses", "datasets", "wrappers", "callbacks", "optimizers", "schedulers", "metrics", "loggers")


def tool_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m torchx", description="torchx tools")
    sub = p.add_subparsers(dest="command", required=True)
    ls = sub.add_parser("list", help="list registered names: name, where defined, first docstring line")
    ls.add_argument("kind", nargs="?", choices=KINDS, help="one kind (default: all)")
    ls.add_argument("--config", help="also import the config's `imports:` modules")
    cf = sub.add_parser("config", help="print the resolved, checked config")
    cf.add_argument("file")
    cf.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    pt = sub.add_parser("plot", help="draw the metrics of one or several runs (or a session) into a PNG")
    pt.add_argument("runs", nargs="+", metavar="RUN_DIR")
    pt.add_argument("--metrics", help="comma-separated metric names (default: every logged metric)")
    pt.add_argument("-o", "--out", default="plot.png", help="output PNG (default: plot.png)")
    pt.add_argument("--x", default="auto", choices=("auto", "step", "epoch"),
                    help="x axis (default auto: epochs when the runs' epochs differ in steps, else steps)")
    add_tool_parsers(sub)
    args, extra = p.parse_known_args(argv)
    # KEY=VALUE after an option (`test RUN --ckpt last a=1`) is left over by argparse: an override still
    if extra and (not hasattr(args, "overrides") or any(x.startswith("-") or "=" not in x for x in extra)):
        p.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides += extra
    try:
        if args.command in TOOLS:
            return importlib.import_module(f"torchx.tools.{TOOLS[args.command]}").main(args)
        if args.command == "list":
            return list_registered(args.kind, args.config)
        if args.command == "plot":
            from torchx.plot import plot

            wanted = [m.strip() for m in args.metrics.split(",") if m.strip()] if args.metrics else None
            print(f"wrote {plot(args.runs, wanted, args.out, args.x)}")
            return 0
        cfg = C.load_config(args.file, args.overrides)
        C.import_modules(cfg)
        C.check(cfg, config_file=args.file)
        print(yaml.safe_dump(cfg, sort_keys=False), end="")
        return 0
    except TorchxError as e:
        return fail("python -m torchx", e)


# the after-training commands and the torchx.tools module each one runs (its main(args))
TOOLS = {"test": "evaluate", "validate": "evaluate", "predict": "predict", "export": "export", "rerun": "rerun"}
CKPT_HELP = ("the checkpoint: best (the one the run ranked best by checkpoint.monitor, the default), last "
             "(ckpt/last.ckpt) or a checkpoint file")


def add_tool_parsers(sub: Any) -> None:
    """test, validate, predict, export and rerun: each reads a finished (or interrupted) run directory."""
    def run_parser(name: str, help: str, ckpt: bool = True) -> argparse.ArgumentParser:
        q = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".")
        q.add_argument("run_dir", metavar="RUN_DIR", help="a run directory, e.g. save/digits")
        if ckpt:
            q.add_argument("--ckpt", default="best", metavar="best|last|PATH", help=CKPT_HELP)
            q.add_argument("--trust-checkpoint", action="store_true",
                           help="load a checkpoint that holds pickled Python objects (runs code from the file)")
        return q

    for name, split in (("test", "test"), ("validate", "validation")):
        q = run_parser(name, f"evaluate a run's checkpoint on its {split} split and write "
                             f"RUN_DIR/eval/{'test' if name == 'test' else 'val'}-<ckpt>.json")
        q.add_argument("--gpu", help="CUDA device ids as in training, e.g. 0 or 1,2 (several: DDP); default: CPU")
        q.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                       help="changes to the run's config for this evaluation (another data module or split, a "
                            "batch size), printed as a diff and recorded")
    q = run_parser("predict", "run a run's model on images, a folder of images or a split of its data, "
                              "and write the predictions")
    q.add_argument("--input", required=True, metavar="PATH|split:NAME",
                   help="an image file, a folder of images, or split:train|val|test of the run's data module")
    q.add_argument("--out", metavar="FILE",
                   help="where to write: .csv (classifiers: input, class, top-k scores), .pt or .npy "
                        "(default: RUN_DIR/predictions/<input>-<ckpt>.csv, or .pt for other models)")
    q.add_argument("--top-k", type=int, default=5, metavar="K", help="scores of the K best classes (default: 5)")
    q.add_argument("--batch-size", type=int, metavar="N", help="images per batch (default: the run's eval batch size)")
    q.add_argument("--gpu", help="a CUDA device id, e.g. 0; default: CPU")
    q = run_parser("export", "write a run's model as a file that runs without torchx, load it back and "
                             "compare its outputs with the model's")
    q.add_argument("--format", required=True, choices=("torchscript", "onnx", "exported-program"),
                   help="torchscript (torch.jit), onnx (needs the onnx package) or exported-program (torch.export)")
    q.add_argument("--out", metavar="FILE",
                   help="the file to write (default: RUN_DIR/export/model-<ckpt>.pt, .onnx or .pt2)")
    q.add_argument("--batch-size", type=int, default=8, metavar="N",
                   help="size of the real batch the export is traced with and checked on (default: 8)")
    q.add_argument("--output-key", metavar="KEY",
                   help="for a model whose output is a dict or tuple: the entry to export (default: the run's "
                        "train_wrapper.args.output_key)")
    q = run_parser("rerun", "train a run again from its own src/ snapshot, config and seed into a new run "
                            "directory, then compare the two runs' metrics.csv", ckpt=False)
    q.add_argument("--name", help="the new run's name (default: <run name>-rerun, -rerun-2, ...)")


def list_registered(kind: str | None, config_file: str | None) -> int:
    from torchx import callbacks, datasets, loggers, losses, metrics, models, optim, wrappers

    if config_file:
        C.import_modules(C.load_config(config_file))
    registries = {"models": models.registry, "losses": losses.registry, "datasets": datasets.registry,
                  "wrappers": wrappers.registry, "callbacks": callbacks.registry,
                  "optimizers": optim.optimizers, "schedulers": optim.schedulers, "metrics": metrics.registry,
                  "loggers": loggers.registry}
    for k in [kind] if kind else KINDS:
        print(f"{k}:")
        for name, origin, doc in registries[k].describe():
            print(f"  {name:<32} {origin:<48} {doc}")
        if k == "models":  # the zoos behind the registered names: a summary, not their thousands of names
            for line in models.zoo.summary(len(registries[k])):
                print(line)
    return 0


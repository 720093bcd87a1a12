"""The session command: check every experiment, claim or join SAVE_DIR/NAME, run what is to run,
print the summary."""

from __future__ import annotations

import argparse
import copy
from collections.abc import Iterable
from pathlib import Path

from torchx import config as C
from torchx.errors import ConfigError
from torchx.session import space
from torchx.session.controller import Controller
from torchx.session.document import SESSION_FILE, compare, create, locked, new_document, read_document, tally
from torchx.session.plan import (
    Experiment,
    Point,
    checked,
    fold_name,
    gpu_groups,
    has_session_keys,
    pick,
    plan,
    session_name,
    with_fold,
)
from torchx.session.plan import points as plan_points
from torchx.session.search import (
    Search,
    check_metric,
    check_storage,
    first_values,
    make_sampler,
    optuna,
    preview,
    shown_url,
    storage_url,
)
from torchx.session.summary import write_summary
from torchx.trial import make_pruner


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
    if doc is not None and not args.resume and args.only is None and not args.dry_run and not args.worker:
        raise ConfigError(f"session '{folder}' already exists; torchx never overwrites it. Continue it with "
                          f"--resume, or start a new session with --name <other name>")
    cfg = C.apply_overrides(C.load(args.config) if args.config else doc["config"], args.overrides)
    search, folds = space.search_settings(cfg), space.folds_settings(cfg)
    if doc is not None:
        compare(doc, cfg, folder, from_file=bool(args.config), search=search)
    elif not has_session_keys(cfg):
        raise ConfigError(f"'{args.config}' has no sweep keys; it is a single run, not a session")
    refuse_mixed(args, search, folds)
    experiments = plan(cfg, config_file=args.config) if search is None else probes(cfg, search, folds, args.config)
    if args.gpus:
        from torchx.build import check_gpus

        check_gpus(args.gpus)
    groups = gpu_groups(args.gpus, jobs, prog)
    only = pick(args.only, experiments) if args.only is not None else None
    if doc is None and args.resume and only is None:
        raise ConfigError(f"--resume: there is no session '{folder}' to resume; drop --resume to start it")
    # every combination gets the checks a single run gets, before the session folder exists
    dry_build(folder, [experiments[only]] if only is not None else experiments, args, loop, groups[0],
              metric=search.metric if search else None)
    if search is not None:
        check_storage(search)
    if args.dry_run:
        if search is not None:
            describe_search(folder, search, folds, plan_points(cfg), doc)
        else:
            list_experiments(folder, cfg, experiments, doc, only)
        return 0
    runs = [] if search is not None else experiments  # a search adds its trials as it draws them
    if doc is None:
        doc = new_document(name, prog, argv, args.config, cfg, runs, search, folds)
        if not create(folder, doc, runs):  # another task of the job array (or worker) was first: join it
            compare(read_document(folder), cfg, folder, from_file=bool(args.config), search=search)
    if search is not None:
        driver = Search(folder, name, search, plan_points(cfg), folds, args.config)
        todo: Iterable[Experiment] = driver.trials(resume=bool(args.resume))
        controller = Controller(folder, args, prog, loop, groups, echo=jobs == 1, env=driver.env,
                                on_finish=driver.on_finish)
    else:
        todo = [experiments[only]] if only is not None else experiments
        controller = Controller(folder, args, prog, loop, groups, echo=jobs == 1)
    code = controller.run(todo)
    with locked(folder) as doc:
        table = write_summary(folder, doc)
    print(f"\nsession {folder}: {tally(doc)}\n\n{table}", end="")
    if only is not None:
        return controller.statuses.get(only, 0)
    return code


def refuse_mixed(args: argparse.Namespace, search: space.Search | None, folds: space.Folds | None) -> None:
    """Options and sections that do not go together, before anything is built."""
    if search is not None:
        optuna()
        make_pruner(search.pruner)  # its arguments, and the sampler's, checked now
        make_sampler(search, search.seed)
        if args.only is not None:
            raise ConfigError(f"--only {args.only} runs one experiment of a grid; a search draws its trials as it "
                              f"goes: to run it from several processes or array tasks, give each --worker")
        if folds is not None and search.pruner["name"] != "none":
            raise ConfigError(f"search.pruner {search.pruner['name']} with cross_validation: a trial's folds are "
                              f"separate runs that each would report the same steps; leave the pruner out (none) "
                              f"or cross-validate without it")
    elif args.worker:
        raise ConfigError("--worker draws trials of a search (keys ending in '~'); this session is a grid: run "
                          "its experiments with --only K, one per array task")


def probes(cfg: dict, search: space.Search, folds: space.Folds | None, config_file: str | None) -> list[Experiment]:
    """What a search is checked with before it starts: at each grid point (and its first fold) the
    config with the values of the first trial the sampler would draw."""
    values = first_values(search)
    found = []
    for point in plan_points(cfg):
        c = copy.deepcopy(point.config)
        for d, v in zip(search.space, values):
            C.assign(c, d.path, v)
        fold = 0 if folds else None
        name = fold_name(point.name or "trial", fold)
        found.append(Experiment(point.index, name, point.params, checked(with_fold(c, folds, fold), name,
                                                                         config_file), point=point.index))
    return found


def describe_search(folder: Path, search: space.Search, folds: space.Folds | None, points: list[Point],
                    doc: dict | None) -> None:
    """--dry-run of a search: its space, sampler, pruner and storage, and the first trials it would draw."""
    print(f"session   : {folder} ({tally(doc) if doc else 'new'})")
    print(f"space     : {'; '.join(d.describe() for d in search.space)}")
    if points[0].name:
        print(f"grid      : {len(points)} points, a study each: {', '.join(p.name for p in points[:6])}"
              f"{', ...' if len(points) > 6 else ''}")
    print(f"sampler   : {search.method}, seed {search.seed}; {search.n_trials} trials"
          f"{' per grid point' if points[0].name else ''}, scored by {search.metric} ({search.direction})")
    args = ", ".join(f"{k}={v}" for k, v in search.pruner["args"].items())
    print(f"pruner    : {search.pruner['name']}{f' ({args})' if args else ''}")
    print(f"storage   : {shown_url(storage_url(search, folder))}")
    if folds:
        print(f"folds     : {folds.folds} per trial (seed {folds.seed}); a trial scores the mean over its folds")
    shown = min(search.n_trials, 5)
    later = " (later ones follow from the results)" if search.method == "tpe" else ""
    print(f"first trials drawn{later}:")
    for number, params, _ in preview(search, shown):
        shown_values = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        print(f"  t{number:0{len(str(search.n_trials - 1))}d}  {shown_values}")
    print("dry run: nothing was created")


def dry_build(folder: Path, experiments: list[Experiment], args: argparse.Namespace, loop: str,
              gpus: list[int] | None, metric: str | None = None) -> None:
    """The checks a single run makes before it creates anything (`checks.dry`: every component
    built, one batch through the model, a negative learning rate or a bad val_split found), for
    every experiment; experiments with the same data_module share its data. A search's `metric`
    must be one the wrapper logs. Creates nothing."""
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
            data, wrapper, read = checks.dry(child, Run(dir=folder / e.name, config=cfg), module, cache)
            if metric is not None:
                check_metric(metric, data, wrapper, read)
        except ConfigError as err:
            raise ConfigError(f"experiment {e.index} ({e.name}): {err}") from None


def list_experiments(folder: Path, cfg: dict, experiments: list[Experiment], doc: dict | None,
                     only: int | None) -> None:
    states = {e["index"]: e["state"] for e in doc["experiments"]} if doc else {}
    print(f"session   : {folder} ({tally(doc) if doc else 'new'})")
    grid = [f"{label} {values}" for _, label, values in C.sweep_labels(cfg)]
    folds = space.folds_settings(cfg)
    grid += [f"{folds.folds} folds"] if folds else []
    print(f"experiments: {len(experiments)} ({' x '.join(grid)})")
    for e in experiments:
        if only is None or e.index == only:
            print(f"  {e.index:>3}  {e.name}" + (f"  [{states.get(e.index, 'pending')}]" if doc else ""))
    print("dry run: nothing was created")


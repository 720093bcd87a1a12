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

A config with keys ending in `~` (distributions) is a search: its trials are experiments drawn
one at a time from an Optuna study (search.py); `cross_validation:` makes each experiment one
run per fold.

The parts: plan.py (the experiments, grid points and folds), space.py (the search space and the
search and cross_validation sections), document.py (session.yaml), controller.py (the child
processes), search.py (the Optuna study), summary.py (summary.csv/md, the ranking, best.yaml),
command.py (the command that ties them together).
"""

from torchx.session.command import dry_build, list_experiments, main
from torchx.session.controller import HOST, Controller, alive, last_line, pump
from torchx.session.document import (
    LOCK_FILE,
    SESSION_FILE,
    compare,
    create,
    locked,
    new_document,
    now,
    read_document,
    tally,
    write_atomic,
)
from torchx.session.plan import (
    NAME_MAX,
    Experiment,
    cpu_count,
    folder_name,
    gpu_groups,
    is_session,
    parse_jobs,
    pick,
    plan,
    refuse_session_options,
    session_name,
)
from torchx.session.summary import duration, markdown, summarize, write_summary

__all__ = ["HOST", "LOCK_FILE", "NAME_MAX", "SESSION_FILE", "Controller", "Experiment", "alive", "compare",
           "cpu_count", "create", "dry_build", "duration", "folder_name", "gpu_groups", "is_session", "last_line",
           "list_experiments", "locked", "main", "markdown", "new_document", "now", "parse_jobs", "pick", "plan",
           "pump", "read_document", "refuse_session_options", "session_name", "summarize", "tally", "write_atomic",
           "write_summary"]

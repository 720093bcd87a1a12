"""Settings of the test run itself."""

from __future__ import annotations

import os

# The files that take longest (each starts many processes of its own: DDP ranks, session
# experiments, killed and resumed runs), longest first. With `--dist loadfile` a worker takes a
# whole file at a time in collection order, so starting with these keeps one long file from
# running alone at the end while the other workers sit idle.
LONGEST_FIRST = (
    "test_readme.py",
    "test_fault_tolerance.py",
    "test_scale_out.py",
    "test_search.py",
    "test_session.py",
    "test_train_pl.py",
    "test_after_training.py",
    "test_export.py",
    "test_user_code.py",
    "test_tracking.py",
)


def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto` (pyproject.toml): a worker per core, at most 4. Many tests start several processes of
    their own (DDP ranks, session experiments), so more workers than cores only queue for them."""
    return max(1, min(os.cpu_count() or 1, 4))


def pytest_collection_modifyitems(config, items) -> None:
    """Runs the longest files first (see LONGEST_FIRST); the order within a file is kept."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))

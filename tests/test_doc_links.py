"""Every link in README.md and docs/ leads somewhere: a file of the project, and a heading in it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The anchors of a Markdown file's headings (outside code blocks), numbered as GitHub numbers repeats."""
    seen: dict[str, int] = {}
    fenced = False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and re.match(r"#{1,6} ", line):
            name = anchor(line.lstrip("#"))
            count = seen.get(name, 0)
            seen[name] = count + 1
            if count:
                seen[f"{name}-{count}"] = 1
    return set(seen)


def links(path: Path) -> list[str]:
    """The targets of a file's Markdown links and images, outside code blocks."""
    found, fenced = [], False
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            found += LINK.findall(line)
    return found


def test_the_anchor_rule_matches_githubs_on_the_readmes_own_headings():
    assert anchor("Sessions: a grid of experiments") == "sessions-a-grid-of-experiments"
    assert anchor("Multiple GPUs, DDP, clusters") == "multiple-gpus-ddp-clusters"
    assert anchor("Search: random, TPE and pruning on Optuna") == "search-random-tpe-and-pruning-on-optuna"
    assert anchor("train.py: the same experiment without Lightning's Trainer") == (
        "trainpy-the-same-experiment-without-lightnings-trainer")
    assert "sessions-a-grid-of-experiments" in anchors(ROOT / "README.md")


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_leads_to_a_file_and_heading_that_exist(doc):
    broken = []
    for target in links(doc):
        if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
            continue
        file, _, fragment = target.partition("#")
        dest = (doc.parent / file).resolve() if file else doc
        if not dest.exists():
            broken.append(f"{target}: no file {file}")
        elif fragment and dest.suffix == ".md" and fragment not in anchors(dest):
            broken.append(f"{target}: no heading #{fragment} in {dest.relative_to(ROOT)}")
    assert not broken, f"{doc.relative_to(ROOT)} has broken links:\n" + "\n".join(broken)

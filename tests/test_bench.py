"""The benchmark harness: rounds are interleaved and rotated, the warm-up is dropped, ratios are
medians, and bench/all.py reads back every target line the scripts print."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"
sys.path.insert(0, str(BENCH))

import harness  # noqa: E402
from all import TARGET  # noqa: E402


def test_interleave_rotates_the_order_and_drops_the_warm_up():
    calls = []
    values = harness.interleave({n: (lambda n=n: calls.append(n) or len(calls)) for n in "abc"}, rounds=3)
    assert calls[:3] == ["a", "b", "c"]  # warm-up
    assert calls[3:] == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert values == {"a": [4, 9, 11], "b": [5, 7, 12], "c": [6, 8, 10]}


def test_ratio_is_of_medians_and_paired_is_per_round():
    values = {"x": [2.0, 4.0, 30.0], "ref": [1.0, 2.0, 3.0]}
    assert harness.ratio(values, "x", "ref") == pytest.approx(4.0 / 2.0)
    assert harness.paired(values, "x", "ref") == pytest.approx((2.0, 2.0, 10.0))


@pytest.mark.parametrize("values,limit,at_least,verdict", [
    ({"a": [1.02, 1.03, 1.04], "b": [1.0, 1.0, 1.0]}, 1.05, False, "PASS"),
    ({"a": [1.2, 1.3, 1.1], "b": [1.0, 1.0, 1.0]}, 1.05, False, "FAIL"),
    ({"a": [30.0, 31.0, 29.0], "b": [1.0, 1.0, 1.0]}, 10, True, "PASS"),
    ({"a": [3.0, 3.1, 2.9], "b": [1.0, 1.0, 1.0]}, 10, True, "FAIL"),
])
def test_target_lines_carry_the_verdict_that_all_py_reads(capsys, values, limit, at_least, verdict):
    ok = harness.target(values, "a", "b", limit, at_least=at_least)
    line = capsys.readouterr().out.strip()
    assert ok == (verdict == "PASS")
    m = TARGET.match(line)
    assert m is not None, line
    assert (m["figure"], m["op"], m["verdict"]) == ("a / b", ">=" if at_least else "<=", verdict)
    assert float(m["value"]) == pytest.approx(harness.ratio(values, "a", "b"), abs=1e-3)


def test_noisy_rounds_are_flagged_and_information_lines_have_no_verdict(capsys):
    noisy = {"a": [1.0, 1.3, 1.0], "b": [1.0, 1.0, 1.0]}
    assert harness.target(noisy, "a", "b", 1.05)
    assert harness.target(noisy, "a", "b", None)
    first, second = capsys.readouterr().out.strip().splitlines()
    assert "NOISY" in first and "PASS" in first
    assert TARGET.match(second) is None and second.startswith("a / b: 1.000")

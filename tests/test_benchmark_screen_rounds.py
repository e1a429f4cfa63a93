"""benchmarks/screen.py --rounds: the per-round CPU differences against the peer, and the table of the first round."""

from __future__ import annotations

from benchmarks.screen import Result, cpu_rounds, side_by_side


def _pair(name: str, round_: int, ours: float, theirs: float) -> list[Result]:
    return [Result(name, {"agent_cpu_pct": ours}, round=round_),
            Result(name, {"agent_cpu_pct": theirs}, system="x11vnc", round=round_)]


def test_rounds_are_paired_by_round_and_summarised() -> None:
    results = [*_pair("video", 0, 16.0, 15.0), *_pair("typing", 0, 2.4, 3.0), *_pair("video", 1, 15.0, 16.0),
               *_pair("video", 2, 17.0, 17.0)]
    lines = cpu_rounds(results, "x11vnc").splitlines()
    assert lines[0].startswith("video") and lines[0].endswith(
        "per round: +1.0 -1.0 +0.0; mean +0.00 ± 0.58 (standard error); at or below in 2 of 3")
    assert lines[1].startswith("typing") and lines[1].endswith("per round: -0.6; mean -0.60; at or below in 1 of 1")
    table = side_by_side(results, "x11vnc")
    assert "| video | agent_cpu_pct | 16.0 | 15.0 |" in table  # the first round's pair only
    assert table.count("| video |") == 1

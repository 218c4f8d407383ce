"""The reliability scorecard: what was tried against Cairn, how many times, what got through.

A reliability test (tests/reliability, and tests/integration/*/test_reliability_*.py for the
ones with sockets or processes) calls :func:`record` once with its figures; pytest prints every
line recorded in the session as one table at the end, in the order the tests were collected,
and writes them as JSON to ``$CAIRN_SCORECARD`` when that is set (tests/conftest.py: under
parallel workers each worker hands its lines to the controller, which prints and writes them
all). ``make test`` runs each test's short version; ``make soak`` sets ``CAIRN_SOAK=full`` and
:func:`scale` picks the long one.

A line passes when ``bad`` (samples lost, bad input accepted, crashes...) is at most
``allowed`` (0 unless the issue names a bound). The test asserts the same thing: a line is never
recorded as passing by a test that does not fail when it does not.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["LINES", "Line", "record", "scale", "soak", "write"]


@dataclass(frozen=True, slots=True)
class Line:
    area: str  # storage, corruption, fuzzing, proofs, dht, replication, mqtt, chaos
    tried: str  # what was tried, in words
    runs: int  # how many times
    bad: float  # what got through: samples lost, bad input accepted, crashes, ratio...
    bad_means: str  # the unit of `bad`: "lost", "accepted", "crashes", "x amplification"...
    allowed: float  # the bound bad must stay within
    passed: bool
    detail: str = ""


LINES: list[Line] = []


def soak() -> bool:
    """True under ``make soak`` (the long versions)."""
    return os.environ.get("CAIRN_SOAK", "").strip().lower() == "full"


def scale(short: int, full: int) -> int:
    """How many runs: ``short`` in make test, ``full`` in make soak."""
    return full if soak() else short


def record(area: str, tried: str, runs: int, bad: float, bad_means: str, *,
           allowed: float = 0, detail: str = "") -> Line:
    line = Line(area, tried, runs, bad, bad_means, allowed, bad <= allowed, detail)
    LINES.append(line)
    return line


def write(path: str | os.PathLike[str]) -> None:
    Path(path).write_text(json.dumps([asdict(x) for x in LINES], indent=2) + "\n")


def table() -> list[str]:
    """The scorecard as text lines."""
    if not LINES:
        return []
    out = [f"Cairn reliability scorecard ({'make soak' if soak() else 'short runs, make test'})",
           f"{'area':<12} {'what was tried':<58} {'runs':>10} {'got through':>18}  verdict"]
    for x in LINES:
        bad = f"{x.bad:g} {x.bad_means}"
        out.append(f"{x.area:<12} {x.tried[:58]:<58} {x.runs:>10,} {bad:>18}  "
                   f"{'PASS' if x.passed else 'FAIL'}"
                   + (f"  (allowed {x.allowed:g})" if x.allowed else ""))
    return out

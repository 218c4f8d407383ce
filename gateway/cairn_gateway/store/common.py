"""What both store engines share: kinds of value, the rows ingest writes, rollup rows, the
rollup bound, holes' reasons, and the store's error."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cairn.errors import StorageError
from cairn.frames import Frame

__all__ = ["BOOLEAN", "DATA", "KINDS", "MISSING_REASONS", "NUMBER", "ROLLED_UP", "ROLLUP_BOUND",
           "STRING", "IngestItem", "RollupRow", "SampleRow", "Series", "StoreError",
           "describe_missing", "kind_code", "rows_of", "stream_kinds", "tally", "typed_value"]


#: what each reason of a hole means, for people (API, CLI, logs)
MISSING_REASONS = {
    "damaged": "the edge says its copy is damaged (its data no longer matches its hash)",
    "not served": "the edge had no data for it and gave no reason (its disk quota cleared it "
                  "before this gateway stored it, or an edge that does not report damage)",
}


def describe_missing(ranges: Iterable[tuple[int, int, str]]) -> str:
    """``blocks 5, 77..79 (damaged); blocks 100..109 (not served)``: a stream's holes in one
    line."""
    by: dict[str, list[str]] = {}
    for a, b, r in ranges:
        by.setdefault(r, []).append(str(a) if b == a + 1 else f"{a}..{b - 1}")
    return "; ".join(f"blocks {', '.join(spans)} ({r})" for r, spans in sorted(by.items()))


#: kinds of value by their code in ``samples.kind`` (SenML ``v``, ``vb``, ``vs``, ``vd``)
KINDS = ("number", "boolean", "string", "data")
NUMBER, BOOLEAN, STRING, DATA = range(4)
#: the kinds a stream's rollups are kept for
ROLLED_UP = frozenset({"number", "boolean"})


def kind_code(value: object) -> int:
    """The code of a sample value's kind (:data:`KINDS`)."""
    if isinstance(value, bool):
        return BOOLEAN
    if isinstance(value, str):
        return STRING
    if isinstance(value, bytes | bytearray | memoryview):
        return DATA
    return NUMBER


def typed_value(value: float | None, text: str | None, kind: int) -> float | str | bool | None:
    """A stored sample's value in its kind: a float, a bool, a string (data: its hex)."""
    if kind == BOOLEAN and value is not None:
        return bool(value)
    return value if value is not None else text


class StoreError(StorageError, RuntimeError):
    """The store cannot be opened or written: says which file (or server) and why."""


@dataclass(frozen=True, slots=True)
class RollupRow:
    bucket: int  # epoch seconds of the bucket's start
    n: int
    mean: float
    lo: float
    hi: float


@dataclass(frozen=True, slots=True)
class Series:
    """Rollup buckets as columns (what a chart reads; no object per bucket)."""

    bucket: list[int]
    n: list[int]
    mean: list[float]
    lo: list[float]
    hi: list[float]

    def rows(self) -> list[RollupRow]:
        return [RollupRow(*r) for r in zip(self.bucket, self.n, self.mean, self.lo, self.hi,
                                            strict=True)]


SampleRow = tuple[int, float, float | None, str | None, int, int, int, int]


def rows_of(stream_id: int, blocks: Iterable[tuple[int, int, Frame]],
             window: tuple[float, float] | None, rows: list[SampleRow],
             block_rows: list[tuple[int, int, int, int]], refused: list[int]) -> None:
    """The sample and block rows of one stream's blocks (appended to ``rows`` and
    ``block_rows``); the block index of each sample timed outside ``window`` goes to
    ``refused`` instead of ``rows``."""
    lo, hi = window if window is not None else (-math.inf, math.inf)
    for index, fork, frame in blocks:
        block_rows.append((stream_id, index, fork, len(frame.samples)))
        for k, smp in enumerate(frame.samples):
            if not lo <= smp.time <= hi:
                refused.append(index)
                continue
            v = smp.value
            code = kind_code(v)
            if isinstance(v, bool | float | int):
                rows.append((stream_id, smp.time, float(v), None, index, fork, k, code))
            elif isinstance(v, str):
                rows.append((stream_id, smp.time, None, v, index, fork, k, code))
            else:
                rows.append((stream_id, smp.time, None, v.hex(), index, fork, k, code))


@dataclass(frozen=True, slots=True)
class IngestItem:
    """One stream's verified blocks (index, fork, frame) for :meth:`Store.ingest_many`; samples
    timed outside ``window`` (lo, hi) are refused and counted; ``unit``: the stream's unit,
    recorded if none is yet."""

    stream_id: int
    blocks: Sequence[tuple[int, int, Frame]]
    window: tuple[float, float] | None = None
    unit: str | None = None


#: Values of larger magnitude (and infinities) are stored but not rolled up: a sum of up to
#: 10**18 values within the bound stays finite (1e290 * 1e18 < 1.7e308), whatever range a
#: query spans, so no rollup and no mean becomes inf or NaN. No sensor reads near 1e290.
ROLLUP_BOUND = 1e290


def stream_kinds(known: dict[int, str | None], rows: Iterable[SampleRow]
                 ) -> tuple[dict[int, str | None], dict[int, str]]:
    """Each stream's kind of value: ``known`` (as stored: None before its first sample), else
    its first new sample's (by time, block, position) among ``rows`` (one pass). Returns the
    kinds of the streams of ``known``, and those newly found (to record)."""
    first: dict[int, SampleRow] = {}
    for r in rows:
        if known.get(r[0], "") is None:
            f = first.get(r[0])
            if f is None or (r[1], r[4], r[6]) < (f[1], f[4], f[6]):
                first[r[0]] = r
    found = {sid: KINDS[r[7]] for sid, r in first.items()}
    return {sid: k if k is not None else found.get(sid) for sid, k in known.items()}, found


def tally(rows: Iterable[SampleRow], kinds: dict[int, str | None]
          ) -> tuple[dict[int, int], dict[int, int]]:
    """Per stream: how many of ``rows``, and how many of them are not of the stream's kind
    (stored, not rolled up: ``streams.other_kind``)."""
    count: dict[int, int] = {}
    other: dict[int, int] = {}
    for r in rows:
        count[r[0]] = count.get(r[0], 0) + 1
        of = kinds.get(r[0])
        if of is not None and KINDS[r[7]] != of:
            other[r[0]] = other.get(r[0], 0) + 1
    return count, other


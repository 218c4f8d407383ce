"""Booleans and strings through the edge (issue 20 items 2 and 3): they are samples all the way
into the log; two readings that differ are never collapsed, whatever their times, while an
identical redelivery still is; a stream keeps the kind of value it was first given; a commit of
large strings is split into frames under the frames' size limit."""

from __future__ import annotations

import itertools
import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cairn.frames import MAX_FRAME_BYTES, Frame, Sample
from cairn_edge.adapters import DEFAULT_ROUTES
from cairn_edge.pipeline import Pipeline, Validator
from cairn_edge.streams import FRAME_BUDGET, StreamStore, sample_key, value_kind
from tests.scorecard import record

T0 = 1_764_000_000.0
SEED = bytes(range(32))


class Clock:
    def __init__(self) -> None:
        self.now = T0 + 10

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StreamStore]:
    s = StreamStore(tmp_path / "data", SEED)
    yield s
    s.close()


def pipeline(store: StreamStore, clock: Clock) -> Pipeline:
    return Pipeline(store, Validator(floor=T0 - 86400, max_future=300.0), DEFAULT_ROUTES,
                    clock=clock)


def stored(s: StreamStore, name: str) -> list[Any]:
    lg = s.logs.get(name)
    if lg is None:
        return []
    return [x.value for i in range(lg.length) for x in Frame.decode(lg.get(i)).samples]


def senml(name: str, t: float, **value: object) -> bytes:
    return json.dumps([{"bn": name, "bt": t, **value}]).encode()


def test_value_kinds_and_sample_keys() -> None:
    assert [value_kind(v) for v in (1.0, True, "on", b"\x00")] == ["number", "boolean",
                                                                    "string", "data"]
    one, true = Sample("b/x", None, T0, 1.0), Sample("b/x", None, T0, True)
    assert one.value == true.value  # what Python says: the reason the kind is in the key
    assert sample_key(one) != sample_key(true)
    assert sample_key(one) == sample_key(Sample("b/x", None, T0, 1))


def test_booleans_and_strings_reach_the_log(store: StreamStore) -> None:
    clock = Clock()
    p = pipeline(store, clock)
    p.submit("senml/b/door", senml("b/door", T0, vb=True), None, 1)
    p.submit("senml/b/door", senml("b/door", T0 + 1, vb=False), None, 2)
    p.submit("senml/b/mode", senml("b/mode", T0, vs="heating"), None, 3)
    clock.now += 1
    assert p.commit() == [1, 2, 3]
    assert stored(store, "b/door") == [True, False]
    assert stored(store, "b/mode") == ["heating"]
    assert p.latest["b/door"].value is False


def test_two_readings_that_differ_at_one_time_are_both_kept(store: StreamStore) -> None:
    """Same time, different values: both stored, in the same commit and across commits (not
    sent to /late); the same reading again is a duplicate."""
    r = store.commit({"b/t": [Sample("b/t", "Cel", T0, 20.0), Sample("b/t", "Cel", T0, 21.0),
                              Sample("b/t", "Cel", T0, 20.0)]})
    assert (r.samples, r.duplicates) == (2, 1)
    r = store.commit({"b/t": [Sample("b/t", "Cel", T0, 22.0), Sample("b/t", "Cel", T0, 21.0)]})
    assert (r.samples, r.duplicates, r.late) == (1, 1, 0)
    assert sorted(stored(store, "b/t")) == [20.0, 21.0, 22.0]
    assert "b/t/late" not in store.logs
    # a boolean true and a number one at one time are two readings, not one
    r = store.commit({"b/s": [Sample("b/s", None, T0, 1.0), Sample("b/s", None, T0, True)]})
    assert r.samples == 2
    # a different unit is a different reading
    r = store.commit({"b/t": [Sample("b/t", "K", T0, 20.0)]})
    assert r.samples == 1 and r.duplicates == 0


def test_a_redelivered_message_is_still_stored_once(store: StreamStore) -> None:
    clock = Clock()
    p = pipeline(store, clock)
    msg = senml("b/door", T0, vb=True)
    p.submit("senml/b/door", msg, None, 1)
    clock.now += 1
    p.commit()
    p.submit("senml/b/door", msg, None, 2)  # the broker sends it again
    clock.now += 1
    assert p.commit() == [2]
    assert stored(store, "b/door") == [True] and p.stats.duplicates == 1
    record("mqtt", "a boolean reading redelivered after its commit", 1,
           len(stored(store, "b/door")) - 1, "stored twice")


def test_a_stream_keeps_its_first_kind(store: StreamStore, tmp_path: Path) -> None:
    """A reading of another kind is refused alone (counted), its neighbours are stored; the
    kind survives a restart (read from the log)."""
    clock = Clock()
    p = pipeline(store, clock)
    p.submit("senml/b/x", senml("b/door", T0, vb=True), None, 1)
    pack = [{"bn": "b/", "bt": T0 + 1, "n": "door", "v": 1.0},  # a number: refused
            {"n": "temperature", "u": "Cel", "v": 20.5}]
    p.submit("senml/b/x", json.dumps(pack).encode(), None, 2)
    p.submit("senml/b/x", senml("b/door", T0 + 2, vs="open"), None, 3)  # all refused
    assert p.ready() == []  # 1 and 2 wait for the commit, in order
    clock.now += 1
    assert p.commit() == [1, 2, 3]
    assert stored(store, "b/door") == [True]
    assert stored(store, "b/temperature") == [20.5]
    assert p.stats.refused_samples == {"kind-changed": 2} and not p.stats.rejected
    store.close()
    again = StreamStore(tmp_path / "data", SEED)
    try:
        assert again.kind("b/door") == "boolean" and again.kind("b/none") is None
        p2 = pipeline(again, clock)
        p2.submit("senml/b/door", senml("b/door", T0 + 3, v=0), None, 4)
        p2.submit("senml/b/door", senml("b/door", T0 + 3, vb=False), None, 5)
        clock.now += 1
        assert p2.commit() == [4, 5]
        assert stored(again, "b/door") == [True, False]
        assert p2.stats.refused_samples == {"kind-changed": 1}
    finally:
        again.close()
    record("mqtt", "a stream switching kind of value (bool -> number, string)", 3, 0,
           "readings of another kind stored", detail="refused alone, counted kind-changed")


def test_large_strings_are_split_into_frames_under_the_limit(store: StreamStore) -> None:
    """Strings of 64 kB (the MQTT payload limit) in one commit: several frames, one append,
    every one below the frames' limit; nothing lost."""
    big = "x" * 65_536
    n = (MAX_FRAME_BYTES // len(big)) + 8  # more than one frame can hold
    batch = [Sample("b/log", None, T0 + k, big[:-1] + chr(65 + k % 26)) for k in range(n)]
    r = store.commit({"b/log": batch})
    assert r.samples == n and r.frames > 1
    lg = store.logs["b/log"]
    assert lg.length == r.frames
    assert all(len(lg.get(i)) <= FRAME_BUDGET + 65_536 + 64 for i in range(lg.length))
    assert stored(store, "b/log") == [s.value for s in batch]
    assert store.last_time("b/log") == T0 + n - 1


def test_a_huge_or_hostile_string_from_mqtt(store: StreamStore) -> None:
    """Past the adapter's bound: refused with a reason. Control characters and other scripts:
    stored exactly (the API escapes them when it shows them)."""
    clock = Clock()
    p = pipeline(store, clock)
    p.submit("senml/b/mode", senml("b/mode", T0, vs="y" * 100_000), None, 1)
    hostile = "\x00\x1b[31mred\x1b[0m\r\n\u202eevil\u0007 ok"
    p.submit("senml/b/mode", senml("b/mode", T0 + 1, vs=hostile), None, 2)
    clock.now += 1
    assert p.commit() == [1, 2]
    assert sum(p.stats.rejected.values()) == 1
    assert stored(store, "b/mode") == [hostile]
    record("mqtt", "a 100 kB string value and one of control characters", 2, 0,
           "stored wrong", detail="the long one refused with a reason, the other kept exactly")


def test_a_commit_of_more_samples_than_a_frame_holds_is_split(
        store: StreamStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """``commit_samples`` may be set past the frames' MAX_RECORDS: more frames, none too big."""
    from cairn_edge import streams

    monkeypatch.setattr(streams, "MAX_RECORDS", 3)
    r = store.commit({"b/t": [Sample("b/t", None, T0 + k, float(k)) for k in range(8)]})
    assert (r.samples, r.frames) == (8, 3)
    assert stored(store, "b/t") == [float(k) for k in range(8)]


def test_the_latest_of_two_values_at_one_time_is_the_last_to_arrive(store: StreamStore) -> None:
    clock = Clock()
    p = pipeline(store, clock)
    p.submit("senml/b/mode", senml("b/mode", T0, vs="heat"), None, 1)
    p.submit("senml/b/mode", senml("b/mode", T0, vs="cool"), None, 2)
    clock.now += 1
    assert p.commit() == [1, 2]
    assert stored(store, "b/mode") == ["heat", "cool"] and p.latest["b/mode"].value == "cool"


def test_split_frames_and_kinds_survive_a_crash_through_the_journal(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A commit of several frames (one append) between checkpoints comes back byte for byte
    after kill -9; the stream's kind is read back from its log."""
    from cairn_edge import streams

    monkeypatch.setattr(streams, "MAX_RECORDS", 2)
    held = StreamStore(tmp_path / "held", SEED, checkpoint_interval=300, clock=lambda: 0.0)
    held.commit({"b/mode": [Sample("b/mode", None, T0 + k, f"m{k}") for k in range(5)],
                 "b/door": [Sample("b/door", None, T0, True), Sample("b/door", None, T0, False)]})
    want = {n: [lg.get(i) for i in range(lg.length)] for n, lg in held.logs.items()}
    assert len(want["b/mode"]) == 3 and held.checkpoints == 0
    assert held.journal is not None
    held.journal.close()  # what kill -9 leaves: the transaction lost, the journal kept
    held.shared.raw.close()
    again = StreamStore(tmp_path / "held", SEED)
    try:
        assert {n: [lg.get(i) for i in range(lg.length)] for n, lg in again.logs.items()} == want
        assert (again.kind("b/mode"), again.kind("b/door")) == ("string", "boolean")
        assert stored(again, "b/door") == [True, False]
        r = again.commit({"b/door": [Sample("b/door", None, T0, False)]})  # redelivered
        assert (r.samples, r.duplicates) == (0, 1)
    finally:
        again.close()


_VALUES = st.sampled_from([1.0, 2.0, 0.0, True, False, "a", "b", b"\x01"])
_SAMPLES = st.builds(lambda t, v, u: Sample("b/x", u, T0 + t, v), st.integers(0, 6), _VALUES,
                     st.sampled_from([None, "Cel"]))


@settings(max_examples=60, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.lists(_SAMPLES, max_size=8), min_size=1, max_size=6))
def test_no_distinct_reading_is_lost_or_stored_twice(commits: list[list[Sample]]) -> None:
    """Any commits of samples of one stream, at few times with values of every kind, some
    repeated: every distinct reading (time, kind, value, unit) is stored exactly once, in the
    stream or its late companion; the stream's frames stay in time order."""
    with tempfile.TemporaryDirectory() as d:
        store = StreamStore(Path(d), SEED, checkpoint_interval=0)
        try:
            for batch in commits:
                if batch:
                    store.commit({"b/x": batch})
            got = []
            ends = []
            for name in ("b/x", "b/x/late"):
                lg = store.logs.get(name)
                for i in range(lg.length if lg else 0):
                    frame = Frame.decode(lg.get(i))  # type: ignore[union-attr]
                    got += [sample_key(x) for x in frame.samples]
                    if name == "b/x":
                        ends.append((frame.start, frame.end))
        finally:
            store.close()
    want = {sample_key(x) for batch in commits for x in batch}
    assert len(got) == len(set(got)) and set(got) == want
    assert ends == sorted(ends) and all(a[1] <= b[0] for a, b in itertools.pairwise(ends))


def test_a_kind_change_is_logged_once_a_minute_naming_the_stream(
        store: StreamStore, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    p = pipeline(store, clock)
    p.submit("senml/b/door", senml("b/door", T0, vb=True), None, 1)
    for k in range(5):
        p.submit("senml/b/door", senml("b/door", T0 + 1 + k, vs="open"), None, 2 + k)
    lines = [r.getMessage() for r in caplog.records if "kind-changed" in r.getMessage()]
    assert lines == ["rejected a reading on senml/b/door: kind-changed: b/door: a string value, "
                     "but the stream holds boolean values (a stream keeps the kind it was first "
                     "given)"]
    assert p.stats.refused_samples == {"kind-changed": 5}

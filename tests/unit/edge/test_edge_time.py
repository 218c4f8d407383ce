"""The edge's time rules: a sample stamped ahead of the clock never moves a stream's time forward.

Frames of a stream are time-ordered, so whatever is committed with a time ahead of the clock
makes every honest sample stamped before it "late". A sample more than ``max_future`` seconds
ahead is rejected; one ahead by less waits in the pipeline until the clock reaches its time.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cairn.frames import Frame
from cairn_edge.adapters import DEFAULT_ROUTES
from cairn_edge.config import ConfigError, parse_config
from cairn_edge.pipeline import Pipeline, Validator
from cairn_edge.streams import StreamStore

T0 = 1_764_000_000.0
SEED = bytes(range(32))
TOPIC = "senml/b/temperature"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StreamStore]:
    s = StreamStore(tmp_path / "data", SEED, checkpoint_interval=0)
    yield s
    s.close()


def senml(t: float | None, v: float) -> bytes:
    rec: dict[str, Any] = {"bn": "b/temperature", "bu": "Cel", "v": v}
    if t is not None:
        rec["bt"] = t
    return json.dumps([rec]).encode()


def pipeline(store: StreamStore, clock: Clock, max_future: float = 5.0) -> Pipeline:
    return Pipeline(store, Validator(floor=T0 - 86_400, max_future=max_future), DEFAULT_ROUTES,
                    commit_interval=1.0, clock=clock)


def stored(s: StreamStore, name: str) -> list[tuple[float, Any]]:
    lg = s.logs.get(name)
    if lg is None:
        return []
    return [(x.time, x.value) for i in range(lg.length) for x in Frame.decode(lg.get(i)).samples]


def test_the_default_future_tolerance_is_seconds(tmp_path: Path) -> None:
    assert parse_config("", tmp_path).max_future == 5.0
    assert parse_config("[validation]\nmax_future = 30", tmp_path).max_future == 30.0
    with pytest.raises(ConfigError, match=r"\[validation\]\.max_future"):
        parse_config("[validation]\nmax_future = 86400", tmp_path)


def test_a_sample_ahead_of_the_clock_waits_for_its_time(store: StreamStore) -> None:
    clock = Clock()
    p = pipeline(store, clock)
    p.submit(TOPIC, senml(T0 + 4, 99.0), None, "ahead")  # 4 s ahead: held, not rejected
    p.submit(TOPIC, senml(None, 20.0), None, "honest-0")  # stamped at receipt: T0
    assert p.due() == T0 + 1
    clock.now = T0 + 1
    assert p.commit() == []  # "ahead" is first in line and not committed: no ack passes it
    assert stored(store, "b/temperature") == [(T0, 20.0)]
    for k in (2, 3):
        clock.now = T0 + k
        p.submit(TOPIC, senml(None, 20.0 + k), None, f"honest-{k}")
        clock.now = T0 + k + 0.5
        p.commit()
    assert p.due() == T0 + 4 + 1  # the held sample's time, then the usual commit interval
    clock.now = T0 + 5
    assert p.commit() == ["ahead", "honest-0", "honest-2", "honest-3"]
    clock.now = T0 + 6
    p.submit(TOPIC, senml(None, 26.0), None, "honest-6")
    clock.now = T0 + 7
    assert p.commit() == ["honest-6"]
    assert stored(store, "b/temperature") == [(T0, 20.0), (T0 + 2, 22.0), (T0 + 3, 23.0),
                                              (T0 + 4, 99.0), (T0 + 6, 26.0)]
    assert p.stats.late == 0 and "b/temperature/late" not in store.logs


def test_a_sample_too_far_ahead_is_rejected_and_named(store: StreamStore,
                                                      caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    p = pipeline(store, clock)
    p.submit(TOPIC, senml(T0 + 290, 99.0), None, "attack")
    assert p.ready() == ["attack"]  # acknowledged in its turn, stored nothing
    assert p.stats.rejected == {"future": 1}
    assert "290 s ahead" in caplog.text
    assert p.due() == float("inf") and not store.logs


def test_releasing_commits_what_is_held(store: StreamStore) -> None:
    """Stopping with the embedded broker (messages acknowledged at once): held samples are
    written rather than lost."""
    clock = Clock()
    p = pipeline(store, clock)
    p.submit(TOPIC, senml(T0 + 3, 1.0), None, "m")
    assert p.commit() == [] and not store.logs
    p.release()
    assert p.commit() == ["m"] and stored(store, "b/temperature") == [(T0 + 3, 1.0)]


def test_redelivery_after_a_hold_is_a_duplicate_not_late(store: StreamStore) -> None:
    clock = Clock()
    p = pipeline(store, clock)
    p.submit(TOPIC, senml(T0 + 2, 5.0), None, "m1")
    p.submit(TOPIC, senml(T0 - 1, 4.0), None, "m0")
    clock.now = T0 + 3
    assert p.commit() == ["m1", "m0"]
    p.submit(TOPIC, senml(T0 + 2, 5.0), None, "m1-again")  # the broker sends it again
    p.submit(TOPIC, senml(T0 - 1, 4.0), None, "m0-again")
    clock.now = T0 + 4
    assert p.commit() == ["m1-again", "m0-again"]
    assert p.stats.duplicates == 2 and p.stats.late == 0
    assert stored(store, "b/temperature") == [(T0 - 1, 4.0), (T0 + 2, 5.0)]


def test_the_edge_stores_a_huge_finite_value_as_sent(store: StreamStore) -> None:
    """Decision: a finite number is a reading (a [[range]] rule bounds it when the operator
    wants); the gateway keeps such values out of its rollups (test_rollup_finite)."""
    clock = Clock()
    p = pipeline(store, clock)
    p.submit(TOPIC, senml(T0, 1.7e308), None, "m")
    p.submit(TOPIC, b'[{"bn": "b/temperature", "bt": 1764000000, "v": Infinity}]', None, "inf")
    clock.now = T0 + 1
    assert p.commit() == ["m", "inf"]
    assert stored(store, "b/temperature") == [(T0, 1.7e308)]
    assert sum(p.stats.rejected.values()) == 1  # the infinity: not a finite number

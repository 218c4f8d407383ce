"""Power cuts on an edge board (issue 10): the agent killed with SIGKILL at random moments while
sensors publish, restarted each time; no sample the broker acknowledged to the sensors may be
lost, none stored twice, and every log verifies. make test: 20 kills; make soak: 1,000.
(Commits between the database's checkpoints are recovered from the tick journal:
docs/decisions/0008-edge-tick-journal.md.)"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cairn.brokers import Mosquitto, parse_broker
from cairn_sim.fleet import Fleet
from cairn_sim.mqtt import Ledger, Runner
from tests.integration.edge.test_edge_mqtt import WAIT, EdgeProcess, assert_same, routed, stored
from tests.scorecard import record, scale


@pytest.fixture
def broker(tmp_path: Path, mosquitto_path: Path) -> Iterator[Mosquitto]:
    with Mosquitto(tmp_path / "broker", executable=mosquitto_path) as m:
        yield m


@pytest.mark.timeout(scale(300, 7200))
def test_kill_9_loses_and_duplicates_nothing(broker: Mosquitto, tmp_path: Path) -> None:
    wanted_kills = scale(20, 1000)
    edge = EdgeProcess(tmp_path / "edge", broker, commit_interval=0.1)
    edge.start()
    fleet = Fleet(devices=3, sensors=4, rate=5.0, seed=5, start_time=time.time(),
                  formats=["senml", "senml-cbor", "tasmota"])
    book = Ledger(tmp_path / "ledger.jsonl")
    runner = Runner(fleet, parse_broker(broker.url), ledger=book)
    sim = threading.Thread(target=lambda: runner.run(1e9), daemon=True)
    sim.start()
    rng = random.Random(99)
    kills = 0
    try:
        while kills < wanted_kills:  # the sensors publish all along; the agent loses power
            for _ in range(rng.randint(1, 4)):  # a few commits, then the power goes
                edge.next()
            edge.kill()
            kills += 1
            edge.start()
    finally:
        runner.stop()
        sim.join(WAIT)
        book.close()
    messages, acks = Ledger.read(tmp_path / "ledger.jsonl")
    want: dict[str, set[tuple[float, Any]]] = {}
    for m in routed(messages):
        if m["seq"] in acks:
            for name, _unit, t, v in m["samples"]:
                want.setdefault(name, set()).add((t, v))

    def complete(_: dict[str, Any]) -> bool:
        got = stored(edge.dir, edge.seed)
        return all(len(got.get(name, [])) >= len(v) for name, v in want.items())

    if not complete({}):  # (the agents before may have stored it all already)
        edge.until(complete)
    edge.stop()
    got = stored(edge.dir, edge.seed)
    assert kills >= wanted_kills
    lost = sum(len(v - set(got.get(name, []))) for name, v in want.items())
    twice = sum(len(got[name]) - len(set(got[name])) for name in got)
    record("storage", f"kill -9 of the edge agent during a steady stream ({kills:,} kills): "
           "acknowledged samples lost", sum(map(len, want.values())), lost, "lost")
    record("storage", "the same: samples stored twice", sum(map(len, got.values())), twice,
           "twice")
    for name, values in want.items():
        assert len(got[name]) == len(set(got[name])), f"{name}: a sample stored twice"
        assert_same(got[name], list(values), name)

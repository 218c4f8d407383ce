"""The corpus of real payloads (tests/corpus) through a real Mosquitto to a real edge process:
what lands in the stream logs is what the firmware's documentation says it sent."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cairn.brokers import Mosquitto
from cairn_edge.adapters import DEFAULT_ROUTES, match_topic
from tests.integration.edge.test_edge_mqtt import EdgeProcess, stored
from tests.integration.edge.test_edge_mqtt import broker as broker  # the fixture
from tests.unit.edge.test_adapters_corpus import FILES, expected_time, load, payload_bytes


def route_tables(extra: list[dict[str, Any]]) -> str:
    """Every default route and the corpus's own, as [[topic]] tables."""
    out = []
    for r in extra:
        out.append(f'[[topic]]\nfilter = "{r["filter"]}"\nformat = "{r["format"]}"\n')
        for f in r.get("fields", []):
            out.append("[[topic.field]]\n" + "".join(
                f"{k} = {json.dumps(v)}\n" for k, v in f.items()))
    for route in DEFAULT_ROUTES:
        out.append(f'[[topic]]\nfilter = "{route.filter}"\nformat = "{route.format}"\n')
    return "".join(out)


def test_the_corpus_lands_in_the_logs_through_a_real_broker(broker: Mosquitto,
                                                              tmp_path: Path) -> None:
    docs = [load(p) for p in FILES]
    edge = EdgeProcess(tmp_path / "edge", broker)
    text = edge.config.read_text().replace("time_floor = 1700000000", "time_floor = 1000000000")
    edge.config.write_text(text + route_tables([d["route"] for d in docs if "route" in d]))
    edge.start()
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="corpus-publisher")
    pub.connect(broker.host, broker.port)
    pub.loop_start()
    sent = 0  # messages on topics the edge subscribes to (not garagedoor1/status, $homie)
    filters = [r.filter for r in DEFAULT_ROUTES] + [d["route"]["filter"] for d in docs
                                                     if "route" in d]
    t0 = time.time()
    try:
        for doc in docs:
            for m in doc["messages"]:
                pub.publish(m["topic"], payload_bytes(m["payload"]), qos=1).wait_for_publish(10)
                sent += any(match_topic(f, m["topic"]) is not None for f in filters)
    finally:
        pub.loop_stop()
        pub.disconnect()
    edge.until(lambda s: s.get("messages", 0) >= sent)
    final = edge.stop()
    got = stored(edge.dir, edge.seed)
    want: dict[str, list[tuple[float | None, Any]]] = {}
    for doc in docs:
        for device, quantity, _unit, t, value in doc["readings"]:
            stamp = expected_time(t) if not isinstance(t, dict) else None  # relative: receipt
            want.setdefault(f"{device}/{quantity}", []).append((stamp, value))
    assert set(got) == set(want), (set(got) ^ set(want), final)
    for name, items in want.items():
        held = sorted(got[name], key=lambda x: (x[0], str(x[1])))
        assert len(held) == len(items), (name, held, items)
        for (t, v), (want_t, want_v) in zip(held, sorted(
                items, key=lambda x: (x[0] if x[0] is not None else t0, str(x[1]))), strict=True):
            if want_t is None:
                assert t0 - 1 <= t <= time.time() + 1, name  # stamped at receipt
            else:
                assert t == pytest.approx(want_t, abs=1e-3), name
            assert v == (pytest.approx(want_v, rel=1e-9) if isinstance(want_v, float)
                         else want_v), name
            assert type(v) is type(want_v) or isinstance(want_v, float), name
    refused = sum(sum(d.get("refused", {}).values()) for d in docs)
    assert sum(final["rejected"].values()) == 0, final  # partly readable messages are kept
    assert refused  # (the pipeline counts them once it reads Decoded.refused: see the report)

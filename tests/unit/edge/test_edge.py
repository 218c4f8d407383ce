"""The edge agent without a broker: payload adapters (against the simulator's payloads and
hostile ones), config checking, validation, the stream store and the ingest pipeline."""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest

from cairn.fleet.identity import SeedError, load_seed, new_seed, noise_key_pair
from cairn.frames import Frame, Sample
from cairn_edge.adapters import DEFAULT_ROUTES, Reading, Rejected, Route, decode, match_topic
from cairn_edge.config import ConfigError, parse_config
from cairn_edge.pipeline import Pipeline, Validator
from cairn_edge.streams import StreamStore
from cairn_sim.fleet import Fleet, Outgoing
from cairn_sim.payloads import FORMATS
from cairn_sim.scenario import Scenario

T0 = 1_764_000_000.0
SEED = bytes(range(32))


def dec(topic: str, payload: bytes, ctype: str | None = None, now: float = T0 + 5
        ) -> list[Reading] | None:
    return decode(DEFAULT_ROUTES, topic, payload, ctype, now)


# -- adapters ----------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_adapters_read_what_the_simulator_sends(fmt: str) -> None:
    """Every shape the simulator sends decodes to the samples its ledger records (names,
    units, values; times where the payload states them)."""
    fleet = Fleet(devices=2, sensors=6, formats=[fmt], seed=3, start_time=T0)
    msgs = [m for m in fleet.pop_due(5.0) if isinstance(m, Outgoing)]
    assert msgs
    for m in msgs:
        ctype = m.publish.content_type if fmt == "senml-cbor" else None  # CBOR found either way
        readings = dec(m.publish.topic, m.publish.payload, ctype, now=T0 + 6)
        assert readings is not None
        got = sorted((f"{r.device}/{r.quantity}", r.unit, r.value) for r in readings)
        want = sorted((s.name, s.unit, s.value) for s in m.samples)
        assert [g[:2] for g in got] == [w[:2] for w in want]
        assert [g[2] for g in got] == pytest.approx([w[2] for w in want], rel=1e-12)
        if fmt in ("senml", "senml-cbor", "tasmota", "shelly"):
            assert sorted(r.time for r in readings if r.time is not None) == sorted(
                s.time for s in m.samples)
        else:
            assert all(r.time is None for r in readings)  # stamped at receipt


def test_senml_base_fields_carry_forward_and_relative_time_counts_from_now() -> None:
    pack = [
        {"bn": "board-9/", "bt": T0, "bu": "Cel", "n": "temperature", "v": 20.5},
        {"n": "temperature", "t": 1, "v": 20.6},
        {"n": "humidity", "u": "%RH", "t": 1, "v": 40},
        {"bn": "board-9/co2", "bt": -3, "bu": "ppm", "v": 500},  # 3 s ago (RFC 8428 4.5.3)
    ]
    r = dec("senml/board-9/x", json.dumps(pack).encode(), now=T0 + 10)
    assert r == [
        Reading("board-9", "temperature", "Cel", T0, 20.5),
        Reading("board-9", "temperature", "Cel", T0 + 1, 20.6),
        Reading("board-9", "humidity", "%RH", T0 + 1, 40.0),
        Reading("board-9", "co2", "ppm", T0 + 7, 500.0),
    ]


def test_senml_cbor_with_integer_labels() -> None:
    pack = [{-2: "board-9/temperature", -3: T0, -4: "Cel", 2: 21.0}, {6: 1.5, 2: 21.5}]
    r = dec("senml/board-9/temperature", cbor2.dumps(pack), "application/senml+cbor")
    assert r == [Reading("board-9", "temperature", "Cel", T0, 21.0),
                 Reading("board-9", "temperature", "Cel", T0 + 1.5, 21.5)]


HOSTILE: list[tuple[str, bytes, str]] = [
    ("senml/b/t", b"", "bad-json"),
    ("senml/b/t", b"[", "bad-json"),
    ("senml/b/t", b'[{"bn":"b/t","v":NaN}]', "bad-json"),
    ("senml/b/t", b'[{"bn":"b/t","v":Infinity}]', "bad-json"),
    ("senml/b/t", b'{"bn":"b/t","v":1}', "bad-senml"),
    ("senml/b/t", b"[]", "empty"),
    ("senml/b/t", b'[{"bn":"b/t","v":"abc"}]', "wrong-type"),
    ("senml/b/t", b'[{"bn":"b/t","v":true}]', "wrong-type"),
    ("senml/b/t", b'[{"bn":"b/t","v":1,"vs":"x"}]', "bad-senml"),
    ("senml/b/t", b'[{"bn":"b/t"}]', "bad-senml"),
    ("senml/b/t", b'[{"bn":"b/t","v":1,"foo_":2}]', "bad-senml"),
    ("senml/b/t", b'[{"bn":"b/t","bver":99,"v":1}]', "bad-senml"),
    ("senml/b/t", b'[{"bn":"/bad","v":1}]', "bad-name"),
    ("senml/b/t", b'[{"bn":"b/t","bt":"yesterday","v":1}]', "wrong-type"),
    ("senml/b/t", b'[{"bn":"b/t","u":7,"v":1}]', "wrong-type"),
    ("senml/b/t", b'[{"bn":"b/t","vd":"not base64!"}]', "wrong-type"),
    ("senml/b/t", b"[" + b'{"bn":"b/t","v":1},' * 3000 + b'{"v":1}]', "too-large"),
    ("senml/b/t", b"[" * 100_000, "too-large"),
    ("senml/b/t", b"x" * 70_000, "too-large"),
    ("senml/b/t", cbor2.dumps([{99: 1}]), "bad-senml"),
    ("senml/b/t", cbor2.dumps({"bn": "b"}), "bad-senml"),
    ("senml/b/t", b"\x9f\x9f\x9f", "bad-cbor"),
    ("senml/b/t", cbor2.dumps([{-2: "b/t", 2: float("nan")}]), "not-finite"),
    ("tele/b/SENSOR", b'{"Time":"soon","BME280":{"Temperature":1}}', "bad-time"),
    ("tele/b/SENSOR", b'{"Time":"2025-11-24T16:00:00","BME280":{"Temperature":"x"}}',
     "wrong-type"),
    ("tele/b/SENSOR", b'{"Time":"2025-11-24T16:00:00","TempUnit":"furlong","BME280":{}}',
     "bad-unit"),
    ("tele/b/SENSOR", b'{"Time":"2025-11-24T16:00:00"}', "empty"),
    ("tele/b/SENSOR", b"[1,2]", "bad-tasmota"),
    ("b/sensor/temperature/state", b"", "wrong-type"),
    ("b/sensor/temperature/state", b"abc", "wrong-type"),
    ("b/sensor/temperature/state", b"nan", "not-finite"),
    ("b/sensor/temperature/state", b"1" * 300, "too-large"),
    ("b/sensor/temperature/state", b"\xff\xfe", "wrong-type"),
    ("homie/5/b/temperature/Bad Name!", b"1", "bad-name"),
    ("senml/" + "x" * 100 + "/t", b'[{"v":1}]', "bad-device"),
]


@pytest.mark.parametrize(("topic", "payload", "reason"), HOSTILE)
def test_hostile_payloads_are_rejected_with_a_reason(topic: str, payload: bytes,
                                                     reason: str) -> None:
    with pytest.raises(Rejected) as caught:
        dec(topic, payload)
    assert caught.value.reason == reason, caught.value


def test_status_and_description_topics_carry_no_readings() -> None:
    for topic in ("senml/board-1/status", "homie/5/board-1/$state", "tele/board-1/LWT",
                  "board-1/status", "other/topic"):
        assert dec(topic, b"online") is None


def test_topic_filters() -> None:
    assert match_topic("senml/+/+", "senml/a/b") == ["a", "b"]
    assert match_topic("senml/+/+", "senml/a") is None
    assert match_topic("a/#", "a/b/c") == ["b/c"]
    assert match_topic("+/x", "$SYS/x") is None
    route = Route("factory/line/+/readings", "senml")
    r = decode([route], "factory/line/press-7/readings", b'[{"n":"press-7/pressure",'
               b'"u":"Pa","v":1.0,"bt":1764000000}]', None, T0)
    assert r is not None and r[0].device == "press-7" and r[0].quantity == "pressure"


# -- config --------------------------------------------------------------------------------------


BAD_CONFIGS = [
    ("data_dirr = 'x'", r"unknown key\(s\) data_dirr"),
    ("[mqtt]\nbrokr = 'x'", r"\[mqtt\]: unknown key\(s\) brokr"),
    ("[mqtt]\nbroker = 'http://x'", "is not mqtt://"),
    ("[mqtt]\nprotocol = '4'", "protocol"),
    ("[logs]\ncommit_interval = 0", r"commit_interval: 0 is outside"),
    ("[logs]\ncommit_interval = 'soon'", "expected an integer or a number"),
    ("[logs]\nsync = 'sometimes'", "sync"),
    ("[validation]\nmax_future = -1", "max_future"),
    ("[validation]\nunits = [1]", "units"),
    ("[replication]\nport = 70000", "port"),
    ("[replication]\ngateways = ['abcd']", "Noise public key"),
    ("[replication]\ntransport = 'udp'", r"transport: 'udp' is not auto, key or tcp"),
    ("[replication]\ntransport = 'key'", r"transport: \"key\" connects through the DHT"),
    ("[[topic]]\nfilter = 'a/b'\nformat = 'senml'", "has no '\\+' number 1"),
    ("[[topic]]\nfilter = 'a/+'\nformat = 'xml'", "needs filter and format"),
    ("[[range]]\npattern = '*/t'\nmin = 5\nmax = 1", "min 5 is above max 1"),
    ("[[range]]\nmin = 5", "needs a pattern"),
    ("mqtt = 3", r"\[mqtt\] must be a table"),
    ("[logs]\ncommit_samples = true", "got a boolean"),
    ("x = [", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "message"), BAD_CONFIGS)
def test_bad_configs_name_the_key(text: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text, tmp_path, "edge.toml")


def test_the_template_config_parses_to_the_defaults(tmp_path: Path) -> None:
    from cairn_edge.config import TEMPLATE

    cfg = parse_config(TEMPLATE, tmp_path)
    assert cfg.data_dir == tmp_path / "data" and cfg.routes == DEFAULT_ROUTES
    assert cfg.commit_interval == 1.0 and cfg.gateways == ()
    assert cfg.transport == "auto"
    keyed = parse_config("[replication]\ntransport = 'key'\n[dht]\nbootstrap = ['10.0.0.1:1']",
                         tmp_path)
    assert keyed.transport == "key"


# -- the seed --------------------------------------------------------------------------------


def test_seed_file_is_private_and_checked(tmp_path: Path) -> None:
    seed = new_seed(tmp_path / "s")
    assert stat.S_IMODE(os.stat(tmp_path / "s").st_mode) == 0o600
    assert load_seed(tmp_path / "s") == seed
    with pytest.raises(SeedError, match="already exists"):
        new_seed(tmp_path / "s")
    os.chmod(tmp_path / "s", 0o644)
    with pytest.raises(SeedError, match="readable by others"):
        load_seed(tmp_path / "s")
    (tmp_path / "bad").write_text("zz\n")
    os.chmod(tmp_path / "bad", 0o600)
    with pytest.raises(SeedError, match="does not hold a seed"):
        load_seed(tmp_path / "bad")
    with pytest.raises(SeedError, match="cairn edge init"):
        load_seed(tmp_path / "missing")
    assert noise_key_pair(seed) == noise_key_pair(seed)


# -- validation, the store, the pipeline -------------------------------------------------------


def validator(**kw: Any) -> Validator:
    args: dict[str, Any] = {"floor": T0 - 86400, "max_future": 300.0}
    args.update(kw)
    return Validator(**args)


def test_validation_reasons() -> None:
    from cairn_edge.config import RangeRule

    v = validator(ranges=[RangeRule("*/temperature", -40, 85)])
    assert v.sample(Reading("b", "temperature", "Cel", T0, 20.0), T0)[0] == "b/temperature"
    cases = [
        (Reading("b", "temperature", "furlong", T0, 1.0), "unknown-unit"),
        (Reading("b", "temperature", "Cel", 12.0, 1.0), "too-old"),
        (Reading("b", "temperature", "Cel", T0 + 301, 1.0), "future"),
        (Reading("b", "temperature", "Cel", T0, 200.0), "out-of-range"),
    ]
    for reading, reason in cases:
        with pytest.raises(Rejected) as caught:
            v.sample(reading, T0)
        assert caught.value.reason == reason
    _, s = v.sample(Reading("b", "humidity", None, None, 3.0), T0 + 1)
    assert s.time == T0 + 1  # stamped at receipt


@pytest.fixture
def store(tmp_path: Path) -> Iterator[StreamStore]:
    s = StreamStore(tmp_path / "data", SEED)
    yield s
    s.close()


def samples(stream: str, times: list[float], value: float = 1.0) -> list[Sample]:
    return [Sample(stream, "Cel", t, value + t - T0) for t in times]


def stored(s: StreamStore, name: str) -> list[tuple[float, Any]]:
    lg = s.logs.get(name)
    if lg is None:
        return []
    return [(x.time, x.value) for i in range(lg.length) for x in Frame.decode(lg.get(i)).samples]


def test_store_commits_one_frame_per_stream_and_reopens(store: StreamStore,
                                                         tmp_path: Path) -> None:
    r = store.commit({"b/t": samples("b/t", [T0 + 2, T0, T0 + 1]), "b/h": samples("b/h", [T0])})
    assert r.frames == 2 and r.samples == 4
    assert [t for t, _ in stored(store, "b/t")] == [T0, T0 + 1, T0 + 2]  # sorted
    key = store.logs["b/t"].key
    store.close()
    again = StreamStore(tmp_path / "data", SEED)
    try:
        assert again.logs["b/t"].key == key and again.last_time("b/t") == T0 + 2
        assert again.logs["b/t"].verify_all().blocks == 1
    finally:
        again.close()


def test_redelivered_samples_are_not_stored_twice_and_late_ones_go_aside(
        store: StreamStore) -> None:
    store.commit({"b/t": samples("b/t", [T0, T0 + 1, T0 + 2])})
    # the same message again (a redelivery), one new sample, one late sample never seen
    again = [*samples("b/t", [T0 + 1, T0 + 2, T0 + 3]), Sample("b/t", "Cel", T0 + 0.5, 99.0)]
    r = store.commit({"b/t": again + again[:1]})
    assert r.duplicates == 3 and r.late == 1
    assert [t for t, _ in stored(store, "b/t")] == [T0, T0 + 1, T0 + 2, T0 + 3]
    assert stored(store, "b/t/late") == [(T0 + 0.5, 99.0)]
    r = store.commit({"b/t": [Sample("b/t", "Cel", T0 + 0.5, 99.0)]})  # the late one again
    assert r.duplicates == 1 and r.late == 0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def test_pipeline_acks_in_order_after_the_commit(store: StreamStore) -> None:
    clock = Clock()
    p = Pipeline(store, validator(), DEFAULT_ROUTES, commit_interval=1.0, clock=clock)
    ok = json.dumps([{"bn": "b/temperature", "bt": T0, "bu": "Cel", "v": 1}]).encode()
    p.submit("senml/b/temperature", ok, None, "m1")
    p.submit("senml/b/temperature", b"garbage", None, "m2")  # rejected: acked in its turn
    p.submit("senml/b/status", b"online", None, "m3")
    assert p.ready() == []  # m1 is not committed yet, and acks go in order
    assert p.due() == T0 + 1.0
    clock.now += 1.0
    assert p.commit() == ["m1", "m2", "m3"]
    assert p.stats.accepted == 1 and p.stats.rejected == {"bad-json": 1}
    assert p.stats.ignored == 1
    p.submit("senml/b/temperature", b"[", None, "m4")
    assert p.ready() == ["m4"] and p.due() == math.inf


def test_a_reading_the_validator_refuses_is_refused_alone(store: StreamStore) -> None:
    """One bad record (issue 20): its neighbours are stored, it is counted by reason; a message
    none of whose readings is valid is rejected whole."""
    clock = Clock()
    p = Pipeline(store, validator(), DEFAULT_ROUTES, clock=clock)
    pack = [{"bn": "b/", "bt": T0, "n": "temperature", "u": "Cel", "v": 1},
            {"n": "humidity", "u": "furlong", "v": 2}]
    p.submit("senml/b/x", json.dumps(pack).encode(), None, "m")
    bad = [{"bn": "b/", "bt": T0, "n": "humidity", "u": "furlong", "v": 2}]
    p.submit("senml/b/y", json.dumps(bad).encode(), None, "n")
    assert p.commit() == ["m", "n"]
    assert set(store.logs) == {"b/temperature"}
    assert p.stats.refused_samples == {"unknown-unit": 1}
    assert p.stats.rejected == {"unknown-unit": 1}


def test_pipeline_counts_every_fault_of_a_simulated_fleet(store: StreamStore) -> None:
    """The simulator's malformed messages are all rejected, its valid ones all stored."""
    scenario = Scenario.parse("[[fault]]\nkind='malformed'\nprobability=0.2\n"
                              "[[fault]]\nkind='duplicate'\nprobability=0.1\n")
    fleet = Fleet(devices=3, sensors=5, formats=["senml", "senml-cbor", "tasmota"], seed=9,
                  start_time=T0, scenario=scenario)
    clock = Clock()
    p = Pipeline(store, validator(), DEFAULT_ROUTES, clock=clock)
    sent: list[Outgoing] = []
    for step in range(1, 31):
        clock.now = T0 + step
        for m in fleet.pop_due(float(step)):
            assert isinstance(m, Outgoing)
            sent.append(m)
            p.submit(m.publish.topic, m.publish.payload, m.publish.content_type, m.seq)
        p.commit()
    bad = [m for m in sent if not m.valid]
    assert bad and sum(p.stats.rejected.values()) == len(bad)
    want: dict[str, set[tuple[float, Any]]] = {}
    for m in sent:
        for s in m.samples:
            want.setdefault(s.name, set()).add((s.time, s.value))
    for name, values in want.items():
        got = sorted(stored(store, name))
        assert len(got) == len(set(got)) == len(values), name  # once each, duplicates dropped
        assert [t for t, _ in got] == [t for t, _ in sorted(values)]
        assert [v for _, v in got] == pytest.approx([v for _, v in sorted(values)], rel=1e-12)


def test_the_disk_quota_clears_the_oldest_data_first(store: StreamStore) -> None:
    for k in range(40):
        store.commit({"b/old": samples("b/old", [T0 + k]),
                      "b/new": samples("b/new", [T0 + 1000 + k])})
    before = store.disk_bytes()
    # a quota a little under what is used: some data must go, the oldest first
    cleared = store.enforce_quota(before - 1)
    assert cleared and cleared[0][0] == "b/old" and cleared[0][1] == 0
    assert store.disk_bytes() <= before - 1
    assert store.logs["b/new"].held_ranges() == [(0, 40)]  # the newer stream is untouched
    for name, lg in store.logs.items():
        assert lg.verify_all().blocks == sum(e - s for s, e in lg.held_ranges()), name
        assert lg.has(lg.length - 1)  # the newest block stays
    # a quota nothing can meet: everything but each stream's newest block is cleared
    store.enforce_quota(0)
    assert [lg.held_ranges() for lg in store.logs.values()] == [[(39, 40)], [(39, 40)]]

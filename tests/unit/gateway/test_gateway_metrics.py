"""The gateway's /metrics (cairn_gateway.metrics): one unit per metric, per-stream last-sample
time, build info, rounds and errors, and bounded cardinality against a hostile device."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cairn import __version__
from cairn.frames import Frame, Sample
from cairn_gateway.metrics import (
    ERROR_KINDS,
    MAX_LABEL,
    MAX_STREAMS_PER_DEVICE,
    GatewayMetrics,
    metric_for_unit,
)
from cairn_gateway.roster import Roster
from cairn_gateway.schedule import EdgeStatus
from cairn_gateway.store import Store
from tests.scorecard import record

T0 = 1_764_000_000.0


def samples(metrics: GatewayMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.exposition().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def by_name(metrics: GatewayMetrics, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {labels: v for (n, labels), v in samples(metrics).items() if n == name}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "gw.db")
    Roster(s.conn).enroll(b"d" * 32, "board-1", T0)
    dev = s.device(b"d" * 32, None, T0)
    for k, (name, unit, value) in enumerate((("board-1/temperature", "Cel", 21.5),
                                              ("board-1/pressure", "hPa", 1013.0),
                                              ("board-1/co2", "ppm", 415.0),
                                              ("board-1/humidity", "%RH", 40.0),
                                              ("board-1/count", None, 7.0),
                                              ("board-1/door", None, True),
                                              ("board-1/odd", "furlongs", 3.0),
                                              ("board-1/mode", None, "idle"))):
        sid = s.stream(dev, name, bytes([k]) * 32, unit)
        s.ingest(sid, [(0, 0, Frame((Sample(name, unit, T0 + k, value),)))])  # type: ignore[arg-type]
    return s


def test_each_metric_has_one_unit_and_every_stream_its_last_time(store: Store) -> None:
    try:
        m = GatewayMetrics(store)
        got = samples(m)
        v = (("device", "board-1"), ("stream", "board-1/temperature"), ("verified", "true"))
        assert got[("cairn_gateway_latest_celsius", v)] == 21.5
        assert got[("cairn_gateway_latest_pascals", (("device", "board-1"),
                                                     ("stream", "board-1/pressure"),
                                                     ("verified", "true")))] == 101300.0
        assert got[("cairn_gateway_latest_ppm", (("device", "board-1"),
                                                 ("stream", "board-1/co2"),
                                                 ("verified", "true")))] == 415.0
        assert got[("cairn_gateway_latest_ratio", (("device", "board-1"),
                                                   ("stream", "board-1/humidity"),
                                                   ("verified", "true")))] == 0.4
        assert {labels[1][1]: x for labels, x in by_name(m, "cairn_gateway_latest").items()} \
            == {"board-1/count": 7.0, "board-1/door": 1.0}
        [(labels, x)] = by_name(m, "cairn_gateway_latest_other_unit").items()
        assert dict(labels)["unit"] == "furlongs" and x == 3.0
        # no family mixes units: only the "other" one carries a unit label
        for (name, labels), _x in got.items():
            assert ("unit" in dict(labels)) == (name == "cairn_gateway_latest_other_unit")
        times = {dict(k)["stream"]: x for k, x in
                 by_name(m, "cairn_gateway_last_sample_timestamp_seconds").items()}
        assert len(times) == 8 and times["board-1/mode"] == T0 + 7  # strings too
        assert got[("cairn_build_info", (("python", platform.python_version()),
                                         ("version", __version__)))] == 1
    finally:
        store.close()


def test_unit_table() -> None:
    assert metric_for_unit("Cel") == ("cairn_gateway_latest_celsius", 1.0)
    assert metric_for_unit("kWh") == ("cairn_gateway_latest_joules", 3.6e6)
    assert metric_for_unit(None) == metric_for_unit("count") == ("cairn_gateway_latest", 1.0)
    assert metric_for_unit("K\n{evil}") == ("cairn_gateway_latest_other_unit", 1.0)


def test_rounds_errors_live_pushes_and_stopped_streams(store: Store) -> None:
    try:
        clock = [T0]
        m = GatewayMetrics(store, interval=10.0, clock=lambda: clock[0],
                           connections=lambda: {"tcp": 2},
                           edges=lambda: {b"d" * 32: EdgeStatus(False, 3, 4.0, 0.5, "refused")})
        assert by_name(m, "cairn_gateway_errors_total") == {(("kind", k),): 0.0
                                                            for k in ERROR_KINDS}
        m.round_done(0.3)
        clock[0] += 10
        m.round_done(12.0)
        m.error("unreachable")
        m.error("round", 2)
        m.live_stored(5)
        with pytest.raises(ValueError, match="unknown error kind"):
            m.error("anything a device says")
        got = samples(m)
        assert got[("cairn_gateway_rounds_total", ())] == 2
        assert got[("cairn_gateway_round_duration_seconds_count", ())] == 2
        assert got[("cairn_gateway_round_duration_seconds_bucket", (("le", "0.5"),))] == 1
        assert got[("cairn_gateway_last_round_timestamp_seconds", ())] == T0 + 10
        assert got[("cairn_gateway_collect_interval_seconds", ())] == 10
        assert got[("cairn_gateway_errors_total", (("kind", "round"),))] == 2
        assert got[("cairn_gateway_live_samples_total", ())] == 5
        assert got[("cairn_gateway_connections", (("transport", "tcp"),))] == 2
        assert got[("cairn_gateway_edge_reachable", (("device", "board-1"),
                                                     ("record_key", (b"d" * 32).hex())))] == 0
        sid = store.conn.execute("SELECT id FROM streams WHERE name = 'board-1/co2'").fetchone()
        store.stop(sid[0], "fork: test")
        stopped = {dict(k)["stream"]: x
                   for k, x in by_name(m, "cairn_gateway_stream_stopped").items()}
        assert stopped["board-1/co2"] == 1 and stopped["board-1/temperature"] == 0
    finally:
        store.close()


def test_a_hostile_device_cannot_flood_the_series(tmp_path: Path) -> None:
    """An enrolled device whose record names thousands of streams with huge names gets at most
    MAX_STREAMS_PER_DEVICE series, each label cut; the rest are counted; an honest device's
    streams are all there."""
    store = Store(tmp_path / "gw.db")
    try:
        roster = Roster(store.conn)
        roster.enroll(b"h" * 32, "hostile", T0)
        roster.enroll(b"o" * 32, "honest", T0)
        bad = store.device(b"h" * 32, None, T0)
        flood = MAX_STREAMS_PER_DEVICE + 300
        for k in range(flood):
            name = f"hostile/{k}-" + "x" * 240
            sid = store.stream(bad, name, k.to_bytes(32, "big"), "Cel")
            store.ingest(sid, [(0, 0, Frame((Sample(name, "Cel", T0, 1.0),)))])
        good = store.device(b"o" * 32, None, T0)
        sid = store.stream(good, "honest/t", b"\xff" * 32, "Cel")
        store.ingest(sid, [(0, 0, Frame((Sample("honest/t", "Cel", T0, 2.0),)))])
        m = GatewayMetrics(store)
        times = by_name(m, "cairn_gateway_last_sample_timestamp_seconds")
        per = {dict(k)["device"] for k in times}
        assert per == {"hostile", "honest"}
        assert sum(dict(k)["device"] == "hostile" for k in times) == MAX_STREAMS_PER_DEVICE
        assert all(len(dict(k)["stream"]) <= MAX_LABEL for k in times)
        assert (("device", "honest"), ("stream", "honest/t")) in times
        omitted = samples(m)[("cairn_gateway_metrics_omitted_streams", ())]
        assert omitted == flood - MAX_STREAMS_PER_DEVICE
        record("api", "a device naming thousands of streams in /metrics", flood,
               int(len(times) - 1 > MAX_STREAMS_PER_DEVICE), "series past the cap",
               detail=f"{MAX_STREAMS_PER_DEVICE} series kept, {omitted:g} counted")
    finally:
        store.close()


def test_every_metric_is_documented(store: Store) -> None:
    """docs/gateway.md's table names every family /metrics serves (the per-unit ones as
    ``cairn_gateway_latest_<unit>``), and docs/edge.md every edge family."""
    from prometheus_client.exposition import generate_latest

    from cairn_edge.metrics import registry_for
    from tests.unit.edge.test_edge_metrics import status

    root = Path(__file__).resolve().parents[3]
    try:
        m = GatewayMetrics(store, edges=lambda: {b"d" * 32: EdgeStatus(True, 0, 0, 0, None)})
        m.round_done(1.0)
        gateway = {f.name for f in text_string_to_metric_families(m.exposition().decode())}
    finally:
        store.close()
    doc = (root / "docs" / "gateway.md").read_text()
    for name in gateway:
        shown = "cairn_gateway_latest_<unit>" if name.startswith("cairn_gateway_latest_") \
            and name != "cairn_gateway_latest_other_unit" else name
        counter = f"{name}_total"
        assert f"`{shown}`" in doc or f"`{counter}`" in doc or shown.endswith("_created"), name
    edge_doc = (root / "docs" / "edge.md").read_text()
    edge = {f.name for f in text_string_to_metric_families(
        generate_latest(registry_for(lambda: status())).decode())}
    for name in edge:
        assert f"`{name}" in edge_doc, name


def test_the_daemon_counts_rounds_and_runs_retention_every_five_minutes(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import asyncio

    import cairn_gateway.daemon as daemon
    from cairn.crypto import random_key_pair
    from cairn_gateway.collect import Collector
    from cairn_gateway.config import GatewayConfig

    store = Store(tmp_path / "gw.db")
    collector = Collector(tmp_path / "gw", random_key_pair(), store)
    passes: list[float] = []
    clock = [0.0]
    monkeypatch.setattr(daemon, "apply_retention",
                        lambda *_a, **_k: passes.append(clock[0]))

    def tick() -> float:  # each reading of the clock: 50 s later
        clock[0] += 50.0
        return clock[0]

    try:
        cfg = GatewayConfig(tmp_path, tmp_path / "key", interval=0.1, retention_days=1)
        m = GatewayMetrics(store, interval=cfg.interval)
        failed = asyncio.run(daemon.collect_rounds(cfg, collector, store, None,
                                                   random_key_pair(), rounds=10, clock=tick,
                                                   metrics=m))
        assert failed == 0
        got = samples(m)
        assert got[("cairn_gateway_rounds_total", ())] == 10
        assert got[("cairn_gateway_round_duration_seconds_count", ())] == 10
        # the loop reads the clock four times a round (its start, the round's line, the
        # duration metric, the wait): rounds start every 200 s of it, and retention runs at
        # the first, then at the first round 300 s or more after the last pass
        assert passes == [50.0, 450.0, 850.0, 1250.0, 1650.0]
    finally:
        collector.close()
        store.close()


def test_hostile_stream_names_and_units_cannot_break_the_exposition(tmp_path: Path) -> None:
    """A device's record names its streams and its frames their unit: quotes, backslashes,
    newlines and braces stay inside their label (prometheus-client escapes them), and a unit
    never becomes a metric name."""
    store = Store(tmp_path / "gw.db")
    hostile = ['a"} evil_metric 1\n# TYPE x counter', "back\\slash", "brace}{", "\u202e\u0000"]
    try:
        Roster(store.conn).enroll(b"h" * 32, "hostile", T0)
        dev = store.device(b"h" * 32, None, T0)
        for k, name in enumerate(hostile):
            unit = 'x"\nfake_metric 2'
            sid = store.stream(dev, name, bytes([k]) * 32, unit)
            try:
                frame = Frame((Sample(name, unit, T0, 1.0),))
            except ValueError:  # the frame model refuses it: the store keeps the name alone
                frame = Frame((Sample("ok", None, T0, 1.0),))
            store.ingest(sid, [(0, 0, frame)])
        text = GatewayMetrics(store).exposition().decode()
        families = {f.name for f in text_string_to_metric_families(text)}
        assert not any("evil" in f or "fake" in f for f in families), families
        streams = {s.labels["stream"] for f in text_string_to_metric_families(text)
                   for s in f.samples if f.name == "cairn_gateway_last_sample_timestamp_seconds"}
        assert streams == set(hostile)
        record("api", "stream names and units with quotes, newlines, braces in /metrics",
               len(hostile), 0, "exposition lines injected")
    finally:
        store.close()

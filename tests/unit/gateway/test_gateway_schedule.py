"""Download scheduling, without sockets: the backoff schedule on an injected clock and a seeded
random, edges taken by priority, at most `concurrency` at once, an unreachable edge skipped
until its wait is over; the config keys; what the API shows."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from random import Random

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cairn.crypto import random_key_pair
from cairn.errors import VerificationError
from cairn.fleet.record import DeviceRecord
from cairn_gateway.api import make_app
from cairn_gateway.collect import Collector, Device, SyncResult, _unreachable
from cairn_gateway.config import TEMPLATE, ConfigError, Policy, parse_config
from cairn_gateway.schedule import Backoff, Schedule
from cairn_gateway.store import Store

EDGE = b"e" * 32


def test_backoff_doubles_from_initial_to_the_cap() -> None:
    b = Backoff(1.0, 300.0, jitter=0.0)
    assert [b.delay(n, Random(1)) for n in range(1, 12)] == [
        1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]
    assert b.delay(10_000, Random(1)) == 300  # no overflow however long the edge is away


def test_jitter_is_seeded_and_only_shortens_the_wait() -> None:
    b = Backoff(1.0, 300.0, jitter=0.2)
    first = [b.delay(n, rng) for rng in [Random(7)] for n in range(1, 12)]
    again = [b.delay(n, rng) for rng in [Random(7)] for n in range(1, 12)]
    other = [b.delay(n, rng) for rng in [Random(8)] for n in range(1, 12)]
    assert first == again and first != other
    for n, d in enumerate(first, 1):
        base = min(300.0, 2.0 ** (n - 1))
        assert 0.8 * base <= d <= base


def test_bad_backoff_and_concurrency_are_refused() -> None:
    with pytest.raises(ValueError, match="initial"):
        Backoff(5.0, 1.0)
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=1.0)
    with pytest.raises(ValueError, match="concurrency 0"):
        Schedule(0)


def test_an_edge_waits_its_backoff_and_is_reset_by_a_success(
        caplog: pytest.LogCaptureFixture) -> None:
    s = Schedule(backoff=Backoff(1.0, 5.0, jitter=0.0))
    caplog.set_level(logging.INFO, logger="cairn_gateway.schedule")
    assert s.ready(EDGE, 0.0)
    waits = []
    now = 0.0
    for _ in range(5):
        waits.append(s.failed(EDGE, now, "ConnectionRefusedError"))
        assert not s.ready(EDGE, now + waits[-1] - 0.001)
        now += waits[-1]
        assert s.ready(EDGE, now)
    assert waits == [1.0, 2.0, 4.0, 5.0, 5.0]
    st = s.status(now - 1.0)[EDGE]
    assert (st.reachable, st.failures, st.backoff, st.retry_in, st.error) == (
        False, 5, 5.0, 1.0, "ConnectionRefusedError")
    s.succeeded(EDGE, now)
    st = s.status(now)[EDGE]
    assert (st.reachable, st.failures, st.backoff, st.retry_in, st.error) == (
        True, 0, 0.0, 0.0, None)
    assert s.failed(EDGE, now, "TimeoutError") == 1.0  # from the start again
    # one line per change of state, not one per failed attempt
    assert [(r.levelname, r.getMessage().split(" (")[0].split(" after")[0])
            for r in caplog.records] == [
        ("WARNING", f"edge {EDGE.hex()[:16]} is unreachable"),
        ("INFO", f"edge {EDGE.hex()[:16]} is reachable again"),
        ("WARNING", f"edge {EDGE.hex()[:16]} is unreachable")]


def test_order_is_by_priority_then_key() -> None:
    assert Schedule.order([(b"b", 0), (b"a", 0), (b"c", 5), (b"d", -1)]) == [
        b"c", b"a", b"b", b"d"]


def test_what_counts_as_unreachable() -> None:
    assert _unreachable(ConnectionRefusedError(111, "refused"))
    assert _unreachable(TimeoutError())
    assert _unreachable(OSError(113, "no route to host"))
    assert not _unreachable(ConnectionResetError())  # it answered, then dropped us
    assert not _unreachable(ConnectionError("closed by the peer"))
    assert not _unreachable(VerificationError("bad signature"))


class FakeEdges(Collector):
    """A collector whose downloads are stand-ins: records the order streams are started in and
    how many edges are in a download at once; the edges in ``down`` refuse connections."""

    def __init__(self, tmp: Path, store: Store, schedule: Schedule, clock: list[float]) -> None:
        super().__init__(tmp, random_key_pair(), store, schedule=schedule,
                         clock=lambda: clock[0])
        self.started: list[str] = []
        self.busy: set[bytes] = set()
        self.peak = 0
        self.down: set[bytes] = set()

    async def sync(self, dev: Device, name: str, address: tuple[str, int], *,
                   since: float | None = None, until: float | None = None) -> SyncResult:
        self.started.append(name)
        if dev.record_key in self.down:
            return SyncResult(name, error="ConnectionRefusedError", unreachable=True)
        self.busy.add(dev.record_key)
        self.peak = max(self.peak, len(self.busy))
        for _ in range(3):
            await asyncio.sleep(0)  # a yield: let the other workers start theirs
        self.busy.discard(dev.record_key)
        return SyncResult(name, blocks=1, samples=1)


def device(n: int, *streams: str) -> Device:
    key = bytes([n]) * 32
    return Device(key, 1, DeviceRecord(time=1, address=("127.0.0.1", 1000 + n)),
                  {s: bytes([n, k]) * 16 for k, s in enumerate(streams)})


def policy(name: str) -> Policy:
    quantity = name.rsplit("/", 1)[1]
    return {"alarm": Policy("*/alarm", "tail", priority=10),
            "co2": Policy("*/co2", "tail", priority=5),
            "vibration": Policy("*/vibration", "on_demand", priority=99)}.get(
        quantity, Policy("*", "tail"))


async def test_edges_by_priority_at_most_concurrency_at_once(tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.db")
    clock = [0.0]
    c = FakeEdges(tmp_path, store, Schedule(2, Backoff(1.0, 300.0, jitter=0.0)), clock)
    devices = [device(1, "b1/temp"), device(2, "b2/temp", "b2/co2"),
               device(3, "b3/temp", "b3/alarm", "b3/vibration"), device(4, "b4/temp"),
               device(5, "b5/temp")]
    try:
        results = await c.sync_devices(devices, policy)
        # edges: b3 (alarm, 10), b2 (co2, 5), then the rest by key; within an edge its
        # streams by priority; an on-demand stream is not downloaded whatever its priority
        assert [r.stream for r in results] == ["b3/alarm", "b3/temp", "b2/co2", "b2/temp",
                                               "b1/temp", "b4/temp", "b5/temp"]
        assert c.started[:2] == ["b3/alarm", "b2/co2"]  # the two slots, highest first
        assert c.peak == 2  # two edges at once, never more
        assert len(c.known) == 8  # the on-demand stream is known, for the API to fetch
    finally:
        c.close()
        store.close()


async def test_an_unreachable_edge_is_skipped_until_its_wait_is_over(tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.db")
    clock = [100.0]
    c = FakeEdges(tmp_path, store, Schedule(1, Backoff(1.0, 300.0, jitter=0.0)), clock)
    down, up = device(1, "b1/alarm", "b1/temp"), device(2, "b2/temp")
    c.down.add(down.record_key)
    try:
        first = await c.sync_devices([down, up], policy)
        # the edge's first refusal ends its turn: its other stream is not tried
        assert [(r.stream, r.unreachable) for r in first] == [("b1/alarm", True),
                                                              ("b2/temp", False)]
        assert c.schedule.status(clock[0])[down.record_key].retry_in == 1.0
        clock[0] = 100.5
        assert [r.stream for r in await c.sync_devices([down, up], policy)] == ["b2/temp"]
        clock[0] = 101.0
        assert [r.stream for r in await c.sync_devices([down, up], policy)] == [
            "b1/alarm", "b2/temp"]
        assert c.schedule.status(clock[0])[down.record_key].backoff == 2.0
        clock[0] = 103.0
        c.down.clear()  # it is back
        back = await c.sync_devices([down, up], policy)
        assert [(r.stream, r.samples) for r in back] == [("b1/alarm", 1), ("b1/temp", 1),
                                                         ("b2/temp", 1)]
        assert c.schedule.status(clock[0])[down.record_key].reachable
        assert c.started.count("b1/temp") == 1  # only in the round it was reachable
    finally:
        c.close()
        store.close()


async def test_devices_and_metrics_show_each_edge(tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.db")
    store.device(b"\x01" * 32, "board-1", 1.0)
    store.device(b"\x02" * 32, "board-2", 1.0)
    s = Schedule(backoff=Backoff(1.0, 300.0, jitter=0.0))
    s.succeeded(b"\x01" * 32, 10.0)
    s.failed(b"\x02" * 32, 10.0, "ConnectionRefusedError")
    s.failed(b"\x02" * 32, 11.0, "ConnectionRefusedError")
    app = make_app(store, edges=lambda: s.status(12.5))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://gateway") as client:
            devs = (await client.get("/api/devices")).json()
            text = (await client.get("/metrics")).text
    finally:
        store.close()
    assert [(d["name"], d["reachable"], d["failures"], d["backoff"], d["retry_in"], d["error"])
            for d in devs] == [("board-1", True, 0, 0.0, 0.0, None),
                               ("board-2", False, 2, 2.0, 0.5, "ConnectionRefusedError")]
    values = {(x.name, x.labels["device"]): x.value
              for fam in text_string_to_metric_families(text) for x in fam.samples
              if x.name.startswith("cairn_gateway_edge")}
    assert values == {("cairn_gateway_edge_reachable", "board-1"): 1,
                      ("cairn_gateway_edge_reachable", "board-2"): 0,
                      ("cairn_gateway_edge_backoff_seconds", "board-1"): 0.0,
                      ("cairn_gateway_edge_backoff_seconds", "board-2"): 2.0}


async def test_devices_not_tried_yet_have_no_reachability(tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.db")
    store.device(b"\x01" * 32, "board-1", 1.0)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(store)),
                                     base_url="http://gateway") as client:
            [dev] = (await client.get("/api/devices")).json()
            text = (await client.get("/metrics")).text
    finally:
        store.close()
    assert dev["reachable"] is None and dev["backoff"] == 0.0
    assert "cairn_gateway_edge" not in text


def test_config_priorities_concurrency_and_backoff(tmp_path: Path) -> None:
    cfg = parse_config(TEMPLATE, tmp_path)
    assert (cfg.concurrency, cfg.backoff_initial, cfg.backoff_max) == (4, 1.0, 300.0)
    cfg = parse_config('[collect]\nconcurrency = 8\nbackoff_initial = 2\nbackoff_max = 60\n'
                       '[[policy]]\npattern = "*/alarm"\nmode = "tail"\npriority = 10\n',
                       tmp_path)
    assert (cfg.concurrency, cfg.backoff_initial, cfg.backoff_max) == (8, 2.0, 60.0)
    assert cfg.policy("b/alarm").priority == 10 and cfg.policy("b/temp").priority == 0
    assert parse_config("[collect]\nbackoff_initial = 600", tmp_path).backoff_max == 600.0
    assert cfg.ingest_worker is True
    assert parse_config("[collect]\ningest_worker = false", tmp_path).ingest_worker is False
    for text, message in [
        ("[collect]\nconcurrency = -1", r"\[collect\]\.concurrency: -1 is not an integer"),
        ("[collect]\nconcurrency = 0", r"\[collect\]\.concurrency: 0 is not an integer"),
        ("[collect]\nconcurrency = 2.5", r"\[collect\]\.concurrency: 2\.5 is not an integer"),
        ("[collect]\nconcurrency = true", r"\[collect\]\.concurrency: True"),
        ("[collect]\nbackoff_initial = 0", r"\[collect\]\.backoff_initial"),
        ("[collect]\nbackoff_initial = 10\nbackoff_max = 5", r"\[collect\]\.backoff_max"),
        ("[collect]\nbackof_max = 5", r"unknown key\(s\) backof_max"),
        ("[collect]\ningest_worker = 'yes'", r"ingest_worker: 'yes' is not true or false"),
        ("[collect]\ningest_worker = 1", r"\[collect\]\.ingest_worker: 1 is not true or false"),
        ("[[policy]]\npattern = '*'\nmode = 'tail'\npriority = 'high'",
         r"\[\[policy\]\] 1\.priority: 'high' is not an integer"),
        ("[[policy]]\npattern = '*'\nmode = 'tail'\npriority = 1.5",
         r"\[\[policy\]\] 1\.priority: 1\.5 is not an integer"),
        ("[[policy]]\npattern = '*'\nmode = 'tail'\nprio = 1", r"unknown key\(s\) prio"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_config(text, tmp_path, "gateway.toml")


def test_every_config_key_is_in_the_reference() -> None:
    from cairn_gateway.config import _KEYS

    doc = (Path(__file__).parents[3] / "docs" / "gateway.md").read_text()
    reference = doc.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    absent = [f"[{t}] {k}" for t, keys in _KEYS.items() if t and t != "policy"
              for k in sorted(keys) if f"`[{t}] {k}`" not in reference]
    policy_keys = " ".join(line.split("|")[1] for line in reference.splitlines()
                           if line.startswith("| `[[policy]]"))
    absent += [f"[[policy]] {k}" for k in sorted(_KEYS["policy"]) if k not in policy_keys]
    absent += [k for k in ("data_dir", "key_file") if f"`{k}`" not in reference]
    assert not absent, f"docs/gateway.md's configuration reference lacks {absent}"

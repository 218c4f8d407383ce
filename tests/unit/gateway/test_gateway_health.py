"""The gateway's /healthz and /readyz (cairn_gateway.health) on a fake clock, and the info line
each collection round logs."""

from __future__ import annotations

import asyncio
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import httpx
import pytest

from cairn.crypto import random_key_pair
from cairn_gateway.api import make_app
from cairn_gateway.collect import SyncResult
from cairn_gateway.config import GatewayConfig
from cairn_gateway.daemon import collect_rounds
from cairn_gateway.health import LIVE_SUMMARY_EVERY, GatewayHealth, RoundSummary
from cairn_gateway.store import Store
from tests.scorecard import record


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _health(tmp_path: Path, clock: Clock) -> GatewayHealth:
    return GatewayHealth(tmp_path, tmp_path / "gw.db", 10.0, 3, clock=clock)


def _round(devices: int, samples: int, errors: int = 0) -> RoundSummary:
    results = [SyncResult("b/t", blocks=1, samples=samples)] + \
        [SyncResult("b/u", error="unreachable") for _ in range(errors)]
    return RoundSummary.of(1, devices, results, 0.5)


def test_not_ready_before_the_first_round(tmp_path: Path) -> None:
    ready, body = _health(tmp_path, Clock()).readiness()
    assert not ready and not body["checks"]["collecting"]["ok"]
    assert "no collection round has ended yet" in body["checks"]["collecting"]["detail"]
    assert body["checks"]["store"] == {"ok": True, "detail": "writable"}


def test_ready_while_rounds_store_and_not_after_n_intervals_of_nothing(tmp_path: Path) -> None:
    clock = Clock()
    h = _health(tmp_path, clock)
    h.round_done(_round(2, 5))
    assert h.readiness()[0]
    clock.now += 30  # three intervals of 10 s: still within
    h.round_done(_round(2, 0))
    assert h.readiness()[0]
    clock.now += 0.5
    ready, body = h.readiness()
    assert not ready
    detail = body["checks"]["collecting"]["detail"]
    assert detail.startswith("nothing stored for 30s (3 rounds of 10 s)"), detail


def test_an_hour_of_rounds_that_store_nothing_is_not_ready(tmp_path: Path) -> None:
    """What issue 21 found: /healthz said ok when nothing had been collected for an hour."""
    clock = Clock()
    h = _health(tmp_path, clock)
    h.round_done(_round(3, 100))
    for _ in range(360):
        clock.now += 10
        h.round_done(_round(3, 0, errors=3))
    ready, body = h.readiness()
    assert not ready and "nothing stored for 1h0m" in body["checks"]["collecting"]["detail"]


def test_an_empty_fleet_is_ready_once_a_round_ended(tmp_path: Path) -> None:
    clock = Clock()
    h = _health(tmp_path, clock)
    h.round_done(_round(0, 0))
    ready, body = h.readiness()
    assert ready and "fleet is empty" in body["checks"]["collecting"]["detail"]
    clock.now += 31  # the rounds stopped ending
    assert not h.readiness()[0]


def test_live_pushes_keep_it_ready_and_are_summed_in_a_line_at_most_every_minute(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cairn_gateway.daemon")
    clock = Clock()
    h = _health(tmp_path, clock)
    h.round_done(_round(0, 0))
    for _ in range(200):  # 20 s of appends, 10 a second
        clock.now += 0.1
        h.live_stored(4)
    clock.now += 25  # 45 s after the round: no round since, but live pushes 25 s ago
    h.round_failed()
    assert h.readiness()[0]
    assert not [r for r in caplog.records if r.getMessage().startswith("live push")]
    clock.now += LIVE_SUMMARY_EVERY
    h.live_stored(1)
    [line] = [r for r in caplog.records if r.getMessage().startswith("live push")]
    assert line.getMessage().startswith("live push: 801 samples in 201 batches")
    assert line.__dict__["live_samples"] == 801


def test_a_store_that_cannot_be_written_is_not_ready(tmp_path: Path) -> None:
    if os.geteuid() == 0:  # root writes anywhere: a data directory that is gone instead
        h = GatewayHealth(tmp_path / "gone", tmp_path / "gone" / "gw.db", 10.0, 3,
                          clock=Clock())
    else:
        tmp_path.chmod(0o500)
        h = _health(tmp_path, Clock())
    try:
        h.round_done(_round(0, 0))
        ready, body = h.readiness()
    finally:
        tmp_path.chmod(0o700)
    assert not ready and body["checks"]["collecting"]["ok"]
    store = body["checks"]["store"]
    assert not store["ok"] and store["detail"].startswith("cannot write in the data directory")
    assert str(tmp_path) not in store["detail"]  # /readyz is open: no path in it


def test_a_flood_of_probes_writes_at_most_once_a_second(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    h = _health(tmp_path, clock)
    made: list[int] = []
    real = tempfile.mkstemp

    def counted(**kw: Any) -> tuple[int, str]:
        made.append(1)
        return real(**kw)

    monkeypatch.setattr(tempfile, "mkstemp", counted)
    for _ in range(1000):
        assert h.store()[0]
        clock.now += 0.01
    assert len(made) == 10
    record("api", "a flood of /readyz probes (no token needed)", 1000, max(0, len(made) - 10),
           "store probes written beyond one a second")


async def test_readyz_answers_503_with_the_failed_check_and_needs_no_token(
        tmp_path: Path) -> None:
    from cairn_gateway.auth import ApiAuth

    store = Store(tmp_path / "gw.db")
    clock = Clock()
    h = _health(tmp_path, clock)
    app = make_app(store, health=h, auth=ApiAuth(b"r" * 32, b"a" * 32))
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://gateway") as c:
            r = await c.get("/readyz")
            assert r.status_code == 503
            assert r.json()["ready"] is False and not r.json()["checks"]["collecting"]["ok"]
            h.round_done(_round(1, 3))
            r = await c.get("/readyz")
            assert r.status_code == 200 and r.json()["ready"] is True
            assert (await c.get("/healthz")).json() == {"ok": True, "streams": 0}
            assert (await c.get("/api/devices")).status_code == 401  # the rest needs one
    finally:
        store.close()


class EmptyFleetCollector:
    early = None

    async def devices_on(self, dht: object, fleet: str) -> set[bytes]:
        return set()

    async def collect_round(self, dht: object, keys: object, policy: object) -> list[Any]:
        return [SyncResult("board-1/t", blocks=2, samples=20),
                SyncResult("board-2/t", error="unreachable", unreachable=True)]

    async def publish_watermarks(self, dht: object, key_pair: object, seq: int) -> int:
        return 0


def test_each_round_is_one_info_line_with_its_counts(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cairn_gateway.daemon")
    cfg = GatewayConfig(tmp_path, tmp_path / "seed", interval=0.0)
    store = Store(tmp_path / "gw.db")
    h = GatewayHealth(tmp_path, tmp_path / "gw.db", 1.0, 3)
    try:
        asyncio.run(collect_rounds(cfg, EmptyFleetCollector(), store,  # type: ignore[arg-type]
                                   object(), random_key_pair(), rounds=2,  # type: ignore[arg-type]
                                   health=h))
    finally:
        store.close()
    lines = [r for r in caplog.records if r.getMessage().startswith("round ")]
    assert [r.levelno for r in lines] == [logging.INFO] * 2
    msg = lines[1].getMessage()
    assert msg.startswith("round 2: 0 devices, 2 streams, 2 blocks, 20 samples, 1 errors in ")
    assert lines[1].__dict__["samples"] == 20 and lines[1].__dict__["errors"] == 1
    assert h.rounds == 2 and h.readiness()[0]


def test_each_live_append_stored_is_told_to_health(tmp_path: Path) -> None:
    """LiveDevice (what a dialled-in edge's appends go through) tells the gateway's health the
    samples each append stored: live pushes keep /readyz ready without rounds."""
    from cairn.crypto import derive_stream_key_pair
    from cairn.frames import Frame, Sample
    from cairn.log import Log
    from cairn_gateway.live import LiveDevice
    from cairn_gateway.schedule import Limits

    name = "board-1/temperature"
    log = Log.create(tmp_path / "w.db", derive_stream_key_pair(b"\x05" * 32, name))
    store = Store(tmp_path / "gw.db")
    clock = Clock()
    h = _health(tmp_path, clock)
    try:
        device = store.device(b"d" * 32, None, 1_764_000_000.0)
        live = LiveDevice(store, device, Limits(), lambda: 1_764_000_100.0,
                          lambda: [(name, log.key)], lambda _k: log, on_stored=h.live_stored)
        assert live.replicas() == [log]
        log.append([Frame(tuple(Sample(name, "Cel", 1_764_000_000.0 + i + k / 10, 20.0)
                                for k in range(3))).encode() for i in range(4)])
        live.stored(log)
        clock.now += 40  # no round ever ended: only the live push makes it ready
        h.live_stored(0)
        assert not h.readiness()[0]
        log.append([Frame((Sample(name, "Cel", 1_764_000_050.0, 21.0),)).encode()])
        live.stored(log)
        ready, body = h.readiness()
        assert ready and body["checks"]["collecting"]["detail"] == "stored samples 0s ago"
        assert h.live_batches == 3 and h.live_samples == 13
    finally:
        log.close()
        store.close()

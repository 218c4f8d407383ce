"""What an operator sees of several gateways on one PostgreSQL store: `cairn gateway gateways`,
who collects each device in `cairn gateway devices list` and `/api/devices`, the lease
metrics; and a heartbeat whose database fails is logged and counted, never raised."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from cairn_gateway.api import make_app
from cairn_gateway.cli import gateway
from cairn_gateway.daemon import beat_once, leases_of
from cairn_gateway.leases import Leases
from cairn_gateway.metrics import GatewayMetrics
from cairn_gateway.roster import Roster
from cairn_gateway.store import Store, StoreError

GW_A = "a1" * 32
GW_B = "b2" * 32


def _config(tmp_path: Path, pg_url: str) -> Path:
    assert CliRunner().invoke(gateway, ["init", str(tmp_path / "gw")]).exit_code == 0
    config = tmp_path / "gw" / "gateway.toml"
    text = config.read_text().replace('url = ""', f'url = "{pg_url}"', 1)
    config.write_text(text)
    return config


def test_gateways_and_holders_are_listed(pg_url: str, tmp_path: Path) -> None:
    config = _config(tmp_path, pg_url)
    store = Store(pg_url)
    try:
        roster = Roster(store.conn)
        for i in range(3):
            roster.enroll(bytes([i + 1]) * 32, f"board-{i}", 1000.0)
        a = Leases(store.conn, GW_A, 30, name="north")
        b = Leases(store.conn, GW_B, 30, name="south")
        for _ in range(3):
            a.beat()
            b.beat()
        assert len(a.held) + len(b.held) == 3
        listed = CliRunner().invoke(gateway, ["gateways", "--config", str(config)])
        assert listed.exit_code == 0, listed.output
        assert "north" in listed.output and "south" in listed.output
        assert listed.output.count(" live ") == 2
        rows = [json.loads(line) for line in CliRunner().invoke(
            gateway, ["gateways", "--json", "--config", str(config)]).output.splitlines()]
        assert sorted(r["leases"] for r in rows) == sorted([len(a.held), len(b.held)])
        devices = CliRunner().invoke(gateway, ["devices", "list", "--config", str(config)])
        assert devices.output.count("collected by: gateway") == 3, devices.output
        as_json = [json.loads(line) for line in CliRunner().invoke(
            gateway, ["devices", "list", "--json", "--config", str(config)]).output.splitlines()]
        assert {d["holder"] for d in as_json} == {GW_A, GW_B}

        async def api() -> list[dict[str, object]]:
            transport = httpx.ASGITransport(app=make_app(store))
            async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
                return list((await c.get("/api/devices")).json())

        import asyncio

        got = asyncio.run(api())
        assert {d["name"]: d["holder"] for d in got} == {
            f"board-{i}": (GW_A if bytes([i + 1]) * 32 in a.held else GW_B) for i in range(3)}
        a.release_all()
        listed = CliRunner().invoke(gateway, ["gateways", "--config", str(config)])
        assert "gone" in listed.output and "held by no gateway" in listed.output
    finally:
        store.close()


def test_a_gateway_alone_on_sqlite_keeps_no_leases(tmp_path: Path) -> None:
    assert CliRunner().invoke(gateway, ["init", str(tmp_path / "gw")]).exit_code == 0
    config = tmp_path / "gw" / "gateway.toml"
    listed = CliRunner().invoke(gateway, ["gateways", "--config", str(config)])
    assert listed.exit_code == 0 and "one gateway on SQLite" in listed.output
    from cairn_gateway.config import load_config

    store = Store(tmp_path / "gw.db")
    try:
        assert leases_of(load_config(config), store, b"k" * 32) is None
    finally:
        store.close()


class _Broken:
    """A connection whose server is gone."""

    dialect = "postgresql"

    def execute(self, *_a: object) -> object:
        raise StoreError("postgresql://gw@db/fleet: server closed the connection")

    def transaction(self) -> object:
        raise StoreError("postgresql://gw@db/fleet: server closed the connection")


def test_a_failing_heartbeat_is_logged_counted_and_retried(
        caplog: pytest.LogCaptureFixture) -> None:
    clock = [100.0]
    leases = Leases(_Broken(), GW_A, 30, clock=lambda: clock[0])  # type: ignore[arg-type]
    leases.held = frozenset({b"d" * 32})
    leases.valid_until = 120.0
    metrics = GatewayMetrics()
    with caplog.at_level(logging.WARNING):
        wait = beat_once(leases, metrics)
    assert 0 < wait <= 10
    assert "lease heartbeat failed" in caplog.text and "1 device(s) held" in caplog.text
    assert b'cairn_gateway_errors_total{kind="lease"} 1.0' in metrics.exposition()
    assert leases.holds(b"d" * 32)  # still proven: its renewal is recent enough
    clock[0] = 121.0
    assert not leases.holds(b"d" * 32)  # no longer: this gateway stops collecting it

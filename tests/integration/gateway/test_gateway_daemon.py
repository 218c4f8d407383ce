"""The gateway daemon's task group (`run_gateway`): a failing task fails the daemon with its own
error and stops the API; cancelling the daemon stops the API and closes the store."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from cairn.fleet.identity import new_seed
from cairn_gateway import daemon
from cairn_gateway.config import GatewayConfig, parse_config


def _config(tmp_path: Path) -> GatewayConfig:
    new_seed(tmp_path / "gateway.seed")
    return parse_config('[api]\nlisten = "127.0.0.1:0"\n[collect]\ningest_worker = false\n'
                        '[replication]\nlisten = "127.0.0.1:0"\n',
                        tmp_path)


async def _refused(address: tuple[str, int]) -> bool:
    try:
        _, writer = await asyncio.open_connection(*address)
    except OSError:
        return True
    writer.close()
    await writer.wait_closed()
    return False


async def _answers(address: tuple[str, int]) -> bool:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    status = await reader.readline()
    writer.close()
    await writer.wait_closed()
    return status.startswith(b"HTTP/1.1 200")


async def test_a_failing_collection_loop_fails_the_daemon_with_its_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listening: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    up = asyncio.Event()

    async def broken(*_args: Any, **_kw: Any) -> int:
        await up.wait()  # the API answered first
        raise RuntimeError("the collection loop broke")

    monkeypatch.setattr(daemon, "collect_rounds", broken)
    gateway = asyncio.create_task(daemon.run_gateway(_config(tmp_path),
                                                     ready=listening.set_result))
    address = await listening
    assert await _answers(address)
    up.set()
    with pytest.raises(RuntimeError, match="the collection loop broke"):  # not a group
        await gateway
    assert await _refused(address)


async def test_cancelling_the_daemon_stops_the_api_and_closes_the_store(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    listening: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    closed: list[str] = []
    real = daemon.open_store

    def spy(cfg: GatewayConfig) -> Any:
        store = real(cfg)
        close = store.close

        def closing() -> None:
            closed.append("store")
            close()

        store.close = closing  # type: ignore[method-assign]
        return store

    monkeypatch.setattr(daemon, "open_store", spy)
    gateway = asyncio.create_task(daemon.run_gateway(_config(tmp_path),
                                                     ready=listening.set_result))
    address = await listening
    assert await _answers(address)
    gateway.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gateway
    assert await _refused(address)
    assert closed == ["store"]
    with sqlite3.connect(tmp_path / "data" / "gw.db") as db:  # readable: nothing left open
        assert db.execute("SELECT count(*) FROM streams").fetchone()[0] == 0


async def test_rounds_end_the_daemon_and_its_api(tmp_path: Path) -> None:
    listening: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    await daemon.run_gateway(_config(tmp_path), ready=listening.set_result, rounds=1)
    assert await _refused(listening.result())

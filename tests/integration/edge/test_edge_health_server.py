"""The edge's health server on a real socket: hostile clients (silent, slow, oversized, too
many at once) are cut or refused, and the next probe is answered."""

from __future__ import annotations

import asyncio
import contextlib
import json

import pytest

from cairn_edge import health as health_mod
from cairn_edge.health import EdgeHealth, serve_health
from tests.scorecard import record


async def _get(address: tuple[str, int], path: str) -> tuple[int, dict[str, object]]:
    reader, writer = await asyncio.open_connection(*address)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    data = await reader.read()
    writer.close()
    await writer.wait_closed()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def test_hostile_clients_do_not_stop_the_probes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(health_mod, "REQUEST_TIMEOUT", 0.3)
    h = EdgeHealth(lambda: {"broker_connected": True, "disk_bytes": 0}, "mqtt://b", 0.0, 0)
    bound: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(serve_health("127.0.0.1", 0, h, ready=bound.set_result))
    address = await bound
    opened: list[asyncio.StreamWriter] = []
    survived = 0
    try:
        assert await _get(address, "/healthz") == (200, {"ok": True})
        # oversized headers: 431, the connection closed
        reader, writer = await asyncio.open_connection(*address)
        opened.append(writer)
        writer.write(b"GET /readyz HTTP/1.1\r\nX: " + b"a" * 20000)
        answer = await asyncio.wait_for(reader.read(), 10)
        assert answer.startswith(b"HTTP/1.1 431")
        # silent and slow clients: cut after the request timeout
        for partial in (b"", b"GET /rea"):
            reader, writer = await asyncio.open_connection(*address)
            opened.append(writer)
            writer.write(partial)
            assert await asyncio.wait_for(reader.read(), 10) == b""  # closed, no answer
        # more connections than allowed at once: the extra ones are closed at once
        held = [await asyncio.open_connection(*address)
                for _ in range(health_mod.MAX_CONNECTIONS + 8)]
        opened.extend(w for _r, w in held)
        closed_at_once = 0
        for r, _w in held[-8:]:
            closed_at_once += await asyncio.wait_for(r.read(), 10) == b""
        assert closed_at_once == 8
        for _r, w in held:
            w.close()
        # once the held connections are gone (closed, or cut at the request timeout), a probe
        # is answered again
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            try:
                code, body = await _get(address, "/readyz")
                break
            except (ConnectionError, IndexError, ValueError):
                assert asyncio.get_running_loop().time() < deadline
                await asyncio.sleep(0.05)
        assert code == 200 and body["ready"] is True
        survived = 1
    finally:
        for w in opened:
            w.close()
            with contextlib.suppress(ConnectionError, OSError):
                await w.wait_closed()
        server.cancel()
        with pytest.raises(asyncio.CancelledError):
            await server
    record("api", "oversized, silent, slow and too many clients on the edge's health "
           "endpoints", 4 + health_mod.MAX_CONNECTIONS + 8, 1 - survived,
           "probes not answered afterwards")

"""The edge agent's health endpoints (``[health].listen``): a small HTTP server of its own on
the agent's event loop, so an answer also proves that loop runs.

- ``GET /healthz``: 200 ``{"ok": true}`` while the agent's loop serves (liveness).
- ``GET /readyz``: 200 when every check passes, else 503; the JSON body names each check::

    {"ready": false, "checks": {
        "broker": {"ok": false, "detail": "not connected to mqtt://127.0.0.1:1883"},
        "commits": {"ok": true, "detail": "last commit 2s ago"},
        "disk": {"ok": true, "detail": "12.1 MB of a 500 MB quota"}}}

  ``broker``: connected to the MQTT broker; ``commits``: something was committed within
  ``[health].max_commit_age`` seconds (since the agent started, before its first commit);
  ``disk``: the data directory within ``[logs].max_disk_mb``, when a quota is set.

Hostile clients: a request has ``REQUEST_TIMEOUT`` seconds to send its first line and at most
``MAX_REQUEST`` bytes of it and its headers; past ``MAX_CONNECTIONS`` open connections a new
one is closed at once. Anything but ``GET`` or ``HEAD`` of the two paths is a 404 or 405.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from typing import Any

__all__ = ["MAX_CONNECTIONS", "MAX_REQUEST", "REQUEST_TIMEOUT", "EdgeHealth", "serve_health"]

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0  # seconds a client has to send its request's headers
MAX_REQUEST = 8192  # bytes of a request line and headers
MAX_CONNECTIONS = 32  # open connections at once


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    m, s = divmod(seconds, 60)
    return f"{m}m{s}s" if m else f"{s}s"


class EdgeHealth:
    """The readiness checks over the agent's ``status()`` and its last commit time."""

    def __init__(self, status: Callable[[], dict[str, Any]], broker: str, max_commit_age: float,
                 max_disk: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.status = status
        self.broker = broker
        self.max_commit_age = max_commit_age
        self.max_disk = max_disk
        self.clock = clock
        self.started = clock()
        self.last_commit: float | None = None

    def committed(self) -> None:
        self.last_commit = self.clock()

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        st = self.status()
        now = self.clock()
        checks: dict[str, dict[str, Any]] = {}
        connected = bool(st.get("broker_connected"))
        checks["broker"] = {"ok": connected, "detail": ("connected to " if connected else
                                                        "not connected to ") + self.broker}
        since = self.last_commit if self.last_commit is not None else self.started
        age = now - since
        ok = not self.max_commit_age or age <= self.max_commit_age
        what = "last commit" if self.last_commit is not None else "no commit since the start"
        checks["commits"] = {"ok": ok, "detail": f"{what} {_ago(age)} ago" + (
            "" if ok else f" (over {self.max_commit_age:g} s: are the sensors publishing?)")}
        used = int(st.get("disk_bytes", 0))
        if self.max_disk:
            ok = used <= self.max_disk
            checks["disk"] = {"ok": ok, "detail": f"{used / 1e6:.1f} MB of a "
                              f"{self.max_disk / 1e6:g} MB quota" + (
                                  "" if ok else ": the oldest block data is being cleared")}
        else:
            checks["disk"] = {"ok": True, "detail": f"{used / 1e6:.1f} MB, no quota"}
        ready = all(c["ok"] for c in checks.values())
        return ready, {"ready": ready, "checks": checks}


def _response(status: int, body: dict[str, Any], head: bool) -> bytes:
    reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 400: "Bad Request",
              431: "Request Header Fields Too Large", 503: "Service Unavailable"}[status]
    data = json.dumps(body).encode() + b"\n"
    return (f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode() + \
        (b"" if head else data)


def answer(request_line: bytes, health: EdgeHealth) -> bytes:
    """The response to one request line (``GET /readyz HTTP/1.1``)."""
    parts = request_line.split()
    if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
        return _response(400, {"error": "not an HTTP request line"}, False)
    method, target = parts[0], parts[1].split(b"?", 1)[0]
    head = method == b"HEAD"
    if target not in (b"/healthz", b"/readyz"):
        return _response(404, {"error": "only /healthz and /readyz are served here"}, head)
    if method not in (b"GET", b"HEAD"):
        return _response(405, {"error": "GET or HEAD only"}, False)
    if target == b"/healthz":
        return _response(200, {"ok": True}, head)
    ready, body = health.readiness()
    return _response(200 if ready else 503, body, head)


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  health: EdgeHealth) -> None:
    try:
        async with asyncio.timeout(REQUEST_TIMEOUT):
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                writer.write(_response(431, {"error": f"request over {MAX_REQUEST} bytes"},
                                       False))
                await writer.drain()
                return
            writer.write(answer(head.split(b"\r\n", 1)[0], health))
            await writer.drain()
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
        pass  # a slow, cut or silent client: closed below
    except Exception:  # a bug in a check must not stop the agent: say it, answer nothing
        log.exception("the health endpoint failed")
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


async def serve_health(host: str, port: int, health: EdgeHealth, *,
                       ready: Callable[[tuple[str, int]], object] | None = None) -> None:
    """Serve until cancelled; ``ready(address)`` once listening (OSError: the port is taken)."""
    open_now: set[asyncio.Task[None]] = set()

    def spawn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(open_now) >= MAX_CONNECTIONS:
            writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            open_now.add(task)
            task.add_done_callback(open_now.discard)

    async def client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        spawn(reader, writer)
        if not writer.is_closing():
            await _handle(reader, writer, health)

    server = await asyncio.start_server(client, host, port, limit=MAX_REQUEST)
    address = server.sockets[0].getsockname()[:2]
    log.info("health endpoints on http://%s:%d/healthz and /readyz", address[0], address[1])
    if ready is not None:
        ready((str(address[0]), int(address[1])))
    async with server:
        await server.serve_forever()

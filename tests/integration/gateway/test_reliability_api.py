"""Attacks on the gateway's HTTP API over real sockets, against `cairn gateway run` in its own
process (127.0.0.1, port 0, tokens from files): requests without or with the wrong token,
slow clients holding half-sent requests (slowloris), and file-descriptor exhaustion under a
lowered RLIMIT_NOFILE.

Each test ends with the gateway still running, the honest reader served the stored (current)
samples with the read token, nothing changed by the attacker, and no traceback in the log.
The gateway runs without a DHT: its store holds one board's samples, stamped at the start.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from cairn.fleet.identity import new_seed
from cairn.frames import Frame, Sample
from cairn_gateway.auth import new_token
from cairn_gateway.store import Store
from tests.scorecard import record, scale

# Runs `cairn gateway run` after lowering the soft RLIMIT_NOFILE (argv[1], 0: leave it).
LAUNCH = """
import resource, sys
n = int(sys.argv[1])
if n:
    resource.setrlimit(resource.RLIMIT_NOFILE, (n, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
from cairn.cli import main
sys.argv = ["cairn", "gateway", "run", "--config", sys.argv[2]]
main()
"""


@dataclass
class Gateway:
    proc: asyncio.subprocess.Process
    url: str
    read: str
    admin: str
    started: float
    log: list[str] = field(default_factory=list)
    drain: asyncio.Task[None] | None = None

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.read}"}

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    async def wait_log(self, text: str, within: float) -> bool:
        """Until a log line contains ``text`` (read as the gateway writes them)."""
        async with asyncio.timeout(within):
            while not any(text in line for line in self.log):
                assert self.proc.stderr is not None
                line = await self.proc.stderr.readline()
                if not line:
                    return False
                self.log.append(line.decode(errors="replace"))
        return True

    async def honest_read(self, within: float = 10.0) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.url, timeout=within) as c:
            r = await c.get("/api/latest", headers=self.headers())
        assert r.status_code == 200, r.text
        latest: list[dict[str, Any]] = r.json()
        return latest


def seed_store(path: Path, now: float, history: int = 0) -> None:
    """One board's stream: ``history`` samples a second apart, then 21.5 at ``now``."""
    store = Store(path)
    try:
        dev = store.device(b"d" * 32, "board-1", now)
        sid = store.stream(dev, "board-1/temperature", b"k" * 32, "Cel")
        name = "board-1/temperature"
        frames = [Sample(name, "Cel", now - history + k, 20.0) for k in range(history)]
        store.ingest(sid, [(k, 0, Frame((x,))) for k, x in enumerate(
            [*frames, Sample(name, "Cel", now, 21.5)])])
    finally:
        store.close()


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[object]:
    started: list[Gateway] = []

    async def go(*, nofile: int = 0, api: str = "", history: int = 0) -> Gateway:
        gdir = tmp_path / f"gw{len(started)}"
        (gdir / "data").mkdir(parents=True)
        new_seed(gdir / "gateway.seed")
        read, admin = new_token(gdir / "read.token"), new_token(gdir / "admin.token")
        now = time.time()
        seed_store(gdir / "data" / "gw.db", now, history)
        (gdir / "gateway.toml").write_text(
            'data_dir = "data"\nkey_file = "gateway.seed"\n'
            "[collect]\ninterval = 3600\ningest_worker = false\n"
            '[replication]\nlisten = "127.0.0.1:0"\n'
            '[api]\nlisten = "127.0.0.1:0"\nread_token_file = "read.token"\n'
            f'admin_token_file = "admin.token"\n{api}\n')
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", LAUNCH, str(nofile), str(gdir / "gateway.toml"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert proc.stdout is not None
        async with asyncio.timeout(30):
            first = await proc.stdout.readline()
        assert first, "the gateway exited before it was ready"
        gw = Gateway(proc, json.loads(first)["api"], read, admin, now)
        started.append(gw)
        return gw

    yield go
    for gw in started:  # each gateway stops cleanly on SIGTERM, its log without a traceback
        if gw.proc.returncode is None:
            gw.proc.terminate()
            async with asyncio.timeout(30):
                _, err = await gw.proc.communicate()
            gw.log.append(err.decode(errors="replace"))
        log = "".join(gw.log)
        assert gw.proc.returncode == 0 and "Traceback" not in log, log[-3000:]


class _quiet:
    """Ignore a connection the gateway reset."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], ConnectionError)  # type: ignore[arg-type]


async def check_still_serving(gw: Gateway) -> None:
    """The gateway runs, the honest reader gets the stored sample, nothing else is there,
    and the gateway logged no traceback so far (the fixture checks its whole log at the end)."""
    assert gw.proc.returncode is None, "the gateway exited"
    [row] = await gw.honest_read()
    assert row["name"] == "board-1/temperature" and row["value"] == 21.5
    assert time.time() - float(row["time"]) < 600  # the sample stored at the start
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as c:
        devices = (await c.get("/api/devices", headers=gw.headers(gw.admin))).json()
        assert [d["name"] for d in devices] == ["board-1"]
        assert (await c.get("/healthz")).json()["ok"] is True
    assert not any("Traceback" in line for line in gw.log)


async def test_requests_without_the_right_token_are_refused(start: object) -> None:
    gw: Gateway = await start()  # type: ignore[operator]
    runs = scale(50, 500)
    tries: list[tuple[str, str, dict[str, str]]] = [
        ("GET", "/api/latest", {}),
        ("GET", "/api/streams", {"Authorization": "Bearer " + "x" * 43}),
        ("GET", "/metrics", {"Authorization": "Basic " + gw.read}),
        ("GET", "/api/devices", {"Authorization": "Bearer " + gw.read[:-1]}),
        ("GET", "/openapi.json", {"Authorization": gw.read}),
        ("POST", "/api/devices", {"Authorization": "Bearer " + gw.read}),
        ("DELETE", "/api/devices/1", {"Authorization": "Bearer " + gw.read}),
        ("DELETE", "/api/devices/1", {}),
        ("GET", "/api/../api/latest", {}),
        ("GET", "/healthz/../api/latest", {}),
    ]
    accepted = 0
    statuses: set[int] = set()
    async with httpx.AsyncClient(base_url=gw.url, timeout=10) as c:
        for k in range(runs):
            method, path, headers = tries[k % len(tries)]
            r = await c.request(method, path, headers=headers)
            statuses.add(r.status_code)
            accepted += r.status_code < 400 or "detail" not in r.json()
    line = record("api", "requests without a valid token (none, wrong, Basic, truncated, "
                  "read token on POST/DELETE, path tricks)", runs, accepted, "accepted",
                  detail=f"statuses {sorted(statuses)}")
    assert line.passed and statuses <= {401, 403}
    await check_still_serving(gw)


async def test_slow_clients_are_cut_and_the_honest_client_is_served(start: object) -> None:
    """1,000 connections each send half a request and then nothing: the gateway holds at most
    max_connections (dropping the oldest slow one for a new connection), cuts each slow one
    request_timeout after it connected, and the honest reader is served meanwhile."""
    timeout = 2.0
    gw: Gateway = await start(api=f"request_timeout = {timeout}\nmax_connections = 256")  # type: ignore[operator]
    n = scale(1000, 1000)
    slack = 5.0  # scheduling on a shared machine; uvicorn alone held them for 90 s

    async def slow() -> float:
        t0 = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            writer.write(b"GET /api/latest HTTP/1.1\r\nHost: gateway\r\nX-Slow: ")
            await writer.drain()
            async with asyncio.timeout(timeout + 60):
                while await reader.read(4096):  # the gateway sends nothing: EOF or reset
                    pass
        except (ConnectionError, TimeoutError):  # reset by the gateway / never cut
            pass
        finally:
            writer.close()
            with _quiet():
                await writer.wait_closed()
        return time.monotonic() - t0

    attackers = [asyncio.create_task(slow()) for _ in range(n)]
    honest_ok = 0
    honest = 3
    for _ in range(honest):  # while the slow ones hold their connections
        [row] = await gw.honest_read(within=timeout + slack)
        honest_ok += row["value"] == 21.5
    held = await asyncio.gather(*attackers)
    late = sum(h > timeout + slack for h in held)
    line = record("api", f"{n} half-sent requests held open (slowloris), request_timeout "
                  f"{timeout:g} s, max_connections 256", n, late,
                  f"held past {timeout + slack:g} s",
                  detail=f"longest held {max(held):.1f} s; honest reads served "
                         f"{honest_ok}/{honest}")
    assert line.passed and honest_ok == honest
    await check_still_serving(gw)


async def test_file_descriptor_exhaustion_is_logged_once_and_the_gateway_recovers(
        start: object) -> None:
    """RLIMIT_NOFILE 64 in the gateway's process, max_connections above it: 150 idle
    connections run it out of descriptors. accept fails with EMFILE; the gateway logs it as
    a line per 10 s with a count (uvicorn and asyncio logged a traceback per failed accept),
    cuts the idle connections after request_timeout, and serves the honest reader once
    descriptors free up."""
    gw: Gateway = await start(nofile=64, api="request_timeout = 2.0\nmax_connections = 10000")  # type: ignore[operator]
    n = scale(150, 600)
    conns = []
    for _ in range(n):  # the kernel completes each handshake (backlog) whether accepted or not
        conns.append(await asyncio.open_connection("127.0.0.1", gw.port))
    try:
        assert await gw.wait_log("cannot accept connections", within=30)
        [row] = await gw.honest_read(within=90)  # queued behind the idle ones
        served = row["value"] == 21.5
    finally:
        for _, writer in conns:
            writer.close()
            with _quiet():
                await writer.wait_closed()
    await check_still_serving(gw)
    gw.proc.terminate()
    async with asyncio.timeout(30):
        _, err = await gw.proc.communicate()
    gw.log.append(err.decode(errors="replace"))
    text = "".join(gw.log)
    assert "failed accepts (out of file descriptors)" in text  # the totals at the end
    tracebacks = text.count("Traceback")
    accept_lines = text.count("cannot accept connections")
    line = record("api", f"file-descriptor exhaustion: {n} connections against "
                  "RLIMIT_NOFILE 64", n, tracebacks + (not served),
                  "tracebacks logged + honest reads not served",
                  detail=f"{accept_lines} accept-error line(s), {len(text)} bytes of log; "
                         f"exit status {gw.proc.returncode} on SIGTERM")
    assert line.passed and accept_lines >= 1
    assert gw.proc.returncode == 0, text[-2000:]
    assert len(text) < 20_000, text[-2000:]



async def test_oversized_headers_are_refused_and_not_logged_one_by_one(start: object) -> None:
    gw: Gateway = await start(api="max_header_bytes = 8192")  # type: ignore[operator]
    runs = scale(200, 2000)
    answered = []
    request = (b"GET /api/latest HTTP/1.1\r\nHost: gateway\r\nAuthorization: Bearer "
               + gw.read.encode() + b"\r\nX-Big: " + b"a" * 32768 + b"\r\n\r\n")

    def send(parts: list[bytes]) -> bytes:
        with socket.create_connection(("127.0.0.1", gw.port), timeout=30) as s:
            with _quiet():  # refused before the end was sent
                for part in parts:
                    s.sendall(part)
            try:
                return s.recv(1 << 16)
            except ConnectionError:
                return b"reset"

    for k in range(runs):  # whole in one write, or trickled in 4 KiB writes
        parts = [request] if k % 2 else [request[i:i + 4096]
                                         for i in range(0, len(request), 4096)]
        answered.append(await asyncio.to_thread(send, parts))
    await check_still_serving(gw)
    gw.proc.terminate()
    async with asyncio.timeout(30):
        _, err = await gw.proc.communicate()
    log = err.decode(errors="replace")
    served = sum(not a.startswith((b"HTTP/1.1 431 ", b"HTTP/1.1 400 ")) and a not in
                 (b"", b"reset") for a in answered)
    line = record("api", "requests with 32 KiB of headers (max_header_bytes 8 KiB), half sent "
                  "whole, half trickled", runs, served, "served (not 431, 400 or closed)",
                  detail=f"{log.count(chr(10))} log line(s) for {runs} malformed requests; answers "
                         f"{sorted({a[:12].decode(errors='replace') for a in answered})}")
    assert line.passed
    assert log.count("Invalid HTTP request") == 0 and log.count("\n") <= 5, log[-2000:]


async def test_clients_that_stop_reading_answers_are_cut(start: object) -> None:
    """Clients ask for a large answer (99,000 samples, about 6 MB: more than the kernel's
    send buffer, 4 MB at most) with a 4 KiB receive buffer and never read it: uvicorn alone
    kept each such request's task and connection for as long as the client liked. The
    gateway disconnects each request_timeout after the answer stalled."""
    timeout, slack = 2.0, 5.0
    gw: Gateway = await start(api=f"request_timeout = {timeout}", history=99_000)  # type: ignore[operator]
    n = scale(8, 64)
    request = (f"GET /api/samples?stream=1&from=0&to={gw.started + 1} HTTP/1.1\r\n"
               f"Host: gateway\r\nAuthorization: Bearer {gw.read}\r\n\r\n").encode()
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.connect(("127.0.0.1", gw.port))
        s.sendall(request)
        socks.append(s)
    try:
        # served while they stall (the bound is generous: writing eight 6 MB answers takes the
        # gateway's event loop seconds of CPU on a busy machine before they stall; what is
        # checked is that the honest read is answered, and that the stalled ones are cut)
        [row] = await gw.honest_read(within=60)
        honest = row["value"] == 21.5
        # The attack's length: the clients hold still past the bound (the attack itself, not
        # a wait for the gateway); the gateway says when it cut the first one.
        assert await gw.wait_log("stopped reading an answer", within=60)
        await asyncio.sleep(timeout + slack)

        def drain(s: socket.socket) -> bytes:
            s.settimeout(30)
            got = b""
            with _quiet():
                while chunk := s.recv(1 << 16):
                    got += chunk
            return got

        answers = [await asyncio.to_thread(drain, s) for s in socks]
    finally:
        for s in socks:
            s.close()
    full = [a for a in answers if a.endswith(b"}]")]  # a whole JSON array: never cut
    line = record("api", f"{n} clients that stop reading a 99,000-sample answer "
                  f"(request_timeout {timeout:g} s)", n, len(full), "answers held to the end",
                  detail=f"bytes each got before the cut: {min(map(len, answers)):,} to "
                         f"{max(map(len, answers)):,}; honest read served: {honest}")
    assert line.passed and honest
    await check_still_serving(gw)

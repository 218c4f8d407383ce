"""Cairn's hyperdht ends in the lab: ``python -m tests.lab.punch testnet|server|client|bench``.
One JSON object a line on stdout.

``testnet N HOST``: N persistent Cairn DHT nodes on HOST: ``{"bootstrap": ["HOST:PORT"]}``,
runs until killed.

``server BOOTSTRAP SEEDHEX [--raise-limits]``: a Cairn DHT node (ephemeral, every interface)
serving the key pair of SEEDHEX by key (``--raise-limits``: no per-host handshake limit):
``{"ready": true, "publicKey": hex}``; every client that punches to it gets what it writes
echoed, prefixed ``echo:`` (one line ``{"connection": hex, "punched": bool}`` each).

``client BOOTSTRAP KEYHEX MS``: connects to KEYHEX (handshake, holepunch, UDX), writes ``ping``
and waits for the echo: ``{"ok": true, "echo": ..., "ms": N, "firewall": n, "punched": bool}``
or ``{"ok": false, "error": "..."}`` (within MS).

``bench BOOTSTRAP KEYHEX N``: one DHT node bootstrapped once, then N connects one after the
other (a fresh key pair each; the relay of the last connect tried first, as hyperdht's
relay-address cache), each timed from its start to the echo of ``ping`` (handshake, punch,
secret-stream over UDX both ways) and closed: ``{"ms": [...], "failed": n, "errors":
[...]}``.

BOOTSTRAP is a comma-separated list of HOST:PORT.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import time
from typing import Any

from cairn.crypto import KeyPair, key_pair
from cairn.dht.api import DHT
from cairn.dht.messages import Address
from cairn.errors import LocalError, RemoteError, ServiceError
from cairn.hyperdht.aio import KeyServer, handshake_by_key, serve_by_key
from cairn.hyperdht.events import Established
from cairn.hyperdht.puncher import punch_as_client
from cairn.hyperdht.router import RateLimit
from cairn.replication.aio import SecretStreamConnection
from cairn.replication.secret_stream import SecretStream
from cairn.udx import open_udx_connection
from cairn.udx.aio import UDXReader, UDXWriter


def _print(value: object) -> None:
    sys.stdout.write(json.dumps(value) + "\n")
    sys.stdout.flush()


def _bootstrap(text: str) -> list[Address]:
    out = []
    for item in text.split(","):
        host, _, port = item.rpartition(":")
        out.append((host, int(port)))
    return out


async def testnet(n: int, host: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(DHT.start(host, 0, [], persistent=True))
        nodes = [first]
        for _ in range(n - 1):
            nodes.append(await stack.enter_async_context(
                DHT.start(host, 0, [first.address], persistent=True)))
        await asyncio.gather(*(d.ready() for d in nodes))
        _print({"bootstrap": [f"{d.address[0]}:{d.address[1]}" for d in nodes]})
        await asyncio.Event().wait()


async def secret_stream(est: Established, keys: KeyPair, reader: UDXReader,
                        writer: UDXWriter) -> SecretStreamConnection:
    """secret-stream keyed by the IK over the punched UDX stream (no second Noise)."""
    core = SecretStream(est.is_initiator, keys, random.SystemRandom())
    core.start_established(est)
    connection = SecretStreamConnection(core, reader, writer)
    await connection.handshake()
    return connection


async def _echo(server: KeyServer, keys: KeyPair, est: Established) -> None:
    try:
        if est.holepunch_id is None:
            _print({"connection": est.remote_public_key.hex(), "punched": False})
            return
        reader, writer = await server.punched_stream(est, 15.0)
    except (ServiceError, RemoteError, TimeoutError) as exc:
        _print({"connection": est.remote_public_key.hex(), "error": str(exc)})
        return
    _print({"connection": est.remote_public_key.hex(), "punched": True})
    try:
        conn = await secret_stream(est, keys, reader, writer)
        while (data := await conn.receive()) is not None:
            await conn.send(b"echo:" + data)
    except (ServiceError, RemoteError, ConnectionError) as exc:
        _print({"connection": est.remote_public_key.hex(), "closed": str(exc)})
    finally:
        writer.stream.socket.close()


async def server(bootstrap: str, seed: str, raise_limits: bool = False) -> None:
    keys = key_pair(bytes.fromhex(seed))
    # a benchmark's back-to-back connects from one host would meet the per-host handshake
    # limit (10/s, burst 20) and time that instead of the set-up
    limit = RateLimit(per_host=1e4, burst=1e4, total=1e5) if raise_limits else None
    tasks: set[asyncio.Task[None]] = set()
    async with DHT.start("0.0.0.0", 0, _bootstrap(bootstrap), persistent=False) as dht:
        await dht.ready()
        async with serve_by_key(dht.node, keys, limit=limit) as srv:
            await srv.wait_announced()
            _print({"ready": True, "publicKey": keys.public_key.hex()})
            while True:
                est = await srv.accept()
                task = asyncio.create_task(_echo(srv, keys, est))
                tasks.add(task)
                task.add_done_callback(tasks.discard)


async def _connect(dht: DHT, key: bytes, keys: KeyPair, *, echo: bool,
                   relays: list[Address] | None = None) -> dict[str, Any]:
    """One connect; ``relays``: the relay of the last connect, tried first and updated (as
    hyperdht's relay-address cache)."""
    started = time.monotonic()
    est = await handshake_by_key(dht.node, key, keys, holepunch=True, timeout=10.0,
                                 relay_addresses=tuple(relays or ()))
    if relays is not None and est.relay is not None:
        relays[:] = [est.relay]
    handshake_ms = (time.monotonic() - started) * 1000
    if est.holepunch_id is None:
        return {"ok": False, "error": "no punch needed (a side is OPEN)", "punched": False}
    puncher, path = await punch_as_client(dht.node, est)
    try:
        ms = (time.monotonic() - started) * 1000
        result: dict[str, Any] = {"ok": True, "ms": round(ms, 2), "punched": True,
                                  "handshake_ms": round(handshake_ms, 2),
                                  "punch_ms": round(ms - handshake_ms, 2),
                                  "firewall": int(puncher.nat.firewall),
                                  "path": f"{path[0]}:{path[1]}"}
        if echo:
            reader, writer = await open_udx_connection(puncher.socket, est.local_udx_id,
                                                       est.remote_udx_id, path)
            conn = await secret_stream(est, keys, reader, writer)
            await conn.send(b"ping")
            got = await conn.receive()
            result["echo"] = got.decode(errors="replace") if got is not None else None
            result["ms"] = round((time.monotonic() - started) * 1000, 2)
        return result
    finally:
        puncher.close()


async def client(bootstrap: str, key: str, ms: int) -> None:
    async with DHT.start("0.0.0.0", 0, _bootstrap(bootstrap), persistent=False) as dht:
        await dht.ready()
        try:
            async with asyncio.timeout(ms / 1000):
                result = await _connect(dht, bytes.fromhex(key), key_pair(os.urandom(32)),
                                        echo=True)
        except TimeoutError:
            result = {"ok": False, "error": f"no echo within {ms} ms"}
        except (ServiceError, RemoteError, LocalError) as exc:
            result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        _print(result)


async def bench(bootstrap: str, key: str, n: int) -> None:
    ms: list[float] = []
    errors: list[str] = []
    parts: list[tuple[float, float]] = []
    relays: list[Address] = []
    rng = random.Random(1)
    async with DHT.start("0.0.0.0", 0, _bootstrap(bootstrap), persistent=False) as dht:
        await dht.ready()
        for _ in range(n):
            try:
                async with asyncio.timeout(15.0):
                    got = await _connect(dht, bytes.fromhex(key),
                                         key_pair(rng.randbytes(32)), echo=True, relays=relays)
                if got["ok"]:
                    ms.append(float(got["ms"]))
                    parts.append((float(got["handshake_ms"]), float(got["punch_ms"])))
                else:
                    errors.append(str(got["error"]))
            except (TimeoutError, ServiceError, RemoteError, LocalError) as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
    _print({"ms": ms, "failed": len(errors), "errors": errors[:5],
            "handshake_ms": [p[0] for p in parts], "punch_ms": [p[1] for p in parts]})


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tests.lab.punch")
    sub = p.add_subparsers(dest="verb", required=True)
    t = sub.add_parser("testnet")
    t.add_argument("n", type=int)
    t.add_argument("host")
    s = sub.add_parser("server")
    s.add_argument("bootstrap")
    s.add_argument("seed")
    s.add_argument("--raise-limits", action="store_true",
                   help="per-host handshake limits out of the way (benchmarks)")
    c = sub.add_parser("client")
    c.add_argument("bootstrap")
    c.add_argument("key")
    c.add_argument("ms", type=int)
    b = sub.add_parser("bench")
    b.add_argument("bootstrap")
    b.add_argument("key")
    b.add_argument("n", type=int)
    a = p.parse_args(argv)
    if a.verb == "testnet":
        coro: Any = testnet(a.n, a.host)
    elif a.verb == "server":
        coro = server(a.bootstrap, a.seed, a.raise_limits)
    elif a.verb == "client":
        coro = client(a.bootstrap, a.key, a.ms)
    else:
        coro = bench(a.bootstrap, a.key, a.n)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(coro)


if __name__ == "__main__":
    main()

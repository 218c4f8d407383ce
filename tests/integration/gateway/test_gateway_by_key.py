"""Connect by key (issue 19 item 2, decision 0013) on a running gateway, data phase included:
a Cairn edge dials the gateway by its key (hyperdht connect, Noise IK, a UDX stream on the
DHT's UDP port carrying secret-stream keyed by the IK) and is collected live, exactly as over
TCP; an edge whose connect by key fails falls back to TCP by itself; a JS hyperdht client with
a JS hypercore writer (the npm packages) connects by key and the gateway reads its log; an
unenrolled key is refused by the gateway's firewall hook before any IK reply, and a peer that
stalls after the IK is dropped at the handshake timeout while an honest edge is served."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cairn.crypto import key_pair
from cairn.dht.api import DHT
from cairn.dht.records import hash32
from cairn.fleet.record import DeviceRecord
from cairn.hyperdht import PeerConnectionFailedError, Router, handshake_by_key
from cairn_edge.dialer import Dialer, open_by_key
from cairn_gateway.collect import Device
from cairn_gateway.config import GatewayConfig
from cairn_gateway.daemon import by_key
from cairn_gateway.listener import ListenerLimits
from cairn_gateway.roster import reach
from tests.integration.gateway.test_dialout import (
    Edge,
    Gateway,
    dialling,
    frame,
    running,
    until,
)
from tests.scorecard import record

LAB_JS = Path(__file__).resolve().parents[2] / "lab" / "js" / "hyperdht_lab.js"
JS_CORE = Path(__file__).resolve().parents[2] / "interop" / "js" / "hyperdht_hypercore.js"


NODES: list[DHT] = []  # the running testnet's nodes (one test at a time per process)


@contextlib.asynccontextmanager
async def cairn_dht(seed: int) -> AsyncIterator[tuple[str, int]]:
    """Six persistent Cairn DHT nodes on 127.0.0.1; yields the first's address."""
    rng = random.Random(seed)
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            DHT.start("127.0.0.1", 0, [], persistent=True, rng=random.Random(rng.random())))
        nodes = [first]
        for _ in range(5):
            nodes.append(await stack.enter_async_context(DHT.start(
                "127.0.0.1", 0, [first.address], persistent=True,
                rng=random.Random(rng.random()))))
        await asyncio.gather(*(d.ready() for d in nodes))
        NODES[:] = nodes
        try:
            yield first.address
        finally:
            NODES.clear()


@contextlib.asynccontextmanager
async def serving_by_key(gw: Gateway, tmp: Path, boot: tuple[str, int], seed: int,
                         reachable: bool = True) -> AsyncIterator[DHT]:
    """The gateway's own DHT node, serving connect by key as the daemon does (``reachable``:
    with ``by_key_address``)."""
    cfg = GatewayConfig(tmp / "data", tmp / "gateway.seed",
                        replication_by_key_address=("127.0.0.1", 0) if reachable else None)
    async with contextlib.AsyncExitStack() as stack:
        dht = await stack.enter_async_context(
            DHT.start("127.0.0.1", 0, [boot], persistent=False, rng=random.Random(seed)))
        await dht.ready()
        await by_key(cfg, dht, gw.listener, gw.key, stack)
        await until(lambda: _announced(gw.key.public_key))
        yield dht


def _announced(key: bytes) -> bool:
    """Some testnet node keeps the forward entry of the gateway's announce."""
    target = hash32(key)
    return any(isinstance(r := d.node.handler.router, Router)
               and r.find_peer(target, d.node.now()) for d in NODES)


async def edge_node(stack: contextlib.AsyncExitStack, boot: tuple[str, int], seed: int) -> DHT:
    dht = await stack.enter_async_context(
        DHT.start("127.0.0.1", 0, [boot], persistent=False, rng=random.Random(seed)))
    await dht.ready()
    return dht


def by_key_dialer(edge: Edge, gw_key: bytes, node: DHT, transport: str = "key",
                  **kw: Any) -> Dialer:
    return Dialer(edge.noise, [gw_key], list(edge.logs.values()), rng=random.Random(7),
                  backoff_initial=0.05, backoff_max=0.5, transport=transport,
                  by_key=open_by_key(node.node, timeout=kw.pop("timeout", 10.0)), **kw)


def test_a_cairn_edge_dials_by_key_and_is_collected_live(tmp_path: Path) -> None:
    names = ("board-k/temperature", "board-k/humidity")

    async def main() -> None:
        edge = Edge(tmp_path, "board-k", names)
        gw = Gateway(tmp_path)
        try:
            for n, lg in edge.logs.items():
                lg.append([frame(n, k) for k in range(5)])
            gw.enroll(edge, "board-k")
            async with cairn_dht(11) as boot, contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(serving_by_key(gw, tmp_path, boot, 12))
                node = await edge_node(stack, boot, 13)
                dialer = by_key_dialer(edge, gw.key.public_key, node)
                async with dialling(dialer):
                    await until(lambda: all(gw.samples(n) == 5 for n in names), 30)
                    link = dialer.links[gw.key.public_key]
                    assert link.connected and link.transport == "udx"
                    assert link.as_dict()["transport"] == "udx"
                    assert edge.record_key in gw.collector.live
                    assert reach(gw.store.conn)[edge.record_key].startswith("connected since")
                    for k in range(5, 10):  # live push over UDX: one append at a time
                        edge.logs[names[0]].append([frame(names[0], k)])
                        await until(lambda k=k: gw.samples(names[0]) == k + 1)  # type: ignore[misc]
                    assert gw.samples(names[1]) == 5
                    assert gw.listener.by_key_admitted == 1 and gw.listener.by_key_dropped == 0
                    assert gw.listener.open == 1
                await until(lambda: gw.listener.open == 0)
        finally:
            edge.close()
            gw.close()

    asyncio.run(main())


def test_an_edge_falls_back_to_tcp_when_by_key_fails(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """The gateway does not serve by key: "auto" says why and is collected over TCP."""
    name = "board-t/temperature"

    async def main() -> Dialer:
        edge = Edge(tmp_path, "board-t", (name,))
        gw = Gateway(tmp_path)
        try:
            edge.logs[name].append([frame(name, k) for k in range(3)])
            gw.enroll(edge, "board-t")
            async with cairn_dht(21) as boot, contextlib.AsyncExitStack() as stack, \
                    running(gw):
                node = await edge_node(stack, boot, 22)
                dialer = by_key_dialer(edge, gw.key.public_key, node, transport="auto",
                                       dial=[gw.address], timeout=1.5)
                async with dialling(dialer):
                    await until(lambda: gw.samples(name) == 3, 30)
                return dialer
        finally:
            edge.close()
            gw.close()

    with caplog.at_level(logging.WARNING, logger="cairn_edge.dialer"):
        dialer = asyncio.run(main())
    link = next(iter(dialer.links.values()))
    assert link.transport == "tcp"
    assert link.by_key_error is not None and "PeerNotFoundError" in link.by_key_error
    assert any("connect by key failed" in r.getMessage() and "trying TCP" in r.getMessage()
               for r in caplog.records)


def test_neither_side_reachable_the_edge_punches_and_is_collected_over_the_punched_stream(
        tmp_path: Path) -> None:
    """The gateway serves by key but says no public address, and the edge is behind its NAT
    too: the two punch (on 127.0.0.1 the first probes get through), the data runs on the
    punched UDX stream from the puncher sockets, and the edge is collected over it."""
    name = "board-u/temperature"

    async def main() -> tuple[Dialer, int, int]:
        edge = Edge(tmp_path, "board-u", (name,))
        gw = Gateway(tmp_path)
        try:
            edge.logs[name].append([frame(name, k) for k in range(3)])
            gw.enroll(edge, "board-u")
            async with cairn_dht(41) as boot, contextlib.AsyncExitStack() as stack, \
                    running(gw):
                await stack.enter_async_context(
                    serving_by_key(gw, tmp_path, boot, 42, reachable=False))
                node = await edge_node(stack, boot, 43)
                dialer = by_key_dialer(edge, gw.key.public_key, node, transport="auto",
                                       dial=[gw.address])
                async with dialling(dialer):
                    await until(lambda: gw.samples(name) == 3, 30)
                return dialer, gw.listener.by_key_unreachable, gw.listener.by_key_admitted
        finally:
            edge.close()
            gw.close()

    dialer, unreachable, admitted = asyncio.run(main())
    link = next(iter(dialer.links.values()))
    assert link.transport == "udx", link.by_key_error
    assert unreachable == 0 and admitted >= 1


async def js_open(node_path: Path, interop_dir: Path, boot: tuple[str, int], key: bytes,
                  seed: str, ms: int) -> dict[str, Any]:
    """`hyperdht_lab.js open`: connect by key as seed's key pair; its one JSON line."""
    proc = await asyncio.create_subprocess_exec(
        str(node_path), str(LAB_JS), "open", f"{boot[0]}:{boot[1]}", key.hex(), str(ms), seed,
        env={"NODE_PATH": str(interop_dir / "node_modules")}, cwd=interop_dir,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(ms / 1000 + 30):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    assert lines, f"the JS client printed nothing: {err.decode()[-2000:]}"
    got: dict[str, Any] = json.loads(lines[-1])
    return got


@contextlib.asynccontextmanager
async def js_writer(node_path: Path, interop_dir: Path, boot: tuple[str, int], key: bytes,
                    noise_seed: str, core_seed: str,
                    blocks: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    proc = await asyncio.create_subprocess_exec(
        str(node_path), str(JS_CORE), "writer", f"{boot[0]}:{boot[1]}", key.hex(), noise_seed,
        core_seed, env={"NODE_PATH": str(interop_dir / "node_modules"),
                        "CAIRN_BLOCKS_FILE": str(blocks)},
        cwd=interop_dir, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL)
    try:
        yield proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                assert proc.stdin is not None
                proc.stdin.write(b"quit\n")
                await proc.stdin.drain()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()


async def js_line(proc: asyncio.subprocess.Process, seconds: float = 30) -> dict[str, Any]:
    assert proc.stdout is not None
    async with asyncio.timeout(seconds):
        while True:
            line = await proc.stdout.readline()
            assert line, "the JS peer ended"
            if line.startswith(b"{"):
                got: dict[str, Any] = json.loads(line)
                return got


def test_a_js_hypercore_writer_connects_by_key_and_is_collected_and_a_stranger_is_refused(
        node_path: Path, interop_dir: Path, tmp_path: Path) -> None:
    noise_seed, core_seed, stranger_seed = "23" * 32, "25" * 32, "24" * 32
    js_key = key_pair(bytes.fromhex(noise_seed)).public_key
    name = "js-board/temperature"
    (tmp_path / "blocks.hex").write_text("\n".join(frame(name, k).hex() for k in range(20)))

    async def main() -> tuple[dict[str, Any], Gateway]:
        gw = Gateway(tmp_path)
        try:
            # the JS peer is an enrolled device whose signed record names its Noise key and
            # its hypercore's key as the stream
            async with cairn_dht(5) as boot, \
                    serving_by_key(gw, tmp_path, boot, 6), \
                    js_writer(node_path, interop_dir, boot, gw.key.public_key, noise_seed,
                              core_seed, tmp_path / "blocks.hex") as js:
                hello = await js_line(js)
                assert hello["length"] == 20, hello
                core_key = bytes.fromhex(hello["core"])
                record_key = key_pair(b"r" * 32).public_key
                rec = DeviceRecord(time=int(time.time()), streams=[(name, core_key)],
                                   noise_key=js_key)
                gw.roster.enroll(record_key, "js-board", time.time())
                gw.collector.bind(Device(record_key, 1, rec, {name: core_key}))
                assert js.stdin is not None
                js.stdin.write(b"go\n")
                await js.stdin.drain()
                assert await js_line(js) == {"open": True}
                await until(lambda: gw.samples(name) == 20, 30)
                js.stdin.write(b"append " + frame(name, 20).hex().encode() + b"\n")
                await js.stdin.drain()
                await until(lambda: gw.samples(name) == 21, 30)  # pushed live by JS
                assert gw.listener.by_key_admitted == 1
                refused = await js_open(node_path, interop_dir, boot, gw.key.public_key,
                                        stranger_seed, 3_000)
            return refused, gw
        finally:
            gw.close()

    refused, gw = asyncio.run(main())
    record("replication", "an unenrolled key connects to the gateway by key (JS hyperdht)",
           gw.listener.by_key_refused, 0 if not refused.get("ok") else 1, "handshakes completed",
           detail=f"refused by the firewall hook before the IK reply; JS: {refused.get('error')}")
    assert not refused.get("ok"), refused
    assert gw.listener.by_key_refused >= 1
    assert gw.listener.by_key_admitted == 1


def test_a_peer_stalling_after_the_ik_is_dropped_and_honest_edges_are_served(
        tmp_path: Path) -> None:
    """An enrolled key completes the IK by key and sends nothing more (three times), and a
    stranger tries by key: the stalled ones are dropped at the handshake timeout, the
    stranger gets no IK reply, and an honest edge dialling by key meanwhile is collected."""
    name = "board-h/temperature"

    async def main() -> tuple[int, int, int, int]:
        edge = Edge(tmp_path, "board-h", (name,))
        stalled = Edge(tmp_path, "board-s", ("board-s/temperature",))
        gw = Gateway(tmp_path, ListenerLimits(handshake_timeout=1.0))
        try:
            edge.logs[name].append([frame(name, k) for k in range(4)])
            gw.enroll(edge, "board-h")
            gw.enroll(stalled, "board-s")
            async with cairn_dht(31) as boot, contextlib.AsyncExitStack() as stack:
                await stack.enter_async_context(serving_by_key(gw, tmp_path, boot, 32))
                attacker = await edge_node(stack, boot, 33)
                node = await edge_node(stack, boot, 34)
                for _ in range(3):
                    await handshake_by_key(attacker.node, gw.key.public_key, stalled.noise,
                                           timeout=10)
                with pytest.raises((PeerConnectionFailedError, TimeoutError)):
                    await handshake_by_key(attacker.node, gw.key.public_key,
                                           key_pair(b"x" * 32), timeout=2)
                async with dialling(by_key_dialer(edge, gw.key.public_key, node)):
                    await until(lambda: gw.samples(name) == 4, 30)
                    await until(lambda: gw.listener.by_key_dropped >= 3, 10)
                    edge.logs[name].append([frame(name, 4)])
                    await until(lambda: gw.samples(name) == 5, 30)
                    assert gw.listener.open == 1  # the stalled slots are free again
            return (gw.listener.by_key_dropped, gw.listener.by_key_refused, gw.samples(name),
                    gw.samples("board-s/temperature"))
        finally:
            edge.close()
            stalled.close()
            gw.close()

    dropped, refused, honest, from_stalled = asyncio.run(main())
    record("replication", "peers stall after the IK by key while an honest edge dials by key",
           3, 3 - dropped, "stalled peers still held after the handshake timeout",
           detail=f"dropped {dropped} at 1 s, stranger refused {refused}x before the IK "
                  f"reply, honest edge stored {honest}/5")
    assert dropped == 3 and refused >= 1 and honest == 5 and from_stalled == 0

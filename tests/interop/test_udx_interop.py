"""UDX between Cairn (cairn.udx) and JS udx-native 1.x, real UDP on 127.0.0.1, both ways:
bytes streamed and checksummed, END and close both ways, through a seeded lossy relay, and a
hypercore replicated from a Cairn writer to JS over secret-stream on a UDX stream."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import pytest

from cairn.crypto import key_pair, random_key_pair
from cairn.log import Log
from cairn.udx import UDXSocket, UDXStream, open_udx_connection

pytestmark = pytest.mark.integration  # besides interop (its folder): it opens sockets

PEER = Path(__file__).parent / "js" / "udx_peer.js"
MIB = 1 << 20


class JSPeer:
    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port

    async def connect_to(self, port: int) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"port": port}).encode() + b"\n")
        await self.proc.stdin.drain()
        assert self.proc.stdout is not None
        assert json.loads(await self.proc.stdout.readline()) == {"connected": True}

    async def result(self) -> dict[str, Any]:
        assert self.proc.stdout is not None and self.proc.stderr is not None
        line = await self.proc.stdout.readline()
        await self.proc.wait()
        if not line:
            raise AssertionError(f"the JS peer printed nothing: {await self.proc.stderr.read()!r}")
        return cast(dict[str, Any], json.loads(line))


@contextlib.asynccontextmanager
async def js_peer(node_path: Path, interop_dir: Path, *args: str) -> AsyncIterator[JSPeer]:
    proc = await asyncio.create_subprocess_exec(
        str(node_path), str(PEER), *args, cwd=interop_dir, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdout is not None
        first = json.loads(await proc.stdout.readline())
        yield JSPeer(proc, int(first["port"]))
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


class LossyRelay:
    """Two UDP sockets between two peers: each datagram is dropped, duplicated or delayed
    (reordered) by a seeded draw. Cairn talks to ``near``, the JS side to ``far``."""

    def __init__(self, seed: int, loss: float, duplicate: float, reorder: float) -> None:
        self.rng = random.Random(seed)
        self.loss, self.duplicate, self.reorder = loss, duplicate, reorder
        self.near: asyncio.DatagramTransport | None = None
        self.far: asyncio.DatagramTransport | None = None
        self.cairn_addr: tuple[str, int] | None = None
        self.js_addr: tuple[str, int] | None = None
        self.dropped = self.duplicated = self.delayed = 0

    async def start(self, js_port: int) -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        self.js_addr = ("127.0.0.1", js_port)
        relay = self

        class Side(asyncio.DatagramProtocol):
            def __init__(self, near: bool) -> None:
                self.is_near = near

            def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
                relay.forward(data, (addr[0], addr[1]), self.is_near)

        self.near, _ = await loop.create_datagram_endpoint(lambda: Side(True),
                                                           local_addr=("127.0.0.1", 0))
        self.far, _ = await loop.create_datagram_endpoint(lambda: Side(False),
                                                          local_addr=("127.0.0.1", 0))
        return (self.near.get_extra_info("sockname")[1], self.far.get_extra_info("sockname")[1])

    def forward(self, data: bytes, addr: tuple[str, int], from_cairn: bool) -> None:
        if from_cairn:
            self.cairn_addr = addr
            out, to = self.far, self.js_addr
        else:
            out, to = self.near, self.cairn_addr
        if out is None or to is None:
            return
        if self.rng.random() < self.loss:
            self.dropped += 1
            return
        copies = 2 if self.rng.random() < self.duplicate else 1
        self.duplicated += copies - 1
        for _ in range(copies):
            if self.rng.random() < self.reorder:
                self.delayed += 1
                asyncio.get_running_loop().call_later(self.rng.random() * 0.02, out.sendto,
                                                      data, to)
            else:
                out.sendto(data, to)

    def close(self) -> None:
        for t in (self.near, self.far):
            if t is not None:
                t.close()


async def read_all(stream: UDXStream) -> bytes:
    chunks = []
    while chunk := await stream.reader.read(1 << 16):
        chunks.append(chunk)
    return b"".join(chunks)


async def test_cairn_streams_to_js(node_path: Path, interop_dir: Path) -> None:
    data = random.Random(1).randbytes(2 * MIB + 123)
    async with asyncio.timeout(60), js_peer(node_path, interop_dir, "sink", "7", "9") as js, \
            await UDXSocket.bind() as socket:
        reader, writer = await open_udx_connection(socket, 9, 7, ("127.0.0.1", js.port))
        await js.connect_to(socket.address[1])
        writer.write(data)
        await writer.drain()
        writer.close()  # END
        await writer.wait_closed()  # JS acked the END
        assert await reader.read() == b""  # JS ended in turn
        await writer.stream.wait_closed()
        assert writer.stream.core is not None and writer.stream.core.error is None
        result = await js.result()
    assert result["bytes"] == len(data)
    assert result["sha256"] == hashlib.sha256(data).hexdigest()


async def test_js_streams_to_cairn(node_path: Path, interop_dir: Path) -> None:
    async with asyncio.timeout(60), js_peer(node_path, interop_dir, "source", "3", "4",
                                            str(2 * MIB + 77)) as js, \
            await UDXSocket.bind() as socket:
        _, writer = await open_udx_connection(socket, 4, 3, ("127.0.0.1", js.port))
        await js.connect_to(socket.address[1])
        got = await read_all(writer.stream)  # until JS's END
        writer.write(b"thanks")
        writer.close()
        await writer.stream.wait_closed()
        result = await js.result()
    assert len(got) == result["bytes"] == 2 * MIB + 77
    assert hashlib.sha256(got).hexdigest() == result["sha256"]
    assert result["received"]["bytes"] == 6  # our bytes and END reached JS before its close
    assert writer.stream.core is not None and writer.stream.core.error is None


@pytest.mark.parametrize("seed", [1, 2])
async def test_lossy_relay_both_ways_delivers_everything_in_order(
    node_path: Path, interop_dir: Path, seed: int
) -> None:
    ours = random.Random(seed).randbytes(MIB)
    relay = LossyRelay(seed, loss=0.05, duplicate=0.03, reorder=0.1)
    async with asyncio.timeout(90), js_peer(node_path, interop_dir, "source", "5", "6",
                                            str(MIB)) as js:
        near, far = await relay.start(js.port)
        try:
            async with await UDXSocket.bind() as socket:
                _, writer = await open_udx_connection(socket, 6, 5, ("127.0.0.1", near))
                await js.connect_to(far)
                writer.write(ours)
                writer.close()
                got = await read_all(writer.stream)
                await writer.stream.wait_closed()
                result = await js.result()
        finally:
            relay.close()
    assert hashlib.sha256(got).hexdigest() == result["sha256"] and len(got) == MIB
    assert result["received"]["sha256"] == hashlib.sha256(ours).hexdigest()
    assert relay.dropped > 20 and relay.duplicated > 5 and relay.delayed > 20
    assert writer.stream.core is not None and writer.stream.core.retransmits > 0


async def test_js_hypercore_replicates_from_a_cairn_writer_over_udx(
    tmp_path: Path, node_path: Path, interop_dir: Path
) -> None:
    from cairn.replication.net import _Link

    log = Log.create(tmp_path / "w.db", key_pair(b"\x31" * 32))
    blocks = [b"udx-block-%d" % i for i in range(300)]
    log.append(blocks)
    async with asyncio.timeout(60), js_peer(node_path, interop_dir, "hypercore-read", "11",
                                            "12", log.key.hex(), "300") as js, \
            await UDXSocket.bind() as socket:
        reader, writer = await open_udx_connection(socket, 12, 11, ("127.0.0.1", js.port))
        await js.connect_to(socket.address[1])
        link = _Link(cast(asyncio.StreamReader, reader), cast(asyncio.StreamWriter, writer),
                     random_key_pair(), False, 20.0, 8 << 20)
        await link.handshake()
        assert link.replicator is not None
        link.replicator.add_log(log)
        serving = asyncio.create_task(link.run())
        result = await js.result()
        serving.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError):
            await serving
    assert result["blocks"] == 300 and result["length"] == 300
    assert result["sha256"] == hashlib.sha256(b"".join(blocks)).hexdigest()

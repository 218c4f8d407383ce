"""Hostile peers against a replication server on 127.0.0.1: each is dropped with a stated reason,
nothing unverified is stored, other peers keep being served, memory stays bounded."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cairn.crypto import key_pair, random_key_pair
from cairn.errors import VerificationError
from cairn.log import Log
from cairn.messages import PROTOCOL, ChannelHandshake, encode_handshake
from cairn.replication.net import download, serve
from cairn.replication.peer import Replicator
from cairn.replication.protomux import Mux
from cairn.replication.secret_stream import Handshaken, SecretStream


def writer_log(path: Path, n: int = 3000) -> Log:
    lg = Log.create(path, key_pair(bytes([8]) * 32))
    lg.append([b"block-%d" % i for i in range(n)])
    return lg


@contextlib.asynccontextmanager
async def server(logs: list[Any], **kw: Any) -> AsyncIterator[tuple[str, int]]:
    ready: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(logs, random_key_pair(), "127.0.0.1", 0,
                                     ready=ready.set_result, **kw))
    try:
        yield await ready
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def closed_by_server(reader: asyncio.StreamReader, limit: float = 10) -> bool:
    """Read until the server closes the connection (True) or time runs out (False)."""
    try:
        async with asyncio.timeout(limit):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except ConnectionError:  # reset, or a broken pipe from our own writes
        return True
    return True


async def handshake(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter,
                                                   SecretStream, Handshaken]:
    reader, writer = await asyncio.open_connection(host, port)
    stream = SecretStream(True, random_key_pair(), random.Random(3))
    stream.start()
    while True:
        writer.write(stream.data_to_send())
        await writer.drain()
        event = stream.next_event()
        while event is None:
            stream.receive_data(await reader.read(65536))
            event = stream.next_event()
        if isinstance(event, Handshaken):
            writer.write(stream.data_to_send())
            await writer.drain()
            return reader, writer, stream, event


async def good_download_still_works(host: str, port: int, w: Log, tmp_path: Path,
                                    name: str) -> None:
    r = Log.replica(tmp_path / name, w.key)
    res = await download(host, port, r, random_key_pair(), start=10, end=20)
    assert res.blocks == 10 and r.get(15) == b"block-15"


async def test_garbage_bytes_are_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cairn.replication.net")
    w = writer_log(tmp_path / "w.db")
    async with asyncio.timeout(30), server([w]) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(random.Random(1).randbytes(4096))
        await writer.drain()
        assert await closed_by_server(reader)
        writer.close()
        await good_download_still_works(host, port, w, tmp_path, "r.db")
    assert "dropped" in caplog.text


async def test_wrong_capability_is_dropped(tmp_path: Path) -> None:
    w = writer_log(tmp_path / "w.db")
    async with asyncio.timeout(30), server([w]) as (host, port):
        reader, writer, stream, _ = await handshake(host, port)
        mux = Mux()
        mux.open_channel(PROTOCOL, w.discovery_key,
                         encode_handshake(ChannelHandshake(bytes(32))))
        for m in mux.data_to_send():
            stream.send(m)
        writer.write(stream.data_to_send())
        await writer.drain()
        assert await closed_by_server(reader)
        writer.close()
        await good_download_still_works(host, port, w, tmp_path, "r.db")


async def test_oversized_frame_and_stalls_are_dropped(tmp_path: Path) -> None:
    w = writer_log(tmp_path / "w.db")
    async with asyncio.timeout(30), server([w], idle_timeout=1.0) as (host, port):
        reader, writer, _, _ = await handshake(host, port)
        writer.write((12 << 20).to_bytes(3, "little"))  # a 12 MiB frame: over the 8 MiB cap
        await writer.drain()
        assert await closed_by_server(reader, 5)
        writer.close()
        # a peer that connects and says nothing
        reader2, writer2 = await asyncio.open_connection(host, port)
        assert await closed_by_server(reader2, 5)
        writer2.close()
        # a peer that trickles a byte at a time never completes a message: dropped in time
        reader3, writer3, _, _ = await handshake(host, port)
        for _ in range(30):
            writer3.write(b"\x05")
            try:
                await writer3.drain()
            except ConnectionError:
                break
            if reader3.at_eof():
                break
            await asyncio.sleep(0.1)  # the attacker's pace, not synchronisation
        assert await closed_by_server(reader3, 5)
        writer3.close()
        await good_download_still_works(host, port, w, tmp_path, "r.db")


async def test_a_thousand_channels_are_refused(tmp_path: Path) -> None:
    w = writer_log(tmp_path / "w.db")
    async with asyncio.timeout(30), server([w]) as (host, port):
        reader, writer, stream, _ = await handshake(host, port)
        mux = Mux(max_channels=2000)
        for i in range(1000):
            mux.open_channel(PROTOCOL, i.to_bytes(32, "big"), b"")
        for m in mux.data_to_send():
            stream.send(m)
        writer.write(stream.data_to_send())
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        assert await closed_by_server(reader)
        writer.close()
        await good_download_still_works(host, port, w, tmp_path, "r.db")


class TamperingLog:
    """A log whose range answers carry a changed block: a lying server."""

    def __init__(self, inner: Log) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def range_proof(self, start: int, end: int, length: int | None = None) -> Any:
        values, proof = self._inner.range_proof(start, end, length)
        values = list(values)
        values[len(values) // 2] = b"forged"
        return values, proof


async def test_tampered_data_is_never_stored(tmp_path: Path) -> None:
    w = writer_log(tmp_path / "w.db")
    async with asyncio.timeout(30), server([TamperingLog(w)]) as (host, port):
        r = Log.replica(tmp_path / "r.db", w.key)
        with pytest.raises(VerificationError):
            await download(host, port, r, random_key_pair(), start=100, end=200)
        held = [i for i in range(w.length) if r.has(i)]
        assert all(r.get(i) == w.get(i) for i in held)  # nothing unverified stored
        assert not any(100 <= i < 200 for i in held)
        r.verify_all()


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 1048576


async def test_memory_stays_bounded_under_a_flood(tmp_path: Path) -> None:
    """A peer pushes up to 1 GiB at the server: it is dropped, and memory stays bounded."""
    w = writer_log(tmp_path / "w.db")
    before = rss_mib()
    async with asyncio.timeout(60), server([w]) as (host, port):
        for _ in range(4):  # several floods in a row, each dropped
            reader, writer, _, _ = await handshake(host, port)
            chunk = b"\xff" * (1 << 20)
            sent = 0
            with contextlib.suppress(ConnectionError):
                while sent < (1 << 30) // 4 and not reader.at_eof():
                    writer.write(chunk)
                    await writer.drain()
                    sent += len(chunk)
            writer.close()
        await good_download_still_works(host, port, w, tmp_path, "r.db")
    assert rss_mib() - before < 50


async def test_stopping_the_server_closes_every_connection(tmp_path: Path) -> None:
    # serve() holds its connections in a task group: cancelled, it closes each before returning
    w = writer_log(tmp_path / "w.db")
    async with asyncio.timeout(30):
        async with server([w]) as (host, port):
            peers = [await handshake(host, port) for _ in range(3)]
        for reader, writer, _, _ in peers:
            assert await closed_by_server(reader)
            writer.close()


async def test_a_bug_on_one_connection_ends_only_that_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO, logger="cairn.replication.net")
    w = writer_log(tmp_path / "w.db")
    real = Replicator.receive_data
    broken: list[Replicator] = []

    def receive_data(self: Replicator, message: bytes) -> None:
        if not broken or broken[0] is self:
            broken[:1] = [self]
            raise ZeroDivisionError("a bug")  # not a protocol error: a mistake of ours
        real(self, message)

    monkeypatch.setattr(Replicator, "receive_data", receive_data)
    async with asyncio.timeout(30), server([w]) as (host, port):
        reader, writer, stream, _ = await handshake(host, port)
        mux = Mux()
        mux.open_channel(PROTOCOL, w.discovery_key, b"")
        for m in mux.data_to_send():
            stream.send(m)
        writer.write(stream.data_to_send())
        await writer.drain()
        assert await closed_by_server(reader)
        writer.close()
        await good_download_still_works(host, port, w, tmp_path, "r.db")
    assert "unexpected error" in caplog.text and "ZeroDivisionError" in caplog.text

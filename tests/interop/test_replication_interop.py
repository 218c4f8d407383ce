"""Replication between Cairn and JS hypercore 11 over TCP and @hyperswarm/secret-stream."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from cairn.crypto import key_pair, random_key_pair
from cairn.log import Log
from cairn.replication.net import download, serve

pytestmark = pytest.mark.integration  # besides interop (its folder): it opens sockets

PEER = Path(__file__).parent / "js" / "hypercore_peer.js"


@contextlib.asynccontextmanager
async def cairn_server(logs: list[Log]) -> AsyncIterator[tuple[str, int]]:
    ready: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(logs, random_key_pair(), "127.0.0.1", 0,
                                     ready=ready.set_result))
    try:
        yield await ready
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def js(node_path: Path, interop_dir: Path, *args: str,
             limit: float = 30) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        str(node_path), str(PEER), *args, cwd=interop_dir,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(limit):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        return -1, ""
    assert proc.returncode is not None
    return proc.returncode, out.decode() or err.decode()


@contextlib.asynccontextmanager
async def js_writer(node_path: Path, interop_dir: Path, blocks: int,
                    extra: int = 10) -> AsyncIterator[tuple[dict[str, object],
                                                            Callable[[], asyncio.Future[int]]]]:
    proc = await asyncio.create_subprocess_exec(
        str(node_path), str(PEER), "write", "07" * 32, str(blocks), str(extra), cwd=interop_dir,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
    assert proc.stdin is not None and proc.stdout is not None
    stdin, stdout = proc.stdin, proc.stdout
    info = json.loads(await stdout.readline())

    def append() -> asyncio.Future[int]:
        async def go() -> int:
            stdin.write(b"append\n")
            await stdin.drain()
            return int(json.loads(await stdout.readline())["length"])
        return asyncio.ensure_future(go())

    try:
        yield info, append
    finally:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            stdin.write(b"quit\n")
        try:
            async with asyncio.timeout(10):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


def writer_log(path: Path, n: int) -> Log:
    lg = Log.create(path, key_pair(bytes([5]) * 32))
    lg.append([b"block-%d" % i for i in range(n)])
    return lg


async def test_js_reads_a_sparse_range_from_cairn(tmp_path: Path, node_path: Path,
                                                  interop_dir: Path) -> None:
    w = writer_log(tmp_path / "w.db", 5000)
    async with cairn_server([w]) as (host, port):
        code, out = await js(node_path, interop_dir, "read", host, str(port), w.key.hex(),
                             "2000", "2050")
    assert code == 0, out
    got = json.loads(out)
    assert got["length"] == 5000
    assert [bytes.fromhex(b) for b in got["blocks"]] == [b"block-%d" % i for i in range(2000, 2050)]
    assert got["contiguous"] == 0  # JS fetched only what it was asked for


async def test_js_with_a_wrong_key_gets_nothing(tmp_path: Path, node_path: Path,
                                                interop_dir: Path) -> None:
    w = writer_log(tmp_path / "w.db", 100)
    other = Log.create(tmp_path / "other.db", key_pair(bytes([6]) * 32))
    async with cairn_server([w]) as (host, port):
        code, _ = await js(node_path, interop_dir, "read", host, str(port), other.key.hex(),
                           "0", "1", limit=8)
    assert code != 0  # it never gets a block: the channel is refused


async def test_cairn_downloads_sparse_and_full_from_js(tmp_path: Path, node_path: Path,
                                                       interop_dir: Path) -> None:
    async with js_writer(node_path, interop_dir, 3000) as (info, _):
        key = bytes.fromhex(str(info["key"]))
        port = int(str(info["port"]))
        r = Log.replica(tmp_path / "r.db", key)
        async with asyncio.timeout(60):
            res = await download("127.0.0.1", port, r, random_key_pair(), start=100, end=200)
            assert res.blocks == 100 and r.length == 3000
            assert [r.get(i) for i in (100, 150, 199)] == [b"block-100", b"block-150",
                                                           b"block-199"]
            assert not r.has(99) and not r.has(200)
            res = await download("127.0.0.1", port, r, random_key_pair())
        assert res.blocks == 2900  # resumed: the 100 it held are not fetched again
        assert r.verify_all().blocks == 3000
        assert r.get(2999) == b"block-2999"


async def test_cairn_tails_a_js_writer(tmp_path: Path, node_path: Path,
                                       interop_dir: Path) -> None:
    async with js_writer(node_path, interop_dir, 50, extra=25) as (info, append):
        key = bytes.fromhex(str(info["key"]))
        r = Log.replica(tmp_path / "r.db", key)
        appended: list[asyncio.Future[int]] = []

        def until(lg: Log) -> bool:
            if lg.length >= 50 and not appended:
                appended.append(append())  # the writer grows while we follow
            return lg.length >= 75 and all(lg.has(i) for i in range(75))

        async with asyncio.timeout(60):
            await download("127.0.0.1", int(str(info["port"])), r, random_key_pair(),
                           tail=True, until=until)
            assert await appended[0] == 75
        assert r.get(74) == b"block-74" and r.verify_all().blocks >= 75


async def test_cairn_follows_a_js_writer_block_by_block(tmp_path: Path, node_path: Path,
                                                        interop_dir: Path) -> None:
    """Live push's follower (``follow_on``) asks JS hypercore for each new block inside the
    upgrade request (block + upgrade): JS answers both in one data message, verified."""
    from cairn.replication.net import connect, follow_on

    async with js_writer(node_path, interop_dir, 20, extra=1) as (info, append):
        key = bytes.fromhex(str(info["key"]))
        r = Log.replica(tmp_path / "r.db", key)
        conn = await connect("127.0.0.1", int(str(info["port"])), random_key_pair())
        grew = asyncio.Event()
        task = asyncio.create_task(follow_on(conn, lambda: [r], lambda _lg: grew.set(), 0.2))
        try:
            async with asyncio.timeout(60):
                while r.contiguous_length < 20:
                    grew.clear()
                    await grew.wait()
                for n in range(21, 26):
                    assert await append() == n
                    while r.contiguous_length < n:
                        grew.clear()
                        await grew.wait()
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await task
            await conn.close()
        assert [r.get(i) for i in range(20, 25)] == [b"block-%d" % i for i in range(20, 25)]
        assert r.verify_all().blocks == 25


async def test_js_tails_a_cairn_writer(tmp_path: Path, node_path: Path,
                                      interop_dir: Path) -> None:
    import os

    w = writer_log(tmp_path / "w.db", 50)
    async with asyncio.timeout(60), cairn_server([w]) as (host, port):
        proc = await asyncio.create_subprocess_exec(
            str(node_path), str(PEER), "read", host, str(port), w.key.hex(), "60", "70",
            cwd=interop_dir, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "CAIRN_TAIL": "1"})
        assert proc.stdout is not None
        first = json.loads(await proc.stdout.readline())
        assert first["following"] == 50  # JS is connected and has seen the log as it was
        w.append([b"block-%d" % i for i in range(50, 80)])  # the writer grows: JS follows
        out = json.loads(await proc.stdout.readline())
        await proc.wait()
    assert out["length"] == 80
    assert [bytes.fromhex(b) for b in out["blocks"]] == [b"block-%d" % i for i in range(60, 70)]


async def test_many_logs_over_one_connection(tmp_path: Path) -> None:
    from cairn.replication.net import _Link

    logs = [Log.create(tmp_path / f"w{i}.db", key_pair(bytes([20 + i]) * 32)) for i in range(5)]
    for i, lg in enumerate(logs):
        lg.append([b"log-%d-block-%d" % (i, j) for j in range(100)])
    async with asyncio.timeout(30), cairn_server(logs) as (host, port):
        reader, writer = await asyncio.open_connection(host, port)
        link = _Link(reader, writer, random_key_pair(), True, 10.0, 8 << 20)
        await link.handshake()
        assert link.replicator is not None
        replicas = [Log.replica(tmp_path / f"r{i}.db", lg.key) for i, lg in enumerate(logs)]
        sessions = [link.replicator.open(r) for r in replicas]

        def done() -> bool:
            for s in sessions:
                if s.synced and s.pending == 0 and s.log.length and not s.log.has(99):
                    s.want(0, 100)
            return all(r.length == 100 and all(r.has(j) for j in range(100)) for r in replicas)

        await link.run(done, lambda: None)
        await link.close()
    assert [r.get(42) for r in replicas] == [b"log-%d-block-42" % i for i in range(5)]

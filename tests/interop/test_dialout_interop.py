"""Edges dial out (issue 19) against JS hypercore: Cairn dials a JS hypercore that listens (a
gateway's role), is the Noise initiator, and serves its log on that connection; JS reads it.
Replication is symmetric on the wire: the reader requests whatever the direction."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from cairn.crypto import key_pair, random_key_pair
from cairn.log import Log
from cairn.replication.net import connect, serve_on

pytestmark = pytest.mark.integration  # besides interop (its folder): it opens sockets

READER = Path(__file__).parent / "js" / "hypercore_listen_reader.js"


async def test_js_reads_from_a_cairn_edge_that_dialled_it(tmp_path: Path, node_path: Path,
                                                           interop_dir: Path) -> None:
    w = Log.create(tmp_path / "w.db", key_pair(bytes([9]) * 32))
    w.append([b"block-%d" % i for i in range(300)])
    proc = await asyncio.create_subprocess_exec(
        str(node_path), str(READER), w.key.hex(), "250", "300", cwd=interop_dir,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    assert proc.stdout is not None
    try:
        async with asyncio.timeout(60):
            port = int(json.loads(await proc.stdout.readline())["port"])
            conn = await connect("127.0.0.1", port, random_key_pair())
            serving = asyncio.create_task(serve_on(conn, [w]))
            try:
                out = json.loads(await proc.stdout.readline())
            finally:
                serving.cancel()
                with contextlib.suppress(asyncio.CancelledError, ConnectionError, OSError):
                    await serving
                await conn.close()
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        w.close()
    assert out["length"] == 300
    assert [bytes.fromhex(b) for b in out["blocks"]] == [b"block-%d" % i
                                                         for i in range(250, 300)]

"""A stream served by a JS hypercore writer: the gateway downloads it, verifies every block and
stores its samples exactly once, like a stream from a Cairn edge."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import pytest

from cairn.crypto import random_key_pair
from cairn.fleet.record import DeviceRecord
from cairn.frames import Frame, Sample
from cairn_gateway.collect import Collector, Device
from cairn_gateway.store import Store

pytestmark = pytest.mark.integration  # besides interop (its folder): it opens sockets

PEER = Path(__file__).parent / "js" / "hypercore_peer.js"
T0 = 1_764_000_000.0
NAME = "js-board/temperature"


def test_a_js_writer_stream_is_collected(node_path: Path, interop_dir: Path,
                                         tmp_path: Path) -> None:
    frames = [Frame(tuple(Sample(NAME, "Cel", T0 + 10 * i + j, 15.0 + i + j / 10)
                          for j in range(3))).encode() for i in range(50)]
    (tmp_path / "blocks.hex").write_text("\n".join(f.hex() for f in frames))
    proc = subprocess.Popen([str(node_path), str(PEER), "write", "11" * 32, "0"],
                            cwd=interop_dir, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True, env={**__import__("os").environ,
                                            "CAIRN_BLOCKS_FILE": str(tmp_path / "blocks.hex")})
    store = Store(tmp_path / "gw.db")
    collector = Collector(tmp_path / "gw", random_key_pair(), store)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        hello = json.loads(proc.stdout.readline())
        key, port = bytes.fromhex(hello["key"]), int(hello["port"])
        dev = Device(b"j" * 32, 1, DeviceRecord(time=int(T0), address=("127.0.0.1", port)),
                     {NAME: key})

        async def twice() -> tuple[int, int]:
            first = await collector.sync(dev, NAME, ("127.0.0.1", port))
            again = await collector.sync(dev, NAME, ("127.0.0.1", port))
            assert first.error is None and again.error is None, (first.error, again.error)
            return first.samples, again.samples

        first, again = asyncio.run(twice())
        assert (first, again) == (150, 0)
        [(sid,)] = store.conn.execute("SELECT id FROM streams").fetchall()
        got = store.samples(sid, 0, 2e9)
        assert [(t, v) for t, v, _, _ in got] == [
            (s.time, s.value) for f in frames for s in Frame.decode(f).samples]
        assert [b for _, _, b, _ in got] == [i for i in range(50) for _ in range(3)]
        proc.stdin.write("quit\n")
        proc.stdin.flush()
    finally:
        collector.close()
        store.close()
        proc.wait(30)
        for f in (proc.stdin, proc.stdout):
            if f is not None:
                f.close()

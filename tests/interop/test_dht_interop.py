"""Cairn and JS hyperdht nodes in one network on 127.0.0.1: records written by one are read and
verified by the other, and each routes through the other's nodes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cairn.crypto import key_pair
from cairn.dht.api import DHT
from cairn.dht.records import hash32

pytestmark = pytest.mark.integration  # besides interop (its folder): it opens sockets

PEER_JS = Path(__file__).parent / "js" / "dht_peer.js"


class JSPeers:
    """JS hyperdht nodes in a node process, spoken to one JSON line at a time."""

    def __init__(self, proc: asyncio.subprocess.Process, hello: dict[str, Any]) -> None:
        self.proc = proc
        self.bootstrap: tuple[str, int] = (hello["bootstrap"][0], hello["bootstrap"][1])
        self.nodes: list[tuple[str, int, str]] = [tuple(n) for n in hello["nodes"]]

    async def call(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        line = await self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the JS peers exited")
        out: dict[str, Any] = json.loads(line)
        if "error" in out:
            raise RuntimeError(f"JS {cmd['op']} failed: {out['error']}")
        return out


@contextlib.asynccontextmanager
async def js_peers(node_path: Path, interop_dir: Path, n: int,
                   bootstrap: tuple[str, int] | None) -> AsyncIterator[JSPeers]:
    proc = await asyncio.create_subprocess_exec(
        str(node_path), str(PEER_JS), cwd=interop_dir, stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write((json.dumps({"nodes": n, "bootstrap": [list(bootstrap)] if bootstrap
                                      else None}) + "\n").encode())
        await proc.stdin.drain()
        line = await proc.stdout.readline()
        if not line:
            err = await proc.stderr.read() if proc.stderr else b""
            raise RuntimeError(f"JS peers did not start: {err.decode()[-2000:]}")
        yield JSPeers(proc, json.loads(line))
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, BrokenPipeError, ConnectionResetError):
                assert proc.stdin is not None
                proc.stdin.write(b'{"op": "quit"}\n')
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def cairn_nodes(stack: contextlib.AsyncExitStack, n: int,
                      bootstrap: list[tuple[str, int]], seed: int) -> list[DHT]:
    rng = random.Random(seed)
    nodes = []
    for _ in range(n):
        d = await stack.enter_async_context(
            DHT.start("127.0.0.1", 0, bootstrap, persistent=True, rng=random.Random(rng.random())))
        nodes.append(d)
    await asyncio.gather(*(d.ready() for d in nodes))
    return nodes


async def exercise(cairn: list[DHT], js: JSPeers) -> None:
    """Everything both ways, between a mixed set of nodes."""
    # a JS mutable put is read and verified by Cairn
    put = await js.call(op="mutablePut", node=1, seed="11" * 32, value=b"from js".hex(), seq=3)
    assert put["stored"] > 0
    rec = await cairn[-1].mutable_get(bytes.fromhex(put["publicKey"]), min_seq=3)
    assert rec is not None and rec.value == b"from js" and rec.seq == 3
    # a Cairn mutable put is read and verified by JS (which checks the signature itself)
    kp = key_pair(bytes([0x22]) * 32)
    await cairn[0].mutable_put(kp, b"from cairn", 7)
    got = await js.call(op="mutableGet", node=2, publicKey=kp.public_key.hex(), seq=7)
    assert got["seq"] == 7 and bytes.fromhex(got["value"]) == b"from cairn"
    # immutable both ways
    imm = await js.call(op="immutablePut", node=1, value=b"js immutable".hex())
    assert await cairn[1].immutable_get(bytes.fromhex(imm["hash"])) == b"js immutable"
    digest = await cairn[2].immutable_put(b"cairn immutable")
    got = await js.call(op="immutableGet", node=3, hash=digest.hex())
    assert bytes.fromhex(got["value"]) == b"cairn immutable"
    # announce and lookup both ways
    topic = hash32(b"cairn-interop-fleet")
    ann = await js.call(op="announce", node=1, seed="33" * 32, topic=topic.hex())
    found = set()
    async with cairn[-1].lookup(topic) as peers:
        async for p in peers:
            found.add(p.public_key.hex())
    assert ann["publicKey"] in found
    kp2 = key_pair(bytes([0x44]) * 32)
    await cairn[1].announce(topic, kp2)
    got = await js.call(op="lookup", node=2, topic=topic.hex())
    assert kp2.public_key.hex() in got["peers"] and ann["publicKey"] in got["peers"]
    # JS routes through Cairn nodes: its findNode for a Cairn node's id ends at that node
    target = cairn[-1]
    got = await js.call(op="findNode", node=3, target=target.id.hex())
    assert [target.address[0], target.address[1], target.id.hex()] in got["closest"]
    table = await js.call(op="table", node=2)
    cairn_ids = {d.id.hex() for d in cairn}
    assert cairn_ids & {n[2] for n in table["nodes"]}, "JS keeps Cairn nodes in its table"
    # and Cairn finds JS nodes
    js_host, js_port, js_id = js.nodes[-1]
    closest = await cairn[0].find_node(bytes.fromhex(js_id))
    assert ((js_host, js_port), bytes.fromhex(js_id)) in closest


async def test_js_nodes_join_a_cairn_bootstrap(node_path: Path, interop_dir: Path) -> None:
    async with asyncio.timeout(120), contextlib.AsyncExitStack() as stack:
        boot = await stack.enter_async_context(
            DHT.start("127.0.0.1", 0, [], persistent=True, rng=random.Random(1)))
        await boot.ready()
        cairn = [boot, *await cairn_nodes(stack, 4, [boot.address], seed=2)]
        js = await stack.enter_async_context(js_peers(node_path, interop_dir, 6, boot.address))
        more = await cairn_nodes(stack, 3, [boot.address], seed=3)
        await exercise(cairn + more, js)


async def test_cairn_nodes_join_a_js_bootstrap(node_path: Path, interop_dir: Path) -> None:
    async with asyncio.timeout(120), contextlib.AsyncExitStack() as stack:
        js = await stack.enter_async_context(js_peers(node_path, interop_dir, 6, None))
        cairn = await cairn_nodes(stack, 6, [js.bootstrap], seed=4)
        await exercise(cairn, js)

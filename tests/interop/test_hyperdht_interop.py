"""hyperdht connect by key against the npm package, both ways: Noise IK and payload bytes, a JS
client reaching a Cairn server, a Cairn client reaching a JS server, through Cairn or JS nodes."""

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
from cairn.hyperdht.aio import connect_by_key, handshake_by_key, serve_by_key
from cairn.hyperdht.client import HolepunchUnavailableError
from cairn.hyperdht.messages import (
    Firewall,
    HolepunchInfo,
    NoisePayload,
    UdxInfo,
    decode_noise_payload,
    encode_noise_payload,
)
from cairn.hyperdht.noise_ik import IKHandshake
from cairn.log import Log
from cairn.replication.events import HandshakePayload, Message
from cairn.replication.net import read_on
from cairn.replication.secret_stream import SecretStream
from tests.interop.harness import run_node

pytestmark = pytest.mark.integration  # besides interop (its folder): it opens sockets

JS = Path(__file__).parent / "js"


class _Fixed:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def randbytes(self, n: int) -> bytes:
        return self.data[:n]


def test_ik_and_payloads_match_hyperdht_noise_wrap(interop_dir: Path) -> None:
    seeds = {"client": "11" * 32, "server": "22" * 32, "ce": "33" * 32, "se": "44" * 32}
    js = run_node((JS / "hyperdht_ik.js").read_text(), seeds)
    assert isinstance(js, dict)
    ck, sk = key_pair(bytes([0x11]) * 32), key_pair(bytes([0x22]) * 32)
    client = IKHandshake(True, ck, _Fixed(bytes([0x33]) * 32), remote_public_key=sk.public_key)
    server = IKHandshake(False, sk, _Fixed(bytes([0x44]) * 32))
    p1 = NoisePayload(firewall=1, addresses4=(("1.2.3.4", 5),), udx=UdxInfo(7), secret_stream=1)
    client.send(encode_noise_payload(p1))
    m1 = client.data_to_send()
    assert m1.hex() == js["m1"]
    server.receive_data(m1)
    got = server.next_event()
    assert isinstance(got, HandshakePayload) and decode_noise_payload(got.payload) == p1
    p2 = NoisePayload(holepunch=HolepunchInfo(3, ((("10.0.0.1", 9), ("9.9.9.9", 1000)),)),
                      udx=UdxInfo(99, reusable_socket=True), secret_stream=1,
                      relay_addresses=(("10.0.0.2", 10),))
    server.send(encode_noise_payload(p2))
    m2 = server.data_to_send()
    assert m2.hex() == js["m2"]
    client.receive_data(m2)
    assert client.handshake_hash.hex() == js["hash"]
    assert (client.tx_key.hex(), client.rx_key.hex()) == (js["tx"], js["rx"])
    assert client.holepunch_secret.hex() == js["hp"] == server.holepunch_secret.hex()
    assert server.remote_public_key == ck.public_key


class JSProcess:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self, timeout: float = 30,  # noqa: ASYNC109
                   errors: bool = False) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            raw = await self.proc.stdout.readline()
        if not raw:
            err = await self.proc.stderr.read() if self.proc.stderr else b""
            raise RuntimeError(f"JS process ended: {err.decode()[-2000:]}")
        out: dict[str, Any] = json.loads(raw)
        if "error" in out and "reply" not in out and not errors:
            raise RuntimeError(f"JS failed: {out['error']}")
        return out


@contextlib.asynccontextmanager
async def js_process(node_path: Path, interop_dir: Path,
                     first: dict[str, Any]) -> AsyncIterator[JSProcess]:
    proc = await asyncio.create_subprocess_exec(
        str(node_path), str(JS / "hyperdht_connect.js"), cwd=interop_dir,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        assert proc.stdin is not None
        proc.stdin.write((json.dumps(first) + "\n").encode())
        await proc.stdin.drain()
        yield JSProcess(proc)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError, BrokenPipeError, ConnectionResetError):
                assert proc.stdin is not None
                proc.stdin.write(b"quit\n")
                proc.stdin.close()
            try:
                async with asyncio.timeout(10):
                    await proc.wait()
            except TimeoutError:
                proc.kill()
                await proc.wait()


@contextlib.asynccontextmanager
async def network(kind: str, node_path: Path, interop_dir: Path,
                  seed: int) -> AsyncIterator[tuple[str, int]]:
    """A testnet on 127.0.0.1 of Cairn nodes or JS nodes; yields its bootstrap address."""
    if kind == "js":
        async with js_process(node_path, interop_dir,
                              {"role": "testnet", "nodes": 6, "bootstrap": []}) as net:
            hello = await net.line(60)
            yield hello["bootstrap"][0], hello["bootstrap"][1]
        return
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
        yield first.address


@pytest.mark.parametrize("nodes", ["cairn", "js"])
async def test_js_client_connects_to_cairn_server(nodes: str, node_path: Path,
                                                  interop_dir: Path) -> None:
    server_keys = key_pair(bytes([0x51]) * 32)
    client_seed = "52" * 32
    async with network(nodes, node_path, interop_dir, 1) as boot, \
            DHT.start("127.0.0.1", 0, [boot], persistent=False,
                      rng=random.Random(2)) as server_dht:
        await server_dht.ready()
        seen: list[bytes] = []

        def firewall(key: bytes, payload: object, addr: tuple[str, int]) -> bool:
            seen.append(key)
            return False

        async with serve_by_key(server_dht.node, server_keys, firewall=firewall,
                                rng=random.Random(3)) as server:
            await asyncio.wait_for(server.wait_announced(), 20)
            async with js_process(node_path, interop_dir, {
                "role": "client", "bootstrap": [list(boot)], "seed": client_seed,
                "remoteKey": server_keys.public_key.hex(), "waitEnd": True}) as js:
                result = await js.line(60)
                accepted = await asyncio.wait_for(server.accept(), 10)
                if accepted.remote_payload.firewall != Firewall.OPEN:
                    # neither side OPEN: the Cairn server punches. JS's PEER_HOLEPUNCH rounds
                    # are relayed and answered from the server's puncher socket, both probe,
                    # and JS's first UDX packet reaches the server's stream on that socket.
                    # (A JS client that found itself reachable says OPEN and waits for the
                    # server to connect to it: that needs the UDX data phase.)
                    assert accepted.holepunch_id is not None
                    _, writer = await server.punched_stream(accepted, 10)
                    writer.stream.socket.close()
                    end = await js.line(10, errors=True)
                    assert end.get("open") is True, end
                    assert server.punches.stats["started"] >= 1
    js_key = key_pair(bytes.fromhex(client_seed)).public_key
    assert result["reply"] is True, result
    assert result["noiseBytes"] >= 48
    assert server.core.stats["holepunch_bad"] == 0
    assert seen and seen[0] == js_key
    assert accepted.remote_public_key == js_key
    assert accepted.remote_payload.udx is not None


@pytest.mark.parametrize("nodes", ["cairn", "js"])
async def test_cairn_client_connects_to_js_server(nodes: str, node_path: Path,
                                                  interop_dir: Path) -> None:
    client_keys = key_pair(bytes([0x61]) * 32)
    async with network(nodes, node_path, interop_dir, 4) as boot, \
            js_process(node_path, interop_dir, {"role": "server", "bootstrap": [list(boot)],
                                                 "seed": "62" * 32}) as js, \
            DHT.start("127.0.0.1", 0, [boot], persistent=False,
                      rng=random.Random(5)) as client_dht:
        hello = await js.line(60)
        server_key = bytes.fromhex(hello["publicKey"])
        await client_dht.ready()
        # a JS server not proven reachable says UNKNOWN: with neither side OPEN the IK
        # completes and Cairn stops short of punching (a JS server that found itself
        # reachable says OPEN and the handshake simply succeeds)
        with contextlib.suppress(HolepunchUnavailableError):
            await handshake_by_key(client_dht.node, server_key, client_keys,
                                   rng=random.Random(6), timeout=20)
        hook = await js.line(20)
        assert hook["firewall"] == client_keys.public_key.hex()
        # a Cairn client that says OPEN: the OPEN shortcut, the JS server connects to it
        est = await handshake_by_key(client_dht.node, server_key, client_keys,
                                     public_address=client_dht.node.server_address,
                                     rng=random.Random(7), timeout=20)
        hook = await js.line(20)
    assert hook["firewall"] == client_keys.public_key.hex()
    assert est.remote_public_key == server_key
    assert est.remote_payload.udx is not None


def test_secret_stream_keyed_by_ik_speaks_to_js(interop_dir: Path) -> None:
    """The data phase's framing: secret-stream started from the IK keys, no second Noise."""
    core_server = key_pair(bytes([0x71]) * 32)
    client_keys = key_pair(bytes([0x72]) * 32)
    rng = random.Random(8)
    client = IKHandshake(True, client_keys, rng, remote_public_key=core_server.public_key)
    server = IKHandshake(False, core_server, rng)
    client.send(b"")
    server.receive_data(client.data_to_send())
    server.send(b"")
    client.receive_data(server.data_to_send())
    ours = SecretStream(True, client_keys, rng)
    ours.start_established(client)
    ours.send(b"hello from cairn")
    js = run_node((JS / "hyperdht_secret_stream.js").read_text(), {
        "hash": server.handshake_hash.hex(), "tx": server.tx_key.hex(),
        "rx": server.rx_key.hex(), "publicKey": core_server.public_key.hex(),
        "remotePublicKey": client_keys.public_key.hex(), "bytes": ours.data_to_send().hex()})
    assert isinstance(js, dict)
    assert js["got"] == ["hello from cairn"], js
    ours.receive_data(bytes.fromhex(js["bytes"]))
    events = []
    while (e := ours.next_event()) is not None:
        events.append(e)
    assert Message(b"hello from js") in events


@pytest.mark.parametrize("nodes", ["cairn", "js"])
async def test_cairn_reads_a_js_hypercore_served_by_key(nodes: str, node_path: Path,
                                                       interop_dir: Path,
                                                       tmp_path: Path) -> None:
    """The data phase both ways on the wire: a JS `hyperdht` server replicating a JS hypercore
    on each connection; Cairn connects by key (saying OPEN: the JS server connects its UDX
    stream to it), and reads the whole log over the UDX stream, verified."""
    client_keys = key_pair(bytes([0x63]) * 32)
    async with network(nodes, node_path, interop_dir, 9) as boot:
        proc = await asyncio.create_subprocess_exec(
            str(node_path), str(JS / "hyperdht_hypercore.js"), "server", f"{boot[0]}:{boot[1]}",
            "64" * 32, "65" * 32, "200", cwd=interop_dir, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        js = JSProcess(proc)
        replica: Log | None = None
        try:
            hello = await js.line(60)
            replica = Log.replica(tmp_path / "r.db", bytes.fromhex(hello["core"]))
            async with DHT.start("127.0.0.1", 0, [boot], persistent=False,
                                 rng=random.Random(10)) as client_dht:
                await client_dht.ready()
                est, conn = await connect_by_key(
                    client_dht.node, bytes.fromhex(hello["publicKey"]), client_keys,
                    public_address=client_dht.node.udx_socket.address, rng=random.Random(11),
                    timeout=20)
                try:
                    assert (await js.line(20))["connection"] == client_keys.public_key.hex()
                    got = await asyncio.wait_for(read_on(conn, replica), 30)
                    assert replica.get(199) == b"block-199"
                finally:
                    await conn.close()
        finally:
            if replica is not None:
                replica.close()
            if proc.returncode is None:
                assert proc.stdin is not None
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    proc.stdin.write(b"quit\n")
                    proc.stdin.close()
                try:
                    async with asyncio.timeout(10):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
    assert est.remote_public_key.hex() == hello["publicKey"]
    assert conn.transport == "udx"
    assert got.length == 200 and got.blocks == 200

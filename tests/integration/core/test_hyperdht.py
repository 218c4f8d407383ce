"""Connect by key between Cairn nodes on 127.0.0.1: a server announces, a client finds it,
its PEER_HANDSHAKE is relayed by the node holding the forward entry, the IK completes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cairn.crypto import key_pair
from cairn.dht.api import DHT
from cairn.dht.records import hash32
from cairn.hyperdht import aio as hyperdht_aio
from cairn.hyperdht.aio import (
    connect_by_key,
    handshake_by_key,
    open_data_stream,
    serve_by_key,
)
from cairn.hyperdht.client import PeerConnectionFailedError, PeerNotFoundError
from cairn.hyperdht.messages import Firewall
from cairn.hyperdht.router import Router
from cairn.hyperdht.server import allow_only
from cairn.log import Log
from cairn.replication.net import read_on, serve_on


@contextlib.asynccontextmanager
async def cairn_testnet(n: int, seed: int) -> AsyncIterator[list[DHT]]:
    rng = random.Random(seed)
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            DHT.start("127.0.0.1", 0, [], persistent=True, rng=random.Random(rng.random())))
        nodes = [first]
        for _ in range(n - 1):
            nodes.append(await stack.enter_async_context(
                DHT.start("127.0.0.1", 0, [first.address], persistent=True,
                          rng=random.Random(rng.random()))))
        await asyncio.gather(*(d.ready() for d in nodes))
        yield nodes


async def client_node(stack: contextlib.AsyncExitStack, boot: DHT, seed: int) -> DHT:
    d = await stack.enter_async_context(
        DHT.start("127.0.0.1", 0, [boot.address], persistent=False, rng=random.Random(seed)))
    await d.ready()
    return d


async def test_cairn_client_connects_to_cairn_server_by_key() -> None:
    server_keys = key_pair(bytes([1]) * 32)
    client_keys = key_pair(bytes([2]) * 32)
    async with cairn_testnet(6, 1) as nodes, contextlib.AsyncExitStack() as stack:
        server_dht = await client_node(stack, nodes[0], 10)
        client_dht = await client_node(stack, nodes[1], 11)
        seen: list[bytes] = []

        def firewall(key: bytes, payload: object, addr: tuple[str, int]) -> bool:
            seen.append(key)
            return False

        async with serve_by_key(server_dht.node, server_keys, firewall=firewall,
                                rng=random.Random(3)) as server:
            await asyncio.wait_for(server.wait_announced(), 10)
            holders = [d for d in nodes
                       if isinstance(d.node.handler.router, Router)
                       and d.node.handler.router.find_peer(hash32(server_keys.public_key),
                                                           d.node.now())]
            assert holders, "some DHT node keeps the server's forward entry"
            # the client says OPEN (it is reachable): no punching, the server connects to it
            est = await handshake_by_key(client_dht.node, server_keys.public_key, client_keys,
                                         public_address=client_dht.node.server_address,
                                         rng=random.Random(4), timeout=10)
            accepted = await asyncio.wait_for(server.accept(), 5)
            # a reconnect through the relay that worked, without a FIND_PEER
            assert est.relay is not None
            queries = client_dht.node.core.stats["queries"]
            again = await handshake_by_key(client_dht.node, server_keys.public_key, client_keys,
                                           public_address=client_dht.node.server_address,
                                           relay_addresses=[est.relay], timeout=10)
            assert client_dht.node.core.stats["queries"] == queries
            assert again.relay == est.relay
            assert (await asyncio.wait_for(server.accept(), 5)).remote_public_key == (
                client_keys.public_key)
        # the server is gone: its unannounce removed the forward entries
        assert not any(isinstance(d.node.handler.router, Router)
                       and d.node.handler.router.find_peer(hash32(server_keys.public_key),
                                                           d.node.now()) for d in nodes)
        with pytest.raises(PeerNotFoundError):
            await handshake_by_key(client_dht.node, server_keys.public_key, client_keys,
                                   timeout=10)
        assert seen == [client_keys.public_key] * 2
        assert est.remote_public_key == server_keys.public_key
        assert accepted.remote_public_key == client_keys.public_key
        assert est.handshake_hash == accepted.handshake_hash
        assert est.tx_key == accepted.rx_key and est.rx_key == accepted.tx_key
        assert est.holepunch_secret == accepted.holepunch_secret
        assert est.remote_udx_id == accepted.local_udx_id
        assert accepted.remote_udx_id == est.local_udx_id
        assert est.remote_payload.firewall == Firewall.UNKNOWN
        assert accepted.remote_address[0] == "127.0.0.1"


async def test_firewall_refusal_and_unknown_key(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="cairn.hyperdht.aio")
    server_keys = key_pair(bytes([5]) * 32)
    async with cairn_testnet(4, 2) as nodes, contextlib.AsyncExitStack() as stack:
        server_dht = await client_node(stack, nodes[0], 20)
        client_dht = await client_node(stack, nodes[1], 21)
        async with serve_by_key(server_dht.node, server_keys,
                                firewall=allow_only([key_pair(bytes([99]) * 32).public_key]),
                                rng=random.Random(5)) as server:
            await asyncio.wait_for(server.wait_announced(), 10)
            with pytest.raises(PeerConnectionFailedError):
                await handshake_by_key(client_dht.node, server_keys.public_key,
                                       key_pair(bytes([6]) * 32), timeout=10)
            assert server.core.stats["refused"] >= 1
            assert any("refused by the firewall" in r.getMessage() for r in caplog.records)
        with pytest.raises(PeerNotFoundError):
            await handshake_by_key(client_dht.node, key_pair(bytes([7]) * 32).public_key,
                                   key_pair(bytes([6]) * 32), timeout=10)


async def test_data_phase_replicates_a_log_over_udx(tmp_path: Path) -> None:
    """Cairn client -> Cairn server by key, then hypercore replication on the UDX stream:
    the server serves a log, the client reads it whole, then an append arrives live."""
    server_keys = key_pair(bytes([8]) * 32)
    client_keys = key_pair(bytes([9]) * 32)
    writer = Log.create(tmp_path / "w.db", key_pair(bytes([10]) * 32))
    writer.append([f"reading {i}".encode() for i in range(300)])
    replica = Log.replica(tmp_path / "r.db", writer.key)
    try:
        async with cairn_testnet(4, 3) as nodes, contextlib.AsyncExitStack() as stack:
            server_dht = await client_node(stack, nodes[0], 30)
            client_dht = await client_node(stack, nodes[1], 31)
            public = server_dht.node.server_address
            async with serve_by_key(server_dht.node, server_keys,
                                    public_address=public) as server:
                await asyncio.wait_for(server.wait_announced(), 10)

                async def serve() -> None:
                    accepted = await server.accept()
                    conn = await open_data_stream(server_dht.node, accepted, server_keys,
                                                  handshake_timeout=10)
                    assert conn.transport == "udx"
                    try:
                        with contextlib.suppress(ConnectionError):
                            await serve_on(conn, [writer], poll=0.05)
                    finally:
                        await conn.close()

                async with asyncio.TaskGroup() as tg:
                    serving = tg.create_task(serve())
                    est, conn = await connect_by_key(client_dht.node, server_keys.public_key,
                                                     client_keys, timeout=10)
                    try:
                        assert conn.remote_key == server_keys.public_key
                        got = await asyncio.wait_for(read_on(conn, replica), 20)
                        assert got.length == 300 and replica.get(299) == b"reading 299"
                        writer.append([b"live"])
                        await asyncio.wait_for(read_on(conn, replica, start=300, tail=True,
                                                       until=lambda r: r.has(300)), 20)
                        assert replica.get(300) == b"live"
                    finally:
                        await conn.close()
                    await asyncio.wait_for(serving, 15)
            assert not server_dht.node.data_streams and not client_dht.node.data_streams
        assert est.remote_payload.udx is not None
    finally:
        writer.close()
        replica.close()


async def test_a_peer_that_stalls_after_the_ik_is_dropped_at_the_timeout() -> None:
    """The client completes the IK and never opens its data stream: the server's
    open_data_stream gives up after handshake_timeout, and the next client is served."""
    server_keys = key_pair(bytes([17]) * 32)
    async with cairn_testnet(4, 7) as nodes, contextlib.AsyncExitStack() as stack:
        server_dht = await client_node(stack, nodes[0], 70)
        client_dht = await client_node(stack, nodes[1], 71)
        async with serve_by_key(server_dht.node, server_keys,
                                public_address=server_dht.node.server_address) as server:
            await asyncio.wait_for(server.wait_announced(), 10)
            await handshake_by_key(client_dht.node, server_keys.public_key,
                                   key_pair(bytes([18]) * 32), timeout=10)  # and stalls
            stalled = await asyncio.wait_for(server.accept(), 5)
            with pytest.raises(TimeoutError):
                await open_data_stream(server_dht.node, stalled, server_keys,
                                       handshake_timeout=0.5)
            assert stalled.local_udx_id not in server_dht.node.server_udx_socket.streams

            async def serve_one() -> bytes | None:
                accepted = await server.accept()
                conn = await open_data_stream(server_dht.node, accepted, server_keys,
                                              handshake_timeout=10)
                try:
                    return conn.remote_key
                finally:
                    await conn.close()

            serving = asyncio.create_task(serve_one())
            _, conn = await connect_by_key(client_dht.node, server_keys.public_key,
                                           key_pair(bytes([19]) * 32), timeout=10)
            await conn.close()
            assert await asyncio.wait_for(serving, 10) == key_pair(bytes([19]) * 32).public_key


async def test_persistent_nodes_say_open_on_their_own() -> None:
    """A node that passed its reachability check is OPEN without public_address (hyperdht's
    remoteAddress()): as a server and as a client."""
    server_keys = key_pair(bytes([13]) * 32)
    async with cairn_testnet(5, 5) as nodes:
        server_dht, client_dht = nodes[3], nodes[4]
        assert server_dht.persistent and client_dht.persistent
        async with serve_by_key(server_dht.node, server_keys) as server:
            await asyncio.wait_for(server.wait_announced(), 10)
            est = await handshake_by_key(client_dht.node, server_keys.public_key,
                                         key_pair(bytes([14]) * 32), timeout=10)
            accepted = await asyncio.wait_for(server.accept(), 5)
    assert est.remote_payload.firewall == Firewall.OPEN
    assert est.remote_payload.addresses4 == (server_dht.address,)
    assert est.remote_address == server_dht.address
    assert accepted.remote_payload.firewall == Firewall.OPEN
    assert accepted.remote_payload.addresses4 == (client_dht.address,)


async def test_server_announces_again_when_its_announce_nodes_die(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hyperdht_aio, "PING_INTERVAL", 0.05)
    server_keys = key_pair(bytes([15]) * 32)
    async with cairn_testnet(10, 6) as nodes, contextlib.AsyncExitStack() as stack:
        server_dht = await client_node(stack, nodes[0], 60)
        client_dht = await client_node(stack, nodes[1], 61)
        async with serve_by_key(server_dht.node, server_keys) as server:
            await asyncio.wait_for(server.wait_announced(), 10)
            first = set(server.announce_nodes)
            assert len(first) == 3
            dead = [d for d in nodes if d.address in first and d is not nodes[0]]
            for d in dead:
                d.node._close()
            await asyncio.wait_for(server.wait_announced(2), 20)
            assert not set(server.announce_nodes) & {d.address for d in dead}
            est = await handshake_by_key(client_dht.node, server_keys.public_key,
                                         key_pair(bytes([16]) * 32),
                                         public_address=client_dht.node.server_address,
                                         timeout=15)
        assert est.remote_public_key == server_keys.public_key

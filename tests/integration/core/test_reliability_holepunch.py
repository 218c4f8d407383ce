"""Holepunch floods on real sockets (127.0.0.1): a stranger (127.0.0.2) floods a server's
puncher socket with junk, probes and PEER_HOLEPUNCH requests it cannot seal while an honest
client punches; a burst of handshakes that need punching keeps the server's punch table and its
sockets bounded. Each records a scorecard line."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket

from cairn.crypto import key_pair
from cairn.dht.messages import Request, encode_request
from cairn.dht.records import HyperCommand, hash32
from cairn.hyperdht.aio import handshake_by_key, serve_by_key
from cairn.hyperdht.events import Established
from cairn.hyperdht.messages import Holepunch, Mode, NoisePayload, UdxInfo, encode_holepunch
from cairn.hyperdht.puncher import punch_as_client
from cairn.hyperdht.punches import MAX_PUNCHES, Punches
from cairn.udx import open_udx_connection
from tests.integration.core.test_hyperdht import cairn_testnet, client_node
from tests.scorecard import record, scale


def _drain(sock: socket.socket) -> int:
    got = 0
    while True:
        try:
            sock.recv(2048)
        except BlockingIOError:
            return got
        got += 1


async def test_a_stranger_flooding_a_server_puncher_gets_nothing_and_the_client_gets_in(
        ) -> None:
    rng = random.Random(7)
    n = scale(300, 3000)
    server_keys = key_pair(bytes([51]) * 32)
    client_keys = key_pair(bytes([52]) * 32)
    async with cairn_testnet(6, 8) as nodes, contextlib.AsyncExitStack() as stack:
        server_dht = await client_node(stack, nodes[0], 60)
        client_dht = await client_node(stack, nodes[1], 61)
        async with serve_by_key(server_dht.node, server_keys, rng=random.Random(3)) as server:
            await asyncio.wait_for(server.wait_announced(), 10)
            est = await handshake_by_key(client_dht.node, server_keys.public_key, client_keys,
                                         rng=random.Random(5), timeout=10, holepunch=True)
            assert est.holepunch_id is not None
            target = hash32(server_keys.public_key)
            sp = server.punches._by_id[est.holepunch_id]
            stranger = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
            stranger.bind(("127.0.0.2", 0))
            stranger.setblocking(False)
            puncher_addr = est.remote_address
            for i in range(n):
                kind = i % 4
                if kind == 0:
                    data = rng.randbytes(rng.randrange(2, 200))
                elif kind == 1:
                    data = b"\x00"
                else:  # PEER_HOLEPUNCH with this punch's id (or another), unsealed junk
                    hp = Holepunch(Mode.FROM_RELAY, est.holepunch_id + (kind == 3),
                                   rng.randbytes(80), ("127.0.0.2", 9))
                    data = encode_request(Request(rng.randrange(0x10000), puncher_addr,
                                                  HyperCommand.PEER_HOLEPUNCH, False, None,
                                                  None, target, encode_holepunch(hp)))
                stranger.sendto(data, puncher_addr)
                if i % 50 == 0:
                    await asyncio.sleep(0)
            puncher, path = await asyncio.wait_for(
                punch_as_client(client_dht.node, est, rng=random.Random(6)), 15)
            try:
                accepted = await asyncio.wait_for(server.accept(), 5)
                serving = asyncio.create_task(server.punched_stream(accepted, 10))
                _reader, writer = await open_udx_connection(
                    puncher.socket, est.local_udx_id, est.remote_udx_id, path)
                writer.write(b"hello")
                await writer.drain()
                s_reader, s_writer = await serving
                got = await asyncio.wait_for(s_reader.read(100), 10)
                s_writer.stream.socket.close()
            finally:
                puncher.close()
            answered = _drain(stranger)
            assert sp.puncher is not None
            drops = {**sp.drops, **sp.puncher.drops, **sp.punch.session.dropped} \
                if sp.punch else {}
    line = record("holepunch", "a stranger floods a server's puncher socket (junk, probes, "
                  "unsealed PEER_HOLEPUNCH)", n, answered, "datagrams answered",
                  detail=f"the honest client punched and sent: {got == b'hello'}; "
                  f"dropped: {drops}")
    assert line.passed and got == b"hello"


async def test_many_handshakes_needing_a_punch_keep_the_punch_table_bounded() -> None:
    n = scale(3 * MAX_PUNCHES, 20 * MAX_PUNCHES)
    async with cairn_testnet(3, 9) as nodes, contextlib.AsyncExitStack() as stack:
        server_dht = await client_node(stack, nodes[0], 70)
        punches = Punches(server_dht.node, lambda: (), rng=random.Random(1))
        opened = []
        try:
            for i in range(n):
                est = Established(False, bytes(32), bytes(32), bytes(64), bytes(32), bytes(32),
                                  bytes(32), i + 1, i + 1, ("127.0.0.1", 1000 + i),
                                  NoisePayload(udx=UdxInfo(i + 1)), holepunch_id=i % 0x10000)
                punches.start(est, b"reply%d" % i)
                if i % 16 == 0:
                    await asyncio.sleep(0.01)
                    opened.append(len(punches._by_id))
            await asyncio.sleep(0.05)
            held = len(punches._by_id)
        finally:
            punches.close()
        await asyncio.sleep(0.05)
    over = sum(1 for x in opened if x > MAX_PUNCHES) + (held > MAX_PUNCHES)
    line = record("holepunch", "handshakes needing a punch, far more than the punch table",
                  n, over, "times over the bound",
                  detail=f"held {held} (bound {MAX_PUNCHES}), evicted {punches.stats['evicted']}")
    assert line.passed


async def test_a_punch_nobody_completes_closes_its_socket_on_its_own() -> None:
    async with cairn_testnet(3, 10) as nodes, contextlib.AsyncExitStack() as stack:
        server_dht = await client_node(stack, nodes[0], 80)
        punches = Punches(server_dht.node, lambda: (), rng=random.Random(1), give_up=0.2)
        try:
            est = Established(False, bytes(32), bytes(32), bytes(64), bytes(32), bytes(32),
                              bytes(32), 1, 2, ("127.0.0.1", 1000), NoisePayload(udx=UdxInfo(2)),
                              holepunch_id=7)
            punches.start(est, b"reply")
            p = punches._by_id[7]
            deadline = asyncio.get_running_loop().time() + 10.0
            while punches.stats["expired"] == 0:
                assert asyncio.get_running_loop().time() < deadline, "never given up"
                await asyncio.sleep(0.02)
            assert 7 not in punches._by_id and p.closed
            assert p.puncher is None or p.puncher.closed
        finally:
            punches.close()

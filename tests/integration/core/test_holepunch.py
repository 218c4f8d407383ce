"""Holepunching between Cairn nodes on 127.0.0.1: neither side says OPEN, so the client
punches (NAT samples, PEER_HOLEPUNCH rounds through the relay, probes) and the data phase runs
UDX on the puncher sockets: a byte echo. No NAT here (tests/lab has the real ones): this checks
the rounds, the sockets they go from, and the path each side takes."""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import sys

import pytest

from cairn.crypto import key_pair
from cairn.hyperdht.aio import handshake_by_key, serve_by_key
from cairn.hyperdht.client import HolepunchUnavailableError
from cairn.hyperdht.holepunch import (
    HOLEPUNCH_TTL,
    PROBE,
    HolepunchAbortedError,
    PunchSession,
    RemoteNotHolepunchableError,
)
from cairn.hyperdht.messages import Firewall
from cairn.hyperdht.puncher import Puncher, punch_as_client
from cairn.udx import open_udx_connection
from tests.integration.core.test_hyperdht import cairn_testnet, client_node


async def test_cairn_client_punches_to_cairn_server_and_echoes_bytes() -> None:
    server_keys = key_pair(bytes([21]) * 32)
    client_keys = key_pair(bytes([22]) * 32)
    async with cairn_testnet(6, 5) as nodes, contextlib.AsyncExitStack() as stack:
        server_dht = await client_node(stack, nodes[0], 30)
        client_dht = await client_node(stack, nodes[1], 31)
        async with serve_by_key(server_dht.node, server_keys, rng=random.Random(3)) as server:
            await asyncio.wait_for(server.wait_announced(), 10)

            async def serve_one() -> bytes:
                est = await server.accept()
                assert est.holepunch_id is not None
                reader, writer = await server.punched_stream(est, 10)
                try:
                    got = await reader.read(100)
                    writer.write(b"echo:" + got)
                    await writer.drain()
                    return got
                finally:
                    writer.stream.socket.close()

            # without holepunch=True the client stops as before (the server saw a handshake)
            with pytest.raises(HolepunchUnavailableError):
                await handshake_by_key(client_dht.node, server_keys.public_key, client_keys,
                                       rng=random.Random(4), timeout=10)
            abandoned = await asyncio.wait_for(server.accept(), 5)
            assert abandoned.holepunch_id is not None
            serving = asyncio.create_task(serve_one())
            est = await handshake_by_key(client_dht.node, server_keys.public_key, client_keys,
                                         rng=random.Random(5), timeout=10, holepunch=True)
            assert est.holepunch_id is not None
            assert est.remote_payload.firewall == Firewall.UNKNOWN
            puncher, path = await asyncio.wait_for(
                punch_as_client(client_dht.node, est, rng=random.Random(6)), 15)
            try:
                assert puncher.nat.firewall == Firewall.CONSISTENT
                assert path == est.remote_address  # the server's puncher socket
                reader, writer = await open_udx_connection(
                    puncher.socket, est.local_udx_id, est.remote_udx_id, path)
                writer.write(b"ping")
                await writer.drain()
                assert await asyncio.wait_for(reader.read(100), 10) == b"echo:ping"
                assert await asyncio.wait_for(serving, 10) == b"ping"
            finally:
                puncher.close()


async def test_a_punch_to_a_server_that_gave_up_fails_with_a_reason() -> None:
    server_keys = key_pair(bytes([23]) * 32)
    client_keys = key_pair(bytes([24]) * 32)
    async with cairn_testnet(6, 6) as nodes, contextlib.AsyncExitStack() as stack:
        server_dht = await client_node(stack, nodes[0], 40)
        client_dht = await client_node(stack, nodes[1], 41)
        async with serve_by_key(server_dht.node, server_keys, rng=random.Random(3)) as server:
            await asyncio.wait_for(server.wait_announced(), 10)
            est = await handshake_by_key(client_dht.node, server_keys.public_key, client_keys,
                                         rng=random.Random(5), timeout=10, holepunch=True)
            server.punches.close()  # the server dropped every punch (say, it restarted)
            with pytest.raises(HolepunchAbortedError, match="aborted"):
                await asyncio.wait_for(
                    punch_as_client(client_dht.node, est, rng=random.Random(6)), 15)


IP_RECVTTL = 12  # Linux's <netinet/in.h> value; Python's socket module does not name it


async def test_the_first_probe_goes_out_with_ttl_5_and_the_rest_with_the_normal_ttl() -> None:
    puncher = await Puncher.open(random.Random(1), "127.0.0.1")
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as rx:
            rx.bind(("127.0.0.1", 0))
            rx.setsockopt(socket.IPPROTO_IP, IP_RECVTTL, 1)
            rx.settimeout(5.0)
            ttls = []
            for low in (True, False, True):
                puncher.probe(rx.getsockname(), low_ttl=low)
                data, anc, _, _ = await asyncio.to_thread(rx.recvmsg, 16, socket.CMSG_SPACE(4))
                assert data == PROBE
                ttls.append(next(int.from_bytes(d[:4], sys.byteorder) for level, kind, d in anc
                                 if level == socket.IPPROTO_IP and kind == socket.IP_TTL))
        default = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with default:
            normal = default.getsockopt(socket.IPPROTO_IP, socket.IP_TTL)
        assert ttls == [HOLEPUNCH_TTL, normal, HOLEPUNCH_TTL]
    finally:
        puncher.close()


async def test_a_client_that_cannot_punch_tells_the_server_which_stops_at_once(
        monkeypatch: pytest.MonkeyPatch) -> None:
    server_keys = key_pair(bytes([25]) * 32)
    client_keys = key_pair(bytes([26]) * 32)

    def unpunchable(self: PunchSession) -> None:
        raise RemoteNotHolepunchableError("holepunch aborted: (a symmetric NAT, in this test)")

    async with cairn_testnet(6, 7) as nodes, contextlib.AsyncExitStack() as stack:
        server_dht = await client_node(stack, nodes[0], 50)
        client_dht = await client_node(stack, nodes[1], 51)
        async with serve_by_key(server_dht.node, server_keys, rng=random.Random(3)) as server:
            await asyncio.wait_for(server.wait_announced(), 10)
            est = await handshake_by_key(client_dht.node, server_keys.public_key, client_keys,
                                         rng=random.Random(5), timeout=10, holepunch=True)
            assert est.holepunch_id is not None
            sp = server.punches._by_id[est.holepunch_id]
            monkeypatch.setattr(PunchSession, "check_punchable", unpunchable)
            # no probes at all (on 127.0.0.1 the server's fast-open probe would find the path
            # before the client looks at the NAT classes)
            monkeypatch.setattr(Puncher, "probe", lambda self, addr, *, low_ttl=False: None)
            own = await Puncher.open(random.Random(6))
            try:
                with pytest.raises(RemoteNotHolepunchableError):
                    await asyncio.wait_for(punch_as_client(client_dht.node, est, puncher=own), 15)
            finally:
                own.close()
            deadline = asyncio.get_running_loop().time() + 5.0
            while not (sp.punch is not None and sp.punch.aborted):
                assert asyncio.get_running_loop().time() < deadline, "the server kept punching"
                await asyncio.sleep(0.02)

"""cairn.udx on real UDP sockets (127.0.0.1, port 0): Cairn to Cairn, the secret-stream driver
on a UDX stream, the socket shared with other datagrams, and the first-packet hook."""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Callable

from cairn.crypto import random_key_pair
from cairn.replication.aio import open_secret_stream
from cairn.udx import UDXSocket, UDXStream, decode, encode, open_udx_connection
from cairn.udx.packet import Packet, PacketType


async def wait_for(condition: Callable[[], bool], limit: float = 10) -> None:
    """Poll ``condition`` until it holds, up to ``limit`` seconds."""
    end = time.monotonic() + limit
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"not within {limit:g} s")
        await asyncio.sleep(0.01)  # the poll's pace, not a wait for something to happen


async def test_cairn_to_cairn_bytes_both_ways_and_clean_close() -> None:
    data = random.Random(3).randbytes(3 << 20)
    async with asyncio.timeout(60), await UDXSocket.bind() as a, await UDXSocket.bind() as b:
        ra, wa = await open_udx_connection(a, 1, 2, b.address)
        rb, wb = await open_udx_connection(b, 2, 1, a.address)
        wa.write(data)
        wa.close()

        async def read_all() -> bytes:
            chunks = []
            while chunk := await rb.read(1 << 16):
                chunks.append(chunk)
            return b"".join(chunks)

        got = await read_all()
        wb.write(b"done")
        wb.close()
        assert await ra.read() == b"done"
        assert await ra.read() == b""
        await wa.stream.wait_closed()
        await wb.stream.wait_closed()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        assert wa.stream.core is not None and wa.stream.core.error is None
        # closed cleanly: each lingers a while to ack a retransmitted END, then leaves
        assert all(s.closed for s in [*a.streams.values(), *b.streams.values()])


async def test_secret_stream_runs_on_a_udx_stream() -> None:
    async with asyncio.timeout(30), await UDXSocket.bind() as a, await UDXSocket.bind() as b:
        ra, wa = await open_udx_connection(a, 10, 20, b.address)
        rb, wb = await open_udx_connection(b, 20, 10, a.address)
        keys_a, keys_b = random_key_pair(), random_key_pair()
        rng = random.SystemRandom()
        ca, cb = await asyncio.gather(
            open_secret_stream(ra, wa, is_initiator=True, key_pair=keys_a, rng=rng),
            open_secret_stream(rb, wb, is_initiator=False, key_pair=keys_b, rng=rng),
        )
        assert ca.remote_public_key == keys_b.public_key
        for i in range(50):
            await ca.send(b"message %d" % i + bytes(3000))
        for i in range(50):
            assert await cb.receive() == b"message %d" % i + bytes(3000)
        await ca.close()
        assert await cb.receive() is None


async def test_other_datagrams_go_to_on_other_and_unknown_ids_are_counted() -> None:
    others: list[tuple[bytes, tuple[str, int]]] = []
    async with asyncio.timeout(10), await UDXSocket.bind(
        on_other=lambda data, addr: others.append((data, addr))
    ) as socket, await UDXSocket.bind() as sender:
        sender.send(b"\x00", socket.address)  # a holepunch probe
        sender.send(b"\x13dht-rpc message", socket.address)
        sender.send(encode(Packet(PacketType.DATA, 99, 0, 0, 0, (), b"x")), socket.address)
        await wait_for(lambda: len(others) == 2 and socket.drops["unknown stream id"] == 1)
        assert [d for d, _ in others] == [b"\x00", b"\x13dht-rpc message"]
        assert others[0][1] == sender.address


async def test_first_packet_hook_learns_the_path() -> None:
    seen: list[tuple[str, int]] = []

    def first_packet(stream: UDXStream, addr: tuple[str, int]) -> bool:
        seen.append(addr)
        stream.connect(5, addr)  # hyperdht's way: the first packet tells where the peer is
        return True

    async with asyncio.timeout(10), await UDXSocket.bind() as server, \
            await UDXSocket.bind() as client:
        waiting = server.create_stream(6, on_first_packet=first_packet)
        _, writer = await open_udx_connection(client, 5, 6, server.address)
        writer.write(b"hello")
        assert await waiting.reader.read() == b"hello"
        assert seen == [client.address]
        waiting.writer.write(b"back")
        assert await writer.stream.reader.read() == b"back"


async def test_packets_from_another_address_are_dropped_without_a_hook() -> None:
    async with asyncio.timeout(10), await UDXSocket.bind() as a, await UDXSocket.bind() as b, \
            await UDXSocket.bind() as intruder:
        ra, _ = await open_udx_connection(a, 1, 2, b.address)
        forged = encode(Packet(PacketType.DATA, 1, 1 << 20, 0, 0, (), b"forged"))
        intruder.send(forged, a.address)
        stream = a.streams[1]
        await wait_for(lambda: stream.drops["packet from an address not allowed"] == 1)
        _, wb = await open_udx_connection(b, 2, 1, a.address)
        wb.write(b"real")
        assert await ra.read() == b"real"


async def test_change_remote_follows_a_new_path() -> None:
    async with asyncio.timeout(10), await UDXSocket.bind() as a, await UDXSocket.bind() as b, \
            await UDXSocket.bind() as old_path:
        ra, wa = await open_udx_connection(a, 1, 2, old_path.address)  # where b used to be

        def moved(stream: UDXStream, addr: tuple[str, int]) -> bool:
            stream.change_remote(addr)
            return True

        wa.stream.on_first_packet = moved
        rb, wb = await open_udx_connection(b, 2, 1, a.address)
        wb.write(b"from the new path")
        assert await ra.read() == b"from the new path"
        assert wa.stream.remote_addr == b.address
        wa.write(b"answer")
        assert await rb.read() == b"answer"


async def test_an_answer_written_when_its_request_arrives_carries_the_ack() -> None:
    """The driver sends at the end of the loop round a packet arrived in, after the reader's
    task: the answer to a request is one datagram (DATA with the ack), not an ACK then DATA."""
    async with asyncio.timeout(30), await UDXSocket.bind() as a, await UDXSocket.bind() as b:
        ra, wa = await open_udx_connection(a, 1, 2, b.address)
        rb, wb = await open_udx_connection(b, 2, 1, a.address)
        sent: list[bytes] = []
        send = a.send

        def counted(data: bytes, addr: tuple[str, int]) -> None:
            sent.append(data)
            send(data, addr)

        a.send = counted  # type: ignore[method-assign]

        async def answer() -> None:
            for _ in range(3):
                request = await ra.read(100)
                wa.write(b"answer to " + request)

        server = asyncio.create_task(answer())
        for k in range(3):
            wb.write(b"q%d" % k)
            assert await rb.read(100) == b"answer to q%d" % k
        await server
        packets = [decode(d) for d in sent]
        assert [p.type for p in packets] == [PacketType.DATA] * 3
        assert [p.ack for p in packets] == [1, 2, 3]  # each answer acks its request
        assert wa.stream.core is not None and wa.stream.core.drops == {}


async def test_packets_before_connect_are_kept_for_it() -> None:
    """The peer sends first (a hyperdht server writes its header while its handshake reply
    still goes through the relay): a stream made but not connected keeps those packets and
    takes them at connect, with no retransmission; past EARLY they are dropped, counted."""
    async with asyncio.timeout(10), await UDXSocket.bind() as a, await UDXSocket.bind() as b:
        waiting = b.create_stream(8)
        _, wa = await open_udx_connection(a, 7, 8, b.address)
        wa.write(b"first")
        await wait_for(lambda: len(waiting._early) == 1)
        waiting.connect(7, a.address)
        assert await waiting.reader.read() == b"first"
        assert wa.stream.core is not None and wa.stream.core.retransmits == 0
        assert not waiting.drops
        flooded = b.create_stream(9)
        for k in range(20):
            a.send(encode(Packet(PacketType.DATA, 9, 1 << 20, k, 0, (), b"x")), b.address)
        await wait_for(lambda: flooded.drops["packet before connect"] == 4)
        assert len(flooded._early) == 16

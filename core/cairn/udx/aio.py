"""UDX over asyncio: :class:`UDXSocket` (one UDP socket, many streams) and :class:`UDXStream`,
whose :attr:`~UDXStream.reader` / :attr:`~UDXStream.writer` have the surface
:mod:`cairn.replication.aio` and :mod:`cairn.replication.net` use of asyncio's
``StreamReader`` / ``StreamWriter``::

    socket = await UDXSocket.bind("0.0.0.0", 0, on_other=dht_node.datagram_received)
    reader, writer = await open_udx_connection(socket, local_id, remote_id, (host, port))
    connection = await open_secret_stream(reader, writer, is_initiator=True, ...)

The socket hands each UDX packet to the stream whose id it names, and every other datagram
(1-byte holepunch probes, dht-rpc messages) to ``on_other(data, addr)``, so a DHT node can
share the socket as hyperdht does. A stream takes packets from its remote address; a packet
from any other address goes first to the stream's ``on_first_packet(stream, addr)`` hook (the
path discovery of hyperdht: return True to take it, calling :meth:`UDXStream.connect` if the
stream was not connected yet), else it is dropped and counted.

Each stream has one timer (``loop.call_at``) for its core's :meth:`~StreamCore.timer`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket as pysocket
import struct
from collections import Counter
from collections.abc import Callable
from typing import Any

from cairn.errors import ServiceError
from cairn.udx.events import StreamClosed, StreamData, StreamEnded, StreamMessage
from cairn.udx.packet import is_udx
from cairn.udx.stream import StreamCore

__all__ = [
    "Address",
    "StreamClosedError",
    "UDXReader",
    "UDXSocket",
    "UDXStream",
    "UDXWriter",
    "open_udx_connection",
]

Address = tuple[str, int]
SOCKET_BUFFER = 2 << 20  # SO_RCVBUF / SO_SNDBUF asked for (the kernel caps it at rmem_max)
HIGH_WATER = 1 << 20  # drain() waits while more than this is written and not yet sent
READ_SIZE = 1 << 16
LINGER = 5.0  # seconds a cleanly closed stream still acks a retransmitted END
EARLY = 16  # packets a stream made but not connected yet keeps for its connect
_ID = struct.Struct("<I")


class StreamClosedError(ServiceError, ConnectionError):
    """The UDX stream closed with an error: the peer is gone (no acks after six timeouts) or
    destroyed the stream."""


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, socket: UDXSocket) -> None:
        self._socket = socket

    def connection_lost(self, exc: Exception | None) -> None:
        self._socket._lost()

    def datagram_received(self, data: bytes, addr: tuple[Any, ...]) -> None:
        self._socket._received(data, (addr[0], addr[1]))

    def error_received(self, exc: Exception) -> None:
        self._socket.drops[f"socket error: {exc}"] += 1


class UDXSocket:
    """One UDP socket carrying UDX streams and whatever else shares the port."""

    def __init__(self, on_other: Callable[[bytes, Address], None] | None = None) -> None:
        self.on_other = on_other
        self.streams: dict[int, UDXStream] = {}
        self.drops: Counter[str] = Counter()
        self._transport: asyncio.DatagramTransport | None = None
        self._closed: asyncio.Future[None] | None = None

    @classmethod
    async def bind(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        on_other: Callable[[bytes, Address], None] | None = None,
        sock: pysocket.socket | None = None,
    ) -> UDXSocket:
        """Bind ``(host, port)``, or take ``sock``: a bound UDP socket whose buffers the caller
        sized (a DHT node's, :mod:`cairn.dht.aio`); the UDXSocket owns it from then on."""
        socket = cls(on_other)
        loop = asyncio.get_running_loop()
        socket._closed = loop.create_future()
        if sock is None:
            transport, _ = await loop.create_datagram_endpoint(
                lambda: _Protocol(socket), local_addr=(host, port)
            )
        else:
            transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(socket),
                                                               sock=sock)
        socket._transport = transport
        if hasattr(transport, "max_size"):  # asyncio's 256 KiB read is a fresh buffer a datagram
            transport.max_size = READ_SIZE  # (decision 0003); 64 KiB holds any UDP datagram
        if sock is not None:
            return socket
        sock = transport.get_extra_info("socket")
        if sock is not None:  # room for a window's worth of acks and data while we are busy
            for option in (pysocket.SO_RCVBUF, pysocket.SO_SNDBUF):
                with contextlib.suppress(OSError):
                    sock.setsockopt(pysocket.SOL_SOCKET, option, SOCKET_BUFFER)
        return socket

    @property
    def address(self) -> Address:
        if self._transport is None:
            raise RuntimeError("the socket is not bound")
        name = self._transport.get_extra_info("sockname")
        return (name[0], name[1])

    def send(self, data: bytes, addr: Address) -> None:
        """Send one datagram (a DHT message, a holepunch probe, a UDX packet)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(data, addr)

    def create_stream(
        self,
        local_id: int,
        *,
        on_first_packet: Callable[[UDXStream, Address], bool] | None = None,
    ) -> UDXStream:
        """A stream taking packets for ``local_id``; :meth:`UDXStream.connect` it to send."""
        if local_id in self.streams:
            raise ValueError(f"udx stream id {local_id} is in use on this socket")
        stream = UDXStream(self, local_id, on_first_packet)
        self.streams[local_id] = stream
        return stream

    def close(self) -> None:
        """Destroy every stream and close the socket."""
        for stream in list(self.streams.values()):
            stream.destroy()
        if self._transport is not None:
            self._transport.close()

    async def wait_closed(self) -> None:
        """Until the transport let go of the socket (after :meth:`close`)."""
        if self._closed is not None:
            await asyncio.shield(self._closed)

    def _lost(self) -> None:
        if self._closed is not None and not self._closed.done():
            self._closed.set_result(None)

    async def __aenter__(self) -> UDXSocket:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    def _received(self, data: bytes, addr: Address) -> None:
        if not is_udx(data):
            if self.on_other is not None:
                self.on_other(data, addr)
            else:
                self.drops["not udx and no other handler"] += 1
            return
        (stream_id,) = _ID.unpack_from(data, 4)
        stream = self.streams.get(stream_id)
        if stream is None:
            self.drops["unknown stream id"] += 1
            return
        stream._received(data, addr)


class UDXReader:
    """The read side: :meth:`read` as ``asyncio.StreamReader.read``."""

    def __init__(self, stream: UDXStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._eof = False
        self._error: str | None = None
        self._waiter: asyncio.Future[None] | None = None

    def at_eof(self) -> bool:
        return self._eof and not self._buffer

    async def read(self, n: int = -1) -> bytes:
        while not self._buffer and not self._eof:
            if self._error is not None:
                raise StreamClosedError(self._error)
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        if not self._buffer and self._error is not None:
            raise StreamClosedError(self._error)
        size = len(self._buffer) if n < 0 else min(n, len(self._buffer))
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        self._stream._taken(len(self._buffer))
        return data

    def _feed(self, data: bytes) -> None:
        self._buffer += data
        self._wake()

    def _end(self, error: str | None) -> None:
        self._eof = error is None or self._eof
        if error is not None:
            self._error = error
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)


class _Transport:
    """What :mod:`cairn.replication.net` asks of ``writer.transport``."""

    def __init__(self, stream: UDXStream) -> None:
        self._stream = stream

    def get_write_buffer_size(self) -> int:
        core = self._stream.core
        return 0 if core is None else core.pending


class UDXWriter:
    """The write side: ``write``, ``drain``, ``close`` (END), ``wait_closed`` as asyncio's."""

    def __init__(self, stream: UDXStream) -> None:
        self.stream = stream
        self._stream = stream
        self.transport = _Transport(stream)

    def write(self, data: bytes) -> None:
        self._stream.write(data)

    async def drain(self) -> None:
        await self._stream.drain()

    def is_closing(self) -> bool:
        core = self._stream.core
        return core is None or core.closed or self._stream._ending

    def close(self) -> None:
        self._stream.end()

    async def wait_closed(self) -> None:
        await self._stream.wait_ended()

    def get_extra_info(self, name: str, default: object = None) -> object:
        if name == "peername":
            return self._stream.remote_addr
        if name == "sockname":
            return self._stream.socket.address
        return default


class UDXStream:
    """One UDX stream on a :class:`UDXSocket`."""

    def __init__(
        self,
        socket: UDXSocket,
        local_id: int,
        on_first_packet: Callable[[UDXStream, Address], bool] | None = None,
    ) -> None:
        self.socket = socket
        self.local_id = local_id
        self.on_first_packet = on_first_packet
        self.on_message: Callable[[bytes], None] | None = None
        self.remote_addr: Address | None = None
        self.core: StreamCore | None = None
        self.reader = UDXReader(self)
        self.writer = UDXWriter(self)
        self.drops: Counter[str] = Counter()
        self._allowed: set[Address] = set()
        self._loop = asyncio.get_running_loop()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._flush_soon: asyncio.Handle | None = None
        self._ending = False
        self._destroyed = False
        self._linger: asyncio.TimerHandle | None = None
        self._changed = asyncio.Event()
        self._read_buffered = 0
        self._early: list[tuple[bytes, Address]] = []

    def connect(self, remote_id: int, remote_addr: Address, *, seq: int = 0, ack: int = 0) -> None:
        """Start sending to ``remote_id`` at ``remote_addr``. Packets that came for this stream
        before (at most ``EARLY``: the peer may send first, as a hyperdht server does while
        its handshake reply is still on its way through the relay) are taken now."""
        if self.core is not None:
            raise ValueError("the udx stream is already connected")
        overhead = 48 if ":" in remote_addr[0] else 28  # IPv6 or IPv4, + UDP
        self.core = StreamCore(self.local_id, remote_id, seq=seq, ack=ack, ip_overhead=overhead)
        self.remote_addr = remote_addr
        self._allowed.add(remote_addr)
        early, self._early = self._early, []
        for data, addr in early:
            self._received(data, addr)
        self._flush()

    def change_remote(self, remote_addr: Address) -> None:
        """Send to ``remote_addr`` from now on (the peer's path changed, e.g. its NAT mapping;
        call it from ``on_first_packet``). Packets from the old address are still taken."""
        if self.core is None:
            raise ValueError("the udx stream is not connected")
        self.remote_addr = remote_addr
        self._allowed.add(remote_addr)

    @property
    def closed(self) -> bool:
        return self.core is not None and self.core.closed

    def write(self, data: bytes) -> None:
        if self.core is None:
            raise ValueError("write on a udx stream that is not connected")
        if self.core.closed:
            raise StreamClosedError(self.core.error or "write on a closed udx stream")
        self.core.write(data)
        self._flush()  # at once, as TCP_NODELAY: a request-answer protocol waits on each

    def send_message(self, data: bytes) -> None:
        if self.core is not None:
            self.core.send_message(data)
            self._schedule_flush()

    async def drain(self) -> None:
        while self.core is not None and not self.core.closed and self.core.pending > HIGH_WATER:
            self._changed.clear()
            await self._changed.wait()
        if self.core is not None and self.core.closed and self.core.error is not None:
            raise StreamClosedError(self.core.error)

    def end(self) -> None:
        if self.core is None or self.core.closed or self._ending:
            return
        self._ending = True
        self.core.end()
        self._flush()

    async def wait_ended(self) -> None:
        """Until the peer acked our END (or the stream closed)."""
        while self.core is not None and not self.core.closed and not self.core.end_acked:
            self._changed.clear()
            await self._changed.wait()

    async def wait_closed(self) -> None:
        while self.core is not None and not self.core.closed:
            self._changed.clear()
            await self._changed.wait()

    def destroy(self) -> None:
        self._destroyed = True
        if self.core is not None and not self.core.closed:
            self.core.destroy()
            self._flush()
        self._finish(None)

    # -- driving the core ------------------------------------------------------------------

    def _received(self, data: bytes, addr: Address) -> None:
        if addr not in self._allowed:
            hook = self.on_first_packet
            if hook is not None and hook(self, addr):
                self._allowed.add(addr)
            elif self.core is None:
                self._hold(data, addr)  # (the address is checked again at connect)
                return
            else:
                self.drops["packet from an address not allowed"] += 1
                return
        if self.core is None:
            self._hold(data, addr)
            return
        self.core.receive_data(data, self._loop.time())
        # the reader wakes now; what we send waits for the end of this loop round, after the
        # reader's task ran: an answer written there carries the ack (one datagram, not two),
        # and the datagrams of one socket read are acked together
        self._deliver(self.core)
        self._schedule_flush()

    def _hold(self, data: bytes, addr: Address) -> None:
        if len(self._early) < EARLY and not self._destroyed:
            self._early.append((data, addr))
        else:
            self.drops["packet before connect"] += 1

    def _taken(self, buffered: int) -> None:
        core = self.core
        before, self._read_buffered = self._read_buffered, buffered
        if core is None:
            return
        core.read_buffered = buffered
        if before >= core.window // 2 > buffered:
            core.update_window()
            self._flush()

    def _schedule_flush(self) -> None:
        if self._flush_soon is None:
            self._flush_soon = self._loop.call_soon(self._scheduled_flush)

    def _scheduled_flush(self) -> None:
        self._flush_soon = None
        self._flush()

    def _flush(self) -> None:
        if self._flush_soon is not None:  # (sent now: the one scheduled has nothing left)
            self._flush_soon.cancel()
            self._flush_soon = None
        core = self.core
        if core is None:
            return
        self._deliver(core)
        if self.remote_addr is not None:
            for datagram in core.data_to_send(self._loop.time()):
                self.socket.send(datagram, self.remote_addr)
        if core.closed:
            self._finish(core.error)
            return
        self._arm()
        self._changed.set()

    def _deliver(self, core: StreamCore) -> None:
        while (event := core.next_event()) is not None:
            match event:
                case StreamData(data):
                    self.reader._feed(data)
                    self._read_buffered += len(data)
                    core.read_buffered = self._read_buffered
                case StreamEnded():
                    self.reader._end(None)
                case StreamMessage(data):
                    if self.on_message is not None:
                        self.on_message(data)
                case StreamClosed(error):
                    self.reader._end(error)

    def _arm(self) -> None:
        """Keep one loop timer no later than the core's: a later deadline (every ack moves the
        RTO) leaves the armed timer alone, which then fires early and re-arms."""
        assert self.core is not None
        at = self.core.timer()
        if at is None or (self._timer_at is not None and self._timer_at <= at):
            return
        if self._timer is not None:
            self._timer.cancel()
        self._timer_at = at
        self._timer = self._loop.call_at(at, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = self._timer_at = None
        if self.core is not None:
            self.core.on_timer(self._loop.time())
            self._flush()

    def _finish(self, error: str | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = self._timer_at = None
        if self._flush_soon is not None:
            self._flush_soon.cancel()
            self._flush_soon = None
        self.reader._end(error)
        core = self.core
        if core is not None and core.error is None and not self._destroyed:
            # both sides ended: stay a while to ack the peer's END again if our ack was lost
            # (TCP's TIME_WAIT); the socket closing ends the wait
            if self._linger is None:
                self._linger = self._loop.call_later(LINGER, self._unregister)
        else:
            self._unregister()
        self._changed.set()

    def _unregister(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        if self.socket.streams.get(self.local_id) is self:
            del self.socket.streams[self.local_id]


async def open_udx_connection(
    socket: UDXSocket,
    local_id: int,
    remote_id: int,
    remote_addr: Address,
    *,
    seq: int = 0,
) -> tuple[UDXReader, UDXWriter]:
    """A connected stream's reader and writer (the stream itself is ``writer.stream``).

    UDX has no handshake: both sides connect with each other's ids, agreed beforehand (hyperdht
    exchanges them in its Noise payload).
    """
    stream = socket.create_stream(local_id)
    stream.connect(remote_id, remote_addr, seq=seq)
    return stream.reader, stream.writer

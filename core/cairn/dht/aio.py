"""The asyncio adapter of the DHT node core: two UDP sockets, one timer, futures for queries.

:class:`UDPNode` is to :class:`~cairn.dht.node.DHTNode` what aioquic's ``QuicConnectionProtocol``
is to ``QuicConnection``: it binds the node's two sockets (``SERVER``, the address other nodes
know, and ``CLIENT``, where an ephemeral node sends from), feeds every datagram to the core with
``time.monotonic()``, sends what the core has to send, arms ONE loop timer from
:meth:`~cairn.dht.node.DHTNode.get_timer`, and hands the core's events to whoever waits for them:
a future per query (:meth:`UDPNode.wait_query`), a stream of replies (:meth:`UDPNode.stream_query`),
a future for the first bootstrap (:meth:`UDPNode.wait_bootstrapped`).

It starts no task: everything runs in the loop's datagram and timer callbacks, so closing the
node (leaving ``async with UDPNode.open(...)``) leaves nothing behind. It runs on whatever loop it
is given; only the CLI chooses uvloop. Each socket is a :class:`cairn.udx.UDXSocket` (a plain
:class:`asyncio.DatagramProtocol` underneath, measured faster than ``asyncio-dgram``, see
docs/decisions/0003-dht-transport.md): one UDP port carries dht-rpc and hyperdht's UDX data
streams, as in hyperdht (nat.md 5): a datagram starting ``0xFF 0x01`` goes to its UDX stream, a
1-byte one is a holepunch probe (:attr:`UDPNode.on_probe`), anything else to the DHT core.
:attr:`UDPNode.udx_socket` is the socket data streams run on.

Start a query on :attr:`UDPNode.core` and call :meth:`UDPNode.wait_query` (or
:meth:`UDPNode.stream_query`) right after it, with no ``await`` in between: the core's events are
only collected when the adapter flushes, and the wait registers before it flushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import logging
import random
import socket
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from cairn.dht.events import Bootstrapped, Event, QueryDone, QueryReply, Reply, RequestDone
from cairn.dht.hyper import HyperHandler
from cairn.dht.messages import Address
from cairn.dht.node import CLIENT, SERVER, DHTNode
from cairn.errors import LocalError
from cairn.udx.aio import UDXSocket, UDXStream

__all__ = [
    "READ_SIZE",
    "RECEIVE_BUFFER",
    "SEND_BUFFER",
    "NodeClosedError",
    "QueryStream",
    "UDPNode",
    "is_wildcard",
]

log = logging.getLogger(__name__)

RECEIVE_BUFFER = 4 << 20
"""Bytes asked for each socket's receive buffer (JS nodes send datagrams of up to ~5 KB, and a
busy node receives bursts of replies; the kernel may grant less, see :func:`_bind`)."""

SEND_BUFFER = 1 << 20

READ_SIZE = 1 << 16
"""Bytes asyncio's own datagram transport reads per ``recvfrom`` (any UDP datagram fits).

Its default is 256 KiB: a fresh 256 KiB buffer per datagram, above glibc's mmap threshold, so
depending on the heap's state each datagram costs an ``mmap`` + ``munmap`` pair, measured at
+25-30 µs per datagram (docs/decisions/0003-dht-transport.md). uvloop's transport is not
affected (and has no such attribute)."""


class NodeClosedError(LocalError):
    """The node was closed while an operation waited on it, or an operation came after it."""


def is_wildcard(host: str) -> bool:
    """True for the address that binds every IPv4 interface (``0.0.0.0`` or ``""``)."""
    return host in ("", "0.0.0.0")  # noqa: S104 - a comparison, not a bind


def _check_open(host: str, port: int, persistent: bool | None,
                address: Address | None) -> tuple[str, Address | None]:
    """:meth:`UDPNode.open`'s host, port and address checked (ValueError naming the argument)."""
    host = _check_host(host)
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port must be 0-65535, got {port}")
    if address is not None:
        address = (_check_host(address[0]), address[1])
        if is_wildcard(address[0]) or not 0 <= address[1] <= 0xFFFF:
            raise ValueError(f"address must be a concrete IPv4 address and port, got "
                             f"{address[0]}:{address[1]}")
    if persistent and is_wildcard(host) and address is None:
        raise ValueError("a persistent node bound to 0.0.0.0 needs address=(ip, port): the "
                         "address other nodes reach it at")
    return host, address


def _check_host(host: str) -> str:
    if is_wildcard(host):
        return "0.0.0.0"  # noqa: S104 - the caller asked for every interface
    try:
        return str(ipaddress.IPv4Address(host))
    except ValueError:
        raise ValueError(f"host must be an IPv4 address (the DHT speaks IPv4), got {host!r}"
                         ) from None


def _bind(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``(host, port)`` with large buffers.

    Linux caps ``SO_RCVBUF`` at ``net.core.rmem_max``; a process allowed to (CAP_NET_ADMIN) gets
    the full size with ``SO_RCVBUFFORCE``, anyone else what the cap allows (logged at debug).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        _set_buffer(sock, socket.SO_RCVBUF, getattr(socket, "SO_RCVBUFFORCE", None),
                    RECEIVE_BUFFER)
        _set_buffer(sock, socket.SO_SNDBUF, getattr(socket, "SO_SNDBUFFORCE", None), SEND_BUFFER)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


def _set_buffer(sock: socket.socket, option: int, force: int | None, size: int) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, option, size)
    if sock.getsockopt(socket.SOL_SOCKET, option) >= size:  # Linux reports twice what was set
        return
    if force is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, force, size)
    got = sock.getsockopt(socket.SOL_SOCKET, option)
    if got < size:
        log.debug("socket buffer (option %d) is %d bytes, asked for %d: raise the kernel's "
                  "limit (net.core.rmem_max / wmem_max) for more", option, got, size)


class QueryStream:
    """The successful replies of one query as they arrive, then its :class:`QueryDone`.

    ``async for reply in stream`` yields :class:`~cairn.dht.events.Reply` objects; once the
    iteration ends, :attr:`done` holds the query's :class:`QueryDone`. :meth:`aclose` (or leaving
    ``async with stream``) stops the query if it is still running.
    """

    def __init__(self, node: UDPNode, qid: int) -> None:
        self._node = node
        self.query = qid
        self._queue: asyncio.Queue[Reply | QueryDone | NodeClosedError] = asyncio.Queue()
        self.done: QueryDone | None = None

    def _push(self, item: Reply | QueryDone | NodeClosedError) -> None:
        self._queue.put_nowait(item)

    def __aiter__(self) -> QueryStream:
        return self

    async def __anext__(self) -> Reply:
        if self.done is not None:
            raise StopAsyncIteration
        item = await self._queue.get()
        if isinstance(item, NodeClosedError):
            raise item
        if isinstance(item, QueryDone):
            self.done = item
            raise StopAsyncIteration
        return item

    async def aclose(self) -> None:
        self._node._stop_stream(self)

    async def __aenter__(self) -> QueryStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class UDPNode:
    """A :class:`DHTNode` and its :class:`HyperHandler` on two UDP sockets. Make one with
    :meth:`open`; the sockets close when its ``async with`` block ends."""

    def __init__(self, core: DHTNode, handler: HyperHandler,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.core = core
        self.handler = handler
        self._loop = loop
        self._sockets: dict[int, UDXSocket] = {}
        # 1-byte datagrams are holepunch probes (nat.md 5), never dht-rpc: whoever punches
        # takes them here (data, address, which socket)
        self.on_probe: Callable[[bytes, Address, int], None] | None = None
        # UDX streams a connect by key made for its data phase, by local id, until
        # cairn.hyperdht.open_data_stream takes them
        self.data_streams: dict[int, UDXStream] = {}
        self._bound: dict[int, Address] = {}
        self._now = time.monotonic()
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._queries: dict[int, asyncio.Future[QueryDone]] = {}
        self._requests: dict[int, asyncio.Future[RequestDone]] = {}
        self._streams: dict[int, QueryStream] = {}
        self._bootstrapped: asyncio.Future[Bootstrapped] = loop.create_future()
        self._closed = False

    @classmethod
    @contextlib.asynccontextmanager
    async def open(
        cls,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bootstrap: Sequence[Address] = (),
        persistent: bool | None = False,
        address: Address | None = None,
        rng: random.Random | None = None,
    ) -> AsyncIterator[UDPNode]:
        """Bind the server socket to ``(host, port)`` and the client socket to ``(host, any)``,
        and start bootstrapping from ``bootstrap`` (IPv4 addresses).

        ``persistent``: True = a routing node from the start, False = an ephemeral client,
        None = ephemeral until a reachability check shows other nodes can reach it. A node that
        may become persistent needs the address other nodes reach it at: ``host`` when it is a
        concrete IP, else ``address`` (whose port 0 means the bound port). ``rng`` (ids, write
        tokens, transaction ids) defaults to the system's random source.
        """
        host, address = _check_open(host, port, persistent, address)
        loop = asyncio.get_running_loop()
        server_sock = _bind(host, port)
        try:
            client_sock = _bind(host, 0)
        except BaseException:
            server_sock.close()
            raise
        server_port = server_sock.getsockname()[1]
        if address is None and not is_wildcard(host):
            address = (host, server_port)
        elif address is not None and address[1] == 0:
            address = (address[0], server_port)
        core_persistent = persistent
        if persistent is None and address is None:
            # The core would take its address from what other nodes saw of our CLIENT socket
            # and check the wrong port; without a known address, stay an ephemeral client.
            log.info("adaptive node on 0.0.0.0 without address=: running as an ephemeral client")
            core_persistent = False
        holder: list[DHTNode] = []
        handler = HyperHandler(lambda: holder[0])
        # hyperdht's connect relaying (forward entries, PEER_HANDSHAKE / PEER_HOLEPUNCH);
        # imported here: cairn.hyperdht builds on this module
        from cairn.hyperdht.router import Router

        handler.router = Router()
        core = DHTNode(rng=rng or random.SystemRandom(), now=time.monotonic(), address=address,
                       bootstrap=list(bootstrap), persistent=core_persistent, handler=handler)
        holder.append(core)
        node = cls(core, handler, loop)
        try:
            for which, sock in ((SERVER, server_sock), (CLIENT, client_sock)):
                name = sock.getsockname()
                node._sockets[which] = await UDXSocket.bind(
                    on_other=functools.partial(node._receive, which=which), sock=sock)
                node._bound[which] = (name[0], name[1])  # the UDXSocket owns the socket now
            node._bootstrap()
            yield node
        finally:
            node._close()
            for which, sock in ((SERVER, server_sock), (CLIENT, client_sock)):
                if which not in node._sockets:
                    sock.close()
            if node._sockets:
                await asyncio.wait([asyncio.ensure_future(s.wait_closed())
                                    for s in node._sockets.values()], timeout=1.0)

    # -- what the API layer uses ----------------------------------------------------------------

    @property
    def server_address(self) -> Address:
        """Where the server socket is bound (``0.0.0.0`` when bound to every interface)."""
        return self._bound[SERVER]

    @property
    def udx_socket(self) -> UDXSocket:
        """The socket this node speaks to the DHT from (its client socket while ephemeral, else
        its server socket), where hyperdht's data streams run: the address the DHT's nodes saw,
        the one a NAT keeps open. UDX packets on it go to their streams, the rest to the node."""
        return self._sockets[CLIENT if self.core.ephemeral else SERVER]

    @property
    def server_udx_socket(self) -> UDXSocket:
        """The server socket (:attr:`server_address`), where a peer told our public address
        sends its data stream."""
        return self._sockets[SERVER]

    @property
    def closed(self) -> bool:
        return self._closed

    def now(self) -> float:
        """The time to pass to the core when starting something on it."""
        return self._clock()

    async def wait_bootstrapped(self) -> Bootstrapped:
        """The core's first :class:`Bootstrapped` event (at once when it has come already)."""
        self._check_open()
        return await asyncio.shield(self._bootstrapped)

    async def wait_query(self, qid: int) -> QueryDone:
        """Wait for query ``qid`` (just started on :attr:`core`) to finish. Cancelling the wait
        (a timeout) cancels the query."""
        self._check_open()
        fut: asyncio.Future[QueryDone] = self._loop.create_future()
        self._queries[qid] = fut
        self._flush()
        try:
            return await fut
        finally:
            if self._queries.pop(qid, None) is not None:
                self.core.cancel(qid)
                fut.cancel()

    def stream_query(self, qid: int) -> QueryStream:
        """Follow query ``qid`` (just started on :attr:`core`, with ``emit_replies``)."""
        self._check_open()
        stream = QueryStream(self, qid)
        self._streams[qid] = stream
        self._flush()
        return stream

    async def wait_request(self, handle: int) -> RequestDone:
        """Wait for the request ``handle`` (just sent with :meth:`DHTNode.request`)."""
        self._check_open()
        fut: asyncio.Future[RequestDone] = self._loop.create_future()
        self._requests[handle] = fut
        self._flush()
        try:
            return await fut
        finally:
            if self._requests.pop(handle, None) is not None:
                fut.cancel()

    def flush(self) -> None:
        """Send what the core has to send, hand out its events and re-arm the timer (call it
        after changing the core from outside, e.g. after :meth:`DHTNode.add_node`)."""
        self._check_open()
        self._flush()

    # -- the adapter ------------------------------------------------------------------------------

    def _bootstrap(self) -> None:
        qid = self.core.bootstrap(self._clock())
        first: asyncio.Future[QueryDone] = self._loop.create_future()
        self._queries[qid] = first
        self._flush()
        if first.done() and not self.core.bootstrapped:
            # Core issue: a bootstrap query with no one to ask (a first node, bootstrap=[])
            # ends inside bootstrap() before the core records its id, so the core never
            # calls itself bootstrapped. Do what it would have done with no node to check.
            self.core.bootstrapped = True
            self._dispatch(Bootstrapped(not self.core.ephemeral, self.core.address,
                                        self.core.id))
        self._queries.pop(qid, None)

    def _clock(self) -> float:
        now = time.monotonic()
        if now > self._now:
            self._now = now
        return self._now

    def _check_open(self) -> None:
        if self._closed:
            raise NodeClosedError("the DHT node is closed")

    def _receive(self, data: bytes, addr: Address, which: int) -> None:
        if self._closed:
            return
        if len(data) == 1:
            if self.on_probe is not None:
                self.on_probe(data, addr, which)
            return
        self.core.receive_datagram(data, addr, self._clock(), which)
        self._flush()

    def _on_timer(self) -> None:
        self._timer = None
        if self._closed:
            return
        # The loop may wake a little before the deadline (uvloop counts in milliseconds): treat
        # the wake-up as the deadline, so the core acts now instead of asking again.
        self._now = max(self._now, self._timer_at)
        self.core.handle_timer(self._clock())
        self._flush()

    def _arm(self) -> None:
        when = self.core.get_timer()
        if when is None:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if self._timer is not None:
            if self._timer_at <= when:
                return  # an earlier wake-up is armed; it will re-arm for this one
            self._timer.cancel()
        self._timer_at = when
        delay = max(0.0, when - time.monotonic())
        self._timer = self._loop.call_at(self._loop.time() + delay, self._on_timer)

    def _flush(self) -> None:
        for data, addr, which in self.core.datagrams_to_send():
            self._sockets[which].send(data, addr)
        while (event := self.core.next_event()) is not None:
            self._dispatch(event)
        self._arm()

    def _dispatch(self, event: Event) -> None:
        match event:
            case QueryReply(query=qid, reply=reply):
                stream = self._streams.get(qid)
                if stream is not None:
                    stream._push(reply)
            case QueryDone(query=qid):
                fut = self._queries.pop(qid, None)
                if fut is not None and not fut.done():
                    fut.set_result(event)
                stream = self._streams.pop(qid, None)
                if stream is not None:
                    stream._push(event)
            case RequestDone(handle=handle):
                rfut = self._requests.pop(handle, None)
                if rfut is not None and not rfut.done():
                    rfut.set_result(event)
            case Bootstrapped():
                if not self._bootstrapped.done():
                    self._bootstrapped.set_result(event)

    def _stop_stream(self, stream: QueryStream) -> None:
        if self._streams.get(stream.query) is stream:
            del self._streams[stream.query]
            if not self._closed:
                self.core.cancel(stream.query)

    def _close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        for sock in self._sockets.values():
            sock.close()  # (and every UDX stream on it)
        self.data_streams.clear()
        error = NodeClosedError("the DHT node was closed while an operation waited on it")
        waiting: list[asyncio.Future[Any]] = [*self._queries.values(), *self._requests.values(),
                                              self._bootstrapped]
        for fut in waiting:
            if not fut.done():
                fut.set_exception(error)
        # a future nobody awaits must not log "exception was never retrieved"
        if self._bootstrapped.done() and not self._bootstrapped.cancelled():
            self._bootstrapped.exception()
        self._queries.clear()
        self._requests.clear()
        for stream in self._streams.values():
            stream._push(error)
        self._streams.clear()

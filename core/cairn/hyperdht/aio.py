"""Connect by key on a running :class:`~cairn.dht.aio.UDPNode`: :func:`serve_by_key` and
:func:`connect_by_key` (with :func:`handshake_by_key`, the part up to the data phase).

Server::

    async with serve_by_key(node, key_pair, firewall=allow_only(devices)) as server:
        while True:
            established = await server.accept()      # an Established, IK done
            connection = await accept_data_stream(server, established, key_pair)

Client::

    established, connection = await connect_by_key(node, server_key, key_pair)

The server announces on ``H(key)`` (the closest nodes keep a forward entry), pings its three
closest announce nodes every :data:`PING_INTERVAL` seconds (they are the only ones that can reach
it through its NAT) and announces again every :data:`REANNOUNCE_INTERVAL` seconds or as soon as
fewer than two of them answer.

Both behind NATs (neither OPEN): the client passes ``holepunch=True`` and punches
(:func:`cairn.hyperdht.puncher.punch_as_client`); the server answers the punch from a puncher
socket of its own and hands the stream over with :meth:`KeyServer.punched_stream`.

The data phase is one UDX stream per connection carrying secret-stream without a second Noise
(nat.md 1.6): :func:`open_data_stream` returns a :class:`~cairn.replication.net.Connection`,
the same as a TCP dial's, so everything that replicates on a connection (``serve_on``,
``follow_on``, ``read_on``, a gateway's admission) runs on it unchanged. The stream runs on the
DHT node's own UDP port (:attr:`UDPNode.udx_socket`, a :class:`cairn.udx.UDXSocket`); each end
makes it the moment its side of the IK completes, so the peer's first packets find it.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING

from cairn.crypto import KeyPair
from cairn.dht.aio import UDPNode
from cairn.dht.hyper import start_announce, start_unannounce
from cairn.dht.messages import Address
from cairn.dht.records import HyperCommand, Peer, decode_peer, encode_peer, hash32
from cairn.errors import DecodeError, LocalError, ServiceError
from cairn.hyperdht.client import (
    BadReplyError,
    ClientCore,
    PeerConnectionFailedError,
    PeerNotFoundError,
    _routable,
)
from cairn.hyperdht.events import Established, HandshakeRefused
from cairn.hyperdht.messages import Holepunch
from cairn.hyperdht.puncher import punch_as_client
from cairn.hyperdht.router import RateLimit, Router
from cairn.hyperdht.server import FirewallHook, ServerCore
from cairn.replication.net import IDLE_TIMEOUT, MAX_FRAME, Connection
from cairn.replication.noise import RandomSource
from cairn.udx.aio import UDXSocket, UDXStream

__all__ = [
    "PING_INTERVAL",
    "PUNCH_WAIT",
    "REANNOUNCE_INTERVAL",
    "KeyServer",
    "accept_data_stream",
    "connect_by_key",
    "discard_data_stream",
    "handshake_by_key",
    "open_data_stream",
    "reachable_address",
    "serve_by_key",
]

if TYPE_CHECKING:
    from cairn.udx.aio import UDXReader, UDXWriter

log = logging.getLogger(__name__)

PING_INTERVAL = 3.0
REANNOUNCE_INTERVAL = 300.0
UNANNOUNCE_TIMEOUT = 2.0
LOG_EVERY = 5.0
DEFAULT_TIMEOUT = 20.0


def reachable_address(node: UDPNode) -> Address | None:
    """The address this node is reachable at from anywhere, when it knows one: a persistent
    node passed the reachability check (PING_NAT) on its server socket (hyperdht's
    ``remoteAddress()``); an ephemeral one may be behind a NAT."""
    core = node.core
    return core.address if not core.ephemeral and core.address is not None else None


def _router(node: UDPNode) -> Router:
    router = node.handler.router
    if not isinstance(router, Router):
        raise LocalError("this DHT node has no hyperdht router (open it with UDPNode.open)")
    return router


class KeyServer:
    """A listening hyperdht server (what :func:`serve_by_key` yields)."""

    def __init__(self, node: UDPNode, core: ServerCore, *, backlog: int = 256,
                 holepunch: bool = True) -> None:
        self.node = node
        self.holepunch = holepunch
        self.core = core
        self.public_key = core.key_pair.public_key
        self.target = hash32(self.public_key)
        self.announce_nodes: tuple[Address, ...] = ()
        self.announces = 0
        self._announced = asyncio.Condition()
        self._queue: asyncio.Queue[Established] = asyncio.Queue(backlog)
        self.dropped = 0
        self.auto_address = core.public_address is None
        self._logged_at = float("-inf")
        self._unlogged = 0
        from cairn.hyperdht.punches import Punches  # holepunching needs cairn.udx

        self.punches = Punches(node, lambda: self.announce_nodes)

    # the LocalServer the router calls, inside the node's datagram callback
    def on_handshake(self, noise: bytes, client: Address, now: float) -> bytes | None:
        if self.auto_address:
            self.core.public_address = reachable_address(self.node)
        reply = self.core.on_handshake(noise, client, now)
        self._drain()
        return reply

    def on_holepunch(self, id: int, payload: bytes, client: Address, now: float) -> bytes | None:
        return self.core.on_holepunch(id, payload, client, now)

    # holepunching (cairn.hyperdht.puncher): the router's optional hooks
    def answer_from_puncher(self, reply: bytes, tid: int, relay: Address, target: bytes,
                            value: bytes) -> bool:
        return self.punches.answer_from_puncher(reply, tid, relay, target, value)

    def take_holepunch(self, tid: int, relay: Address, target: bytes, hp: Holepunch,
                       now: float) -> bool:
        return self.punches.take_holepunch(tid, relay, target, hp, now)

    async def punched_stream(self, established: Established, timeout: float = 15.0,  # noqa: ASYNC109
                             ) -> tuple[UDXReader, UDXWriter]:
        """The data stream of a client that punched to us (``established.holepunch_id`` set):
        a UDX (reader, writer) pair on the punch's socket, once the client's first packet
        came through. Raises HolepunchAbortedError / TimeoutError."""
        return await self.punches.stream(established, timeout)

    def _drain(self) -> None:
        while (event := self.core.next_event()) is not None:
            match event:
                case Established():
                    if event.holepunch_id is not None and self.holepunch:
                        self.punches.start(event, self.core.last_reply)
                    try:
                        self._queue.put_nowait(event)
                    except asyncio.QueueFull:
                        self.dropped += 1
                        log.warning("hyperdht server %s: backlog full, connection from %s "
                                    "dropped", self.public_key.hex()[:16],
                                    event.remote_public_key.hex()[:16])
                        continue
                    if event.holepunch_id is not None and self.holepunch:
                        continue  # its stream is the punch's (punched_stream)
                    # the client sends its data stream where it goes (ClientCore.on_reply):
                    # to the public address we said (our server socket) when it is a global
                    # one, else to where the DHT saw us (the socket we speak to it from)
                    node = self.node
                    public = self.core.public_address
                    socket = (node.server_udx_socket if public is not None
                              and _routable(public[0]) else node.udx_socket)
                    try:
                        _prepare_stream(node, socket, event)
                    except ValueError:  # a stream id in use on the socket (1 in 2**32)
                        log.info("hyperdht server %s: udx stream id %d in use",
                                 self.public_key.hex()[:16], event.local_udx_id)
                case HandshakeRefused(client=client, reason=reason):
                    self._refused_log(client, reason)

    def _refused_log(self, client: Address, reason: str) -> None:
        """One INFO line per refusal, at most one per LOG_EVERY seconds (a flood is counted,
        not logged line by line)."""
        now = self.node.now()
        self._unlogged += 1
        if now - self._logged_at < LOG_EVERY:
            return
        more = f" (and {self._unlogged - 1} more since the last line)" if self._unlogged > 1 else ""
        log.info("hyperdht server %s: handshake from %s:%d refused: %s%s",
                 self.public_key.hex()[:16], client[0], client[1], reason, more)
        self._logged_at = now
        self._unlogged = 0

    async def accept(self) -> Established:
        """The next client whose IK handshake completed (and the firewall let in)."""
        return await self._queue.get()

    async def announce(self) -> int:
        """Announce on ``H(key)`` now; returns how many nodes stored it."""
        node = self.node
        await node.wait_bootstrapped()
        qid = start_announce(node.core, self.target, self.core.key_pair, node.now())
        done = await node.wait_query(qid)
        replied = [r for r in done.closest if r.token is not None][:3]
        self.announce_nodes = tuple(r.from_addr for r in replied)
        self.core.relays = tuple((r.from_addr, r.to) for r in replied)
        self.announces += 1
        async with self._announced:
            self._announced.notify_all()
        return done.commits

    async def unannounce(self, timeout: float = UNANNOUNCE_TIMEOUT) -> None:  # noqa: ASYNC109
        """Withdraw the announce (nodes drop their forward entries: clients then get
        PeerNotFoundError at once); best effort, bounded by ``timeout``."""
        node = self.node
        if node.closed or not self.announces:
            return
        try:
            async with asyncio.timeout(timeout):
                await node.wait_query(start_unannounce(node.core, self.target,
                                                       self.core.key_pair, node.now()))
        except (TimeoutError, ServiceError, LocalError) as exc:
            log.info("hyperdht server %s: unannounce incomplete: %s",
                     self.public_key.hex()[:16], exc)

    async def wait_announced(self, count: int = 1) -> None:
        """Until ``count`` announces have finished (stored or not): 1 = the first."""
        async with self._announced:
            await self._announced.wait_for(lambda: self.announces >= count)

    async def _ping(self, addr: Address) -> bool:
        handle = self.node.core.ping(addr, self.node.now())
        done = await self.node.wait_request(handle)
        return done.reply is not None

    async def keep_announced(self) -> None:
        """Announce, ping the announce nodes every PING_INTERVAL, announce again when due."""
        loop = asyncio.get_running_loop()
        while True:
            try:
                stored = await self.announce()
            except (ServiceError, LocalError) as exc:  # the node closed, the network is down
                log.warning("hyperdht server %s: announce failed: %s", self.public_key.hex()[:16],
                            exc)
                await asyncio.sleep(PING_INTERVAL)
                continue
            if stored == 0:
                log.warning("hyperdht server %s: no DHT node stored the announce",
                            self.public_key.hex()[:16])
            due = loop.time() + REANNOUNCE_INTERVAL
            while loop.time() < due:
                await asyncio.sleep(PING_INTERVAL)  # the keepalive period itself
                if not self.announce_nodes:
                    break
                answered = await asyncio.gather(*(self._ping(a) for a in self.announce_nodes))
                if sum(answered) < min(2, len(self.announce_nodes)):
                    break


@contextlib.asynccontextmanager
async def serve_by_key(node: UDPNode, key_pair: KeyPair, *,
                       firewall: FirewallHook | None = None,
                       public_address: Address | None = None,
                       rng: RandomSource | None = None,
                       limit: RateLimit | None = None,
                       announce: bool = True,
                       holepunch: bool = True) -> AsyncIterator[KeyServer]:
    """Listen for hyperdht connects to ``key_pair`` on ``node`` until the block ends.

    ``firewall(remote_public_key, payload, client_address)`` returning True refuses a client
    (silently, as hyperdht). ``public_address``: where this node's UDP socket is reachable from
    anywhere (a public IP, port forwarded or no NAT); the server then says OPEN and clients
    connect straight to it. Without it, a node that became persistent (its reachability check
    passed) says OPEN with its own address, as hyperdht does; an ephemeral one says UNKNOWN.
    ``limit``: handshakes per client host and in all (default 10/s per host, burst 20, 200/s in
    all). ``announce=False`` skips announcing (tests that place the
    record). ``holepunch``: a client behind a NAT that reaches this server (not OPEN) through
    a relay punches to it (a puncher socket per such client, :mod:`cairn.hyperdht.punches`);
    its :class:`Established` has ``holepunch_id`` set and its data stream comes from
    :meth:`KeyServer.punched_stream`. False: such clients get ABORTED at their first
    PEER_HOLEPUNCH (for a caller that cannot take punched streams).
    """
    router = _router(node)
    core = ServerCore(key_pair, rng or random.SystemRandom(), firewall=firewall,
                      public_address=public_address, limit=limit)
    server = KeyServer(node, core, holepunch=holepunch)
    router.serve(server.target, server, encode_peer(Peer(key_pair.public_key)))
    # owned by this block: cancelled and awaited when it ends (its errors are logged and
    # retried inside, so none is lost)
    task = asyncio.create_task(server.keep_announced()) if announce else None
    try:
        yield server
    finally:
        router.unserve(server.target)
        server.punches.close()
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await server.unannounce()


PARALLEL_ATTEMPTS = 2
"""Record holders asked at once (hyperdht: 2), so one dead or slow relay costs no time."""


async def handshake_by_key(node: UDPNode, remote_public_key: bytes, key_pair: KeyPair, *,
                           public_address: Address | None = None,
                           rng: RandomSource | None = None,
                           relay_addresses: Sequence[Address] = (),
                           timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
                           holepunch: bool = False,
                           stream_socket: UDXSocket | None = None) -> Established:
    """FIND_PEER for ``H(remote_public_key)``, then PEER_HANDSHAKE through the nodes holding
    the record (two at a time) until one answers with a good IK reply. ``relay_addresses``
    (say, the ``relay`` of the last connect) are tried first, without a FIND_PEER. Raises
    :class:`PeerNotFoundError`, :class:`PeerConnectionFailedError` or
    :class:`ServerRefusedError`. ``holepunch=True``: with both sides behind NATs, return
    the handshake with ``holepunch_id`` set (punch next: :mod:`cairn.hyperdht.puncher`)
    instead of raising :class:`HolepunchUnavailableError`. With ``stream_socket``, the data
    stream is made on it before the handshake goes out and connected the moment the reply is
    read (:func:`open_data_stream` then takes it): the server's first packets, which may come
    before its reply (that one goes through the relay), are kept for it; a handshake that
    needs punching forgets it (the data runs on the puncher's socket)."""
    await node.wait_bootstrapped()
    if public_address is None:
        public_address = reachable_address(node)
    client = ClientCore(key_pair, remote_public_key, rng or random.SystemRandom(),
                        public_address=public_address, holepunch=holepunch)
    attempt = _Attempt(node, client, stream_socket)
    async with asyncio.timeout(timeout):
        try:
            result = await attempt.through_known(relay_addresses)
            if result is None:
                result = await attempt.run()
        finally:
            await attempt.stop()
    if result is not None:
        return result
    if attempt.holders == 0:
        raise PeerNotFoundError(f"no DHT node holds an announce of {remote_public_key.hex()}")
    raise PeerConnectionFailedError(
        f"{attempt.holders} node(s) hold the record of {remote_public_key.hex()[:16]}, but no "
        f"handshake was answered" + (f" ({attempt.last})" if attempt.last else ""))


class _Attempt:
    """One connect's FIND_PEER and its PEER_HANDSHAKEs, PARALLEL_ATTEMPTS at a time."""

    def __init__(self, node: UDPNode, client: ClientCore,
                 stream_socket: UDXSocket | None = None) -> None:
        self.node = node
        self.client = client
        # the data stream, made before the handshake goes out: the server may send on it
        # before its reply, which goes through the relay, reaches us (hyperdht does the same)
        self.stream: UDXStream | None = None
        if stream_socket is not None and client.udx_id not in stream_socket.streams:
            self.stream = stream_socket.create_stream(client.udx_id,
                                                      on_first_packet=_learn_path())
        self.holders = 0
        self.last: Exception | None = None
        self.tasks: set[asyncio.Task[Established | None]] = set()

    async def _through(self, relay: Address) -> Established | None:
        node, client = self.node, self.client
        # a server's firewall drops a refused handshake silently (as hyperdht's): the relay's
        # silence then is not the relay's fault, and it may be the only node we know
        handle = node.core.request(relay, HyperCommand.PEER_HANDSHAKE, node.now(),
                                   target=client.target, value=client.request_value,
                                   blame=False)
        done = await node.wait_request(handle)
        if done.reply is None:
            return None
        try:
            established = client.on_reply(done.reply.value, relay)
        except BadReplyError as exc:
            self.last = exc
            log.info("hyperdht connect through %s:%d: %s", relay[0], relay[1], exc)
        except LocalError:
            pass  # the other attempt completed the handshake first
        else:
            if self.stream is not None and established.holepunch_id is None:
                _prepare_stream(node, self.stream.socket, established, self.stream)
                self.stream = None
            return established
        return None

    async def _settle(self, until: int) -> Established | None:
        """Wait until at most ``until`` attempts are in flight; the first success, if any."""
        while len(self.tasks) > until:
            done, self.tasks = await asyncio.wait(self.tasks,
                                                  return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                result = task.result()
                if result is not None:
                    return result
        return None

    async def through_known(self, relays: Sequence[Address]) -> Established | None:
        for relay in relays[:PARALLEL_ATTEMPTS]:
            self.tasks.add(asyncio.create_task(self._through(relay)))
        return await self._settle(0)

    async def run(self) -> Established | None:
        node, client = self.node, self.client
        qid = node.core.query(client.target, HyperCommand.FIND_PEER, None, node.now(),
                              emit_replies=True)
        async with node.stream_query(qid) as replies:
            async for reply in replies:
                if reply.value is None:
                    continue
                try:
                    peer = decode_peer(reply.value)
                except DecodeError:
                    continue
                if peer.public_key != client.remote_public_key:
                    continue
                self.holders += 1
                self.tasks.add(asyncio.create_task(self._through(reply.from_addr)))
                result = await self._settle(PARALLEL_ATTEMPTS - 1)
                if result is not None:
                    return result
        return await self._settle(0)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.tasks.clear()
        if self.stream is not None:  # no handshake completed: the stream was never used
            self.stream.socket.streams.pop(self.stream.local_id, None)
            self.stream = None


def _learn_path() -> Callable[[UDXStream, Address], bool]:
    """The stream's first-packet hook: the first packet from an address other than the one
    the handshake gave moves the stream there (the peer's NAT mapped it elsewhere, or it sent
    from its other socket; hyperdht's raw-stream firewall), once; later strangers are
    dropped. Whoever sends from there must know the stream's random id (carried encrypted in
    the IK) and still cannot read or forge the secret-stream on top."""
    moved: list[Address] = []

    def hook(stream: UDXStream, addr: Address) -> bool:
        if moved or stream.core is None:
            return False
        moved.append(addr)
        log.debug("udx stream %d: the peer's path is %s:%d", stream.local_id, *addr)
        stream.change_remote(addr)
        return True

    return hook


def _prepare_stream(node: UDPNode, socket: UDXSocket, established: Established,
                    stream: UDXStream | None = None) -> UDXStream:
    """Make the data stream (or connect ``stream``, made before the handshake went out) at
    once, inside the callback that finished the IK, and keep it for
    :func:`open_data_stream`: the peer's first packets find it."""
    if stream is None:
        stream = socket.create_stream(established.local_udx_id, on_first_packet=_learn_path())
    stream.connect(established.remote_udx_id, established.remote_address)
    node.data_streams[established.local_udx_id] = stream
    return stream


def _take_stream(node: UDPNode, established: Established,
                 socket: UDXSocket | None) -> UDXStream:
    """The data stream of this handshake: the one prepared for it, else a new one on
    ``socket`` (default: the socket the node speaks to the DHT from)."""
    prepared = node.data_streams.pop(established.local_udx_id, None)
    if prepared is not None and (socket is None or prepared.socket is socket):
        return prepared
    if prepared is not None:  # the caller runs it on its own socket (a puncher's): forget
        prepared.socket.streams.pop(prepared.local_id, None)  # it quietly, the peer's lives on
    if node.closed:
        raise ConnectionError("the DHT node is closed")
    try:
        stream = _prepare_stream(node, socket or node.udx_socket, established)
    except ValueError as exc:  # the id is taken on that socket
        raise ConnectionError(str(exc)) from None
    del node.data_streams[established.local_udx_id]
    return stream


def discard_data_stream(node: UDPNode, established: Established) -> None:
    """Drop the data stream made for a handshake that will not be opened (a server over its
    connection caps): the peer's stream is destroyed, nothing more is buffered for it."""
    stream = node.data_streams.pop(established.local_udx_id, None)
    if stream is not None:
        stream.destroy()


async def open_data_stream(node: UDPNode, established: Established, key_pair: KeyPair, *,
                           socket: UDXSocket | None = None,
                           idle_timeout: float = IDLE_TIMEOUT,
                           max_frame: int = MAX_FRAME,
                           handshake_timeout: float | None = None) -> Connection:
    """The data phase: one UDX stream to the peer (``local_udx_id`` <-> ``remote_udx_id``)
    carrying secret-stream keyed by the IK, no second Noise (nat.md 1.6): a
    :class:`~cairn.replication.net.Connection` like a TCP one, returned once the peer's header
    frame arrived (within ``handshake_timeout``, default ``idle_timeout``; a peer that stalls
    after the IK costs no more). The stream runs on ``socket`` when given (a puncher's),
    else on the socket the handshake prepared it on (the server socket when this side said it
    is reachable there, else :attr:`UDPNode.udx_socket`)."""
    stream = _take_stream(node, established, socket)
    conn = Connection.from_established(stream.reader, stream.writer, key_pair, established,
                                       established.is_initiator, idle_timeout=idle_timeout,
                                       max_frame=max_frame, abort=stream.destroy)
    try:
        async with asyncio.timeout(handshake_timeout or idle_timeout):
            await conn.handshake()
    except BaseException:
        stream.destroy()  # at once: a peer that never started owes us no clean close
        raise
    return conn


PUNCH_WAIT = 15.0
"""Seconds a server waits for a punching client's first packet (hyperdht's server gives up 10 s
after the handshake; the client punches 10 rounds a second apart)."""


async def accept_data_stream(server: KeyServer, established: Established, key_pair: KeyPair, *,
                             idle_timeout: float = IDLE_TIMEOUT,
                             max_frame: int = MAX_FRAME,
                             handshake_timeout: float | None = None) -> Connection:
    """The server's side of the data phase for ``established`` (from :meth:`KeyServer.accept`):
    the stream the handshake prepared (:func:`open_data_stream`) or, for a client that punches
    to us (``holepunch_id`` set), the punch's stream on its own socket, closed with the
    connection. Raises what opening raises; a punch nobody completes is
    :class:`~cairn.hyperdht.holepunch.HolepunchAbortedError`."""
    if established.holepunch_id is None or not server.holepunch:
        return await open_data_stream(server.node, established, key_pair,
                                      idle_timeout=idle_timeout, max_frame=max_frame,
                                      handshake_timeout=handshake_timeout)
    reader, writer = await server.punched_stream(established, PUNCH_WAIT)
    stream = writer.stream
    conn = Connection.from_established(reader, writer, key_pair, established,
                                       established.is_initiator, idle_timeout=idle_timeout,
                                       max_frame=max_frame, abort=stream.destroy)
    conn.after_close.append(stream.socket.close)
    try:
        async with asyncio.timeout(handshake_timeout or idle_timeout):
            await conn.handshake()
    except BaseException:
        stream.destroy()
        stream.socket.close()
        raise
    return conn


async def connect_by_key(node: UDPNode, remote_public_key: bytes, key_pair: KeyPair, *,
                         public_address: Address | None = None,
                         rng: RandomSource | None = None,
                         relay_addresses: Sequence[Address] = (),
                         timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109
                         idle_timeout: float = IDLE_TIMEOUT,
                         max_frame: int = MAX_FRAME,
                         holepunch: bool = True,
                         ) -> tuple[Established, Connection]:
    """:func:`handshake_by_key`, then :func:`open_data_stream`, both within ``timeout``: the
    peer's proven key and the handshaken connection (what hypercore replication runs on).
    With both sides behind NATs (``holepunch``, the default), it punches first
    (:func:`cairn.hyperdht.puncher.punch_as_client`) and the stream runs on the puncher's
    socket, closed with the connection."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    established = await handshake_by_key(node, remote_public_key, key_pair,
                                         public_address=public_address, rng=rng,
                                         relay_addresses=relay_addresses, timeout=timeout,
                                         holepunch=holepunch, stream_socket=node.udx_socket)
    puncher = None
    try:
        if established.holepunch_id is not None:  # both behind NATs: punch, then the stream
            async with asyncio.timeout(max(0.1, deadline - loop.time())):
                puncher, path = await punch_as_client(node, established, rng=rng)
            established = dataclasses.replace(established, remote_address=path)
        conn = await open_data_stream(node, established, key_pair, idle_timeout=idle_timeout,
                                      max_frame=max_frame,
                                      socket=None if puncher is None else puncher.socket,
                                      handshake_timeout=max(0.1, deadline - loop.time()))
    except TimeoutError:
        if puncher is not None:
            puncher.close()
        raise TimeoutError(f"{remote_public_key.hex()[:16]}: the IK completed, but no data "
                           f"stream opened within {timeout:g} s") from None
    except BaseException:
        if puncher is not None:
            puncher.close()
        raise
    if puncher is not None:
        conn.after_close.append(puncher.close)
    return established, conn

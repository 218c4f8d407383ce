"""Replication over a byte stream with asyncio: serve logs, download from a server.

Replication is symmetric: whoever dialled, either end may serve its logs and either may read.
A :class:`Connection` is one handshaken secret stream over TCP (:func:`connect` dials,
:func:`accept` answers) or over a UDX stream of a hyperdht connect by key, keyed by its IK
(:meth:`Connection.from_established`, made by :func:`cairn.hyperdht.open_data_stream`);
:func:`serve_on` serves logs on a connection, :func:`read_on` reads
one log on it and :func:`follow_on` follows several logs live (every append the writer
announces is requested and verified as it happens). :func:`serve` and :func:`download` are the
classic roles over those (the reader dials the server).

The connection loop feeds a :class:`~cairn.replication.secret_stream.SecretStream` and a
:class:`~cairn.replication.peer.Replicator`; every read is bounded (a peer that says nothing for
``idle_timeout`` seconds is dropped; JS peers send keepalives every few seconds and so does
Cairn), frames are capped at ``max_frame``, and the first protocol violation closes the
connection with its reason logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cairn.crypto import KeyPair
from cairn.errors import CairnError, RemoteError
from cairn.log import Log
from cairn.replication.peer import Replicator
from cairn.replication.secret_stream import (
    Closed,
    CompletedHandshake,
    Handshaken,
    Message,
    SecretStream,
)

__all__ = ["ByteStreamReader", "ByteStreamWriter", "Connection", "DownloadResult",
           "PeerRefusedError", "accept", "connect", "download", "follow_on", "read_on", "serve",
           "serve_on"]

log = logging.getLogger(__name__)

READ_SIZE = 1 << 16
IDLE_TIMEOUT = 20.0
KEEPALIVE = 5.0
MAX_FRAME = 8 << 20


CLOSE_WAIT = 5.0  # seconds a close waits for the peer to take our end of the stream


class PeerRefusedError(RemoteError):
    """The peer's Noise key is not in the allowed list."""


class _Buffered(Protocol):
    def get_write_buffer_size(self) -> int: ...


class ByteStreamReader(Protocol):
    """What a connection reads from: ``asyncio.StreamReader``, ``cairn.udx.UDXReader``."""

    async def read(self, n: int = -1) -> bytes: ...


class ByteStreamWriter(Protocol):
    """What a connection writes to: ``asyncio.StreamWriter``, ``cairn.udx.UDXWriter``."""

    @property
    def transport(self) -> _Buffered: ...

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...

    def get_extra_info(self, name: str, default: object = None) -> object: ...


@dataclass(slots=True)
class DownloadResult:
    blocks: int
    length: int
    seconds: float
    # blocks below the server's length that it answered "no data" for and the replica still
    # lacks (cleared there, or damaged), and of those the ones it said are damaged
    refused: tuple[int, ...] = ()
    damaged: tuple[int, ...] = ()


class Connection:
    """One connection (TCP, or a UDX stream by key): the secret stream and the replicator on
    top. ``keepalive``: seconds without sending before an empty keepalive frame goes out;
    ``idle_timeout``: seconds without a whole message before the path is taken for dead.
    ``transport`` says which for status lines: ``"tcp"`` or ``"udx"``."""

    def __init__(
        self,
        reader: ByteStreamReader,
        writer: ByteStreamWriter,
        key_pair: KeyPair,
        is_initiator: bool,
        idle_timeout: float,
        max_frame: int,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.stream = SecretStream(
            is_initiator, key_pair, random.SystemRandom(), max_frame_size=max_frame
        )
        self.is_initiator = is_initiator
        self.idle_timeout = idle_timeout
        self.replicator: Replicator | None = None
        self.remote_key: bytes | None = None
        self._last_sent = time.monotonic()
        self._last_message = time.monotonic()
        self.poll: float | None = None  # servers wake this often to notice their logs grew
        self.refresh: Callable[[], None] | None = None
        self.keepalive = KEEPALIVE
        # messages that are not replication (a Cairn in-band device record, issue 19): a
        # message this returns True for is consumed before the replicator sees it
        self.extension: Callable[[bytes], bool] | None = None
        self.transport = "tcp"
        self._abort: Callable[[], None] | None = None
        self.after_close: list[Callable[[], None]] = []  # what the transport owns (a socket)
        self._held: deque[Handshaken | Message | Closed] = deque()  # read before handshake()
        self._keyed_elsewhere = False
        # what the replicator stores of one read happens inside one ``batch()`` (None: each
        # log's writes commit on their own)
        self.batch: Callable[[], contextlib.AbstractContextManager[object]] | None = None

    @classmethod
    def from_established(
        cls,
        reader: ByteStreamReader,
        writer: ByteStreamWriter,
        key_pair: KeyPair,
        handshake: CompletedHandshake,
        is_initiator: bool,
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        max_frame: int = MAX_FRAME,
        abort: Callable[[], None] | None = None,
        transport: str = "udx",
    ) -> Connection:
        """A connection whose keys come from a handshake run elsewhere (hyperdht's IK): no
        second Noise; :meth:`handshake` sends our header frame and returns once the peer's has
        arrived. ``abort`` ends the transport at once when a clean close does not finish."""
        conn = cls(reader, writer, key_pair, is_initiator, idle_timeout, max_frame)
        conn.stream.start_established(handshake)
        conn._keyed_elsewhere = True
        conn._abort = abort
        conn.transport = transport
        return conn

    def peer(self) -> str:
        """The peer's host as the transport sees it (``"?"`` when unknown)."""
        name = self.writer.get_extra_info("peername")
        return str(name[0]) if isinstance(name, tuple) else "?"

    async def _write(self) -> None:
        data = self.stream.data_to_send()
        if data:
            self.writer.write(data)
            self._last_sent = time.monotonic()
            if self.writer.transport.get_write_buffer_size():  # (else all went to the socket)
                # a peer that does not read what we send is a peer we stop sending to
                async with asyncio.timeout(self.idle_timeout):
                    await self.writer.drain()

    async def _event(self) -> Handshaken | Message | Closed | None:
        """The next event; None when it is time to look at our logs again (``poll``)."""
        while True:
            event = self._held.popleft() if self._held else self.stream.next_event()
            if event is not None:
                if isinstance(event, Message):
                    self._last_message = time.monotonic()
                return event
            await self._write()
            now = time.monotonic()
            if now - self._last_message > self.idle_timeout:
                # bytes may still trickle in: a whole message must arrive in time
                raise TimeoutError(f"no complete message for {self.idle_timeout:.0f} s")
            wait = min(self.idle_timeout - (now - self._last_message),
                       max(0.05, self.keepalive - (now - self._last_sent)))
            if self.poll is not None:
                wait = min(wait, self.poll)
            try:
                async with asyncio.timeout(wait):
                    chunk = await self.reader.read(READ_SIZE)
            except TimeoutError:
                if time.monotonic() - self._last_sent >= self.keepalive and self.replicator:
                    self.writer.write(self.stream.keepalive())
                    self._last_sent = time.monotonic()
                if self.poll is not None and self.replicator:
                    return None
                continue
            if not chunk:
                return Closed("the peer closed the connection")
            self.stream.receive_data(chunk)

    async def handshake(self) -> Handshaken:
        if not self.stream.started:
            self.stream.start()
        async with asyncio.timeout(self.idle_timeout):
            while True:
                event = await self._event()
                if event is None:
                    continue
                if isinstance(event, Handshaken):
                    if self._keyed_elsewhere:
                        await self._header()
                    self.remote_key = event.remote_public_key
                    self.replicator = Replicator(is_initiator=self.is_initiator,
                                                 handshake_hash=event.handshake_hash)
                    await self._write()  # the initiator's last message: the peer is done too
                    return event
                if isinstance(event, Closed):
                    raise ConnectionError(event.reason)

    async def _header(self) -> None:
        """Keys from elsewhere (:meth:`from_established`): our header goes out, and the peer's
        must arrive before the connection counts as open (a peer that stalls after the IK is
        bounded by the caller's handshake timeout, as a stalled Noise handshake is). What
        arrives with it is kept for :meth:`_event`."""
        await self._write()
        while not self.stream.header_received:
            chunk = await self.reader.read(READ_SIZE)
            if not chunk:
                raise ConnectionError("the peer ended the stream before its header")
            self.stream.receive_data(chunk)
            while (event := self.stream.next_event()) is not None:
                if isinstance(event, Closed):
                    raise ConnectionError(event.reason)
                self._held.append(event)

    async def run(self, done: Callable[[], bool] = lambda: False,
                  on_progress: Callable[[], None] | None = None) -> None:
        """Exchange messages until ``done()`` or the peer goes away. With ``batch`` set, what
        one read brings is verified and stored inside one ``batch()`` (a shared replica
        file's transaction: one commit for all the logs it touched)."""
        rep = self.replicator
        assert rep is not None
        event: Handshaken | Message | Closed | None = None
        while True:
            batch = self.batch is not None and isinstance(event, Message)
            with self.batch() if batch and self.batch else contextlib.nullcontext():
                if isinstance(event, Message):
                    self._receive(rep, event, on_progress)
                rep.flush()  # store what arrived before deciding whether we are done
                finished = done()  # may queue messages (wants): send after it, not before
                for m in rep.data_to_send():
                    self.stream.send(m)
            await self._write()
            if finished:
                return
            event = await self._event()
            if event is None:
                if self.refresh is not None:
                    self.refresh()  # logs added to the server since the peer connected
                rep.update()  # a served log may have grown: tell the peer
                continue
            if isinstance(event, Closed):
                raise ConnectionError(event.reason)

    def _receive(self, rep: Replicator, event: Message,
                 on_progress: Callable[[], None] | None) -> None:
        """One message and every other whole one already read, then ``on_progress``."""
        if self.extension is None or not self.extension(event.data):
            rep.receive_data(event.data)
        while (more := self.stream.next_event()) is not None:
            if isinstance(more, Message):
                if self.extension is None or not self.extension(more.data):
                    rep.receive_data(more.data)
            elif isinstance(more, Closed):
                raise ConnectionError(more.reason)
        while rep.next_event() is not None:
            pass  # done() and on_progress read the sessions' state, not their events
        if on_progress is not None:
            on_progress()

    async def receive(self) -> bytes:
        """The peer's next whole message, before replication runs (an in-band record):
        ConnectionError if the peer closes; the caller bounds the wait."""
        while True:
            event = await self._event()
            if isinstance(event, Message):
                return event.data
            if isinstance(event, Closed):
                raise ConnectionError(event.reason)

    def send(self, message: bytes) -> None:
        """Queue one message beside replication's (sent with the next write)."""
        self.stream.send(message)

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.stream.close()
            await self._write()
        self.writer.close()
        try:
            async with asyncio.timeout(CLOSE_WAIT):
                await self.writer.wait_closed()
        except TimeoutError:
            if self._abort is not None:  # (a UDX peer that is gone never acks our END)
                self._abort()
        except Exception:  # noqa: S110 - closing: the peer's errors do not matter any more
            pass
        finally:
            for done in self.after_close:
                done()
            self.after_close.clear()


_Link = Connection  # (the name the attack tests use)


async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, key_pair: KeyPair,
                 *, idle_timeout: float = IDLE_TIMEOUT, max_frame: int = MAX_FRAME,
                 handshake_timeout: float | None = None) -> Connection:
    """Answer the Noise handshake on an accepted TCP connection (within
    ``handshake_timeout``, default ``idle_timeout``); the caller closes it on error too."""
    conn = Connection(reader, writer, key_pair, False, idle_timeout, max_frame)
    async with asyncio.timeout(handshake_timeout or idle_timeout):
        await conn.handshake()
    return conn


async def connect(host: str, port: int, key_pair: KeyPair, *,
                  idle_timeout: float = IDLE_TIMEOUT, max_frame: int = MAX_FRAME,
                  expect: bytes | None = None,
                  handshake_timeout: float | None = None) -> Connection:
    """Dial ``host:port`` and do the Noise handshake as initiator. With ``expect``, the
    remote static key must be that one (a pinned key): :class:`PeerRefusedError` if not,
    before anything is sent or served."""
    async with asyncio.timeout(handshake_timeout or idle_timeout):
        reader, writer = await asyncio.open_connection(host, port)
        conn = Connection(reader, writer, key_pair, True, idle_timeout, max_frame)
        try:
            await conn.handshake()
            if expect is not None and conn.remote_key != expect:
                got = conn.remote_key.hex() if conn.remote_key else "?"
                raise PeerRefusedError(f"the peer's key {got[:16]}... is not the pinned "
                                       f"{expect.hex()[:16]}...")
        except BaseException:
            await conn.close()
            raise
    return conn


async def serve_on(conn: Connection, logs: Sequence[Log], poll: float = 0.2,
                   tick: Callable[[], None] | None = None) -> None:
    """Serve ``logs`` on this connection until the peer goes away (ConnectionError,
    TimeoutError) or the task is cancelled. ``logs`` may grow (a list the caller appends to):
    new logs are served within ``poll`` seconds, and every ``poll`` seconds a log that grew
    is announced to the peer (hypercore's upgrade), so a following reader gets appends live.
    ``tick`` is called as often (the dialler resends its in-band record when it changed)."""
    rep = conn.replicator
    assert rep is not None, "serve_on needs a handshaken connection"
    conn.poll = poll

    def refresh() -> None:
        for lg in list(logs):
            if not rep.serves(lg):
                rep.add_log(lg)
        if tick is not None:
            tick()

    refresh()
    conn.refresh = refresh
    await conn.run()


async def serve(
    logs: Sequence[Log],
    key_pair: KeyPair,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    allow: Sequence[bytes] | None = None,
    ready: Callable[[tuple[str, int]], None] | None = None,
    idle_timeout: float = IDLE_TIMEOUT,
    max_frame: int = MAX_FRAME,
    poll: float = 0.2,
) -> None:
    """Serve ``logs`` to anyone who knows their keys (and, with ``allow``, only to those Noise
    public keys) until cancelled. ``logs`` may grow while serving (a list the caller appends
    to): connections pick up new logs within ``poll`` seconds. Each connection is
    independent: one misbehaving peer is dropped with its reason logged while the others go
    on. Every ``poll`` seconds each connection checks whether a log grew (appended by this
    process) and tells its peer."""
    allowed = set(allow) if allow is not None else None

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = Connection(reader, writer, key_pair, False, idle_timeout, max_frame)
        peer = writer.get_extra_info("peername")
        try:
            async with asyncio.timeout(idle_timeout):
                await conn.handshake()
            if allowed is not None and conn.remote_key not in allowed:
                raise PeerRefusedError(
                    f"peer key {conn.remote_key.hex() if conn.remote_key else '?'} is not allowed"
                )
            await serve_on(conn, logs, poll)
        except (RemoteError, CairnError, ConnectionError, TimeoutError, OSError) as exc:
            log.info("peer %s dropped: %s: %s", peer, type(exc).__name__, exc)
        except Exception:
            # a bug met on one connection ends that connection, never the server
            log.exception("peer %s dropped on an unexpected error", peer)
        finally:
            await conn.close()

    # one task per connection, in a group: when serving is cancelled the group cancels them
    # all and waits for each to close its link. The socket is bound before the group is
    # entered, so a bind error (a port in use) reaches the caller as itself, not in a group;
    # it accepts only once the group is there.
    connections = asyncio.TaskGroup()

    def spawn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.create_task(handle(reader, writer))

    server = await asyncio.start_server(spawn, host, port, start_serving=False)
    async with connections, server:
        await server.start_serving()
        sock = server.sockets[0].getsockname()
        if ready is not None:
            ready((sock[0], sock[1]))
        await server.serve_forever()


async def follow_on(conn: Connection, replicas: Callable[[], Sequence[Log]],
                    on_progress: Callable[[Log], None], poll: float = 1.0, *,
                    start: Callable[[Log], int] | None = None) -> None:
    """Read the logs ``replicas()`` names on this connection and keep following them: each
    log's channel is opened, everything up to the writer's length is requested, and every
    later append the writer announces is requested as it comes, each block verified before
    it is stored. ``on_progress(replica)`` after each batch of messages (and every ``poll``
    seconds); logs ``replicas()`` adds later are opened within ``poll`` seconds; ``start(log)``:
    the first block of a log to ask for (blocks below are never asked for again). Returns
    never: ends with the connection (ConnectionError, TimeoutError) or cancellation."""
    rep = conn.replicator
    assert rep is not None, "follow_on needs a handshaken connection"
    wanted: dict[bytes, int] = {}  # discovery key -> requested up to
    opened: dict[bytes, Log] = {}

    def refresh() -> None:
        for lg in list(replicas()):
            if lg.discovery_key not in opened:
                opened[lg.discovery_key] = lg
                rep.open(lg).follow = True
                first = lg.contiguous_length
                if start is not None:  # (past a pruned prefix, contiguous says 0)
                    first = max(first, min(start(lg), lg.length))
                while first < lg.length and lg.has(first):
                    first += 1
                wanted[lg.discovery_key] = first

    def progress() -> None:
        for dk, lg in opened.items():
            session = rep.session(dk)
            if session is None:
                continue
            if session.closed_reason is not None:
                raise ConnectionError(f"{lg.key.hex()[:16]}: {session.closed_reason}")
            if session.synced and session.remote_length > wanted[dk]:
                session.want(wanted[dk], session.remote_length)
                wanted[dk] = session.remote_length
            on_progress(lg)

    def tick() -> None:
        refresh()
        progress()

    refresh()
    conn.poll = poll
    conn.refresh = tick
    await conn.run(on_progress=progress)


async def read_on(
    conn: Connection,
    replica: Log,
    *,
    start: int = 0,
    end: int | None = None,
    tail: bool = False,
    since: float | None = None,
    until_time: float | None = None,
    on_progress: Callable[[Log], None] | None = None,
    until: Callable[[Log], bool] | None = None,
) -> DownloadResult:
    """Read blocks of ``replica``'s log on this connection (see :func:`download`)."""
    t0 = time.monotonic()
    assert conn.replicator is not None, "read_on needs a handshaken connection"
    session = conn.replicator.open(replica)
    before = session.stats.blocks_downloaded
    wanted_upto = start
    timed = since is not None or until_time is not None
    seeks: list[int] = []
    window: list[int] = []

    def target() -> int:
        return session.remote_length if end is None else min(end, session.remote_length)

    def time_window() -> bool:
        """Resolve [since, until_time) to block indexes; True once known."""
        nonlocal wanted_upto
        if window:
            return True
        if not (session.synced and replica.length >= session.remote_length > 0):
            return False
        if not session.remote_cairn:
            raise ConnectionError("a time window needs a Cairn server (time seek)")
        if not seeks:
            seeks.append(session.seek_time(-math.inf if since is None else since))
            seeks.append(session.seek_time(math.inf if until_time is None else until_time))
        if not all(q in session.seek_results for q in seeks):
            return False
        first = session.seek_results[seeks[0]]
        last = session.seek_results[seeks[1]]
        if until_time is not None and last < replica.length:
            last += 1  # that frame may hold samples before until_time
        window.extend((first, min(last, replica.length)))
        wanted_upto = first
        return True

    def progress() -> None:
        nonlocal wanted_upto
        if session.closed_reason is not None:
            raise ConnectionError(session.closed_reason)
        last = (window[1] if time_window() else wanted_upto) if timed else target()
        if session.synced and last > wanted_upto:
            session.want(wanted_upto, last)
            wanted_upto = last
        if on_progress is not None:
            on_progress(replica)

    def done() -> bool:
        if session.closed_reason is not None:
            return True
        if until is not None and until(replica):
            return True
        if tail or not session.synced:
            return False
        if timed:
            return bool(window) and session.pending == 0 and wanted_upto >= window[1]
        return (replica.length >= session.remote_length and session.pending == 0
                and wanted_upto >= target())

    await conn.run(done, progress)
    if session.closed_reason is not None:
        raise ConnectionError(session.closed_reason)
    refused = tuple(sorted(i for i in session.refused if not replica.has(i)))
    return DownloadResult(
        session.stats.blocks_downloaded - before, replica.length, time.monotonic() - t0,
        refused, tuple(i for i in refused if i in session.remote_damaged),
    )


async def download(
    host: str,
    port: int,
    replica: Log,
    key_pair: KeyPair,
    *,
    start: int = 0,
    end: int | None = None,
    tail: bool = False,
    since: float | None = None,
    until_time: float | None = None,
    idle_timeout: float = IDLE_TIMEOUT,
    on_progress: Callable[[Log], None] | None = None,
    until: Callable[[Log], bool] | None = None,
) -> DownloadResult:
    """Download blocks [start, end) of ``replica``'s log from a server (``end`` None: up to the
    server's length), every block verified before it is stored. What the replica holds already
    is not asked for again. With ``tail``, keep following new blocks until ``until`` says stop
    (or forever). With ``since`` / ``until_time`` (seconds; frames in time order; a Cairn
    server), the blocks are the frames holding samples in [since, until_time): the server finds
    both ends and proves them."""
    t0 = time.monotonic()
    reader, writer = await asyncio.open_connection(host, port)
    conn = Connection(reader, writer, key_pair, True, idle_timeout, MAX_FRAME)
    try:
        await conn.handshake()
        got = await read_on(conn, replica, start=start, end=end, tail=tail, since=since,
                            until_time=until_time, on_progress=on_progress, until=until)
        got.seconds = time.monotonic() - t0
        return got
    finally:
        await conn.close()

"""Edges dial in (issue 19): the gateway's replication listener, ``[replication].listen``.

An edge behind a NAT cannot be dialled; it dials the gateway instead and keeps that connection
open, and the gateway reads its logs on it (replication is symmetric: the reader requests
whatever the direction). Admission happens right after the Noise handshake: the remote static
key must be the one an enrolled device's record names (field 8 of the record, signed with the
device's record key, :meth:`Collector.admit`); anything else is closed with one log line
(rate-limited) and nothing of it is read or stored.

What a stranger can cost is bounded: at most ``max_connections`` connections at once (beyond,
a new one is closed before any cryptography), at most ``per_source`` from one IP address (many
honest edges share one carrier-grade NAT address: the default is generous), and
``handshake_timeout`` seconds to finish the handshake. An admitted connection is then the
device's live link (:meth:`Collector.follow`): a second connection of the same device replaces
the first.

:meth:`EdgeListener.admit` takes a handshaken :class:`~cairn.replication.net.Connection` and
knows nothing of TCP: another transport (hyperdht connect by key) hands its connections to it.

Connect by key (``[replication].by_key``, decision 0013): :meth:`EdgeListener.by_key_firewall`
is the hyperdht server's firewall hook, the same rule as admission (a key an enrolled device's
record names), applied before the server answers the IK; :meth:`EdgeListener.take_by_key` takes
the handshakes that complete, opens each one's UDX data stream (secret-stream keyed by the IK)
and hands the connection to :meth:`EdgeListener.admit`, as a TCP dial-in. The caps, the
handshake timeout and the per-source count are shared by both transports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from cairn.crypto import KeyPair
from cairn.dht.aio import UDPNode
from cairn.errors import CairnError, RemoteError
from cairn.fleet.inband import is_in_band
from cairn.hyperdht import Established, KeyServer, accept_data_stream, discard_data_stream
from cairn.hyperdht.messages import Firewall, NoisePayload
from cairn.replication.net import Connection, PeerRefusedError, accept
from cairn_gateway.collect import Collector, Device, one_line
from cairn_gateway.config import Policy

__all__ = ["EdgeListener", "ListenerLimits"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListenerLimits:
    """Bounds on what dialling in may cost (``[replication]`` in docs/gateway.md)."""

    max_connections: int = 2000
    per_source: int = 256
    handshake_timeout: float = 10.0
    idle_timeout: float = 60.0  # no whole message this long: the path is dead
    keepalive: float = 20.0  # an empty frame after this long without sending
    # a key no DHT record names: how long to wait for the edge's in-band record (sent at once
    # after the handshake, one round trip away)
    in_band_wait: float = 2.0


class _Quiet:
    """One log line per ``every`` seconds per kind; the lines held back are counted in the
    next one (a flood of refused keys cannot flood the log)."""

    def __init__(self, every: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.every = every
        self.clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def warning(self, kind: str, text: str) -> None:
        now = self.clock()
        if now - self._last.get(kind, -self.every) < self.every:
            self._held[kind] = self._held.get(kind, 0) + 1
            return
        self._last[kind] = now
        held = self._held.pop(kind, 0)
        log.warning("%s%s", text, f" (and {held} more like it)" if held else "")


class EdgeListener:
    """Accepts edges' connections and hands admitted ones to the collector."""

    def __init__(self, collector: Collector, key_pair: KeyPair,
                 enrolled: Callable[[], set[bytes]], *,
                 limits: ListenerLimits | None = None,
                 policy: Callable[[str], Policy] | None = None) -> None:
        self.collector = collector
        self.key_pair = key_pair
        self.enrolled = enrolled
        self.limits = limits if limits is not None else ListenerLimits()
        self.policy = policy
        self.open = 0
        self.by_source: dict[str, int] = {}
        self.refused = 0  # connections refused (caps, handshakes, keys)
        self.links: dict[bytes, Connection] = {}  # record key -> its live connection
        self.quiet = _Quiet()
        self.by_key_refused = 0  # hyperdht handshakes the firewall refused
        self.by_key_dropped = 0  # hyperdht handshakes completed whose data stream never opened
        self.by_key_admitted = 0  # by-key data streams handed to admission
        self.by_key_unreachable = 0  # handshakes with no path (both sides behind NATs)
        self.in_band_refused = 0  # in-band records refused (signature, seq, key, garbage)

    async def run(self, host: str, port: int,
                  ready: Callable[[tuple[str, int]], object] | None = None) -> None:
        """Listen until cancelled; each connection a task of one group. The socket is bound
        before the group is entered: a port in use reaches the caller as the OSError itself."""
        connections = asyncio.TaskGroup()

        def spawn(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            connections.create_task(self._handle(reader, writer))

        server = await asyncio.start_server(spawn, host, port, start_serving=False)
        async with connections, server:
            await server.start_serving()
            sock = server.sockets[0].getsockname()
            log.info("edges may dial in on %s:%d", sock[0], sock[1])
            if ready is not None:
                ready((sock[0], sock[1]))
            await server.serve_forever()

    def _take_slot(self, source: str, transport: str) -> bool:
        """Count a new connection from ``source`` against the caps (both transports share
        them); False, with one rate-limited line, when it is over."""
        lim = self.limits
        if self.open >= lim.max_connections or self.by_source.get(source, 0) >= lim.per_source:
            self.refused += 1
            self.quiet.warning("cap", f"edge connection ({transport}) from {source} refused: "
                               f"{self.open} open (cap {lim.max_connections}), "
                               f"{self.by_source.get(source, 0)} from it "
                               f"(cap {lim.per_source})")
            return False
        self.open += 1
        self.by_source[source] = self.by_source.get(source, 0) + 1
        return True

    def _free_slot(self, source: str) -> None:
        self.open -= 1
        left = self.by_source.pop(source, 1) - 1
        if left:
            self.by_source[source] = left

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        lim = self.limits
        if not self._take_slot(source, "tcp"):
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            return
        opened = await self._open_and_admit(
            source, accept(reader, writer, self.key_pair, idle_timeout=lim.idle_timeout,
                           handshake_timeout=lim.handshake_timeout),
            "handshake", f"edge connection from {source}: no handshake")
        if not opened:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _open_and_admit(self, source: str, opening: Awaitable[Connection], kind: str,
                              failed: str) -> bool:
        """Either transport's connection from ``source``, holding a slot: ``opening`` (its
        handshake, bounded), then :meth:`admit` until it ends; the slot is freed and the
        connection closed however it ends. False when it never opened (counted as refused,
        one ``failed`` line per kind and period)."""
        conn: Connection | None = None
        try:
            try:
                conn = await opening
            except (RemoteError, CairnError, ConnectionError, TimeoutError, OSError) as exc:
                self.refused += 1
                self.quiet.warning(kind, f"{failed} ({one_line(exc) or type(exc).__name__})")
                return False
            if conn.transport == "udx":
                self.by_key_admitted += 1
            await self.admit(conn, source)
            return True
        finally:
            self._free_slot(source)
            if conn is not None:
                await conn.close()

    async def admit(self, conn: Connection, source: str = "?") -> None:
        """A handshaken connection from an edge, whatever the transport: refused (one log
        line) unless its key is an enrolled device's, else followed live until it ends. The
        caller closes it.

        The device's record is the one read from the DHT, else the one the edge sent in-band
        as its first message (:mod:`cairn.fleet.inband`: an edge whose firewall drops UDP has
        none on the DHT), checked by :meth:`Collector.in_band`; a later in-band record (its
        streams changed) rebinds the device while it is followed."""
        key = conn.remote_key
        enrolled = self.enrolled()
        try:
            dev = self.collector.admit(key, enrolled)
        except PeerRefusedError as exc:
            try:
                dev = await self._first_in_band(conn, enrolled)
            except PeerRefusedError as why:
                self.refused += 1
                self.quiet.warning("key", f"edge {key.hex()[:16] if key else '?'} from "
                                   f"{source} refused: {exc}; {why}")
                return
        record_key = dev.record_key

        def extension(message: bytes) -> bool:
            if not is_in_band(message):
                return False
            try:
                got = self.collector.in_band(message, conn.remote_key, self.enrolled())
                if got.record_key != record_key:
                    raise PeerRefusedError(f"in-band record refused: record key "
                                           f"{got.record_key.hex()[:16]} is not the "
                                           "connection's device's")
            except PeerRefusedError as why:
                self.in_band_refused += 1
                self.quiet.warning("in_band", f"device {record_key.hex()[:16]} from {source}: "
                                   f"{why}")
            return True

        conn.extension = extension
        conn.keepalive = self.limits.keepalive
        old = self.links.get(dev.record_key)
        self.links[dev.record_key] = conn
        if old is not None:
            log.info("device %s dialled in again: the older connection is closed",
                     dev.record_key.hex()[:16])
            old.writer.close()  # its task ends on the closed stream
        try:
            await self.collector.follow(dev, conn, self.policy)
        except PeerRefusedError as exc:
            self.refused += 1
            self.quiet.warning("streams", f"device {dev.record_key.hex()[:16]} refused: {exc}")
        except (RemoteError, CairnError, ConnectionError, TimeoutError, OSError) as exc:
            log.info("device %s: connection ended: %s", dev.record_key.hex()[:16],
                     one_line(exc))
        except Exception:  # a bug on one connection ends that connection, never the listener
            log.exception("device %s: connection ended on an unexpected error",
                          dev.record_key.hex()[:16])
        finally:
            if self.links.get(dev.record_key) is conn:
                del self.links[dev.record_key]

    async def _first_in_band(self, conn: Connection, enrolled: set[bytes]) -> Device:
        """The device the connection's first message (an in-band record) names, checked and
        bound; PeerRefusedError (why) if the message is none, or is refused."""
        try:
            async with asyncio.timeout(min(self.limits.in_band_wait,
                                           self.limits.handshake_timeout)):
                message = await conn.receive()
        except TimeoutError:
            raise PeerRefusedError("no in-band record sent") from None
        except (RemoteError, CairnError, ConnectionError, OSError) as exc:
            raise PeerRefusedError(f"no in-band record ({one_line(exc)})") from None
        if not is_in_band(message):
            raise PeerRefusedError("no in-band record sent (the first message is another)")
        try:
            return self.collector.in_band(message, conn.remote_key, enrolled)
        except PeerRefusedError:
            self.in_band_refused += 1
            raise

    # -- connect by key (hyperdht) ------------------------------------------------------------

    def by_key_firewall(self, remote_public_key: bytes, payload: NoisePayload,
                        address: tuple[str, int]) -> bool:
        """The hyperdht server's firewall: True (refuse) unless the key is one an enrolled
        device's record names, as :meth:`admit` decides for TCP. Refusals are counted and
        logged by the server (one line per few seconds)."""
        del payload
        try:
            self.collector.admit(remote_public_key, self.enrolled())
        except PeerRefusedError:
            self.by_key_refused += 1
            self.refused += 1
            return True
        except Exception:  # a broken store refuses, never breaks the DHT node's callback
            log.exception("connect by key: the admission check failed on %s:%d", *address)
            self.by_key_refused += 1
            return True
        return False

    async def take_by_key(self, server: KeyServer, node: UDPNode) -> None:
        """Until cancelled: each handshake the firewall let through gets its UDX data stream
        (the peer's header within ``handshake_timeout``) and goes to :meth:`admit`, each in a
        task of one group, under the same caps as TCP dial-ins."""
        async with asyncio.TaskGroup() as connections:
            while True:
                established = await server.accept()
                if (established.holepunch_id is None and server.core.public_address is None
                        and established.remote_payload.firewall != Firewall.OPEN):
                    # neither side reachable and no punch (the server punches unless told
                    # not to): the client stops after the IK (an edge then dials TCP)
                    self.by_key_unreachable += 1
                    discard_data_stream(node, established)
                    continue
                source = established.remote_address[0]
                if not self._take_slot(source, "udx"):
                    discard_data_stream(node, established)
                    continue
                connections.create_task(self._handle_by_key(established, source, server),
                                        name=f"by key {established.remote_public_key.hex()[:16]}")

    async def _handle_by_key(self, established: Established, source: str,
                             server: KeyServer) -> None:
        lim = self.limits
        opened = await self._open_and_admit(
            source, accept_data_stream(server, established, self.key_pair,
                                       idle_timeout=lim.idle_timeout,
                                       handshake_timeout=lim.handshake_timeout),
            "by_key", f"connect by key from {established.remote_public_key.hex()[:16]} at "
                      f"{source}: no data stream")
        if not opened:
            self.by_key_dropped += 1

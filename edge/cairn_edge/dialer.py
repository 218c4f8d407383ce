"""The edge dials out (issue 19): one standing connection to each gateway of the config.

An edge behind a home router or a carrier-grade NAT cannot be dialled, but it can dial: for
each key in ``[replication].gateways`` it opens a connection (to the ``[replication].dial``
addresses, else to those the gateway's signed address record on the DHT names,
:mod:`cairn.fleet.gateway_record`), checks right after the Noise handshake that the remote key
is that pinned key (anything else is refused: an impersonator gets nothing), and serves its
logs on it exactly as it serves a gateway that dialled in (:func:`cairn.replication.net.serve_on`):
the gateway reads, and each append is announced to it as it happens.

The connection is kept alive with an empty secret-stream frame after ``keepalive`` seconds
without sending (below NAT idle timeouts); a path that carries no whole message for
``dead_after`` seconds is taken for dead. Then (or when a dial fails) the edge dials again after
a jittered exponential backoff (``backoff_initial`` doubling up to ``backoff_max``; reset once a
connection has lived ``backoff_max`` seconds).

Two transports (``[replication] transport``): with a DHT node the edge first connects to the
gateway **by key** the hyperdht way (:func:`open_by_key`: FIND_PEER, the Noise IK through the
node holding the gateway's announce, then a UDX stream on the DHT's own UDP port carrying
secret-stream keyed by the IK), which needs no address and no TCP port; when that fails (UDP
blocked, no announce, the gateway does not serve by key) within ``by_key_timeout`` it falls
back to **TCP** (:func:`open_to_gateway`) at once, says why in the link's status and the log,
and tries by key again only after ``KEY_RETRY`` seconds. ``"key"`` uses only the first,
``"tcp"`` only the second. Whatever carried it, the connection is the same
:class:`~cairn.replication.net.Connection` and the same serving runs on it.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from cairn.crypto import KeyPair
from cairn.dht.aio import UDPNode
from cairn.dht.api import DHT
from cairn.errors import CairnError, RemoteError
from cairn.fleet.gateway_record import GatewayRecordError, decode_gateway_record
from cairn.hyperdht import PeerConnectionFailedError, PeerNotFoundError, connect_by_key
from cairn.log import Log
from cairn.replication.net import Connection, connect, serve_on

__all__ = ["TRANSPORTS", "Dialer", "GatewayLink", "find_on_dht", "open_by_key",
           "open_to_gateway"]

log = logging.getLogger(__name__)

KEEPALIVE = 20.0
DEAD_AFTER = 50.0
BACKOFF_INITIAL = 1.0
BACKOFF_MAX = 30.0
POLL = 0.05  # seconds: how soon an append is announced to the gateway (live push)
BY_KEY_TIMEOUT = 10.0  # seconds a connect by key may take before TCP is tried
KEY_RETRY = 300.0  # seconds after a failed connect by key before "auto" tries it again
TRANSPORTS = ("auto", "key", "tcp")

Opener = Callable[[tuple[str, int], bytes, KeyPair], Awaitable[Connection]]
KeyOpener = Callable[[bytes, KeyPair], Awaitable[Connection]]
Finder = Callable[[bytes], Awaitable[list[tuple[str, int]]]]


async def open_to_gateway(address: tuple[str, int], gateway_key: bytes,
                          key_pair: KeyPair) -> Connection:
    """A handshaken connection to the gateway with this (pinned) key at ``address``; raises
    PeerRefusedError for another key, OSError / TimeoutError when it cannot be reached."""
    return await connect(address[0], address[1], key_pair, expect=gateway_key,
                         idle_timeout=DEAD_AFTER, handshake_timeout=10.0)


def open_by_key(node: UDPNode, timeout: float = BY_KEY_TIMEOUT,
                retry: float = 1.0) -> KeyOpener:
    """A connection to the gateway by its key on ``node`` (hyperdht connect, then UDX): the
    IK proves the gateway's key, so nothing else is pinned. Within ``timeout`` seconds a
    connect the gateway did not answer (its firewall may not know our record yet: it reads
    it, and retries are let in) is tried again after ``retry`` seconds; then the last error
    (a ConnectError), or TimeoutError."""

    async def opener(gateway_key: bytes, key_pair: KeyPair) -> Connection:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            try:
                _, conn = await connect_by_key(node, gateway_key, key_pair, timeout=left,
                                               idle_timeout=DEAD_AFTER)
                return conn
            except (PeerConnectionFailedError, PeerNotFoundError):
                if deadline - loop.time() < retry:
                    raise
            await asyncio.sleep(retry)

    return opener


@dataclass(slots=True)
class GatewayLink:
    """What the edge knows of its path to one gateway (for its status)."""

    key: bytes
    connected: bool = False
    address: tuple[str, int] | None = None
    since: float | None = None  # (time.time) connected since, or failing since
    error: str | None = None
    connections: int = 0
    failures: int = 0  # in a row
    history: list[str] = field(default_factory=list)
    transport: str | None = None  # "udx" (by key) or "tcp": what carries the connection
    by_key_error: str | None = None  # why the last connect by key failed ("auto" fell back)
    by_key_failed_at: float | None = None  # (loop time)

    def as_dict(self) -> dict[str, object]:
        return {"gateway": self.key.hex(), "connected": self.connected,
                "transport": self.transport,
                "address": None if self.address is None else f"{self.address[0]}:"
                f"{self.address[1]}", "since": self.since, "error": self.error,
                "by_key_error": self.by_key_error,
                "connections": self.connections, "failures": self.failures}


class Dialer:
    """Keeps one connection to each pinned gateway and serves ``logs`` on it."""

    def __init__(self, key_pair: KeyPair, gateways: Sequence[bytes], logs: Sequence[Log], *,
                 dial: Sequence[tuple[str, int]] = (), find: Finder | None = None,
                 opener: Opener = open_to_gateway, keepalive: float = KEEPALIVE,
                 backoff_initial: float = BACKOFF_INITIAL, backoff_max: float = BACKOFF_MAX,
                 rng: random.Random | None = None,
                 wall: Callable[[], float] | None = None,
                 on_change: Callable[[], None] | None = None,
                 credential: Callable[[], bytes | None] | None = None,
                 by_key: KeyOpener | None = None, transport: str = "auto") -> None:
        import time

        if transport not in TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(TRANSPORTS)}, got "
                             f"{transport!r}")
        self.key_pair = key_pair
        self.gateways = list(gateways)
        self.logs = logs
        self.dial = list(dial)
        self.find = find
        self.opener = opener
        self.keepalive = keepalive
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.rng = rng if rng is not None else random.Random()  # noqa: S311 - jitter
        self.wall = wall if wall is not None else time.time
        self.links = {k: GatewayLink(k) for k in self.gateways}
        self.on_change = on_change  # told when a link connects or fails (status lines)
        self.poll = POLL
        # the in-band device record (:mod:`cairn.fleet.inband`): sent first on each connection
        # and again when it changes, so a gateway admits an edge that has no DHT record
        self.credential = credential
        # connect by key (hyperdht + UDX) when there is a DHT node: first ("auto", then TCP)
        # or only ("key"); "tcp" never
        self.by_key = by_key if transport != "tcp" else None
        self.transport = transport
        self.key_retry = KEY_RETRY

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    async def run(self) -> None:
        """Dial every gateway, forever (until cancelled)."""
        async with asyncio.TaskGroup() as tg:
            for k in self.gateways:
                tg.create_task(self._keep(k), name=f"dial gateway {k.hex()[:16]}")

    async def addresses(self, key: bytes) -> list[tuple[str, int]]:
        """Where to dial this gateway: the config's ``dial``, else its DHT address record."""
        if self.dial:
            return list(self.dial)
        if self.find is None:
            return []
        return await self.find(key)

    def delay(self, failures: int) -> float:
        """Jittered exponential backoff: a wait drawn from [d/2, d], d doubling to the cap."""
        d = min(self.backoff_max, self.backoff_initial * 2.0 ** min(failures - 1, 32))
        return d * (0.5 + 0.5 * self.rng.random())

    async def _keep(self, key: bytes) -> None:
        link = self.links[key]
        loop = asyncio.get_running_loop()
        while True:
            conn = await self._open(link)
            if conn is not None:
                started = loop.time()
                link.connected, link.since, link.error = True, self.wall(), None
                link.connections += 1
                log.info("connected to gateway %s at %s:%d over %s", key.hex()[:16],
                         *link.address or ("?", 0), link.transport)
                self._changed()
                try:
                    conn.keepalive = self.keepalive
                    await serve_on(conn, self.logs, self.poll, self._in_band(conn))
                    why = "the gateway closed the connection"
                except (RemoteError, CairnError, ConnectionError, TimeoutError, OSError) as exc:
                    why = f"{type(exc).__name__}: {exc}"
                finally:
                    await conn.close()
                link.connected, link.since, link.error = False, self.wall(), why
                log.warning("gateway %s: connection lost (%s): dialling again",
                            key.hex()[:16], why)
                self._changed()
                if loop.time() - started < self.backoff_max:
                    # a connection that keeps dying (a gateway that refuses us right after the
                    # handshake) backs off too, doubling as a failed dial does
                    link.failures += 1
                else:
                    link.failures = 0
            else:
                link.failures += 1
            if link.failures:
                await asyncio.sleep(self.delay(link.failures))

    def _in_band(self, conn: Connection) -> Callable[[], None] | None:
        """Send the in-band record now (before replication) and return the check that
        resends it when it changed."""
        credential = self.credential
        if credential is None:
            return None
        sent: list[bytes | None] = [None]

        def tick() -> None:
            try:
                message = credential()
            except Exception as exc:  # (no record yet, a store error: the DHT path remains)
                log.debug("no in-band record: %s", exc)
                return
            if message is not None and message != sent[0]:
                conn.send(message)
                sent[0] = message

        tick()
        return tick

    async def _open(self, link: GatewayLink) -> Connection | None:
        """A connection to the gateway, by key first when there is a DHT node (and "auto"
        has not seen it fail in the last ``key_retry`` seconds), else (or then) over TCP at
        one of its addresses; None when neither works (why: the link's error, logged when it
        changes)."""
        if self.by_key is not None:
            conn = await self._open_by_key(link)
            if conn is not None or self.transport == "key":
                return conn
        elif self.transport == "key":
            self._failed(link, "connect by key needs a DHT node ([dht] bootstrap)")
            return None
        return await self._open_tcp(link)

    async def _open_by_key(self, link: GatewayLink) -> Connection | None:
        assert self.by_key is not None
        loop = asyncio.get_running_loop()
        if (self.transport == "auto" and link.by_key_failed_at is not None
                and loop.time() - link.by_key_failed_at < self.key_retry):
            return None  # it failed a moment ago: TCP now, by key again later
        try:
            conn = await self.by_key(link.key, self.key_pair)
        except (RemoteError, CairnError, ConnectionError, TimeoutError, OSError) as exc:
            why = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if why != link.by_key_error:
                log.warning("gateway %s: connect by key failed (%s)%s", link.key.hex()[:16], why,
                            ": trying TCP" if self.transport == "auto" else "")
            link.by_key_error, link.by_key_failed_at = why, loop.time()
            if self.transport == "key":
                self._failed(link, f"connect by key: {why}")
            return None
        link.by_key_error = link.by_key_failed_at = None
        peer = conn.writer.get_extra_info("peername")
        link.address = (str(peer[0]), int(peer[1])) if isinstance(peer, tuple) else None
        link.transport = "udx"
        return conn

    async def _open_tcp(self, link: GatewayLink) -> Connection | None:
        try:
            addresses = await self.addresses(link.key)
        except (CairnError, OSError, TimeoutError, GatewayRecordError) as exc:
            self._failed(link, f"its address record: {type(exc).__name__}: {exc}")
            return None
        if not addresses:
            self._failed(link, "no address to dial (no [replication].dial, and no address "
                         "record of it on the DHT)" + (f"; by key: {link.by_key_error}"
                                                        if link.by_key_error else ""))
            return None
        errors = []
        for address in addresses:
            try:
                conn = await self.opener(address, link.key, self.key_pair)
            except (RemoteError, CairnError, ConnectionError, TimeoutError, OSError) as exc:
                errors.append(f"{address[0]}:{address[1]}: {type(exc).__name__}: {exc}")
                continue
            link.address = address
            link.transport = "tcp"
            return conn
        self._failed(link, "; ".join(errors) + (f" (and by key: {link.by_key_error})"
                                                if link.by_key_error else ""))
        return None

    def _failed(self, link: GatewayLink, error: str) -> None:
        changed = error != link.error
        if changed:
            log.warning("gateway %s: cannot connect: %s", link.key.hex()[:16], error)
        elif link.failures:
            log.debug("gateway %s: still cannot connect: %s", link.key.hex()[:16], error)
        if link.error is None or link.connected:
            link.since = self.wall()
        link.connected, link.error = False, error
        if changed:
            self._changed()


async def find_on_dht(dht: DHT, key: bytes) -> list[tuple[str, int]]:
    """A gateway's addresses from its signed address record (the DHT checks the signature is
    ``key``'s)."""
    got = await dht.mutable_get(key)
    if got is None:
        return []
    return decode_gateway_record(got.value)

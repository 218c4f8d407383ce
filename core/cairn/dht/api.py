"""The DHT as an application uses it: ``async with DHT.start(...) as dht``, then awaitable calls.

::

    async with DHT.start(bootstrap=[("127.0.0.1", 7423)]) as dht:
        await dht.mutable_put(key_pair, b"21.5 C", seq=7)
        record = await dht.mutable_get(key_pair.public_key, min_seq=7)
        async for peer in dht.lookup(topic):
            ...

Every operation waits for the node's first bootstrap, then runs one query of the sans-I/O core
(:mod:`cairn.dht.hyper`) through the asyncio adapter (:mod:`cairn.dht.aio`), bounded by
``timeout`` seconds (10 by default) as a whole; when time runs out it raises :class:`TimeoutError`
and the query is stopped. The exceptions, by whose fault they are::

    CairnError
     ├── LocalError
     │    └── NodeClosedError   an operation on (or waiting on) a closed node
     ├── ServiceError
     │    └── UnreachableError  no DHT node answered at all (check the bootstrap addresses)
     └── RemoteError
          └── NotStoredError    nodes answered, none stored the record
               ├── SeqTooLowError   they hold a higher seq for this key
               └── SeqReusedError   they hold this seq with another value

:class:`DHTError` (the network did not do what was asked) is a second base of both
:class:`UnreachableError` and :class:`NotStoredError`, so ``except DHTError`` catches all four.

Arguments the caller got wrong (a 33-byte key, a value over
:data:`~cairn.dht.records.MAX_VALUE_SIZE`) raise :class:`ValueError` before anything is sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import random
import socket
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from cairn.crypto import KeyPair
from cairn.dht.aio import NodeClosedError, QueryStream, UDPNode, is_wildcard
from cairn.dht.events import QueryDone
from cairn.dht.hyper import (
    start_announce,
    start_immutable_get,
    start_immutable_put,
    start_lookup,
    start_mutable_get,
    start_mutable_put,
    start_unannounce,
)
from cairn.dht.messages import Address
from cairn.dht.records import (
    MAX_VALUE_SIZE,
    MutableRecord,
    Peer,
    decode_lookup_reply,
    decode_mutable_record,
    hash32,
    verify_mutable,
)
from cairn.errors import CairnError, DecodeError, RemoteError, ServiceError

__all__ = [
    "DEFAULT_TIMEOUT",
    "DHT",
    "DHTError",
    "NodeClosedError",
    "NotStoredError",
    "PeerLookup",
    "PutReceipt",
    "SeqReusedError",
    "SeqTooLowError",
    "UnreachableError",
]

DEFAULT_TIMEOUT = 10.0
"""Seconds an operation may take, bootstrap wait included."""


class DHTError(CairnError):
    """A DHT operation did not get done by the network."""


class UnreachableError(DHTError, ServiceError):
    """No DHT node answered: the bootstrap addresses are wrong, or every node is down."""


class NotStoredError(DHTError, RemoteError):
    """Nodes answered, but none of them stored the record (their answer, not our bug)."""


class SeqTooLowError(NotStoredError):
    """The nodes hold a record with a higher seq for this key (hyperdht's SEQ_TOO_LOW)."""

    def __init__(self, message: str, seq: int, stored_seq: int) -> None:
        super().__init__(message)
        self.seq = seq
        self.stored_seq = stored_seq


class SeqReusedError(NotStoredError):
    """The nodes hold another value under this seq (hyperdht's SEQ_REUSED)."""

    def __init__(self, message: str, seq: int) -> None:
        super().__init__(message)
        self.seq = seq


@dataclass(frozen=True, slots=True)
class PutReceipt:
    """What a put left in the DHT: the signed record, its target (``H(public key)``) and how many
    of the closest nodes stored it."""

    record: MutableRecord
    target: bytes
    nodes: int


def _key(name: str, value: bytes) -> None:
    if len(value) != 32:
        raise ValueError(f"{name} must be 32 bytes, got {len(value)}")


def _value(value: bytes) -> None:
    if len(value) > MAX_VALUE_SIZE:
        raise ValueError(f"value is {len(value)} bytes; the most a DHT record holds is "
                         f"{MAX_VALUE_SIZE}")


async def _resolve(host: str, port: int) -> Address:
    """An IPv4 ``(ip, port)`` for ``host``: an IPv4 literal as it is, a name through DNS."""
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"port must be 0-65535, got {port}")
    if is_wildcard(host):
        return ("0.0.0.0", port)  # noqa: S104 - every interface, as asked
    try:
        return (str(ipaddress.IPv4Address(host)), port)
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, family=socket.AF_INET, type=socket.SOCK_DGRAM)
    except socket.gaierror as exc:
        raise ValueError(f"cannot resolve {host!r} to an IPv4 address: {exc}") from None
    ip, _ = infos[0][4][:2]
    return (str(ip), port)


class DHT:
    """A DHT node with the hyperdht operations. Make one with :meth:`start`."""

    def __init__(self, node: UDPNode, bootstrap: tuple[Address, ...], timeout: float) -> None:
        self._node = node
        self._bootstrap = bootstrap
        self.timeout = timeout

    @classmethod
    @contextlib.asynccontextmanager
    async def start(
        cls,
        host: str = "127.0.0.1",
        port: int = 0,
        bootstrap: Sequence[tuple[str, int]] = (),
        persistent: bool | None = None,
        *,
        address: tuple[str, int] | None = None,
        timeout: float = DEFAULT_TIMEOUT,  # noqa: ASYNC109 - each operation's bound, kept
        rng: random.Random | None = None,
    ) -> AsyncIterator[DHT]:
        """Bind to ``host`` (an interface's IPv4 address, ``0.0.0.0`` for all) on ``port`` (0 =
        any) and join the network through the ``bootstrap`` nodes; close it all on exit.

        ``persistent``: True = a routing node that stores records from the start (a bootstrap
        node: ``persistent=True, bootstrap=[]``); False = an ephemeral client that never enters
        routing tables; None (the default, as hyperdht) = ephemeral until other nodes show they
        can reach it, then persistent. A node that may become persistent needs the address the
        others reach it at: ``host`` when it is a concrete IP, otherwise give ``address=(ip, port)``
        (port 0 = the bound port). Names in ``host`` and ``bootstrap`` are resolved to IPv4.
        """
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        boot = tuple([await _resolve(h, p) for h, p in bootstrap])
        for b in boot:
            if b[1] == 0 or is_wildcard(b[0]):
                raise ValueError(f"bootstrap address {b[0]}:{b[1]} is not one a node listens on")
        bind_host, _ = await _resolve(host, port)
        public = await _resolve(*address) if address is not None else None
        async with UDPNode.open(host=bind_host, port=port, bootstrap=boot, persistent=persistent,
                                address=public, rng=rng) as node:
            yield cls(node, boot, timeout)

    # -- what the node is ------------------------------------------------------------------------

    @property
    def node(self) -> UDPNode:
        """The asyncio adapter underneath (its ``core`` is the sans-I/O node, for stats)."""
        return self._node

    @property
    def address(self) -> Address:
        """The address other nodes reach this one at (the bound server socket when unknown)."""
        return self._node.core.address or self._node.server_address

    @property
    def id(self) -> bytes:
        """The node id: ``H(ip:port)`` once persistent, random while ephemeral."""
        return self._node.core.id

    @property
    def persistent(self) -> bool:
        return not self._node.core.ephemeral

    async def ready(self) -> None:
        """Wait until the first bootstrap query is done; :class:`UnreachableError` when bootstrap
        nodes were given and none answered."""
        async with self._bounded("bootstrap"):
            await self._node.wait_bootstrapped()
        if self._bootstrap and len(self._node.core.table) == 0:
            raise self._unreachable()

    # -- mutable records ---------------------------------------------------------------------------

    async def mutable_put(self, key_pair: KeyPair, value: bytes, seq: int) -> MutableRecord:
        """Sign ``value`` with ``seq`` and store it at the nodes closest to the key; the signed
        record. :class:`NotStoredError` (:class:`SeqTooLowError`, :class:`SeqReusedError`) when
        no node stored it."""
        return (await self.mutable_put_receipt(key_pair, value, seq)).record

    async def mutable_put_receipt(self, key_pair: KeyPair, value: bytes, seq: int) -> PutReceipt:
        """:meth:`mutable_put`, also saying how many nodes stored the record."""
        _value(value)
        _key("public key", key_pair.public_key)
        if key_pair.secret_key is None:
            raise ValueError("a mutable put needs the secret key")
        if not 0 <= seq < 1 << 64:
            raise ValueError(f"seq must be 0 to 2**64 - 1, got {seq}")
        async with self._bounded("mutable put"):
            await self._node.wait_bootstrapped()
            qid, record = start_mutable_put(self._node.core, key_pair, value, seq,
                                            self._node.now())
            done = await self._node.wait_query(qid)
        if done.commits == 0:
            raise self._put_refused(done, key_pair.public_key, record)
        return PutReceipt(record, hash32(key_pair.public_key), done.commits)

    async def mutable_get(self, public_key: bytes, min_seq: int = 0,
                          latest: bool = True) -> MutableRecord | None:
        """The record of ``public_key`` with ``seq >= min_seq``, its signature verified, or None.

        Every storing node on the way is asked and the highest seq wins, as in hyperdht. With
        ``latest=False`` the first such record ends the query: faster, but it may be an older
        record a hostile node replays, so pass a ``min_seq`` you trust (a seq seen before)."""
        _key("public key", public_key)
        if min_seq < 0:
            raise ValueError("min_seq cannot be negative")
        async with self._bounded("mutable get"):
            await self._node.wait_bootstrapped()
            qid, result = start_mutable_get(self._node.core, public_key, self._node.now(),
                                            min_seq=min_seq, latest=latest)
            done = await self._node.wait_query(qid)
        if result.record is None and not done.closest:
            raise self._unreachable()
        return result.record

    # -- immutable records -------------------------------------------------------------------------

    async def immutable_put(self, value: bytes) -> bytes:
        """Store ``value`` at the nodes closest to its hash; the hash (BLAKE2b-256), its key."""
        _value(value)
        async with self._bounded("immutable put"):
            await self._node.wait_bootstrapped()
            qid, target = start_immutable_put(self._node.core, value, self._node.now())
            done = await self._node.wait_query(qid)
        if done.commits == 0:
            raise self._not_stored(done, "the immutable value")
        return target

    async def immutable_get(self, hash: bytes) -> bytes | None:
        """The value whose BLAKE2b-256 is ``hash`` (checked), or None."""
        _key("hash", hash)
        async with self._bounded("immutable get"):
            await self._node.wait_bootstrapped()
            qid, result = start_immutable_get(self._node.core, hash, self._node.now())
            done = await self._node.wait_query(qid)
        if result.value is None and not done.closest:
            raise self._unreachable()
        return result.value

    # -- announce and lookup -----------------------------------------------------------------------

    async def announce(self, topic: bytes, key_pair: KeyPair,
                       relay_addresses: Sequence[Address] = ()) -> int:
        """Announce ``key_pair`` on ``topic`` at the closest nodes (each record lives about 20
        minutes: announce again to stay listed); how many nodes stored it."""
        _key("topic", topic)
        if key_pair.secret_key is None:
            raise ValueError("announcing needs the secret key")
        if len(relay_addresses) > 3:
            raise ValueError("at most 3 relay addresses are announced")
        relays = tuple([(str(ipaddress.IPv4Address(h)), p) for h, p in relay_addresses])
        async with self._bounded("announce"):
            await self._node.wait_bootstrapped()
            qid = start_announce(self._node.core, topic, key_pair, self._node.now(), relays)
            done = await self._node.wait_query(qid)
        if done.commits == 0:
            raise self._not_stored(done, "the announce")
        return done.commits

    async def unannounce(self, topic: bytes, key_pair: KeyPair) -> int:
        """Withdraw the announce of ``key_pair`` on ``topic``; how many nodes confirmed."""
        _key("topic", topic)
        if key_pair.secret_key is None:
            raise ValueError("unannouncing needs the secret key")
        async with self._bounded("unannounce"):
            await self._node.wait_bootstrapped()
            qid = start_unannounce(self._node.core, topic, key_pair, self._node.now())
            done = await self._node.wait_query(qid)
        if done.commits == 0:
            raise self._not_stored(done, "the unannounce")
        return done.commits

    def lookup(self, topic: bytes) -> PeerLookup:
        """The peers announced on ``topic``, each once, as the replies come in::

            async for peer in dht.lookup(topic): ...

        The whole iteration is bounded by ``timeout`` (:class:`TimeoutError`)."""
        _key("topic", topic)
        return PeerLookup(self, topic)

    # -- routing -----------------------------------------------------------------------------------

    async def find_node(self, target: bytes) -> list[tuple[Address, bytes]]:
        """The closest nodes to ``target`` that answered, closest first, as ``(address, id)``."""
        _key("target", target)
        async with self._bounded("find_node"):
            await self._node.wait_bootstrapped()
            qid = self._node.core.find_node(target, self._node.now())
            done = await self._node.wait_query(qid)
        if not done.closest:
            raise self._unreachable()
        return [(r.from_addr, r.from_id) for r in done.closest if r.from_id is not None]

    # -- internals ---------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _bounded(self, what: str) -> AsyncIterator[None]:
        try:
            async with asyncio.timeout(self.timeout):
                yield
        except TimeoutError:
            raise TimeoutError(f"DHT {what} did not finish in {self.timeout:g} s") from None

    def _unreachable(self) -> UnreachableError:
        if self._bootstrap:
            where = ", ".join(f"{h}:{p}" for h, p in self._bootstrap)
            return UnreachableError(f"no DHT node answered (bootstrap: {where}): check that "
                                    "those nodes run and that UDP reaches them")
        return UnreachableError("no DHT node answered: this node knows no other node and was "
                                "given no bootstrap address")

    def _not_stored(self, done: QueryDone, what: str) -> DHTError:
        if not done.closest:
            return self._unreachable()
        return NotStoredError(f"none of the {len(done.closest)} closest nodes stored {what}"
                              + (f" ({done.error})" if done.error else ""))

    def _put_refused(self, done: QueryDone, public_key: bytes, record: MutableRecord) -> DHTError:
        """Say why a mutable put was refused, from the records the put's own query read."""
        held: MutableRecord | None = None
        for reply in done.closest:
            if reply.value is None:
                continue
            try:
                rec = decode_mutable_record(reply.value)
            except DecodeError:
                continue
            if (held is None or rec.seq > held.seq) and verify_mutable(public_key, rec):
                held = rec
        key = public_key.hex()[:16]
        if held is not None and held.seq > record.seq:
            return SeqTooLowError(
                f"seq {record.seq} is too low: the DHT holds seq {held.seq} for key {key}… "
                f"(put with a seq above {held.seq})", record.seq, held.seq)
        if held is not None and held.seq == record.seq and held.value != record.value:
            return SeqReusedError(
                f"seq {record.seq} is already used with another value for key {key}… "
                f"(put with a higher seq)", record.seq)
        return self._not_stored(done, f"the record for key {key}…")


class PeerLookup:
    """The peers of one lookup (:meth:`DHT.lookup`): an async iterator of :class:`Peer`.

    The query starts at the first ``__anext__``; leaving the loop early leaves the query to end
    by itself (or call :meth:`aclose`, or use ``async with``, to stop it at once).
    """

    def __init__(self, dht: DHT, topic: bytes) -> None:
        self._dht = dht
        self._topic = topic
        self._stream: QueryStream | None = None
        self._deadline: float | None = None
        self._seen: set[bytes] = set()
        self._ready: deque[Peer] = deque()
        self._finished = False

    def __aiter__(self) -> PeerLookup:
        return self

    async def __anext__(self) -> Peer:
        if self._ready:
            return self._ready.popleft()
        if self._finished:
            raise StopAsyncIteration
        node = self._dht.node
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().time() + self._dht.timeout
        try:
            async with asyncio.timeout_at(self._deadline):
                if self._stream is None:
                    await node.wait_bootstrapped()
                    qid, _ = start_lookup(node.core, self._topic, node.now())
                    self._stream = node.stream_query(qid)
                while not self._ready:
                    try:
                        reply = await anext(self._stream)
                    except StopAsyncIteration:
                        self._finished = True
                        done = self._stream.done
                        if not self._seen and done is not None and not done.closest:
                            raise self._dht._unreachable() from None
                        raise
                    if reply.value is None:
                        continue
                    try:
                        peers = decode_lookup_reply(reply.value)
                    except DecodeError:
                        continue
                    for peer in peers:
                        if peer.public_key not in self._seen:
                            self._seen.add(peer.public_key)
                            self._ready.append(peer)
        except TimeoutError:
            await self.aclose()
            raise TimeoutError(f"DHT lookup did not finish in {self._dht.timeout:g} s") from None
        return self._ready.popleft()

    async def aclose(self) -> None:
        """Stop the query (if it still runs); the iteration ends."""
        self._finished = True
        if self._stream is not None:
            await self._stream.aclose()

    async def __aenter__(self) -> PeerLookup:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

"""hyperdht 6 records: their encodings, signatures, and the bounded stores a node keeps them in.

Byte layouts are hyperdht's lib/messages.js; what is signed is its lib/persistent.js:

- mutable: target ``H(publicKey)``; put value ``publicKey ‖ uint seq ‖ buffer value ‖ sig(64)``;
  the signature covers ``NS_MUTABLE_PUT ‖ H(uint seq ‖ buffer value)``; a stored record is
  ``uint seq ‖ buffer value ‖ sig(64)`` (the MUTABLE_GET reply).
- immutable: target ``H(value)``.
- announce: ``uint flags, [peer: publicKey ‖ ipv4 array], [refresh 32], [sig 64], [uint bump]``,
  signed per storing node over ``NS_ANNOUNCE ‖ H(target ‖ node id ‖ token ‖ peer ‖ refresh)``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass

from cairn.crypto import namespace, sign, verify
from cairn.dht.messages import Address, decode_ipv4, encode_ipv4
from cairn.encoding import Reader, encode_uint, write_buffer, write_uint
from cairn.errors import DecodeError

__all__ = [
    "MAX_VALUE_SIZE",
    "NS_ANNOUNCE",
    "NS_MUTABLE_PUT",
    "NS_UNANNOUNCE",
    "Announce",
    "AnnounceStore",
    "HyperCommand",
    "MutableRecord",
    "Peer",
    "RecordStore",
    "announce_signable",
    "decode_announce",
    "decode_lookup_reply",
    "decode_mutable_put",
    "decode_mutable_record",
    "decode_peer",
    "encode_announce",
    "encode_lookup_reply",
    "encode_mutable_put",
    "encode_mutable_record",
    "encode_peer",
    "hash32",
    "mutable_signable",
    "sign_mutable",
    "verify_mutable",
]

MAX_VALUE_SIZE = 1000
"""Largest mutable or immutable value Cairn puts or stores.

A reply must fit in the 2,048 bytes a JS node accepts, with its id, token and 20 closer nodes
(about 271 bytes) and the record's own overhead: hyperdht stores values that no one can read back
(1,783-1,870 bytes, see formats.md); Cairn refuses them on both sides. 1,000 bytes is the edge
agent's latest-readings record.
"""


class HyperCommand:
    """hyperdht's (non-internal) command ids (lib/constants.js)."""

    PEER_HANDSHAKE = 0
    PEER_HOLEPUNCH = 1
    FIND_PEER = 2
    LOOKUP = 3
    ANNOUNCE = 4
    UNANNOUNCE = 5
    MUTABLE_PUT = 6
    MUTABLE_GET = 7
    IMMUTABLE_PUT = 8
    IMMUTABLE_GET = 9
    PLUGIN = 10


_NS = hashlib.blake2b(b"hyperswarm/dht", digest_size=32).digest()


def _ns(command: int) -> bytes:
    return hashlib.blake2b(_NS + bytes([command]), digest_size=32).digest()


NS_ANNOUNCE = _ns(HyperCommand.ANNOUNCE)
NS_UNANNOUNCE = _ns(HyperCommand.UNANNOUNCE)
NS_MUTABLE_PUT = _ns(HyperCommand.MUTABLE_PUT)
assert namespace("hyperswarm/dht", 1)[0] == _ns(0)


def hash32(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=32).digest()


# -- mutable -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MutableRecord:
    seq: int
    value: bytes
    signature: bytes


def mutable_signable(seq: int, value: bytes) -> bytes:
    body = bytearray(encode_uint(seq))
    write_buffer(body, value)
    return NS_MUTABLE_PUT + hash32(bytes(body))


def sign_mutable(seq: int, value: bytes, secret_key: bytes) -> bytes:
    return sign(mutable_signable(seq, value), secret_key)


def verify_mutable(public_key: bytes, rec: MutableRecord) -> bool:
    return verify(mutable_signable(rec.seq, rec.value), rec.signature, public_key)


def encode_mutable_record(rec: MutableRecord) -> bytes:
    out = bytearray(encode_uint(rec.seq))
    write_buffer(out, rec.value)
    out += rec.signature
    return bytes(out)


def decode_mutable_record(data: bytes) -> MutableRecord:
    r = Reader(data)
    seq = r.uint()
    value = r.bytes_()
    sig = r.fixed(64)
    return MutableRecord(seq, value, sig)


def encode_mutable_put(public_key: bytes, rec: MutableRecord) -> bytes:
    return public_key + encode_mutable_record(rec)


def decode_mutable_put(data: bytes) -> tuple[bytes, MutableRecord]:
    r = Reader(data)
    pk = r.fixed(32)
    seq = r.uint()
    value = r.bytes_()
    sig = r.fixed(64)
    return pk, MutableRecord(seq, value, sig)


# -- announce ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Peer:
    public_key: bytes
    relay_addresses: tuple[Address, ...] = ()


@dataclass(frozen=True, slots=True)
class Announce:
    peer: Peer | None
    refresh: bytes | None = None
    signature: bytes | None = None
    bump: int = 0


def encode_peer(p: Peer) -> bytes:
    out = bytearray(p.public_key)
    write_uint(out, len(p.relay_addresses))
    for a in p.relay_addresses:
        out += encode_ipv4(a)
    return bytes(out)


def _read_peer(r: Reader) -> Peer:
    pk = r.fixed(32)
    n = r.uint()
    if n > 16 or 6 * n > r.remaining():
        raise DecodeError(f"{n} relay addresses do not fit")
    return Peer(pk, tuple(decode_ipv4(r) for _ in range(n)))


def decode_peer(data: bytes) -> Peer:
    r = Reader(data)
    p = _read_peer(r)
    r.done()
    return p


def encode_announce(a: Announce) -> bytes:
    flags = (1 if a.peer else 0) | (2 if a.refresh else 0) | (4 if a.signature else 0) | (
        8 if a.bump else 0)
    out = bytearray()
    write_uint(out, flags)
    if a.peer is not None:
        out += encode_peer(a.peer)
    if a.refresh is not None:
        out += a.refresh
    if a.signature is not None:
        out += a.signature
    if a.bump:
        write_uint(out, a.bump)
    return bytes(out)


def decode_announce(data: bytes) -> Announce:
    r = Reader(data)
    flags = r.uint()
    peer = _read_peer(r) if flags & 1 else None
    refresh = r.fixed(32) if flags & 2 else None
    sig = r.fixed(64) if flags & 4 else None
    bump = r.uint() if flags & 8 else 0
    return Announce(peer, refresh, sig, bump)


def announce_signable(
    ns: bytes, target: bytes, node_id: bytes, token: bytes, ann: Announce
) -> bytes:
    assert ann.peer is not None
    h = hashlib.blake2b(digest_size=32)
    for part in (target, node_id, token, encode_peer(ann.peer), ann.refresh or b""):
        h.update(part)
    return ns + h.digest()


def encode_lookup_reply(peers: list[bytes], bump: int = 0) -> bytes:
    """``peers`` are encoded :class:`Peer` records (as stored)."""
    out = bytearray()
    write_uint(out, len(peers))
    for p in peers:
        out += p
    write_uint(out, bump)
    return bytes(out)


def decode_lookup_reply(data: bytes) -> list[Peer]:
    r = Reader(data)
    n = r.uint()
    if n > 64 or 33 * n > r.remaining():
        raise DecodeError(f"{n} peers do not fit")
    return [_read_peer(r) for _ in range(n)]


# -- bounded stores ------------------------------------------------------------------------------


class RecordStore:
    """Records by key, bounded in count and bytes, expiring after ``max_age`` seconds.

    The least recently written record goes first when a bound is hit. Each source host may hold
    at most ``per_source`` records, so one address cannot fill the store.
    """

    def __init__(self, *, max_count: int, max_bytes: int, max_age: float,
                 per_source: int) -> None:
        self.max_count = max_count
        self.max_bytes = max_bytes
        self.max_age = max_age
        self.per_source = per_source
        self._items: OrderedDict[bytes, tuple[bytes, float, str]] = OrderedDict()
        self._bytes = 0
        self._by_source: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._items)

    @property
    def size(self) -> int:
        return self._bytes

    def get(self, key: bytes, now: float) -> bytes | None:
        item = self._items.get(key)
        if item is None:
            return None
        if now - item[1] > self.max_age:
            self._drop(key)
            return None
        return item[0]

    def put(self, key: bytes, value: bytes, source: str, now: float) -> bool:
        """Store; False when the source is over its quota (nothing changes then)."""
        old = self._items.get(key)
        if old is not None and old[2] == source:
            self._drop(key)
        elif self._by_source.get(source, 0) >= self.per_source:
            self._expire(now)
            if self._by_source.get(source, 0) >= self.per_source:
                return False
        if old is not None and key in self._items:
            self._drop(key)
        self._items[key] = (value, now, source)
        self._bytes += len(key) + len(value)
        self._by_source[source] = self._by_source.get(source, 0) + 1
        while len(self._items) > self.max_count or self._bytes > self.max_bytes:
            self._drop(next(iter(self._items)))
        return True

    def remove(self, key: bytes) -> None:
        if key in self._items:
            self._drop(key)

    def _drop(self, key: bytes) -> None:
        value, _, source = self._items.pop(key)
        self._bytes -= len(key) + len(value)
        n = self._by_source[source] - 1
        if n:
            self._by_source[source] = n
        else:
            del self._by_source[source]

    def _expire(self, now: float) -> None:
        while self._items:
            key, (_, t, _) = next(iter(self._items.items()))
            if now - t <= self.max_age:
                break
            self._drop(key)


def _evictee(peers: OrderedDict[bytes, tuple[bytes, float, str]]) -> bytes:
    """Which record a full topic lets go: the oldest of the host holding the most records in
    it. A host announcing many keys on one topic pushes out its own records, not everyone
    else's (with one record per host: the oldest, as before)."""
    counts: dict[str, int] = {}
    for _, _, source in peers.values():
        counts[source] = counts.get(source, 0) + 1
    heaviest = max(counts.values())
    return next(pk for pk, (_, _, source) in peers.items() if counts[source] == heaviest)


class AnnounceStore:
    """Announce records by topic: at most ``per_topic`` peers a topic, at most ``max_records``
    in all, ``per_source`` from one host, each living ``max_age`` seconds. A full topic lets go
    of the oldest record of the host with the most records in it, and a lookup reply takes
    the newest record of each host in turn: one host's many keys cannot crowd out the others
    (found by the DHT attack suite, issue 10)."""

    def __init__(self, *, max_records: int, per_topic: int, max_age: float,
                 per_source: int) -> None:
        self.max_records = max_records
        self.per_topic = per_topic
        self.max_age = max_age
        self.per_source = per_source
        self._topics: OrderedDict[bytes, OrderedDict[bytes, tuple[bytes, float, str]]] = (
            OrderedDict())
        self._count = 0
        self._by_source: dict[str, int] = {}

    def __len__(self) -> int:
        return self._count

    def add(self, topic: bytes, public_key: bytes, record: bytes, source: str,
            now: float) -> bool:
        peers = self._topics.get(topic)
        old = peers.get(public_key) if peers is not None else None
        if old is None and self._by_source.get(source, 0) >= self.per_source:
            return False
        if old is not None:
            self._remove(topic, public_key)
        peers = self._topics.setdefault(topic, OrderedDict())
        self._topics.move_to_end(topic)
        peers[public_key] = (record, now, source)
        self._count += 1
        self._by_source[source] = self._by_source.get(source, 0) + 1
        while len(peers) > self.per_topic:
            self._remove(topic, _evictee(peers))
        while self._count > self.max_records:
            first = next(iter(self._topics))
            self._remove(first, next(iter(self._topics[first])))
        return True

    def get(self, topic: bytes, now: float, limit: int = 20) -> list[bytes]:
        peers = self._topics.get(topic)
        if peers is None:
            return []
        for pk in [pk for pk, (_, t, _) in peers.items() if now - t > self.max_age]:
            self._remove(topic, pk)
        # newest first, one record per host in turn: a host with many keys cannot fill a reply
        by_source: dict[str, list[bytes]] = {}
        for rec, _, source in reversed(peers.values()):
            by_source.setdefault(source, []).append(rec)
        out: list[bytes] = []
        turn = 0
        while len(out) < limit:
            took = [recs[turn] for recs in by_source.values() if turn < len(recs)]
            if not took:
                break
            out.extend(took[:limit - len(out)])
            turn += 1
        return out

    def remove(self, topic: bytes, public_key: bytes) -> None:
        peers = self._topics.get(topic)
        if peers is not None and public_key in peers:
            self._remove(topic, public_key)

    def _remove(self, topic: bytes, public_key: bytes) -> None:
        peers = self._topics[topic]
        _, _, source = peers.pop(public_key)
        self._count -= 1
        n = self._by_source[source] - 1
        if n:
            self._by_source[source] = n
        else:
            del self._by_source[source]
        if not peers:
            del self._topics[topic]

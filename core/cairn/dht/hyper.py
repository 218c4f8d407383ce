"""hyperdht 6 on a :class:`~cairn.dht.node.DHTNode`: the storing side and the client operations.

:class:`HyperHandler` answers LOOKUP, ANNOUNCE, UNANNOUNCE, MUTABLE_PUT/GET and IMMUTABLE_PUT/GET
from bounded stores. The ``start_*`` functions run the client side as queries on a node; each
returns the query id and an object that holds the result once the query's
:class:`~cairn.dht.events.QueryDone` event has come out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Protocol

from cairn.crypto import KeyPair, sign, verify
from cairn.dht.events import Reply
from cairn.dht.messages import Address
from cairn.dht.node import Answer, DHTNode, IncomingRequest
from cairn.dht.records import (
    MAX_VALUE_SIZE,
    NS_ANNOUNCE,
    NS_UNANNOUNCE,
    Announce,
    AnnounceStore,
    HyperCommand,
    MutableRecord,
    Peer,
    RecordStore,
    announce_signable,
    decode_announce,
    decode_lookup_reply,
    decode_mutable_put,
    decode_mutable_record,
    encode_announce,
    encode_lookup_reply,
    encode_mutable_put,
    encode_mutable_record,
    encode_peer,
    hash32,
    sign_mutable,
    verify_mutable,
)
from cairn.encoding import Reader, encode_uint
from cairn.errors import DecodeError

__all__ = [
    "GET_PAD",
    "ConnectRouter",
    "HyperError",
    "HyperHandler",
    "LookupResult",
    "MutableResult",
    "ValueResult",
    "start_announce",
    "start_immutable_get",
    "start_immutable_put",
    "start_lookup",
    "start_mutable_get",
    "start_mutable_put",
    "start_unannounce",
]

GET_PAD = 400
"""Get requests are padded to this size, so a storing node that does not know the reader yet
may send a full value back without breaking its 3x anti-amplification rule."""


class HyperError(IntEnum):
    SEQ_REUSED = 16
    SEQ_TOO_LOW = 17
    VALUE_TOO_LARGE = 64  # Cairn's: nothing is stored that cannot be read back
    QUOTA_EXCEEDED = 65  # Cairn's: this host holds as many records here as it may


class ConnectRouter(Protocol):
    """hyperdht's connect side of a node (:class:`cairn.hyperdht.router.Router`): forward
    entries for servers that announced on the hash of their own key, FIND_PEER answers, and
    the relaying of PEER_HANDSHAKE / PEER_HOLEPUNCH (to local servers too)."""

    def set_forward(self, target: bytes, record: bytes, relay: Address, now: float) -> bool: ...

    def find_peer(self, target: bytes, now: float) -> bytes | None: ...

    def remove_forward(self, target: bytes, public_key: bytes) -> None: ...

    def on_connect_request(self, req: IncomingRequest, node: DHTNode,
                           now: float) -> Answer: ...


_SILENT = Answer(silent=True)
_STORED = Answer(None, token=False, closer=False)


class HyperHandler:
    """The storing side of hyperdht, with every store bounded in count, bytes and age."""

    def __init__(
        self,
        node: Callable[[], DHTNode],
        *,
        max_records: int = 32768,
        max_bytes: int = 32 << 20,
        mutable_age: float = 48 * 3600.0,
        announce_age: float = 20 * 60.0,
        per_source: int = 1024,
    ) -> None:
        self._node = node
        self.mutables = RecordStore(max_count=max_records, max_bytes=max_bytes,
                                    max_age=mutable_age, per_source=per_source)
        self.immutables = RecordStore(max_count=max_records, max_bytes=max_bytes,
                                      max_age=mutable_age, per_source=per_source)
        self.announces = AnnounceStore(max_records=max_records, per_topic=64,
                                       max_age=announce_age, per_source=per_source)
        self.refused = 0
        self.router: ConnectRouter | None = None  # set by cairn.hyperdht

    def on_request(self, req: IncomingRequest, now: float) -> Answer | None:
        node = self._node()
        cmd = req.command
        if self.router is not None and cmd in (HyperCommand.PEER_HANDSHAKE,
                                               HyperCommand.PEER_HOLEPUNCH):
            return self.router.on_connect_request(req, node, now)  # servers are ephemeral too
        if node.ephemeral:
            return None  # as hyperdht: only persistent nodes store
        try:
            if cmd == HyperCommand.MUTABLE_GET:
                return self._mutable_get(req, now)
            if cmd == HyperCommand.MUTABLE_PUT:
                return self._mutable_put(req, now)
            if cmd == HyperCommand.IMMUTABLE_GET:
                return self._immutable_get(req, now)
            if cmd == HyperCommand.IMMUTABLE_PUT:
                return self._immutable_put(req, now)
            if cmd == HyperCommand.LOOKUP:
                return self._lookup(req, now)
            if cmd == HyperCommand.ANNOUNCE:
                return self._announce(req, node.id, now, NS_ANNOUNCE)
            if cmd == HyperCommand.UNANNOUNCE:
                return self._announce(req, node.id, now, NS_UNANNOUNCE)
            if cmd == HyperCommand.FIND_PEER:
                if req.target is None:
                    return _SILENT
                found = self.router.find_peer(req.target, now) if self.router else None
                return Answer(found)
        except DecodeError:
            self.refused += 1
            return _SILENT
        return None

    def _refuse(self) -> Answer:
        self.refused += 1
        return _SILENT

    def _mutable_get(self, req: IncomingRequest, now: float) -> Answer:
        if req.target is None or req.value is None:
            return self._refuse()
        seq = Reader(req.value).uint()
        stored = self.mutables.get(req.target, now)
        if stored is None:
            return Answer(None)
        local_seq = Reader(stored).uint()
        return Answer(stored if local_seq >= seq else None)

    def _mutable_put(self, req: IncomingRequest, now: float) -> Answer:
        if req.target is None or not req.token_ok or req.value is None:
            return self._refuse()
        public_key, rec = decode_mutable_put(req.value)
        if hash32(public_key) != req.target:
            return self._refuse()
        if len(rec.value) > MAX_VALUE_SIZE:
            self.refused += 1
            return Answer(error=HyperError.VALUE_TOO_LARGE, token=False)
        if not verify_mutable(public_key, rec):
            return self._refuse()
        stored = self.mutables.get(req.target, now)
        if stored is not None:
            old = decode_mutable_record(stored)
            if old.seq == rec.seq and old.value != rec.value:
                return Answer(error=HyperError.SEQ_REUSED, token=False)
            if rec.seq < old.seq:
                return Answer(error=HyperError.SEQ_TOO_LOW, token=False)
        if not self.mutables.put(req.target, encode_mutable_record(rec), req.from_addr[0], now):
            self.refused += 1
            return Answer(error=HyperError.QUOTA_EXCEEDED, token=False)
        return Answer(None)

    def _immutable_get(self, req: IncomingRequest, now: float) -> Answer:
        if req.target is None:
            return self._refuse()
        return Answer(self.immutables.get(req.target, now))

    def _immutable_put(self, req: IncomingRequest, now: float) -> Answer:
        if req.target is None or not req.token_ok or req.value is None:
            return self._refuse()
        if len(req.value) > MAX_VALUE_SIZE:
            self.refused += 1
            return Answer(error=HyperError.VALUE_TOO_LARGE, token=False)
        if hash32(req.value) != req.target:
            return self._refuse()
        if not self.immutables.put(req.target, req.value, req.from_addr[0], now):
            self.refused += 1
            return Answer(error=HyperError.QUOTA_EXCEEDED, token=False)
        return Answer(None)

    def _lookup(self, req: IncomingRequest, now: float) -> Answer:
        if req.target is None:
            return self._refuse()
        records = self.announces.get(req.target, now, 20)
        forward = self.router.find_peer(req.target, now) if self.router else None
        if forward is not None and len(records) < 20:
            records.append(forward)
        return Answer(encode_lookup_reply(records) if records else None)

    def _announce(self, req: IncomingRequest, node_id: bytes, now: float, ns: bytes) -> Answer:
        if req.target is None or not req.token_ok or req.value is None:
            return self._refuse()
        ann = decode_announce(req.value)
        if ann.peer is None or ann.signature is None or req.token is None:
            return self._refuse()  # refresh-only announces are not supported: say nothing
        signable = announce_signable(ns, req.target, node_id, req.token, ann)
        if not verify(signable, ann.signature, ann.peer.public_key):
            return self._refuse()
        if ns == NS_UNANNOUNCE:
            self.announces.remove(req.target, ann.peer.public_key)
            if self.router is not None:
                self.router.remove_forward(req.target, ann.peer.public_key)
            return _STORED
        peer = Peer(ann.peer.public_key, ann.peer.relay_addresses[:3])
        if self.router is not None and hash32(peer.public_key) == req.target:
            # a server announcing itself: a forward entry (hyperdht's router), relay = sender
            if not self.router.set_forward(req.target, encode_peer(peer), req.from_addr, now):
                self.refused += 1
                return Answer(error=HyperError.QUOTA_EXCEEDED, token=False, closer=False)
            return _STORED
        if not self.announces.add(req.target, peer.public_key, encode_peer(peer),
                                  req.from_addr[0], now):
            self.refused += 1
            return Answer(error=HyperError.QUOTA_EXCEEDED, token=False, closer=False)
        return _STORED


# -- the client side -------------------------------------------------------------------------


@dataclass(slots=True)
class MutableResult:
    record: MutableRecord | None = None
    from_addr: Address | None = None
    replies: int = 0


@dataclass(slots=True)
class ValueResult:
    value: bytes | None = None
    from_addr: Address | None = None


@dataclass(slots=True)
class LookupResult:
    peers: dict[bytes, Peer] = field(default_factory=dict)
    replies: list[tuple[Address, list[Peer]]] = field(default_factory=list)


def _check_value(value: bytes) -> None:
    if len(value) > MAX_VALUE_SIZE:
        raise ValueError(f"value is {len(value)} bytes; the most a DHT record holds is "
                         f"{MAX_VALUE_SIZE}")


def start_mutable_put(node: DHTNode, key_pair: KeyPair, value: bytes, seq: int,
                      now: float) -> tuple[int, MutableRecord]:
    """Sign and put ``value`` under ``key_pair`` with ``seq``; the QueryDone counts commits."""
    _check_value(value)
    if key_pair.secret_key is None:
        raise ValueError("a mutable put needs the secret key")
    if seq < 0:
        raise ValueError("seq cannot be negative")
    rec = MutableRecord(seq, value, sign_mutable(seq, value, key_pair.secret_key))
    signed = encode_mutable_put(key_pair.public_key, rec)
    target = hash32(key_pair.public_key)
    qid = node.query(target, HyperCommand.MUTABLE_GET, encode_uint(0), now,
                     commit=lambda reply: signed, commit_command=HyperCommand.MUTABLE_PUT)
    return qid, rec


def start_mutable_get(node: DHTNode, public_key: bytes, now: float, *, min_seq: int = 0,
                      latest: bool = True) -> tuple[int, MutableResult]:
    """Get the record of ``public_key`` with ``seq >= min_seq``: every storing node on the way
    is asked and the highest verified seq wins (hyperdht's default). With ``latest=False`` the
    first verified record ends the query: faster, but an older record that a hostile node
    replays is one (issue 10), so only use it with a ``min_seq`` you trust."""
    result = MutableResult()
    target = hash32(public_key)

    def on_reply(reply: Reply) -> bool:
        if reply.value is None:
            return False
        try:
            rec = decode_mutable_record(reply.value)
        except DecodeError:
            return False
        if rec.seq < min_seq or len(rec.value) > MAX_VALUE_SIZE:
            return False
        if result.record is not None and rec.seq <= result.record.seq:
            return False
        if not verify_mutable(public_key, rec):
            return False
        result.record = rec
        result.from_addr = reply.from_addr
        result.replies += 1
        return not latest

    qid = node.query(target, HyperCommand.MUTABLE_GET, encode_uint(min_seq), now,
                     on_reply=on_reply, pad_to=GET_PAD)
    return qid, result


def start_immutable_put(node: DHTNode, value: bytes, now: float) -> tuple[int, bytes]:
    _check_value(value)
    target = hash32(value)
    qid = node.query(target, HyperCommand.IMMUTABLE_GET, None, now, commit=lambda r: value,
                     commit_command=HyperCommand.IMMUTABLE_PUT)
    return qid, target


def start_immutable_get(node: DHTNode, target: bytes, now: float) -> tuple[int, ValueResult]:
    result = ValueResult()

    def on_reply(reply: Reply) -> bool:
        if reply.value is None or hash32(reply.value) != target:
            return False
        result.value = reply.value
        result.from_addr = reply.from_addr
        return True

    qid = node.query(target, HyperCommand.IMMUTABLE_GET, None, now, on_reply=on_reply,
                     pad_to=GET_PAD)
    return qid, result


def _announce_commit(key_pair: KeyPair, topic: bytes, relays: tuple[Address, ...],
                     ns: bytes) -> Callable[[Reply], bytes | None]:
    secret = key_pair.secret_key
    if secret is None:
        raise ValueError("announcing needs the secret key")
    peer = Peer(key_pair.public_key, relays[:3])

    def commit(reply: Reply) -> bytes | None:
        if reply.from_id is None or reply.token is None:
            return None
        ann = Announce(peer)
        sig = sign(announce_signable(ns, topic, reply.from_id, reply.token, ann), secret)
        return encode_announce(Announce(peer, None, sig))

    return commit


def start_announce(node: DHTNode, topic: bytes, key_pair: KeyPair, now: float,
                   relay_addresses: tuple[Address, ...] = ()) -> int:
    """Announce ``key_pair`` on ``topic`` at the closest nodes (records live about 20 min)."""
    if len(topic) != 32:
        raise ValueError("a topic is 32 bytes")
    commit = _announce_commit(key_pair, topic, relay_addresses, NS_ANNOUNCE)
    return node.query(topic, HyperCommand.LOOKUP, None, now, commit=commit,
                      commit_command=HyperCommand.ANNOUNCE)


def start_unannounce(node: DHTNode, topic: bytes, key_pair: KeyPair, now: float) -> int:
    """Withdraw an announce: UNANNOUNCE, signed per node, to the closest nodes of ``topic``."""
    commit = _announce_commit(key_pair, topic, (), NS_UNANNOUNCE)
    return node.query(topic, HyperCommand.LOOKUP, None, now, commit=commit,
                      commit_command=HyperCommand.UNANNOUNCE)


def start_lookup(node: DHTNode, topic: bytes, now: float) -> tuple[int, LookupResult]:
    """Find who announced ``topic``; each reply is also a QueryReply event (emit_replies)."""
    result = LookupResult()

    def on_reply(reply: Reply) -> bool:
        if reply.value is None:
            return False
        try:
            peers = decode_lookup_reply(reply.value)
        except DecodeError:
            return False
        result.replies.append((reply.from_addr, peers))
        for p in peers:
            result.peers.setdefault(p.public_key, p)
        return False

    qid = node.query(topic, HyperCommand.LOOKUP, None, now, on_reply=on_reply,
                     emit_replies=True, pad_to=GET_PAD)
    return qid, result

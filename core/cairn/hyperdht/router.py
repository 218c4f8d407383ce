"""The connect side of a DHT node (hyperdht lib/router.js), bounded: forward entries, FIND_PEER,
and the relaying of PEER_HANDSHAKE / PEER_HOLEPUNCH.

A server announces on ``H(its key)``; a node that sees ``H(peer.publicKey) == target`` keeps a
*forward entry* ``{relay: where the announce came from, record: publicKey ‖ relay addresses}``
and answers FIND_PEER with the record. Then, for a client's PEER_HANDSHAKE::

    client --FROM_CLIENT--> node --FROM_RELAY (peerAddress = client)--> server
    client <--REPLY (peerAddress = server)-- node <--FROM_SERVER (request, same tid)-- server

PEER_HOLEPUNCH goes the same way (the client names the server address in ``peerAddress``).
A server running on this node (:meth:`Router.serve`) answers directly: FROM_CLIENT gets REPLY,
FROM_RELAY gets FROM_SERVER back to the relaying node.

Cairn is stricter than hyperdht, which relays to any address a request names:

- a handshake is relayed only to the forward entry's address; ``relayAddress`` from a client is
  ignored;
- a FROM_SERVER answer is passed on only to the client whose request this node relayed under
  that tid and target, within :data:`RELAY_WINDOW` seconds, once (no reflection to third
  parties, and another sender reusing the tid cannot take the answer);
- a holepunch is relayed only to a host that is the forward entry's;
- every relay costs a token from the sender host's bucket and the node's (:class:`RateLimit`),
  and every table (forwards, hosts, pending relays) has a size bound; one host holds at most
  64 forward entries.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Protocol

from cairn.dht.messages import Address
from cairn.dht.node import Answer, DHTNode, IncomingRequest
from cairn.dht.records import HyperCommand
from cairn.errors import DecodeError
from cairn.hyperdht.messages import (
    Handshake,
    Holepunch,
    Mode,
    decode_handshake,
    decode_holepunch,
    encode_handshake,
    encode_holepunch,
)

__all__ = [
    "FORWARD_AGE",
    "RELAY_WINDOW",
    "LocalServer",
    "RateLimit",
    "Router",
]

FORWARD_AGE = 20 * 60.0
"""A forward entry lives as long as an announce (the server re-announces well before)."""

RELAY_WINDOW = 10.0
"""Seconds a relayed request waits for its server's answer (a hyperdht server gives up at 10)."""

_SILENT = Answer(silent=True)


class LocalServer(Protocol):
    """A hyperdht server on this node (:class:`cairn.hyperdht.server.ServerCore`)."""

    def on_handshake(self, noise: bytes, client: Address, now: float) -> bytes | None:
        """The IK reply to ``noise`` from ``client``, or None to drop it silently."""

    def on_holepunch(self, id: int, payload: bytes, client: Address, now: float) -> bytes | None:
        """The sealed holepunch reply, or None to drop it."""


class RateLimit:
    """Token buckets: one per sender host (at most ``hosts`` of them, least recently used out)
    and one for the node. ``allow(host, now)`` takes a token from both or from neither."""

    def __init__(self, *, per_host: float = 20.0, burst: float = 40.0, total: float = 500.0,
                 hosts: int = 4096) -> None:
        self.per_host = per_host
        self.burst = burst
        self.total = total
        self.max_hosts = hosts
        self._hosts: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._all = (total, 0.0)
        self.refused = 0

    def _take(self, state: tuple[float, float], rate: float, cap: float,
              now: float) -> tuple[float, float]:
        tokens, at = state
        return min(cap, tokens + max(0.0, now - at) * rate), now

    def allow(self, host: str, now: float) -> bool:
        host_state = self._take(self._hosts.get(host, (self.burst, now)), self.per_host,
                                self.burst, now)
        all_state = self._take(self._all, self.total, self.total, now)
        if host_state[0] < 1.0 or all_state[0] < 1.0:
            self.refused += 1
            self._hosts[host] = host_state
            return False
        self._hosts[host] = (host_state[0] - 1.0, now)
        self._hosts.move_to_end(host)
        while len(self._hosts) > self.max_hosts:
            self._hosts.popitem(last=False)
        self._all = (all_state[0] - 1.0, now)
        return True


@dataclass(slots=True)
class _Forward:
    record: bytes
    relay: Address
    expires: float


class Router:
    """What :class:`cairn.dht.hyper.HyperHandler` delegates connects to (its ``router``)."""

    def __init__(self, *, max_forwards: int = 4096, per_host: int = 64, max_pending: int = 4096,
                 limit: RateLimit | None = None) -> None:
        self.max_forwards = max_forwards
        self.per_host = per_host
        self._per_host: Counter[str] = Counter()
        self.max_pending = max_pending
        self.limit = limit or RateLimit()
        self._forwards: OrderedDict[bytes, _Forward] = OrderedDict()
        self._pending: OrderedDict[tuple[int, bytes, int, Address], float] = OrderedDict()
        self._servers: dict[bytes, LocalServer] = {}
        self._own: dict[bytes, bytes] = {}  # records of the servers here
        self.stats = {"relayed": 0, "replied": 0, "dropped": 0, "bad": 0}

    # -- local servers and forward entries ---------------------------------------------------

    def serve(self, target: bytes, server: LocalServer, record: bytes | None = None) -> None:
        """Answer handshakes for ``target`` here; with ``record`` (the server's peer record),
        FIND_PEER on this node names it too, so clients may ask this node directly."""
        self._servers[target] = server
        if record is not None:
            self._own[target] = record

    def unserve(self, target: bytes) -> None:
        self._servers.pop(target, None)
        self._own.pop(target, None)

    def set_forward(self, target: bytes, record: bytes, relay: Address, now: float) -> bool:
        """Keep (or renew) a forward entry; False when the announcing host holds ``per_host``
        entries already. A full table drops its least recently announced entry (as hyperdht's
        cache): servers re-announce every few minutes, so theirs stay."""
        if target in self._forwards:
            self._drop_forward(target)
        elif self._per_host[relay[0]] >= self.per_host:
            self._expire(now)
            if self._per_host[relay[0]] >= self.per_host:
                return False
        while len(self._forwards) >= self.max_forwards:
            self._drop_forward(next(iter(self._forwards)))
        self._forwards[target] = _Forward(record, relay, now + FORWARD_AGE)
        self._per_host[relay[0]] += 1
        return True

    def _drop_forward(self, target: bytes) -> None:
        fwd = self._forwards.pop(target)
        self._per_host[fwd.relay[0]] -= 1
        if self._per_host[fwd.relay[0]] <= 0:
            del self._per_host[fwd.relay[0]]

    def remove_forward(self, target: bytes, public_key: bytes) -> None:
        """A signed UNANNOUNCE of the server whose key hashes to ``target``."""
        fwd = self._forwards.get(target)
        if fwd is not None and fwd.record[:32] == public_key:
            self._drop_forward(target)

    def find_peer(self, target: bytes, now: float) -> bytes | None:
        own = self._own.get(target)
        if own is not None:
            return own
        fwd = self._forward(target, now)
        return fwd.record if fwd else None

    def forward_count(self) -> int:
        return len(self._forwards)

    def _forward(self, target: bytes, now: float) -> _Forward | None:
        fwd = self._forwards.get(target)
        if fwd is not None and fwd.expires <= now:
            self._drop_forward(target)
            return None
        return fwd

    def _expire(self, now: float) -> None:
        for target in [t for t, f in self._forwards.items() if f.expires <= now]:
            self._drop_forward(target)

    # -- requests ----------------------------------------------------------------------------

    def on_connect_request(self, req: IncomingRequest, node: DHTNode, now: float) -> Answer:
        if req.target is None or req.value is None:
            return self._bad()
        try:
            if req.command == HyperCommand.PEER_HANDSHAKE:
                return self._handshake(req, decode_handshake(req.value), node, now)
            return self._holepunch(req, decode_holepunch(req.value), node, now)
        except DecodeError:
            return self._bad()

    def _bad(self) -> Answer:
        self.stats["bad"] += 1
        return _SILENT

    def _drop(self) -> Answer:
        self.stats["dropped"] += 1
        return _SILENT

    def _remember(self, req: IncomingRequest, now: float) -> None:
        """A relayed request waits for its server's answer, keyed by the client too: another
        sender reusing the tid cannot redirect that answer to itself."""
        assert req.target is not None
        key = (req.command, req.target, req.tid, req.from_addr)
        self._pending.pop(key, None)
        self._pending[key] = now + RELAY_WINDOW
        while len(self._pending) > self.max_pending:
            self._pending.popitem(last=False)

    def _recall(self, req: IncomingRequest, client: Address | None, now: float) -> bool:
        """The server's answer for ``client`` (its peerAddress) matches a relayed request."""
        assert req.target is not None
        if client is None:
            return False
        expires = self._pending.pop((req.command, req.target, req.tid, client), None)
        return expires is not None and expires >= now

    def _handshake(self, req: IncomingRequest, hs: Handshake, node: DHTNode,
                   now: float) -> Answer:
        assert req.target is not None
        server = self._servers.get(req.target)
        if server is not None:
            return self._serve_handshake(req, hs, server, node, now)
        if not hs.noise:
            return self._bad()
        if hs.mode == Mode.FROM_CLIENT:
            fwd = self._forward(req.target, now)
            if fwd is None:
                return Answer(None, token=False, closer=True)  # help the client route
            if not self.limit.allow(req.from_addr[0], now):
                return self._drop()
            self._remember(req, now)
            value = encode_handshake(Handshake(Mode.FROM_RELAY, hs.noise, req.from_addr))
            node.relay_request(req.tid, fwd.relay, req.command, req.target, value, req.socket)
            self.stats["relayed"] += 1
            return _SILENT
        if hs.mode == Mode.FROM_SERVER:
            client = hs.peer_address
            if client is None or not self._recall(req, client, now):
                return self._drop()
            value = encode_handshake(Handshake(Mode.REPLY, hs.noise, req.from_addr))
            node.reply_to(req.tid, client, value, req.socket)
            self.stats["replied"] += 1
            return _SILENT
        return self._drop()  # FROM_RELAY / FROM_SECOND_RELAY for a server not here

    def _serve_handshake(self, req: IncomingRequest, hs: Handshake, server: LocalServer,
                         node: DHTNode, now: float) -> Answer:
        if not hs.noise or hs.mode not in (Mode.FROM_CLIENT, Mode.FROM_RELAY):
            return self._bad()
        client = hs.peer_address if hs.mode == Mode.FROM_RELAY else req.from_addr
        if client is None:
            return self._bad()
        reply = server.on_handshake(hs.noise, client, now)
        if reply is None:
            return self._drop()
        if hs.mode == Mode.FROM_CLIENT:
            value = encode_handshake(Handshake(Mode.REPLY, reply))
            node.reply_to(req.tid, req.from_addr, value, req.socket)
        else:
            value = encode_handshake(Handshake(Mode.FROM_SERVER, reply, client))
            # a server that punches answers from its puncher socket (hyperdht's replyFromPuncher)
            answer = getattr(server, "answer_from_puncher", None)
            assert req.target is not None
            if answer is None or not answer(reply, req.tid, req.from_addr, req.target, value):
                node.relay_request(req.tid, req.from_addr, req.command, req.target, value,
                                   req.socket)
        self.stats["replied"] += 1
        return _SILENT

    def _holepunch(self, req: IncomingRequest, hp: Holepunch, node: DHTNode,
                   now: float) -> Answer:
        assert req.target is not None
        server = self._servers.get(req.target)
        if hp.mode == Mode.FROM_RELAY and server is not None:
            if hp.peer_address is None:
                return self._bad()
            take = getattr(server, "take_holepunch", None)
            if take is not None and take(req.tid, req.from_addr, req.target, hp, now):
                self.stats["replied"] += 1  # answered by the server's puncher socket
                return _SILENT
            reply = server.on_holepunch(hp.id, hp.payload, hp.peer_address, now)
            if reply is None:
                return self._drop()
            value = encode_holepunch(Holepunch(Mode.FROM_SERVER, 0, reply, hp.peer_address))
            node.relay_request(req.tid, req.from_addr, req.command, req.target, value,
                               req.socket)
            self.stats["replied"] += 1
            return _SILENT
        if hp.mode == Mode.FROM_CLIENT:
            fwd = self._forward(req.target, now)
            if fwd is None:
                return self._drop()
            to = hp.peer_address or fwd.relay
            if to[0] != fwd.relay[0] or not self.limit.allow(req.from_addr[0], now):
                return self._drop()
            self._remember(req, now)
            value = encode_holepunch(Holepunch(Mode.FROM_RELAY, hp.id, hp.payload,
                                               req.from_addr))
            node.relay_request(req.tid, to, req.command, req.target, value, req.socket)
            self.stats["relayed"] += 1
            return _SILENT
        if hp.mode == Mode.FROM_SERVER:
            client = hp.peer_address
            if client is None or not self._recall(req, client, now):
                return self._drop()
            value = encode_holepunch(Holepunch(Mode.REPLY, hp.id, hp.payload, req.from_addr))
            node.reply_to(req.tid, client, value, req.socket)
            self.stats["replied"] += 1
            return _SILENT
        return self._drop()

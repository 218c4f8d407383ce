"""DHT attackers for the reliability suite: they speak the real wire and live on the FakeNetwork.

An attacker owns addresses on a :class:`TappedNetwork` (a :class:`FakeNetwork` that hands the
datagrams sent to those addresses to the attacker instead of to a DHT node) and sends datagrams
it builds with Cairn's own encoders (:mod:`cairn.dht.messages`, :mod:`cairn.dht.records`), so
what a node sees is byte for byte what a hostile peer on the Internet could send.

- :class:`AttackedSwarm`: a :class:`DHTSwarm` on a :class:`TappedNetwork`.
- :func:`ground_addresses`: addresses whose node ids (``H(ip ‖ port)``) are closest to a key,
  found by hashing many host/port pairs, as an attacker grinds them.
- :class:`Sybils`: nodes next to a key that answer with forged or stale records and swallow puts.
- :class:`FakeContacts`: many addresses with valid ids that answer every ping (an eclipse flood).
- :class:`Prober`: sends one datagram and keeps every reply it gets back (token harvest, replays,
  amplification measurements).
"""

from __future__ import annotations

import hashlib
import heapq
import random
import socket
from collections.abc import Callable, Iterable, Sequence

from cairn.dht.messages import (
    Address,
    Command,
    Request,
    Response,
    decode,
    encode_request,
    encode_response,
)
from cairn.dht.records import HyperCommand
from cairn.errors import DecodeError
from cairn.testing import Datagram, DHTSwarm, FakeNetwork, SeededRandom

__all__ = [
    "AttackedSwarm",
    "FakeContacts",
    "Handler",
    "Prober",
    "Sybils",
    "TappedNetwork",
    "address_id",
    "ground_addresses",
    "request_bytes",
]


class Handler:
    """Something that owns addresses on a :class:`TappedNetwork` and gets their datagrams."""

    def receive(self, dg: Datagram, now: float, net: TappedNetwork) -> None:
        raise NotImplementedError


Observer = Callable[[Address, Address, bytes, float], None]


class TappedNetwork(FakeNetwork):
    """A FakeNetwork where some addresses belong to attackers, and sends can be watched."""

    def __init__(self, seed: int | random.Random = 0, *, loss: float = 0.0,
                 min_delay: float = 0.0, max_delay: float = 0.0) -> None:
        super().__init__(seed, loss=loss, min_delay=min_delay, max_delay=max_delay)
        self.owners: dict[Address, Handler] = {}
        self.observers: list[Observer] = []

    def claim(self, addresses: Iterable[Address], owner: Handler) -> None:
        for a in addresses:
            self.register(a)
            self.owners[a] = owner

    def send(self, src: Address, dst: Address, data: bytes | bytearray,
             now: float | None = None) -> None:
        for watch in self.observers:
            watch(src, dst, bytes(data), self.clock.now() if now is None else now)
        super().send(src, dst, data, now)

    def deliver_due(self, now: float | None = None) -> list[Datagram]:
        until = self.clock.now() if now is None else now
        out: list[Datagram] = []
        for dg in super().deliver_due(until):
            owner = self.owners.get(dg.dst)
            if owner is None:
                out.append(dg)
            else:
                owner.receive(dg, until, self)
        return out


class AttackedSwarm(DHTSwarm):
    """A :class:`DHTSwarm` whose network is a :class:`TappedNetwork`."""

    net: TappedNetwork

    def __init__(self, n: int, *, seed: int = 1, loss: float = 0.0,
                 min_delay: float = 0.0005, max_delay: float = 0.002) -> None:
        super().__init__(0, seed=seed, loss=loss, min_delay=min_delay, max_delay=max_delay)
        self.net = TappedNetwork(self.rng.fork("net"), loss=loss, min_delay=min_delay,
                                 max_delay=max_delay)
        for _ in range(n):
            self.add_node()


# -- ids -------------------------------------------------------------------------------------------


def _raw(addr: Address) -> bytes:
    return socket.inet_aton(addr[0]) + addr[1].to_bytes(2, "little")


def address_id(addr: Address) -> bytes:
    """A node id as Cairn and hyperdht derive it: BLAKE2b-256 of the 6-byte address.

    (Computed here rather than with :func:`cairn.dht.messages.node_id`, so that grinding tens
    of thousands of addresses does not churn the node's own caches.)"""
    return hashlib.blake2b(_raw(addr), digest_size=32).digest()


def ground_addresses(target: bytes, count: int, hosts: Sequence[str],
                     ports: Iterable[int]) -> list[Address]:
    """The ``count`` addresses among ``hosts`` x ``ports`` whose ids are closest to ``target``."""
    t = int.from_bytes(target, "big")
    port_list = list(ports)

    def scored() -> Iterable[tuple[int, Address]]:
        for h in hosts:
            for p in port_list:
                a = (h, p)
                yield int.from_bytes(address_id(a), "big") ^ t, a

    return [a for _, a in heapq.nsmallest(count, scored())]


def request_bytes(tid: int, to: Address, command: int, *, internal: bool = False,
                  id: bytes | None = None, token: bytes | None = None,
                  target: bytes | None = None, value: bytes | None = None) -> bytes:
    return encode_request(Request(tid, to, command, internal, id, token, target, value))


def _decode_request(dg: Datagram) -> Request | None:
    try:
        msg = decode(dg.data)
    except DecodeError:
        return None
    return msg if isinstance(msg, Request) else None


# -- attackers -------------------------------------------------------------------------------------


class Sybils(Handler):
    """Nodes at ground addresses next to a key. Each answers with its true (address-derived) id,
    so honest nodes route to it; it points every query at its fellow sybils; it acknowledges
    MUTABLE_PUT without storing anything (a black hole); it answers MUTABLE_GET with a lie taken
    in turn from ``lies`` (forged, signed by another key, stale...)."""

    def __init__(self, addresses: Sequence[Address], lies: Sequence[bytes],
                 rng: SeededRandom) -> None:
        self.addresses = list(addresses)
        self.ids = {a: address_id(a) for a in self.addresses}
        self.lies = list(lies)
        self.rng = rng
        self.lies_told = 0
        self.puts_swallowed = 0
        self.requests = 0

    def closest(self, target: bytes | None, but: Address) -> tuple[Address, ...]:
        if target is None:
            return ()
        t = int.from_bytes(target, "big")
        near = sorted(self.addresses, key=lambda a: int.from_bytes(self.ids[a], "big") ^ t)
        return tuple(a for a in near if a != but)[:20]

    def join(self, net: TappedNetwork, honest: Sequence[Address], now: float) -> None:
        """Announce every sybil to ``honest`` nodes: a FIND_NODE for its own id, with the id."""
        for a in self.addresses:
            for h in honest:
                data = request_bytes(self.rng.randrange(0x10000), h, Command.FIND_NODE,
                                     internal=True, id=self.ids[a], target=self.ids[a])
                net.send(a, h, data, now)

    def receive(self, dg: Datagram, now: float, net: TappedNetwork) -> None:
        msg = _decode_request(dg)
        if msg is None:
            return  # replies to our join requests
        self.requests += 1
        me = dg.dst
        value = None
        token = None
        if not msg.internal and msg.command == HyperCommand.MUTABLE_GET:
            value = self.lies[self.lies_told % len(self.lies)]
            self.lies_told += 1
            token = self.rng.randbytes(32)
        elif not msg.internal and msg.command == HyperCommand.MUTABLE_PUT:
            self.puts_swallowed += 1
        elif not msg.internal:
            token = self.rng.randbytes(32)
        resp = Response(msg.tid, dg.src, self.ids[me], token, self.closest(msg.target, me), 0,
                        value)
        net.send(me, dg.src, encode_response(resp), now)


class FakeContacts(Handler):
    """Many addresses, each with its valid id, that answer every request like a live node
    (so a victim that pings them finds them alive): the eclipse attacker's contacts."""

    def __init__(self, addresses: Sequence[Address]) -> None:
        self.addresses = list(addresses)
        self.answered = 0

    def receive(self, dg: Datagram, now: float, net: TappedNetwork) -> None:
        msg = _decode_request(dg)
        if msg is None:
            return
        self.answered += 1
        resp = Response(msg.tid, dg.src, address_id(dg.dst), None, (), 0, None)
        net.send(dg.dst, dg.src, encode_response(resp), now)


class Prober(Handler):
    """Owns some addresses; keeps every datagram sent to them (decoded when it decodes)."""

    def __init__(self) -> None:
        self.inbox: list[tuple[Datagram, float, Request | Response | None]] = []

    def receive(self, dg: Datagram, now: float, net: TappedNetwork) -> None:
        try:
            msg: Request | Response | None = decode(dg.data)
        except DecodeError:
            msg = None
        self.inbox.append((dg, now, msg))

    def responses(self, to: Address | None = None) -> list[Response]:
        return [m for dg, _, m in self.inbox
                if isinstance(m, Response) and (to is None or dg.dst == to)]

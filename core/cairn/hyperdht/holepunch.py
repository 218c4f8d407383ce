"""Holepunching between two NATs, without I/O (hyperdht lib/holepuncher.js, connect.js and
server.js; nat.md section 3).

After the IK, a client and a server that are both behind NATs trade PEER_HOLEPUNCH rounds
through a DHT node, each payload sealed with ``holepunchSecret`` (:class:`PunchSession.seal` /
:meth:`PunchSession.open`):

- round 0 (client): its firewall class and addresses, and the server address it just sent a
  low-TTL probe to (``remoteAddress``). The server answers with its own class and addresses
  and a *token* (BLAKE2b-256 of the client's host under a per-attempt secret); if the server's
  NAT is consistent and ``remoteAddress`` is one of its own addresses, it probes the client at
  once ("fast open").
- round 1 (client): ``punching``, its own token and the server's (``remoteToken``): each side
  now knows the other's host is real (the token came back) and both probe.

A probe is one UDP byte ``0x00`` from the puncher socket. Both consistent: every remote address
once a second for :data:`CONSISTENT_ROUNDS` rounds, unverified ones every fourth round only
(the server waits a second first: its fast-open probe went already). The initiator (client)
takes the first probe from one of the server's hosts as the path; the responder echoes a probe
to its source, but only to a host the client named (no reflection for strangers).

Only CONSISTENT <-> CONSISTENT punching is built (OPEN counts as CONSISTENT, as hyperdht
coerces it). A RANDOM side (symmetric NAT) needs random punching or a relay: the client stops
at once with :class:`DoubleRandomizedNatsError` (both RANDOM, as hyperdht) or
:class:`RemoteNotHolepunchableError`, and a server answers ABORTED, instead of probing for 35 s.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cairn.dht.messages import Address
from cairn.errors import ServiceError
from cairn.hyperdht.messages import (
    Firewall,
    HolepunchPayload,
    NoiseError,
    close_holepunch_payload,
    seal_holepunch_payload,
)
from cairn.hyperdht.nat import NatSampler
from cairn.replication.noise import RandomSource

__all__ = [
    "CONSISTENT_ROUNDS",
    "HOLEPUNCH_TTL",
    "MAX_ECHOES",
    "PROBE",
    "ROUND_INTERVAL",
    "SERVER_GIVE_UP",
    "DoubleRandomizedNatsError",
    "HolepunchAbortedError",
    "PunchSession",
    "RemoteNotHolepunchableError",
    "ServerPunch",
    "holepunch_token",
]

PROBE = b"\x00"
HOLEPUNCH_TTL = 5
"""IP TTL of the first probe toward a peer: it opens our own NAT and should die before theirs."""
CONSISTENT_ROUNDS = 10
ROUND_INTERVAL = 1.0
SERVER_GIVE_UP = 10.0
"""Seconds after the handshake a server keeps a punch (hyperdht: 10)."""
MAX_ECHOES = 64
"""Probes a responder echoes in one punch (an honest client sends a few dozen at most)."""
MAX_REMOTE_ADDRESSES = 8


class HolepunchAbortedError(ServiceError):
    """Holepunching stopped: the peer aborted, a NAT cannot be punched, or no probe came
    through in time."""


class DoubleRandomizedNatsError(HolepunchAbortedError):
    """Both sides are behind symmetric (RANDOM) NATs: no punch can work; a relay is needed."""


class RemoteNotHolepunchableError(HolepunchAbortedError):
    """One side is behind a symmetric (RANDOM) NAT: that needs random ("birthday") punching,
    which Cairn does not do; make one side reachable or dial out instead."""


def holepunch_token(local_secret: bytes, host: str) -> bytes:
    """BLAKE2b-256 of the host string keyed by a per-attempt secret (hyperdht's token)."""
    return hashlib.blake2b(host.encode(), digest_size=32, key=local_secret).digest()


def consistent(firewall: int) -> bool:
    return firewall in (Firewall.CONSISTENT, Firewall.OPEN)


@dataclass(frozen=True, slots=True)
class RemoteAddress:
    address: Address
    verified: bool


class PunchSession:
    """One side's punch: the sealed payloads, the peer's view, the probe schedule, the path."""

    def __init__(self, is_initiator: bool, secret: bytes, rng: RandomSource,
                 nat: NatSampler) -> None:
        self.is_initiator = is_initiator
        self.secret = secret
        self._rng = rng
        self.local_secret = rng.randbytes(32)
        self.nat = nat
        self.remote_firewall: int = Firewall.UNKNOWN
        self.remote_addresses: tuple[RemoteAddress, ...] = ()
        self.remote_punching = False
        self.punching = False
        self.path: Address | None = None
        self.echoes = 0
        self.dropped: dict[str, int] = {}
        self._tries = 0
        self._next_round: float | None = None

    # -- payloads -------------------------------------------------------------------------------

    def seal(self, payload: HolepunchPayload) -> bytes:
        return seal_holepunch_payload(payload, self.secret, self._rng.randbytes(24))

    def open(self, data: bytes) -> HolepunchPayload:
        """The peer's payload; DecodeError when it does not open with the secret."""
        return close_holepunch_payload(data, self.secret)

    def token(self, host: str) -> bytes:
        return holepunch_token(self.local_secret, host)

    def update_remote(self, payload: HolepunchPayload, verified_host: str | None) -> None:
        known = {a.address[0] for a in self.remote_addresses if a.verified}
        addrs = payload.addresses or ()
        self.remote_addresses = tuple(
            RemoteAddress(a, a[0] == verified_host or a[0] in known)
            for a in addrs[:MAX_REMOTE_ADDRESSES] if 0 < a[1] < 65536)
        self.remote_firewall = payload.firewall
        self.remote_punching = payload.punching

    def _drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    # -- decisions ------------------------------------------------------------------------------

    def check_punchable(self) -> None:
        """Raise when this pair of NATs cannot be punched by Cairn (before round 1)."""
        local, remote = self.nat.firewall, self.remote_firewall
        if local == Firewall.UNKNOWN or remote == Firewall.UNKNOWN:
            who = "this side's" if local == Firewall.UNKNOWN else "the peer's"
            raise HolepunchAbortedError(f"holepunch aborted: {who} NAT class is unknown "
                                        "(too few DHT nodes answered its samples)")
        if local == Firewall.RANDOM and remote == Firewall.RANDOM:
            raise DoubleRandomizedNatsError(
                "holepunch aborted: both sides are behind symmetric NATs (a relay is needed)")
        if not (consistent(local) and consistent(remote)):
            who = "this side" if local == Firewall.RANDOM else "the peer"
            raise RemoteNotHolepunchableError(
                f"holepunch aborted: {who} is behind a symmetric NAT; random punching is not "
                "built (make one side reachable, or let the edge dial out)")

    def start(self, now: float) -> None:
        """Start the consistent probe rounds (the responder waits one interval: its fast-open
        probe went already)."""
        self.check_punchable()
        if not self.remote_addresses:
            raise HolepunchAbortedError("holepunch aborted: the peer named no address")
        self.punching = True
        self._tries = 0
        self._next_round = now if self.is_initiator else now + ROUND_INTERVAL

    def next_timer(self) -> float | None:
        return self._next_round if self.punching and self.path is None else None

    def probes_due(self, now: float) -> list[Address]:
        """Where to probe now (call at :meth:`next_timer`)."""
        if self._next_round is None or now < self._next_round or self.path is not None:
            return []
        self._tries += 1
        if self._tries > CONSISTENT_ROUNDS:
            self._next_round = None
            self.punching = False
            return []
        self._next_round = now + ROUND_INTERVAL
        return [a.address for a in self.remote_addresses
                if a.verified or self._tries & 3 == 0]

    @property
    def exhausted(self) -> bool:
        return self._tries > CONSISTENT_ROUNDS

    def on_probe(self, source: Address, extra_hosts: frozenset[str] = frozenset()
                 ) -> Address | None:
        """A 1-byte probe from ``source``. The initiator returns the path (the first probe from
        a host the peer named, once); the responder returns where to echo it (a host the peer
        named, at most MAX_ECHOES). None: dropped (counted in :attr:`dropped`)."""
        hosts = {a.address[0] for a in self.remote_addresses} | extra_hosts
        if source[0] not in hosts:
            self._drop("probe from a host the peer did not name")
            return None
        if self.is_initiator:
            if self.path is not None:
                return None
            self.path = source
            self.punching = False
            return source
        if self.echoes >= MAX_ECHOES:
            self._drop("too many probes")
            return None
        self.echoes += 1
        return source


class ServerPunch:
    """The server's side of one punch (one holepunch id): answers each PEER_HOLEPUNCH round."""

    def __init__(self, secret: bytes, rng: RandomSource, nat: NatSampler, client: Address,
                 now: float) -> None:
        self.session = PunchSession(False, secret, rng, nat)
        self.client = client
        self.round = 0
        self.expires = now + SERVER_GIVE_UP
        self.aborted = False

    def on_request(self, data: bytes, peer: Address, from_server_relay: bool,
                   now: float) -> tuple[bytes, Address | None]:
        """The sealed reply to a sealed request and, for fast open, where to probe at once.
        Raises DecodeError for a payload that does not open (drop it, no answer)."""
        s = self.session
        got = s.open(data)
        if now > self.expires:
            return self._abort(got.token), None
        if got.error != NoiseError.NONE:
            self.aborted = True
            return self._abort(got.token), None
        token = s.token(peer[0])
        echoed = from_server_relay and got.remote_token is not None and got.remote_token == token
        if got.round >= self.round:
            self.round = got.round
            s.update_remote(got, peer[0] if echoed else None)
        if s.nat.firewall == Firewall.UNKNOWN:
            return self._abort(got.token), None
        fast: Address | None = None
        if (consistent(s.nat.firewall) and got.remote_address is not None
                and got.remote_address in s.nat.addresses):
            fast = peer
        if s.remote_punching and not s.punching:
            try:
                s.start(now)
            except HolepunchAbortedError:
                return self._abort(got.token), None
            s.nat.freeze()
        reply = HolepunchPayload(error=NoiseError.NONE, firewall=s.nat.firewall, round=self.round,
                                 connected=s.path is not None, punching=s.punching,
                                 addresses=s.nat.addresses,
                                 token=token if from_server_relay else None,
                                 remote_token=got.token)
        return s.seal(reply), fast

    def _abort(self, remote_token: bytes | None) -> bytes:
        self.aborted = True
        self.session.punching = False
        return self.session.seal(HolepunchPayload(error=NoiseError.ABORTED, round=self.round,
                                                  remote_token=remote_token))

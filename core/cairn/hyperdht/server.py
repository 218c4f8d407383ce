"""The server side of hyperdht's connect, without I/O: relayed handshakes in, IK replies out.

:class:`ServerCore` is the :class:`~cairn.hyperdht.router.LocalServer` a
:class:`~cairn.hyperdht.router.Router` hands PEER_HANDSHAKE / PEER_HOLEPUNCH to. For each new
client message 1 it runs the IK responder, asks ``firewall(remote_key, payload, address)``
(True = refuse, silently as hyperdht), and answers with its payload:

- ``firewall`` OPEN and ``addresses4 = [public_address]`` when the server knows it is reachable
  (``public_address``), else UNKNOWN with ``holepunch = {id, relays}`` (its announce nodes);
- ``udx = {id: a fresh random stream id}``, ``secretStream``, ``error`` NONE (ABORTED when the
  client offered no UDX, VERSION_MISMATCH for a payload version other than 1).

Each accepted handshake is an :class:`~cairn.hyperdht.events.Established` event; each refused one
a :class:`~cairn.hyperdht.events.HandshakeRefused` event (counted in :attr:`ServerCore.stats`).

Bounds: the same message 1 again within :data:`RETRY_WINDOW` (a client or relay retry) gets the
same reply and no new event; after that, a message 1 whose ephemeral key was seen in the last
:data:`REPLAY_MEMORY` seconds is a replay and is refused. Handshakes per client host and in all
are rate limited (:class:`~cairn.hyperdht.router.RateLimit`), the tables have size bounds.

Holepunching is not done yet: a PEER_HOLEPUNCH that opens with the handshake's secret gets an
ABORTED answer (so the client fails at once instead of after its timeout); the OPEN cases (this
server OPEN, or the client OPEN and this server connecting to it) need no punch.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from cairn.crypto import KeyPair
from cairn.dht.messages import Address
from cairn.errors import DecodeError, LocalError
from cairn.hyperdht.events import Established, HandshakeRefused
from cairn.hyperdht.messages import (
    Firewall,
    HolepunchInfo,
    HolepunchPayload,
    NoiseError,
    NoisePayload,
    UdxInfo,
    close_holepunch_payload,
    decode_noise_payload,
    encode_noise_payload,
    seal_holepunch_payload,
)
from cairn.hyperdht.noise_ik import IKHandshake
from cairn.hyperdht.router import RateLimit
from cairn.replication.events import Handshaken, HandshakePayload
from cairn.replication.noise import HandshakeError, RandomSource

__all__ = ["REPLAY_MEMORY", "RETRY_WINDOW", "FirewallHook", "ServerCore", "ServerEvent",
           "allow_only"]

RETRY_WINDOW = 10.0
REPLAY_MEMORY = 3600.0

FirewallHook = Callable[[bytes, NoisePayload, Address], bool]
"""``firewall(remote_public_key, payload, client_address) -> True to refuse``."""

ServerEvent = Established | HandshakeRefused


def allow_only(keys: Iterable[bytes]) -> FirewallHook:
    """A firewall that lets in only these public keys (a gateway's fleet, an edge's gateway)."""
    allowed = frozenset(keys)

    def firewall(remote_public_key: bytes, payload: NoisePayload, address: Address) -> bool:
        return remote_public_key not in allowed

    return firewall


@dataclass(slots=True)
class _Recent:
    reply: bytes
    expires: float
    hp_secret: bytes | None


class ServerCore:
    """One key's hyperdht server: IK responder, bounded and rate limited."""

    def __init__(self, key_pair: KeyPair, rng: RandomSource, *,
                 firewall: FirewallHook | None = None,
                 public_address: Address | None = None,
                 relays: tuple[tuple[Address, Address], ...] = (),
                 limit: RateLimit | None = None,
                 max_recent: int = 1024, max_seen: int = 65536, max_events: int = 1024) -> None:
        if key_pair.secret_key is None:
            raise LocalError("a hyperdht server needs its secret key")
        self.key_pair = key_pair
        self._rng = rng
        self.firewall = firewall
        self.public_address = public_address
        self.relays = relays
        self.limit = limit or RateLimit(per_host=10.0, burst=20.0, total=200.0)
        self.max_recent = max_recent
        self.max_seen = max_seen
        self.max_events = max_events
        self._recent: OrderedDict[bytes, _Recent] = OrderedDict()
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # client ephemeral -> expiry
        self._punches: OrderedDict[int, bytes] = OrderedDict()  # holepunch id -> secret
        self._next_punch = 0
        self.last_reply = b""  # the IK reply of the last new handshake (its punch is keyed so)
        self._events: deque[ServerEvent] = deque()
        self.stats = {"accepted": 0, "refused": 0, "retries": 0, "replays": 0, "bad": 0,
                      "limited": 0, "holepunch": 0, "holepunch_bad": 0}

    def next_event(self) -> ServerEvent | None:
        return self._events.popleft() if self._events else None

    def _event(self, event: ServerEvent) -> None:
        if len(self._events) < self.max_events:
            self._events.append(event)

    def _refuse(self, client: Address, reason: str, stat: str,
                key: bytes | None = None) -> None:
        self.stats[stat] += 1
        self._event(HandshakeRefused(client, reason, key))

    # -- PEER_HANDSHAKE ----------------------------------------------------------------------

    def on_handshake(self, noise: bytes, client: Address, now: float) -> bytes | None:
        digest = hashlib.blake2b(noise, digest_size=32).digest()
        recent = self._recent.get(digest)
        if recent is not None and recent.expires > now:
            self.stats["retries"] += 1
            return recent.reply
        ephemeral = noise[:32]
        seen = self._seen.get(ephemeral)
        if seen is not None and seen > now:
            self._refuse(client, "replayed handshake (its ephemeral key was used before)",
                         "replays")
            return None
        if not self.limit.allow(client[0], now):
            self._refuse(client, "too many handshakes from this host", "limited")
            return None
        ik = IKHandshake(False, self.key_pair, self._rng)
        try:
            ik.receive_data(noise)
            got = ik.next_event()
            assert isinstance(got, HandshakePayload)
            payload = decode_noise_payload(got.payload)
        except (HandshakeError, DecodeError) as exc:
            self._refuse(client, f"bad handshake: {exc}", "bad")
            return None
        self._remember_ephemeral(ephemeral, now)
        remote_key = ik.peer_static_key  # proven by message 1
        assert remote_key is not None
        if self.firewall is not None and self.firewall(remote_key, payload, client):
            self._refuse(client, "refused by the firewall", "refused", remote_key)
            return None
        reply, established = self._answer(ik, payload, client)
        self.last_reply = reply
        self._recent[digest] = _Recent(reply, now + RETRY_WINDOW,
                                       established.holepunch_secret if established else None)
        while len(self._recent) > self.max_recent:
            self._recent.popitem(last=False)
        if established is not None:
            self.stats["accepted"] += 1
            self._event(established)
        return reply

    def _remember_ephemeral(self, ephemeral: bytes, now: float) -> None:
        self._seen[ephemeral] = now + REPLAY_MEMORY
        while len(self._seen) > self.max_seen:
            self._seen.popitem(last=False)

    def _answer(self, ik: IKHandshake, payload: NoisePayload,
                client: Address) -> tuple[bytes, Established | None]:
        if payload.version != 1:
            error = NoiseError.VERSION_MISMATCH
        elif payload.udx is None:
            error = NoiseError.ABORTED
        else:
            error = NoiseError.NONE
        udx_id = int.from_bytes(self._rng.randbytes(4), "little")
        hp_id = self._next_punch
        self._next_punch = (hp_id + 1) % 0x10000
        is_open = self.public_address is not None
        mine = NoisePayload(
            error=error,
            firewall=Firewall.OPEN if is_open else Firewall.UNKNOWN,
            holepunch=None if is_open else HolepunchInfo(hp_id, self.relays),
            addresses4=(self.public_address,) if self.public_address else (),
            udx=UdxInfo(udx_id if error == NoiseError.NONE else 0),
            secret_stream=1,
        )
        ik.send(encode_noise_payload(mine))
        reply = ik.data_to_send()
        done = ik.next_event()
        assert isinstance(done, Handshaken)
        if error != NoiseError.NONE or payload.udx is None:
            return reply, None
        if not is_open:
            self._punches[hp_id] = ik.holepunch_secret
            while len(self._punches) > self.max_recent:
                self._punches.popitem(last=False)
        punch = None if is_open or payload.firewall == Firewall.OPEN else hp_id
        return reply, Established(
            False, self.key_pair.public_key, ik.remote_public_key, ik.handshake_hash,
            ik.tx_key, ik.rx_key, ik.holepunch_secret, udx_id, payload.udx.id, client, payload,
            holepunch_id=punch)

    # -- PEER_HOLEPUNCH ------------------------------------------------------------------------

    def on_holepunch(self, id: int, payload: bytes, client: Address, now: float) -> bytes | None:
        secret = self._punches.get(id)
        if secret is None:
            self.stats["holepunch_bad"] += 1
            return None
        try:
            got = close_holepunch_payload(payload, secret)
        except DecodeError:
            self.stats["holepunch_bad"] += 1
            return None
        self.stats["holepunch"] += 1
        answer = HolepunchPayload(error=NoiseError.ABORTED, firewall=Firewall.UNKNOWN,
                                  round=got.round)
        return seal_holepunch_payload(answer, secret, self._rng.randbytes(24))

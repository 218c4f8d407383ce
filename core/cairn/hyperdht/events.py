"""What the hyperdht connect cores tell their users: frozen, slotted events to ``match`` on."""

from __future__ import annotations

from dataclasses import dataclass

from cairn.dht.messages import Address
from cairn.hyperdht.messages import NoisePayload

__all__ = ["Established", "HandshakeRefused"]


@dataclass(frozen=True, slots=True)
class Established:
    """An IK handshake completed: the keys for the data phase and where to send it.

    ``remote_address`` is where the data stream goes first: for the client, the server's first
    usable address; for the server, the client's address as the relaying node saw it (the UDX
    layer follows the peer if its first packet comes from elsewhere). ``local_udx_id`` is ours,
    ``remote_udx_id`` the peer's (from its payload). ``relay`` (the client's side) is the DHT
    node that relayed the handshake: pass it back as ``relay_addresses`` to reconnect without a
    FIND_PEER. ``holepunch_id`` (both sides behind NATs): the server's punch id; the data
    phase waits for a holepunch (:mod:`cairn.hyperdht.puncher`).
    """

    is_initiator: bool
    public_key: bytes
    remote_public_key: bytes
    handshake_hash: bytes
    tx_key: bytes
    rx_key: bytes
    holepunch_secret: bytes
    local_udx_id: int
    remote_udx_id: int
    remote_address: Address
    remote_payload: NoisePayload
    relay: Address | None = None  # the client side: the node its handshake went through
    holepunch_id: int | None = None  # set when both sides are behind NATs: punch first


@dataclass(frozen=True, slots=True)
class HandshakeRefused:
    """A server dropped a handshake; ``reason`` is one line for the log."""

    client: Address
    reason: str
    remote_public_key: bytes | None = None

"""The client side of hyperdht's connect, without I/O: one IK message 1, replies checked.

::

    client = ClientCore(key_pair, server_public_key, rng)
    value = client.request_value          # PEER_HANDSHAKE value (FROM_CLIENT), same for every try
    # send it to a node whose FIND_PEER reply held the server's record; then, with its reply:
    established = client.on_reply(reply_value, node_address)

The same message 1 goes to every node tried (as hyperdht): a server that sees it twice answers
the same reply. :meth:`ClientCore.on_reply` raises :class:`BadReplyError` (a remote error: try
the next node) for a reply that is not a well-formed REPLY or fails the IK, and
:class:`ServerRefusedError` when the server answered with an error code.
"""

from __future__ import annotations

import ipaddress

from cairn.crypto import KeyPair
from cairn.dht.messages import Address
from cairn.dht.records import hash32
from cairn.errors import DecodeError, LocalError, RemoteError, ServiceError
from cairn.hyperdht.events import Established
from cairn.hyperdht.messages import (
    Firewall,
    Handshake,
    Mode,
    NoiseError,
    NoisePayload,
    UdxInfo,
    decode_handshake,
    decode_noise_payload,
    encode_handshake,
    encode_noise_payload,
)
from cairn.hyperdht.noise_ik import IKHandshake
from cairn.replication.events import HandshakePayload
from cairn.replication.noise import HandshakeError, RandomSource

__all__ = [
    "BadReplyError",
    "ClientCore",
    "ConnectError",
    "HolepunchUnavailableError",
    "PeerConnectionFailedError",
    "PeerNotFoundError",
    "ServerRefusedError",
]


class ConnectError(ServiceError):
    """Connecting by key failed for a reason of the network or the peer's choice."""


class PeerNotFoundError(ConnectError):
    """No DHT node holds an announce of that key (the server is not listening)."""


class PeerConnectionFailedError(ConnectError):
    """Nodes hold the server's record, but no handshake got an answer (it refused us, or it
    is gone)."""


class HolepunchUnavailableError(ConnectError):
    """Both sides are behind NATs: reaching this server needs holepunching, not done yet."""


class BadReplyError(RemoteError):
    """A PEER_HANDSHAKE reply was malformed or failed the Noise IK."""


class ServerRefusedError(RemoteError):
    """The server completed the handshake with an error code (no UDX, version, try later)."""


def _routable(host: str) -> bool:
    try:
        return ipaddress.IPv4Address(host).is_global
    except ValueError:
        return False


class ClientCore:
    """One connect attempt's IK initiator and its message 1."""

    def __init__(self, key_pair: KeyPair, remote_public_key: bytes, rng: RandomSource, *,
                 public_address: Address | None = None, holepunch: bool = False) -> None:
        if len(remote_public_key) != 32:
            raise LocalError(f"a server key is 32 bytes, got {len(remote_public_key)}")
        self.key_pair = key_pair
        self.holepunch = holepunch
        self.remote_public_key = remote_public_key
        self.target = hash32(remote_public_key)
        self.udx_id = int.from_bytes(rng.randbytes(4), "little")
        self.firewall = Firewall.OPEN if public_address is not None else Firewall.UNKNOWN
        self._ik = IKHandshake(True, key_pair, rng, remote_public_key=remote_public_key)
        payload = NoisePayload(firewall=self.firewall,
                               addresses4=(public_address,) if public_address else (),
                               udx=UdxInfo(self.udx_id), secret_stream=1)
        self._ik.send(encode_noise_payload(payload))
        self.noise = self._ik.data_to_send()
        self.request_value = encode_handshake(Handshake(Mode.FROM_CLIENT, self.noise))

    def on_reply(self, value: bytes | None, relay: Address) -> Established:
        """Check the reply ``relay`` sent to our PEER_HANDSHAKE and finish the IK."""
        if self._ik.complete:
            raise LocalError("this connect attempt has already completed its handshake")
        if value is None:
            raise BadReplyError(f"node {relay[0]}:{relay[1]} answered without a handshake")
        try:
            hs = decode_handshake(value)
        except DecodeError as exc:
            raise BadReplyError(f"malformed handshake reply: {exc}") from exc
        if hs.mode != Mode.REPLY or not hs.noise:
            raise BadReplyError(f"handshake reply has mode {hs.mode}, expected REPLY")
        ik = self._ik.fork()  # a forged reply must not spoil the handshake for the next relay
        try:
            ik.receive_data(hs.noise)
            got = ik.next_event()
            assert isinstance(got, HandshakePayload)
            payload = decode_noise_payload(got.payload)
        except (HandshakeError, DecodeError) as exc:
            raise BadReplyError(f"bad IK reply: {exc}") from exc
        self._ik = ik
        if payload.version != 1:
            raise ServerRefusedError(f"server speaks payload version {payload.version}")
        if payload.error != NoiseError.NONE:
            raise ServerRefusedError(f"server answered error {payload.error}")
        if payload.udx is None:
            raise ServerRefusedError("server sent no UDX stream id")
        relayed = hs.peer_address is not None
        server_address = hs.peer_address or relay
        if payload.firewall == Firewall.OPEN or not relayed:
            routable = [a for a in payload.addresses4 if _routable(a[0])]
            remote = routable[0] if routable and payload.firewall == Firewall.OPEN else (
                server_address)
        elif self.firewall == Firewall.OPEN:
            remote = server_address  # the server connects to us (the OPEN shortcut)
        elif self.holepunch and payload.holepunch is not None:
            return Established(True, self.key_pair.public_key, ik.remote_public_key,
                               ik.handshake_hash, ik.tx_key, ik.rx_key, ik.holepunch_secret,
                               self.udx_id, payload.udx.id, server_address, payload, relay,
                               holepunch_id=payload.holepunch.id)
        else:
            raise HolepunchUnavailableError(
                "the server is behind a NAT and so is this client: connect with "
                "holepunch=True to punch, or make one side reachable (public_address=)")
        return Established(True, self.key_pair.public_key, ik.remote_public_key,
                           ik.handshake_hash, ik.tx_key, ik.rx_key, ik.holepunch_secret,
                           self.udx_id, payload.udx.id, remote, payload, relay)

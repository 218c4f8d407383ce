"""Connect by key, the hyperdht way: a Cairn node as a hyperdht server and client.

- :mod:`cairn.hyperdht.messages`: the wire (PEER_HANDSHAKE / PEER_HOLEPUNCH wrappers, Noise and
  holepunch payloads);
- :mod:`cairn.hyperdht.noise_ik`: ``Noise_IK_Ed25519_ChaChaPoly_BLAKE2b``;
- :mod:`cairn.hyperdht.router`: what every DHT node does (forward entries, bounded relaying);
- :mod:`cairn.hyperdht.server` / :mod:`cairn.hyperdht.client`: the sans-I/O ends;
- :mod:`cairn.hyperdht.aio`: :func:`serve_by_key`, :func:`connect_by_key` on a running node, and
  :func:`open_data_stream` (a UDX stream carrying a replication ``Connection``).

See docs/dht.md ("Connect by key") and docs/decisions/0013-hyperdht-connect.md.
"""

from cairn.hyperdht.aio import (
    KeyServer,
    connect_by_key,
    discard_data_stream,
    handshake_by_key,
    open_data_stream,
    serve_by_key,
)
from cairn.hyperdht.client import (
    BadReplyError,
    ClientCore,
    ConnectError,
    HolepunchUnavailableError,
    PeerConnectionFailedError,
    PeerNotFoundError,
    ServerRefusedError,
)
from cairn.hyperdht.events import Established, HandshakeRefused
from cairn.hyperdht.router import RateLimit, Router
from cairn.hyperdht.server import ServerCore, allow_only

__all__ = [
    "BadReplyError",
    "ClientCore",
    "ConnectError",
    "Established",
    "HandshakeRefused",
    "HolepunchUnavailableError",
    "KeyServer",
    "PeerConnectionFailedError",
    "PeerNotFoundError",
    "RateLimit",
    "Router",
    "ServerCore",
    "ServerRefusedError",
    "allow_only",
    "connect_by_key",
    "discard_data_stream",
    "handshake_by_key",
    "open_data_stream",
    "serve_by_key",
]

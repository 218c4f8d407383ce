"""Connect by key, the hyperdht way: a Cairn node as a hyperdht server and client.

- :mod:`cairn.hyperdht.messages`: the wire (PEER_HANDSHAKE / PEER_HOLEPUNCH wrappers, Noise and
  holepunch payloads);
- :mod:`cairn.hyperdht.noise_ik`: ``Noise_IK_Ed25519_ChaChaPoly_BLAKE2b``;
- :mod:`cairn.hyperdht.router`: what every DHT node does (forward entries, bounded relaying);
- :mod:`cairn.hyperdht.server` / :mod:`cairn.hyperdht.client`: the sans-I/O ends;
- :mod:`cairn.hyperdht.aio`: :func:`serve_by_key`, :func:`connect_by_key` on a running node, and
  :func:`open_data_stream` / :func:`accept_data_stream` (a UDX stream carrying a replication
  ``Connection``; punched or not).
- :mod:`cairn.hyperdht.nat`, :mod:`cairn.hyperdht.holepunch` (sans-I/O) and
  :mod:`cairn.hyperdht.puncher`, :mod:`cairn.hyperdht.punches` (asyncio): holepunching.

See docs/dht.md ("Connect by key") and docs/decisions/0013-hyperdht-connect.md.
"""

from cairn.hyperdht.aio import (
    KeyServer,
    accept_data_stream,
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
from cairn.hyperdht.holepunch import (
    DoubleRandomizedNatsError,
    HolepunchAbortedError,
    RemoteNotHolepunchableError,
)
from cairn.hyperdht.nat import NatSampler
from cairn.hyperdht.puncher import Puncher, punch_as_client
from cairn.hyperdht.router import RateLimit, Router
from cairn.hyperdht.server import ServerCore, allow_only

__all__ = [
    "BadReplyError",
    "ClientCore",
    "ConnectError",
    "DoubleRandomizedNatsError",
    "Established",
    "HandshakeRefused",
    "HolepunchAbortedError",
    "HolepunchUnavailableError",
    "KeyServer",
    "NatSampler",
    "PeerConnectionFailedError",
    "PeerNotFoundError",
    "Puncher",
    "RateLimit",
    "RemoteNotHolepunchableError",
    "Router",
    "ServerCore",
    "ServerRefusedError",
    "accept_data_stream",
    "allow_only",
    "connect_by_key",
    "discard_data_stream",
    "handshake_by_key",
    "open_data_stream",
    "punch_as_client",
    "serve_by_key",
]

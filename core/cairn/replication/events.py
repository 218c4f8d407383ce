"""The events the replication cores hand out from ``next_event()``: frozen, slotted dataclasses.

One union per core, so a consumer ``match``-es on what that core can say:

- :data:`NoiseEvent` (:class:`~cairn.replication.noise.NoiseHandshake`): :class:`HandshakePayload`
  for each message taken, then :class:`Handshaken` once the third has crossed;
- :data:`SecretStreamEvent` (:class:`~cairn.replication.secret_stream.SecretStream`):
  :class:`Handshaken`, :class:`Message`, :class:`Closed`;
- :data:`MuxEvent` (:class:`~cairn.replication.protomux.Mux`): :class:`ChannelOpened`,
  :class:`ChannelMessage`, :class:`ChannelClosed`, :class:`ChannelRejected`;
- :data:`SessionEvent` (:class:`~cairn.replication.session.Session`, passed on by
  :class:`~cairn.replication.peer.Replicator`): :class:`Synced`, :class:`Stored`,
  :class:`SeekAnswered`, each naming its log by discovery key.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ChannelClosed",
    "ChannelMessage",
    "ChannelOpened",
    "ChannelRejected",
    "Closed",
    "HandshakePayload",
    "Handshaken",
    "Message",
    "MuxEvent",
    "NoiseEvent",
    "SecretStreamEvent",
    "SeekAnswered",
    "SessionEvent",
    "Stored",
    "Synced",
]


# -- Noise and secret-stream ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HandshakePayload:
    """The payload of one handshake message the peer sent (empty in secret-stream)."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class Handshaken:
    """The Noise handshake completed: who the peer is and the hash both sides share."""

    remote_public_key: bytes
    handshake_hash: bytes


@dataclass(frozen=True, slots=True)
class Message:
    """One decrypted message (never empty: keepalives are skipped)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Closed:
    """The peer ended the stream between frames (``reason`` says whether before the handshake
    and header were done: then nothing was established)."""

    reason: str


NoiseEvent = HandshakePayload | Handshaken
SecretStreamEvent = Handshaken | Message | Closed


# -- Protomux -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChannelOpened:
    """The peer opened its channel ``remote_id`` for ``(protocol, id)``.

    ``channel`` is our local channel it paired with, when we had opened first; the channel is
    then open both ways. When ``channel`` is ``None`` the peer waits for us: accept with
    :meth:`Mux.open_channel <cairn.replication.protomux.Mux.open_channel>` (same protocol and
    id) or refuse with :meth:`Mux.reject <cairn.replication.protomux.Mux.reject>`.
    """

    remote_id: int
    protocol: str
    id: bytes | None
    handshake: bytes
    channel: int | None


@dataclass(frozen=True, slots=True)
class ChannelMessage:
    """A message on our local channel ``channel``."""

    channel: int
    type: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class ChannelClosed:
    """The peer closed a channel: ours (``channel``) if it was paired, else only its own."""

    channel: int | None
    remote_id: int


@dataclass(frozen=True, slots=True)
class ChannelRejected:
    """The peer refused the channel we opened as ``channel``; the channel is gone."""

    channel: int


MuxEvent = ChannelOpened | ChannelMessage | ChannelClosed | ChannelRejected


# -- the replication session ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Synced:
    """The peer said how long its log is (``sync``), at fork ``fork``."""

    discovery_key: bytes
    fork: int
    length: int


@dataclass(frozen=True, slots=True)
class Stored:
    """``blocks`` downloaded blocks were verified and stored in the log."""

    discovery_key: bytes
    blocks: int


@dataclass(frozen=True, slots=True)
class SeekAnswered:
    """The time seek sent as ``request`` is proven: ``index`` is the first frame at or after it."""

    discovery_key: bytes
    request: int
    index: int


SessionEvent = Synced | Stored | SeekAnswered

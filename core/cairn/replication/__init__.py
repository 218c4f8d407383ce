"""Replication transport: Noise XX, secret-stream and Protomux, byte for byte as the JS stack.

Sans-I/O cores (:class:`NoiseHandshake`, :class:`SecretStream`, :class:`Mux`, and the
``hypercore/alpha`` :class:`~cairn.replication.session.Session` with the
:class:`~cairn.replication.peer.Replicator` that runs one per channel) and thin asyncio adapters
(:mod:`cairn.replication.aio`, :mod:`cairn.replication.net`). The messages' bytes are
:mod:`cairn.messages`.

Every core has the same three verbs (h11's), so a driver is the same loop whatever it drives::

    core.receive_data(data)        # what the peer sent: bytes, a message, a channel message
    while (event := core.next_event()) is not None:
        ...                        # a frozen dataclass of cairn.replication.events
    write(core.data_to_send())     # what to send now (and the core forgets it)

========================  =============================  ================================
core                      ``receive_data`` takes         ``data_to_send`` gives
========================  =============================  ================================
``NoiseHandshake``        one handshake message          our next handshake message
``SecretStream``          bytes read (``b""`` = EOF)     bytes to write
``Mux``                   one decrypted message          messages, each one to encrypt
``Session``               ``(type, payload)``            ``[(type, payload), ...]``
``Replicator``            one decrypted message          messages, each one to encrypt
========================  =============================  ================================

Which events each core gives is listed in :mod:`cairn.replication.events`. What this side says
on its own goes in through the core's other verbs (``send``, ``open_channel``, ``want``, ...)
and comes out of ``data_to_send`` too. A core raises a :class:`~cairn.errors.RemoteError` for
the peer's bad bytes from the call that reads them (``next_event`` for the byte stream of
:class:`SecretStream`, ``receive_data`` for the message cores) and a
:class:`~cairn.errors.LocalError` when its caller breaks the rules.
"""

from cairn.replication.events import (
    ChannelClosed,
    ChannelMessage,
    ChannelOpened,
    ChannelRejected,
    Closed,
    Handshaken,
    HandshakePayload,
    Message,
    MuxEvent,
    NoiseEvent,
    SecretStreamEvent,
    SeekAnswered,
    SessionEvent,
    Stored,
    Synced,
)
from cairn.replication.noise import HandshakeError, NoiseHandshake, RandomSource
from cairn.replication.protomux import ChannelLimitError, Mux, MuxError
from cairn.replication.secret_stream import (
    MAX_FRAME_SIZE,
    MAX_MESSAGE_SIZE,
    FrameTooLargeError,
    SecretStream,
    SecretStreamError,
)

__all__ = [
    "MAX_FRAME_SIZE",
    "MAX_MESSAGE_SIZE",
    "ChannelClosed",
    "ChannelLimitError",
    "ChannelMessage",
    "ChannelOpened",
    "ChannelRejected",
    "Closed",
    "FrameTooLargeError",
    "HandshakeError",
    "HandshakePayload",
    "Handshaken",
    "Message",
    "Mux",
    "MuxError",
    "MuxEvent",
    "NoiseEvent",
    "NoiseHandshake",
    "RandomSource",
    "SecretStream",
    "SecretStreamError",
    "SecretStreamEvent",
    "SeekAnswered",
    "SessionEvent",
    "Stored",
    "Synced",
]

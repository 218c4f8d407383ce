"""Replication transport: Noise XX, secret-stream and Protomux, byte for byte as the JS stack.

Sans-I/O cores (:class:`NoiseHandshake`, :class:`SecretStream`, :class:`Mux`) and a thin asyncio
adapter in :mod:`cairn.replication.aio`.
"""

from cairn.replication.noise import HandshakeError, NoiseHandshake, RandomSource
from cairn.replication.protomux import (
    ChannelClosed,
    ChannelLimitError,
    ChannelMessage,
    ChannelOpened,
    ChannelRejected,
    Mux,
    MuxError,
    MuxEvent,
)
from cairn.replication.secret_stream import (
    MAX_FRAME_SIZE,
    MAX_MESSAGE_SIZE,
    Closed,
    FrameTooLargeError,
    Handshaken,
    Message,
    SecretStream,
    SecretStreamError,
    SecretStreamEvent,
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
    "Handshaken",
    "Message",
    "Mux",
    "MuxError",
    "MuxEvent",
    "NoiseHandshake",
    "RandomSource",
    "SecretStream",
    "SecretStreamError",
    "SecretStreamEvent",
]

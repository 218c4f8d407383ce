"""@hyperswarm/secret-stream 6 as a sans-I/O core: Noise XX, then libsodium secretstream frames.

The wire, each way:

1. frames ``uint24le(length) ‖ payload``, over TCP or any reliable byte stream;
2. the three Noise XX messages (:mod:`cairn.replication.noise`), one frame each (32, 96, 64 bytes);
3. one 56-byte header frame: the stream id ``BLAKE2b-256(key=handshake hash, NS_INITIATOR or
   NS_RESPONDER)`` for the *sender's* role (``namespace("hyperswarm/secret-stream", 3)``), then the
   24-byte ``crypto_secretstream_xchacha20poly1305`` header;
4. every later frame is one secretstream message (tag 0, 17 bytes of overhead). An empty plaintext
   is a keepalive and is skipped.

Neither side waits for the other's header before sending data, and :meth:`SecretStream.send`
before the handshake completes is queued until it does.

:class:`SecretStream` speaks h11's verbs, the shape of every replication core
(:mod:`cairn.replication`): :meth:`~SecretStream.receive_data` (``b""`` = the peer closed),
:meth:`~SecretStream.next_event`, :meth:`~SecretStream.send`, :meth:`~SecretStream.data_to_send`.
Its events (:class:`Handshaken`, :class:`Message`, :class:`Closed`) live in
:mod:`cairn.replication.events`. It reads no clock and no random source of its own: the
ephemeral Noise key and the secretstream header come from the ``rng`` it is given, so a seeded
test replays byte for byte. Bad bytes from the peer raise a :class:`~cairn.errors.RemoteError`
(:class:`SecretStreamError`, :class:`FrameTooLargeError`, :class:`HandshakeError`); after one the
stream is failed and every later call says so.

Neither JS secret-stream nor hypercore sets a read timeout: the adapter must bound its own reads.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import Final, Protocol

import nacl.bindings as sodium
from nacl.exceptions import CryptoError

try:  # PyNaCl's own cffi handle (private): libsodium's pull without the wrapper's checks
    from nacl._sodium import ffi as _ffi
    from nacl._sodium import lib as _lib
except ImportError:  # pragma: no cover - a PyNaCl that moved it: the public wrapper
    _ffi = _lib = None

from cairn.crypto import KeyPair, namespace
from cairn.errors import LocalError, RemoteError
from cairn.replication.events import Closed, Handshaken, Message, SecretStreamEvent
from cairn.replication.noise import HandshakeError, NoiseHandshake, RandomSource

__all__ = [
    "ABYTES",
    "HEADER_SIZE",
    "MAX_FRAME_SIZE",
    "MAX_MESSAGE_SIZE",
    "NS_INITIATOR",
    "NS_RESPONDER",
    "NS_SEND",
    "Closed",
    "FrameTooLargeError",
    "HandshakeError",
    "Handshaken",
    "Message",
    "SecretStream",
    "SecretStreamError",
    "SecretStreamEvent",
    "stream_id",
]

NS_INITIATOR, NS_RESPONDER, NS_SEND = namespace("hyperswarm/secret-stream", 3)

#: Overhead of one secretstream message (1 tag byte + 16 MAC bytes).
ABYTES: Final[int] = sodium.crypto_secretstream_xchacha20poly1305_ABYTES
_SS_HEADER_SIZE: Final[int] = sodium.crypto_secretstream_xchacha20poly1305_HEADERBYTES
_TAG_MESSAGE: Final[int] = sodium.crypto_secretstream_xchacha20poly1305_TAG_MESSAGE
#: The header frame: 32-byte stream id ‖ 24-byte secretstream header.
HEADER_SIZE: Final = 32 + _SS_HEADER_SIZE
#: The largest frame a uint24 length can carry (JS's MAX_ATOMIC_WRITE).
MAX_FRAME_SIZE: Final = (1 << 24) - 1
#: The largest plaintext one frame can carry.
MAX_MESSAGE_SIZE: Final = MAX_FRAME_SIZE - ABYTES
#: Handshake frames are Noise messages; noise-handshake refuses any over 65535 bytes.
_MAX_HANDSHAKE_FRAME: Final = 65535


class SecretStreamError(RemoteError):
    """The peer broke the secret-stream protocol: bad header, bad frame, failed decryption."""


class FrameTooLargeError(SecretStreamError):
    """The peer announced a frame longer than this stream accepts (``max_frame_size``)."""


def stream_id(handshake_hash: bytes, is_initiator: bool) -> bytes:
    """The 32-byte id a side puts in its header: keyed by the handshake hash, by its own role."""
    tag = NS_INITIATOR if is_initiator else NS_RESPONDER
    return hashlib.blake2b(tag, digest_size=32, key=handshake_hash).digest()


def _frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "little") + payload


class CompletedHandshake(Protocol):
    """What a finished handshake hands secret-stream (Noise XX here, hyperdht's IK elsewhere)."""

    @property
    def handshake_hash(self) -> bytes: ...

    @property
    def remote_public_key(self) -> bytes: ...

    @property
    def tx_key(self) -> bytes: ...

    @property
    def rx_key(self) -> bytes: ...


class SecretStream:
    """One end of a secret-stream connection, without I/O.

    ::

        s = SecretStream(is_initiator, key_pair, rng)
        s.start()
        transport.write(s.data_to_send())
        # on every read:
        s.receive_data(chunk)                # b"" when the transport reached EOF
        while (event := s.next_event()) is not None:
            ...                              # Handshaken, Message, Closed
        transport.write(s.data_to_send())

    ``rng`` needs ``randbytes(n)``: ``random.SystemRandom()`` for real connections (it reads the
    OS's secure source), a seeded generator in tests. ``max_frame_size`` bounds what the peer may
    announce (at most, and by default, the uint24 limit of 16 MiB − 1); a larger announced frame
    raises :class:`FrameTooLargeError` before its body is buffered.
    """

    def __init__(
        self,
        is_initiator: bool,
        key_pair: KeyPair,
        rng: RandomSource,
        *,
        max_frame_size: int = MAX_FRAME_SIZE,
    ) -> None:
        if not HEADER_SIZE <= max_frame_size <= MAX_FRAME_SIZE:
            raise ValueError(
                f"max_frame_size must be between {HEADER_SIZE} and {MAX_FRAME_SIZE}, "
                f"got {max_frame_size}"
            )
        self.is_initiator = is_initiator
        self.key_pair = key_pair
        self.max_frame_size = max_frame_size
        self._rng = rng
        self._noise: NoiseHandshake | None = NoiseHandshake(is_initiator, key_pair, rng)
        self._started = False
        self._handshake_hash: bytes | None = None
        self._remote_public_key: bytes | None = None
        self._push: sodium.crypto_secretstream_xchacha20poly1305_state | None = None
        self._pull: sodium.crypto_secretstream_xchacha20poly1305_state | None = None
        self._rx_key: bytes | None = None
        self._inbuf = bytearray()
        self._outbuf = bytearray()
        self._events: deque[SecretStreamEvent] = deque()
        self._queued: list[bytes] = []  # plaintexts sent before the handshake completed
        self._eof = False
        self._closed_event_given = False
        self._local_closed = False
        self._error: RemoteError | None = None

    # -- state -----------------------------------------------------------------------------

    @property
    def public_key(self) -> bytes:
        return self.key_pair.public_key

    @property
    def started(self) -> bool:
        """True once :meth:`start` (or :meth:`start_established`) was called."""
        return self._started

    @property
    def established(self) -> bool:
        """True once the Noise handshake is complete (this side may encrypt)."""
        return self._push is not None

    @property
    def header_received(self) -> bool:
        """True once the peer's header frame was read (its messages can be decrypted)."""
        return self._pull is not None

    @property
    def remote_public_key(self) -> bytes | None:
        return self._remote_public_key

    @property
    def handshake_hash(self) -> bytes | None:
        return self._handshake_hash

    # -- the h11 verbs ---------------------------------------------------------------------

    def start(self) -> None:
        """Begin: the initiator queues Noise message 1; the responder waits for it."""
        if self._started:
            raise LocalError("start() was already called")
        self._started = True
        if self.is_initiator:
            assert self._noise is not None
            self._noise.send()
            self._outbuf += _frame(self._noise.data_to_send())

    def start_established(self, handshake: CompletedHandshake) -> None:
        """Begin with the keys of a handshake run elsewhere, with no Noise of its own: hyperdht's
        UDX streams carry secret-stream keyed by the connect's IK (each side sends its header
        frame, then data frames)."""
        if self._started:
            raise LocalError("start() was already called")
        self._started = True
        self._established(handshake)

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Bytes read from the transport; ``b""`` means the peer closed its end."""
        self._check_started()
        if self._eof:
            raise LocalError("receive_data() after the end of the stream (b'') was given")
        if not data:
            self._eof = True
            return
        self._inbuf += data

    def next_event(self) -> SecretStreamEvent | None:
        """The next event, or ``None`` when more data is needed (or after :class:`Closed`).

        Raises a :class:`~cairn.errors.RemoteError` when the peer's bytes are bad; the stream
        is then failed and drop the connection.
        """
        self._check_started()
        if self._error is not None:
            raise self._error
        try:
            while not self._events:
                frame = self._next_frame()
                if frame is None:
                    break
                self._handle(frame)
        except RemoteError as exc:
            self._error = exc
            raise
        if self._events:
            return self._events.popleft()
        if self._eof and not self._closed_event_given:
            self._closed_event_given = True
            if self._pull is None:
                return Closed("the peer ended the stream before the handshake completed")
            return Closed("the peer ended the stream")
        return None

    def send(self, plaintext: bytes | bytearray | memoryview) -> None:
        """Encrypt one message (queued until the handshake completes if it has not yet)."""
        self._check_started()
        if self._local_closed:
            raise LocalError("send() after close()")
        if self._error is not None:
            raise LocalError(f"send() on a failed stream ({self._error})")
        if len(plaintext) > MAX_MESSAGE_SIZE:
            raise LocalError(
                f"message of {len(plaintext)} bytes is larger than one frame can carry "
                f"({MAX_MESSAGE_SIZE})"
            )
        data = bytes(plaintext)
        if self._push is None:
            self._queued.append(data)
        else:
            self._outbuf += self._encrypt(data)

    def keepalive(self) -> bytes:
        """Queue an empty message (the 20-byte frame JS sends as a keepalive) and return every
        byte now due to the transport, the keepalive last.

        The frame advances the encryption state, so it must go out in order with the rest:
        this is why it returns the whole of :meth:`data_to_send`, which is exactly the 20 bytes
        when nothing else was waiting. Before the handshake completes there is nothing to keep
        alive and only the waiting bytes come back.
        """
        if self._push is not None and not self._local_closed and self._error is None:
            self._outbuf += self._encrypt(b"")
        return self.data_to_send()

    def data_to_send(self) -> bytes:
        """Everything to write to the transport now (and forget it)."""
        out = bytes(self._outbuf)
        self._outbuf.clear()
        return out

    def close(self) -> None:
        """This side is done sending (secret-stream has no in-band close: end the transport)."""
        self._local_closed = True

    # -- internals -------------------------------------------------------------------------

    def _check_started(self) -> None:
        if not self._started:
            raise LocalError("call start() first")

    def _next_frame(self) -> bytes | None:
        buf = self._inbuf
        if len(buf) < 3:
            if self._eof and buf:
                raise SecretStreamError("the stream ended inside a frame length")
            return None
        length = int.from_bytes(buf[:3], "little")
        limit = self.max_frame_size if self._pull is not None else _MAX_HANDSHAKE_FRAME
        if length > limit:
            raise FrameTooLargeError(
                f"the peer announced a frame of {length} bytes; the limit is {limit}"
            )
        if len(buf) < 3 + length:
            if self._eof:
                raise SecretStreamError(
                    f"the stream ended inside a frame ({len(buf) - 3} of {length} bytes)"
                )
            return None
        frame = bytes(buf[3 : 3 + length])
        del buf[: 3 + length]
        return frame

    def _handle(self, frame: bytes) -> None:
        noise = self._noise
        if noise is not None:
            noise.receive_data(frame)
            if noise.wants_to_send:
                noise.send()
                self._outbuf += _frame(noise.data_to_send())
            while (event := noise.next_event()) is not None:
                if isinstance(event, Handshaken):
                    self._established(noise)
            return
        if self._pull is None:
            self._receive_header(frame)
            return
        if len(frame) < ABYTES:
            raise SecretStreamError(f"frame of {len(frame)} bytes is shorter than {ABYTES}")
        # libsodium's pull itself, as PyNaCl's wrapper calls it after its argument checks
        # (which the length check above and our own state make true): one message each
        pull = self._pull
        mlen = len(frame) - ABYTES
        if _lib is None or not hasattr(pull, "statebuf"):  # (another PyNaCl's internals)
            try:
                message, _tag = sodium.crypto_secretstream_xchacha20poly1305_pull(pull, frame)
            except CryptoError:
                raise SecretStreamError(
                    "a frame failed to decrypt (tampered or out of order)") from None
            if message:
                self._events.append(Message(message))
            return
        if pull.rawbuf is None or len(pull.rawbuf) < mlen:
            pull.rawbuf = _ffi.new("unsigned char[]", mlen)
        if _lib.crypto_secretstream_xchacha20poly1305_pull(
                pull.statebuf, pull.rawbuf, _ffi.NULL, pull.tagbuf, frame, len(frame),
                _ffi.NULL, 0) != 0:
            raise SecretStreamError("a frame failed to decrypt (tampered or out of order)")
        # secret-stream ignores the tag (it never sends anything but TAG_MESSAGE)
        if mlen:
            self._events.append(Message(_ffi.buffer(pull.rawbuf, mlen)[:]))

    def _established(self, noise: CompletedHandshake) -> None:
        self._noise = None
        self._handshake_hash = noise.handshake_hash
        self._remote_public_key = noise.remote_public_key
        self._rx_key = noise.rx_key
        # libsodium's init_push is "draw a random header, then init_pull on it": do the same
        # with the header drawn from our rng, so the stream is reproducible under a seeded one.
        header = self._rng.randbytes(_SS_HEADER_SIZE)
        if len(header) != _SS_HEADER_SIZE:
            raise LocalError(f"rng.randbytes({_SS_HEADER_SIZE}) returned {len(header)} bytes")
        push = sodium.crypto_secretstream_xchacha20poly1305_state()
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(push, header, noise.tx_key)
        self._push = push
        self._outbuf += _frame(stream_id(noise.handshake_hash, self.is_initiator) + header)
        self._events.append(Handshaken(noise.remote_public_key, noise.handshake_hash))
        queued, self._queued = self._queued, []
        if not self._local_closed:
            for data in queued:
                self._outbuf += self._encrypt(data)

    def _receive_header(self, frame: bytes) -> None:
        if len(frame) != HEADER_SIZE:
            raise SecretStreamError(f"header frame is {len(frame)} bytes, expected {HEADER_SIZE}")
        assert self._handshake_hash is not None and self._rx_key is not None
        expected = stream_id(self._handshake_hash, not self.is_initiator)
        if frame[:32] != expected:
            raise SecretStreamError("header carries the wrong stream id")
        pull = sodium.crypto_secretstream_xchacha20poly1305_state()
        sodium.crypto_secretstream_xchacha20poly1305_init_pull(pull, frame[32:], self._rx_key)
        self._pull = pull

    def _encrypt(self, plaintext: bytes) -> bytes:
        assert self._push is not None
        ciphertext: bytes = sodium.crypto_secretstream_xchacha20poly1305_push(
            self._push, plaintext, None, _TAG_MESSAGE
        )
        return _frame(ciphertext)

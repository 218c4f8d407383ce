"""The Noise handshake of @hyperswarm/secret-stream: ``Noise_XX_Ed25519_ChaChaPoly_BLAKE2b``.

A sans-I/O core: it turns handshake messages into handshake messages and, once three have
crossed, into the two transport keys, the 64-byte handshake hash and the peer's static key. It
never frames, reads a socket or draws randomness of its own: the ephemeral key comes from the
``rng`` it is given.

What noise-handshake 4 and noise-curve-ed do, and this module does the same way:

- ``h`` starts as the protocol name (35 bytes) zero-padded to 64, ``ck = h``, and the empty
  prologue is still mixed: ``h = BLAKE2b-512(h)``. ``mixHash(x) = BLAKE2b-512(h ‖ x)``, empty
  payloads included.
- Keys are Ed25519 key pairs. DH is not X25519: the scalar is ``SHA-512(seed)[0:32]``, clamped,
  and the result is the compressed Edwards point ``crypto_scalarmult_ed25519_noclamp(scalar, pk)``.
- HKDF is HMAC-BLAKE2b with 64-byte outputs: ``prk = HMAC(ck, ikm)``, ``o1 = HMAC(prk, 0x01)``,
  ``o2 = HMAC(prk, o1 ‖ 0x02)``; a DH sets ``ck = o1`` and the cipher key ``o2[0:32]``, nonce 0.
- The AEAD is IETF ChaCha20-Poly1305, nonce ``4 zero bytes ‖ u64le(n)``, with ``h`` as the
  associated data.
- XX: ``-> e`` (32 bytes), ``<- e, ee, s, es`` (96 bytes), ``-> s, se`` (64 bytes), each with an
  (empty) encrypted payload. Split: ``hkdf(ck, "")``; the initiator sends with the first key.

:class:`NoiseHandshake` has the verbs of every replication core (:mod:`cairn.replication`):
:meth:`~NoiseHandshake.receive_data` takes the peer's next message, :meth:`~NoiseHandshake.send`
writes ours, :meth:`~NoiseHandshake.data_to_send` hands it out and
:meth:`~NoiseHandshake.next_event` says what happened (a :class:`HandshakePayload` per message
taken, :class:`Handshaken` once complete). Bad bytes from the peer raise :class:`HandshakeError`
(a :class:`~cairn.errors.RemoteError`) from :meth:`~NoiseHandshake.receive_data`; calling a
method out of turn raises :class:`~cairn.errors.LocalError`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections import deque
from typing import ClassVar, Final, Protocol

import nacl.bindings as sodium
import nacl.exceptions

from cairn.crypto import KeyPair, key_pair
from cairn.errors import LocalError, RemoteError
from cairn.replication.events import Handshaken, HandshakePayload, NoiseEvent

__all__ = [
    "HANDSHAKE_HASH_SIZE",
    "MESSAGE_SIZES",
    "PROTOCOL_NAME",
    "HandshakeError",
    "HandshakePayload",
    "Handshaken",
    "NoiseEvent",
    "NoiseHandshake",
    "RandomSource",
    "dh",
    "hkdf",
]

PROTOCOL_NAME: Final = b"Noise_XX_Ed25519_ChaChaPoly_BLAKE2b"
HANDSHAKE_HASH_SIZE: Final = 64
#: Sizes of the three XX messages with empty payloads.
MESSAGE_SIZES: Final = (32, 96, 64)
#: Largest encrypted Noise message noise-handshake accepts.
MAX_MESSAGE_SIZE: Final = 65535

_KEY_SIZE = 32
_MAC_SIZE = 16
_PUBLIC_KEY_SIZE = 32


class HandshakeError(RemoteError):
    """The peer's handshake message was malformed, failed to decrypt or carried a bad key."""


class RandomSource(Protocol):
    """Where a core draws its random bytes: ``random.SystemRandom()`` in production, a seeded
    ``random.Random`` (or :class:`cairn.testing.SeededRandom`) in tests."""

    def randbytes(self, n: int, /) -> bytes: ...


def _hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=64).digest()


def _hmac(key: bytes, data: bytes) -> bytes:
    # RFC 2104 over BLAKE2b-512 (block 128 bytes): exactly noise-handshake's hmac.js
    return hmac.new(key, data, hashlib.blake2b).digest()


def hkdf(chaining_key: bytes, input_key_material: bytes) -> tuple[bytes, bytes]:
    """The two 64-byte outputs of noise-handshake's HKDF (HMAC-BLAKE2b, empty info)."""
    prk = _hmac(chaining_key, input_key_material)
    out1 = _hmac(prk, b"\x01")
    out2 = _hmac(prk, out1 + b"\x02")
    return out1, out2


def _scalar(secret_key: bytes) -> bytes:
    digest = bytearray(hashlib.sha512(secret_key[:32]).digest()[:32])
    digest[0] &= 248
    digest[31] &= 127
    digest[31] |= 64
    return bytes(digest)


def dh(local: KeyPair, remote_public_key: bytes) -> bytes:
    """noise-curve-ed's DH: the clamped Ed25519 scalar of ``local`` times the peer's point.

    Raises :class:`HandshakeError` when the peer's key is not a usable point (small order,
    not canonical, not on the curve) or the product is the identity: libsodium refuses those.
    """
    if local.secret_key is None:
        raise LocalError("the local key pair has no secret key")
    if len(remote_public_key) != _PUBLIC_KEY_SIZE:
        raise HandshakeError(f"public key must be 32 bytes, got {len(remote_public_key)}")
    try:
        out: bytes = sodium.crypto_scalarmult_ed25519_noclamp(
            _scalar(local.secret_key), remote_public_key
        )
    except nacl.exceptions.CryptoError as exc:
        raise HandshakeError("the peer's key is not a usable Ed25519 point") from exc
    return out


def _point(public_key: bytes, what: str) -> bytes:
    if not sodium.crypto_core_ed25519_is_valid_point(public_key):
        raise HandshakeError(f"the peer's {what} key is not a valid Ed25519 point")
    return public_key


def _nonce(n: int) -> bytes:
    return b"\x00\x00\x00\x00" + n.to_bytes(8, "little")


class _Symmetric:
    """Noise's SymmetricState with its CipherState, BLAKE2b-512 flavour."""

    __slots__ = ("ck", "h", "key", "nonce")

    def __init__(self) -> None:
        h = PROTOCOL_NAME.ljust(HANDSHAKE_HASH_SIZE, b"\x00")
        self.h = h
        self.ck = h
        self.key: bytes | None = None
        self.nonce = 0

    def mix_hash(self, data: bytes) -> None:
        self.h = _hash(self.h + data)

    def mix_key(self, shared: bytes) -> None:
        self.ck, temp = hkdf(self.ck, shared)
        self.key = temp[:_KEY_SIZE]
        self.nonce = 0

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        if self.key is None:
            ciphertext = plaintext
        else:
            ciphertext = sodium.crypto_aead_chacha20poly1305_ietf_encrypt(
                plaintext, self.h, _nonce(self.nonce), self.key
            )
            self.nonce += 1
        self.mix_hash(ciphertext)
        return bytes(ciphertext)

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        if self.key is None:
            plaintext = ciphertext
        else:
            if len(ciphertext) < _MAC_SIZE:
                raise HandshakeError(f"encrypted field of {len(ciphertext)} bytes is truncated")
            try:
                plaintext = sodium.crypto_aead_chacha20poly1305_ietf_decrypt(
                    ciphertext, self.h, _nonce(self.nonce), self.key
                )
            except nacl.exceptions.CryptoError as exc:
                raise HandshakeError("handshake message failed to decrypt") from exc
            self.nonce += 1
        self.mix_hash(ciphertext)
        return bytes(plaintext)

    def split(self) -> tuple[bytes, bytes]:
        k1, k2 = hkdf(self.ck, b"")
        return k1[:_KEY_SIZE], k2[:_KEY_SIZE]


class _Pattern:
    """What every Noise handshake pattern here shares (XX below, hyperdht's IK in
    :mod:`cairn.hyperdht.noise_ik`): the keys and hashes it ends with, its turn to send, the
    output queue and events of the house's verb shape, and the ephemeral key pair. A pattern
    adds :meth:`send` and :meth:`receive_data` for its own message tokens."""

    MESSAGES: ClassVar[int]  # how many messages the pattern has
    NAME: ClassVar[str]  # for error messages

    def __init__(self, is_initiator: bool, static_key_pair: KeyPair, rng: RandomSource,
                 state: _Symmetric) -> None:
        if static_key_pair.secret_key is None:
            raise LocalError("a Noise static key pair needs its secret key")
        self.is_initiator = is_initiator
        self.static = static_key_pair
        self._rng = rng
        self._state = state
        self._step = 0  # index of the next message; MESSAGES when complete
        self._e: KeyPair | None = None
        self._re: bytes | None = None
        self._rs: bytes | None = None
        self._hash: bytes | None = None
        self._tx: bytes | None = None
        self._rx: bytes | None = None
        self._outbuf = b""
        self._events: deque[NoiseEvent] = deque()

    # -- public state ----------------------------------------------------------------------

    @property
    def complete(self) -> bool:
        return self._step == self.MESSAGES

    @property
    def wants_to_send(self) -> bool:
        """True when the next message is ours to send."""
        return not self.complete and (self._step % 2 == 0) == self.is_initiator

    @property
    def handshake_hash(self) -> bytes:
        """The final ``h`` (64 bytes), the same on both sides; secret-stream and hypercore bind
        their stream ids and capabilities to it."""
        return self._done(self._hash)

    @property
    def remote_public_key(self) -> bytes:
        """The peer's static Ed25519 public key, proven by the handshake."""
        return self._done(self._rs)

    @property
    def tx_key(self) -> bytes:
        """The 32-byte key this side sends with (the initiator's is the first split output)."""
        return self._done(self._tx)

    @property
    def rx_key(self) -> bytes:
        return self._done(self._rx)

    def _done(self, value: bytes | None) -> bytes:
        if not self.complete or value is None:
            raise LocalError(f"the {self.NAME} handshake is not complete")
        return value

    # -- the verb shape's output side ------------------------------------------------------

    def data_to_send(self) -> bytes:
        """The handshake message written by ``send`` (``b""`` when none is waiting)."""
        out, self._outbuf = self._outbuf, b""
        return out

    def next_event(self) -> NoiseEvent | None:
        """The next event, or ``None`` until the peer's next message is taken."""
        return self._events.popleft() if self._events else None

    # -- internals -------------------------------------------------------------------------

    def _new_ephemeral(self) -> bytes:
        seed = self._rng.randbytes(32)
        if len(seed) != 32:
            raise LocalError(f"rng.randbytes(32) returned {len(seed)} bytes")
        self._e = key_pair(seed)
        self._state.mix_hash(self._e.public_key)
        return self._e.public_key

    def _ephemeral(self) -> KeyPair:
        if self._e is None:  # pragma: no cover - the message order makes this impossible
            raise LocalError("no ephemeral key yet")
        return self._e

    def _remote_e(self) -> bytes:
        if self._re is None:  # pragma: no cover - the message order makes this impossible
            raise LocalError("no remote ephemeral key yet")
        return self._re

    def _advance(self) -> None:
        self._step += 1
        if self._step == self.MESSAGES:
            k1, k2 = self._state.split()
            self._tx, self._rx = (k1, k2) if self.is_initiator else (k2, k1)
            self._hash = self._state.h
            self._e = None
            self._re = None
            assert self._rs is not None
            self._events.append(Handshaken(self._rs, self._hash))


class NoiseHandshake(_Pattern):
    """One side of a ``Noise_XX_Ed25519_ChaChaPoly_BLAKE2b`` handshake, as secret-stream runs it.

    ::

        hs = NoiseHandshake(is_initiator, key_pair, rng)
        if hs.wants_to_send:
            hs.send()                        # message 1 (the initiator)
            write(hs.data_to_send())
        # for each message from the peer:
        hs.receive_data(message)
        while (event := hs.next_event()) is not None:
            ...                              # HandshakePayload, then Handshaken
        if hs.wants_to_send:
            hs.send()
            write(hs.data_to_send())

    Messages are the raw Noise messages (secret-stream frames them). After the third,
    :attr:`complete` is true, :class:`Handshaken` is the last event, and :attr:`handshake_hash`,
    :attr:`remote_public_key`, :attr:`tx_key` and :attr:`rx_key` are set.

    ``rng`` gives the 32-byte seed of the ephemeral key pair (a test passes a seeded one, so the
    whole transcript is reproducible).
    """

    MESSAGES = 3
    NAME = "Noise"

    def __init__(self, is_initiator: bool, static_key_pair: KeyPair, rng: RandomSource) -> None:
        state = _Symmetric()
        state.mix_hash(b"")  # the empty prologue, still mixed
        super().__init__(is_initiator, static_key_pair, rng, state)

    # -- messages --------------------------------------------------------------------------

    def send(self, payload: bytes = b"") -> None:
        """Write this side's next handshake message, carrying ``payload`` (empty in
        secret-stream); :meth:`data_to_send` hands it out."""
        if not self.wants_to_send:
            raise LocalError("it is not this side's turn to send a handshake message")
        st = self._state
        out = bytearray()
        if self._step == 0:  # -> e
            out += self._new_ephemeral()
        elif self._step == 1:  # <- e, ee, s, es
            out += self._new_ephemeral()
            st.mix_key(dh(self._ephemeral(), self._remote_e()))
            out += st.encrypt_and_hash(self.static.public_key)
            st.mix_key(dh(self.static, self._remote_e()))
        else:  # -> s, se
            out += st.encrypt_and_hash(self.static.public_key)
            st.mix_key(dh(self.static, self._remote_e()))
        out += st.encrypt_and_hash(payload)
        self._outbuf += out
        self._advance()

    def receive_data(self, message: bytes) -> None:
        """Take the peer's next handshake message (one whole Noise message); its payload comes
        out of :meth:`next_event` as a :class:`HandshakePayload`."""
        if self.complete:
            raise LocalError("the Noise handshake is already complete")
        if self.wants_to_send:
            raise LocalError("it is this side's turn to send, not to receive")
        if len(message) > MAX_MESSAGE_SIZE:
            raise HandshakeError(
                f"handshake message of {len(message)} bytes exceeds {MAX_MESSAGE_SIZE}"
            )
        minimum = MESSAGE_SIZES[self._step]
        if len(message) < minimum:
            raise HandshakeError(
                f"handshake message {self._step + 1} is {len(message)} bytes, "
                f"expected at least {minimum}"
            )
        st = self._state
        view = memoryview(message)
        if self._step == 0:  # -> e
            self._re = _point(bytes(view[:32]), "ephemeral")
            st.mix_hash(self._re)
            rest = view[32:]
        elif self._step == 1:  # <- e, ee, s, es
            self._re = _point(bytes(view[:32]), "ephemeral")
            st.mix_hash(self._re)
            st.mix_key(dh(self._ephemeral(), self._re))
            self._rs = st.decrypt_and_hash(bytes(view[32:80]))
            st.mix_key(dh(self._ephemeral(), self._rs))
            rest = view[80:]
        else:  # -> s, se
            self._rs = st.decrypt_and_hash(bytes(view[:48]))
            st.mix_key(dh(self._ephemeral(), self._rs))
            rest = view[48:]
        payload = st.decrypt_and_hash(bytes(rest))
        self._events.append(HandshakePayload(payload))
        self._advance()

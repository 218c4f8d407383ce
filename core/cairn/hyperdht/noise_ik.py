"""hyperdht's connect handshake: ``Noise_IK_Ed25519_ChaChaPoly_BLAKE2b``, NS_PEER_HANDSHAKE.

The machinery is secret-stream's (:mod:`cairn.replication.noise`: Ed25519 DH, HMAC-BLAKE2b
HKDF, ChaCha20-Poly1305 with ``h`` as associated data); only the pattern differs:

- pre-message ``<- s``: both sides mix the server's (responder's) static key into ``h``;
- msg 1 ``-> e, es, s, ss`` + payload: ``e(32) ‖ enc s(48) ‖ enc payload(+16)``;
- msg 2 ``<- e, ee, se`` + payload: ``e(32) ‖ enc payload(+16)``.

Then split (the initiator sends with the first key), the 64-byte handshake hash, and
``holepunchSecret = BLAKE2b-256(msg = NS_PEER_HOLEPUNCH, key = hash)`` (hyperdht noise-wrap.js).

:class:`IKHandshake` has the house verbs: :meth:`~IKHandshake.send` writes our message,
:meth:`~IKHandshake.data_to_send` hands it out, :meth:`~IKHandshake.receive_data` takes the
peer's and :meth:`~IKHandshake.next_event` says what happened (:class:`HandshakePayload`, then
:class:`Handshaken`). Bad bytes raise :class:`~cairn.replication.noise.HandshakeError`.
"""

from __future__ import annotations

import hashlib
from collections import deque
from typing import Final

from cairn.crypto import KeyPair, namespace
from cairn.errors import LocalError
from cairn.replication.events import HandshakePayload
from cairn.replication.noise import (
    HANDSHAKE_HASH_SIZE,
    MAX_MESSAGE_SIZE,
    HandshakeError,
    RandomSource,
    _Pattern,
    _point,
    _Symmetric,
    dh,
)

__all__ = [
    "IK_MESSAGE_SIZES",
    "IK_PROTOCOL_NAME",
    "NS_PEER_HANDSHAKE",
    "NS_PEER_HOLEPUNCH",
    "IKHandshake",
    "holepunch_secret",
]

IK_PROTOCOL_NAME: Final = b"Noise_IK_Ed25519_ChaChaPoly_BLAKE2b"
NS_PEER_HANDSHAKE, NS_PEER_HOLEPUNCH = namespace("hyperswarm/dht", 2)
#: Smallest IK messages (empty payloads).
IK_MESSAGE_SIZES: Final = (32 + 48 + 16, 32 + 16)


def holepunch_secret(handshake_hash: bytes) -> bytes:
    """The key of the holepunch payloads, from the IK handshake hash."""
    return hashlib.blake2b(NS_PEER_HOLEPUNCH, key=handshake_hash, digest_size=32).digest()


class IKHandshake(_Pattern):
    """One side of hyperdht's IK: the client (initiator) knows ``remote_public_key`` already.

    ::

        client = IKHandshake(True, client_keys, rng, remote_public_key=server_key)
        client.send(payload); msg1 = client.data_to_send()
        server = IKHandshake(False, server_keys, rng)
        server.receive_data(msg1)       # -> HandshakePayload(client payload)
        server.send(payload); msg2 = server.data_to_send()   # -> Handshaken on the server
        client.receive_data(msg2)       # -> HandshakePayload, Handshaken
    """

    MESSAGES = 2
    NAME = "IK"

    def __init__(self, is_initiator: bool, static_key_pair: KeyPair, rng: RandomSource, *,
                 remote_public_key: bytes | None = None,
                 prologue: bytes = NS_PEER_HANDSHAKE) -> None:
        if is_initiator and (remote_public_key is None or len(remote_public_key) != 32):
            raise LocalError("the IK initiator needs the responder's 32-byte public key")
        st = _Symmetric()
        st.h = st.ck = IK_PROTOCOL_NAME.ljust(HANDSHAKE_HASH_SIZE, b"\x00")
        st.mix_hash(prologue)
        # pre-message <- s: the responder's static key
        st.mix_hash(remote_public_key if is_initiator else static_key_pair.public_key)  # type: ignore[arg-type]
        super().__init__(is_initiator, static_key_pair, rng, st)
        self._rs = remote_public_key if is_initiator else None

    @property
    def peer_static_key(self) -> bytes | None:
        """The peer's static key as soon as it is known (the responder: after message 1)."""
        return self._rs

    @property
    def holepunch_secret(self) -> bytes:
        return holepunch_secret(self.handshake_hash)

    def fork(self) -> IKHandshake:
        """An independent copy of this handshake's state: a client tries a reply on a fork, so a
        forged reply from one relay does not spoil the handshake for the next one."""
        twin = object.__new__(IKHandshake)
        for name in ("is_initiator", "static", "_rng", "_rs", "_step", "_e", "_re", "_hash",
                     "_tx", "_rx", "_outbuf"):
            setattr(twin, name, getattr(self, name))
        st = _Symmetric()
        st.h, st.ck, st.key, st.nonce = (self._state.h, self._state.ck, self._state.key,
                                         self._state.nonce)
        twin._state = st
        twin._events = deque(self._events)
        return twin

    def send(self, payload: bytes = b"") -> None:
        if not self.wants_to_send:
            raise LocalError("it is not this side's turn to send an IK message")
        st = self._state
        out = bytearray(self._new_ephemeral())
        rs = self._remote_static()
        if self._step == 0:  # -> e, es, s, ss
            st.mix_key(dh(self._ephemeral(), rs))
            out += st.encrypt_and_hash(self.static.public_key)
            st.mix_key(dh(self.static, rs))
        else:  # <- e, ee, se
            re = self._remote_e()
            st.mix_key(dh(self._ephemeral(), re))
            st.mix_key(dh(self._ephemeral(), rs))
        out += st.encrypt_and_hash(payload)
        self._outbuf += out
        self._advance()

    def receive_data(self, message: bytes) -> None:
        if self.complete:
            raise LocalError("the IK handshake is already complete")
        if self.wants_to_send:
            raise LocalError("it is this side's turn to send, not to receive")
        if len(message) > MAX_MESSAGE_SIZE:
            raise HandshakeError(f"IK message of {len(message)} bytes exceeds {MAX_MESSAGE_SIZE}")
        minimum = IK_MESSAGE_SIZES[self._step]
        if len(message) < minimum:
            raise HandshakeError(f"IK message {self._step + 1} is {len(message)} bytes, "
                                 f"expected at least {minimum}")
        st = self._state
        view = memoryview(message)
        self._re = _point(bytes(view[:32]), "ephemeral")
        st.mix_hash(self._re)
        if self._step == 0:  # -> e, es, s, ss (we are the responder)
            st.mix_key(dh(self.static, self._re))
            rs = st.decrypt_and_hash(bytes(view[32:80]))
            self._rs = _point(rs, "static")
            st.mix_key(dh(self.static, self._rs))
            rest = view[80:]
        else:  # <- e, ee, se (we are the initiator)
            st.mix_key(dh(self._ephemeral(), self._re))
            st.mix_key(dh(self.static, self._re))
            rest = view[32:]
        payload = st.decrypt_and_hash(bytes(rest))
        self._events.append(HandshakePayload(payload))
        self._advance()

    def _remote_static(self) -> bytes:
        if self._rs is None:  # pragma: no cover
            raise LocalError("no remote static key yet")
        return self._rs

"""The fixed, seeded world the harnesses and the seed corpora share.

A harness rebuilds its peer from the same seeds the corpus was made with, so a valid message
in the corpus is valid for the harness too (a Noise message 3 decrypts, a ``data`` answer
matches a request in flight) and mutations of it reach past the first check.
"""

from __future__ import annotations

import functools
import hashlib

from nacl import bindings as sodium

from cairn import crypto
from cairn.crypto import KeyPair
from cairn.frames import Frame, Sample
from cairn.log import Log
from cairn.replication.noise import NoiseHandshake
from cairn.replication.secret_stream import SecretStream
from cairn.replication.session import Session
from cairn.testing import SeededRandom

__all__ = [
    "BLOCKS",
    "HANDSHAKE_HASH",
    "PROTOCOL_ID",
    "WANT",
    "gateway_key_pair",
    "initiator_key_pair",
    "initiator_stream",
    "noise_message",
    "noise_pair",
    "replica_session",
    "responder_key_pair",
    "responder_stream",
    "seal",
    "writer_log",
    "writer_session",
]

HANDSHAKE_HASH = bytes(range(64))
PROTOCOL_ID = bytes(range(100, 132))
BLOCKS = 48  # blocks in the writer's log
WANT = (0, 12)  # what the replica session downloads


def _kp(label: str) -> KeyPair:
    return crypto.key_pair(hashlib.blake2b(label.encode(), digest_size=32).digest())


@functools.cache
def initiator_key_pair() -> KeyPair:
    return _kp("cairn-fuzz initiator")


@functools.cache
def responder_key_pair() -> KeyPair:
    return _kp("cairn-fuzz responder")


@functools.cache
def gateway_key_pair() -> KeyPair:
    return _kp("cairn-fuzz gateway")


@functools.cache
def writer_key_pair() -> KeyPair:
    return _kp("cairn-fuzz writer")


def block(i: int) -> bytes:
    """Block ``i`` of the writer's log: a real frame, as an edge writes it."""
    samples = [Sample(f"board-1/temperature-{i % 3}", "Cel", 1.7e9 + i + k / 10, 20.0 + k)
               for k in range(1 + i % 4)]
    return Frame(tuple(samples)).encode()


@functools.cache
def writer_log() -> Log:
    """A writable log of :data:`BLOCKS` frames, in memory, made once per process."""
    lg = Log.create(":memory:", writer_key_pair())
    for start in range(0, BLOCKS, 16):
        lg.append([block(i) for i in range(start, min(start + 16, BLOCKS))])
    return lg


def writer_session() -> Session:
    """A fresh session serving the writer's log, its channel opened by the replica."""
    s = Session(writer_log(), is_initiator=True, handshake_hash=HANDSHAKE_HASH)
    peer = Session(Log.replica(":memory:", writer_log().key), is_initiator=False,
                   handshake_hash=HANDSHAKE_HASH)
    s.on_open(peer.handshake())
    peer.log.close()
    s.data_to_send()
    return s


def replica_session() -> tuple[Session, Log]:
    """A fresh session on a fresh empty replica (in memory) that has asked for :data:`WANT`
    and been told the writer's length, so block requests are in flight. Close the log."""
    lg = Log.replica(":memory:", writer_log().key)
    s = Session(lg, is_initiator=False, handshake_hash=HANDSHAKE_HASH)
    w = Session(writer_log(), is_initiator=True, handshake_hash=HANDSHAKE_HASH)
    s.on_open(w.handshake())
    w.on_open(s.handshake())
    s.want(*WANT)
    for kind, payload in w.data_to_send():
        s.receive_data(kind, payload)
    return s, lg


def noise_pair() -> tuple[NoiseHandshake, NoiseHandshake]:
    """(initiator, responder), seeded: the same ephemeral keys every time."""
    return (NoiseHandshake(True, initiator_key_pair(), SeededRandom("noise-i")),
            NoiseHandshake(False, responder_key_pair(), SeededRandom("noise-r")))


def noise_message(handshake: NoiseHandshake, payload: bytes = b"") -> bytes:
    """This side's next handshake message, carrying ``payload``."""
    handshake.send(payload)
    return handshake.data_to_send()


def initiator_stream() -> SecretStream:
    s = SecretStream(True, initiator_key_pair(), SeededRandom("stream-i"))
    s.start()
    return s


def responder_stream() -> SecretStream:
    s = SecretStream(False, responder_key_pair(), SeededRandom("stream-r"))
    s.start()
    return s


def seal(message: bytes, ed25519_public: bytes, seed: bytes) -> bytes:
    """``crypto_box_seal`` with an ephemeral key from ``seed``, so seed corpora are the same
    bytes every run (libsodium's draws its ephemeral key at random)."""
    pk = bytes(sodium.crypto_sign_ed25519_pk_to_curve25519(ed25519_public))
    epk, esk = sodium.crypto_box_seed_keypair(hashlib.blake2b(seed, digest_size=32).digest())
    nonce = hashlib.blake2b(epk + pk, digest_size=24).digest()
    return bytes(epk) + bytes(sodium.crypto_box(message, nonce, pk, esk))

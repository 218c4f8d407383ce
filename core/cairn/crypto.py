"""Everything that gets hashed or signed, with its namespace.

The equivalent of hypercore's caps.js and hypercore-crypto.

Hashes are BLAKE2b through :mod:`hashlib` (far faster than an FFI call for small inputs);
Ed25519 goes through libsodium (pynacl). No hand-made primitives.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable
from dataclasses import dataclass

import nacl.bindings as sodium
import nacl.exceptions

from cairn.errors import DecodeError, VerificationError

__all__ = [
    "DEFAULT_ENCRYPTION",
    "DEFAULT_NAMESPACE",
    "MANIFEST",
    "REPLICATE_INITIATOR",
    "REPLICATE_RESPONDER",
    "TREE",
    "KeyPair",
    "Manifest",
    "blake2b",
    "decode_manifest",
    "decode_signature",
    "derive_stream_key_pair",
    "discovery_key",
    "encode_manifest",
    "encode_signature",
    "key_pair",
    "leaf_hash",
    "manifest_hash",
    "namespace",
    "parent_hash",
    "random_key_pair",
    "replicate_capability",
    "sign",
    "tree_hash",
    "tree_signable",
    "tree_signable_compat",
    "verify",
]

_U64 = struct.Struct("<Q")


def blake2b(data: bytes, key: bytes | None = None, size: int = 32) -> bytes:
    if key is None:
        return hashlib.blake2b(data, digest_size=size).digest()
    return hashlib.blake2b(data, digest_size=size, key=key).digest()


def namespace(name: str, count: int) -> list[bytes]:
    """hypercore-crypto ``namespace(name, count)``: ``H(H(name) ‖ byte(i))`` for each i."""
    ns = blake2b(name.encode())
    return [blake2b(ns + bytes([i])) for i in range(count)]


(
    TREE,
    REPLICATE_INITIATOR,
    REPLICATE_RESPONDER,
    MANIFEST,
    DEFAULT_NAMESPACE,
    DEFAULT_ENCRYPTION,
) = namespace("hypercore", 6)


def leaf_hash(data: bytes) -> bytes:
    """Tree hash of a block: ``H(0x00 ‖ u64le(len) ‖ data)``."""
    if len(data) <= 4096:  # one call for a small block (a copy costs less than two updates)
        return hashlib.blake2b(b"\x00" + _U64.pack(len(data)) + data, digest_size=32).digest()
    h = hashlib.blake2b(b"\x00", digest_size=32)
    h.update(_U64.pack(len(data)))
    h.update(data)
    return h.digest()


def parent_hash(left_hash: bytes, right_hash: bytes, size: int) -> bytes:
    """``H(0x01 ‖ u64le(size) ‖ left ‖ right)``, left being the lower index."""
    return hashlib.blake2b(
        b"\x01" + _U64.pack(size) + left_hash + right_hash, digest_size=32
    ).digest()


def tree_hash(roots: Iterable[tuple[int, int, bytes]]) -> bytes:
    """``H(0x02 ‖ (hash ‖ u64le(index) ‖ u64le(size)) for each root)``.

    Roots are (index, size, hash) tuples, left to right.
    """
    h = hashlib.blake2b(b"\x02", digest_size=32)
    for index, size, digest in roots:
        h.update(digest)
        h.update(_U64.pack(index))
        h.update(_U64.pack(size))
    return h.digest()


def discovery_key(key: bytes) -> bytes:
    return blake2b(b"hypercore", key=key)


def replicate_capability(is_initiator: bool, key: bytes, handshake_hash: bytes) -> bytes:
    tag = REPLICATE_INITIATOR if is_initiator else REPLICATE_RESPONDER
    return blake2b(tag + key, key=handshake_hash)


def tree_signable(manifest_hash: bytes, root_hash: bytes, length: int, fork: int) -> bytes:
    """The 112 bytes a Hypercore 11 (manifest) signer signs."""
    return TREE + manifest_hash + root_hash + _U64.pack(length) + _U64.pack(fork)


def tree_signable_compat(root_hash: bytes, length: int, fork: int) -> bytes:
    """The 80 bytes a compat (hypercore 10) signer signs."""
    return TREE + root_hash + _U64.pack(length) + _U64.pack(fork)


@dataclass(frozen=True, slots=True)
class KeyPair:
    public_key: bytes
    secret_key: bytes | None = None

    @property
    def seed(self) -> bytes:
        if self.secret_key is None:
            raise ValueError("key pair has no secret key")
        return self.secret_key[:32]


def key_pair(seed: bytes) -> KeyPair:
    """Ed25519 key pair from a 32-byte seed (libsodium ``crypto_sign_seed_keypair``)."""
    if len(seed) != 32:
        raise ValueError(f"seed must be 32 bytes, got {len(seed)}")
    pk, sk = sodium.crypto_sign_seed_keypair(seed)
    return KeyPair(bytes(pk), bytes(sk))


def random_key_pair() -> KeyPair:
    pk, sk = sodium.crypto_sign_keypair()
    return KeyPair(bytes(pk), bytes(sk))


_CORESTORE_NS = namespace("corestore", 1)[0]
_CORESTORE_DEFAULT_NAMESPACE = bytes(32)


def derive_stream_key_pair(primary_seed: bytes, name: str) -> KeyPair:
    """The key pair of the named stream, derived corestore-style from a device's primary seed.

    ``seed = BLAKE2b-256(key=primary_seed, NS ‖ 32 zero bytes ‖ utf8(name))`` with
    ``NS = namespace("corestore", 1)[0]``, then the Ed25519 key pair of that seed; this is what
    corestore 7 derives for ``store.get({ name })`` with the default namespace, so a device keeps
    one 32-byte secret and every stream's key follows from it.
    """
    if len(primary_seed) != 32:
        raise ValueError(f"primary seed must be 32 bytes, got {len(primary_seed)}")
    if not name:
        raise ValueError("stream name must not be empty")
    seed = blake2b(_CORESTORE_NS + _CORESTORE_DEFAULT_NAMESPACE + name.encode(), key=primary_seed)
    return key_pair(seed)


def sign(message: bytes, secret_key: bytes) -> bytes:
    signed: bytes = sodium.crypto_sign(message, secret_key)
    return signed[:64]


def verify(message: bytes, signature: bytes, public_key: bytes) -> bool:
    if len(signature) != 64 or len(public_key) != 32:
        return False
    try:
        sodium.crypto_sign_open(signature + message, public_key)
    except (nacl.exceptions.BadSignatureError, nacl.exceptions.ValueError):
        return False
    return True


# -- manifest (hypercore/lib/messages.js `manifest`, version 1, one ed25519 signer) ----------------


@dataclass(frozen=True, slots=True)
class Manifest:
    """A Hypercore 11 manifest with one Ed25519 signer, quorum 1 (the default signer)."""

    public_key: bytes
    namespace: bytes = DEFAULT_NAMESPACE
    version: int = 1

    def encode(self) -> bytes:
        return encode_manifest(self)

    def hash(self) -> bytes:
        return manifest_hash(self)


def encode_manifest(m: Manifest) -> bytes:
    # version, flags, hash=blake2b, quorum 1, one signer: signature=ed25519, namespace, public key
    return bytes([m.version, 0, 0, 1, 1, 0]) + m.namespace + m.public_key


def decode_manifest(data: bytes) -> Manifest:
    """Decode a manifest; only what Cairn verifies (v1, one ed25519 signer) is accepted."""
    if len(data) != 70:
        raise DecodeError(f"manifest must be 70 bytes (v1, one signer), got {len(data)}")
    version, flags, hash_id, quorum, signers, sig_id = data[:6]
    if version != 1:
        raise DecodeError(f"unsupported manifest version {version}")
    if flags != 0:
        raise DecodeError(f"unsupported manifest flags {flags:#x} (patch/prologue/linked/userData)")
    if hash_id != 0 or sig_id != 0:
        raise DecodeError("unsupported manifest hash or signature type")
    if quorum != 1 or signers != 1:
        raise DecodeError(f"unsupported manifest quorum {quorum} with {signers} signers")
    return Manifest(public_key=data[38:70], namespace=data[6:38], version=1)


def manifest_hash(m: Manifest) -> bytes:
    return blake2b(MANIFEST + encode_manifest(m))


# -- the 68-byte signature blob (multisig v1 with one proof) ---------------------------------


def encode_signature(raw: bytes) -> bytes:
    """``01 proofs | 00 signer | sig(64) | 00 patch | 00 nodes``."""
    if len(raw) != 64:
        raise ValueError("raw signature must be 64 bytes")
    return b"\x01\x00" + raw + b"\x00\x00"


def decode_signature(blob: bytes) -> bytes:
    """The raw Ed25519 signature inside a one-signer multisig blob."""
    if len(blob) != 68 or blob[:2] != b"\x01\x00" or blob[66:] != b"\x00\x00":
        raise VerificationError(
            f"signature is not a one-signer multisig blob (68 bytes, got {len(blob)})"
        )
    return blob[2:66]

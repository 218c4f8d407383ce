"""The checks a proof passes before a log stores anything from it, one function per phase.

Each phase reads the log's state as arguments (its head, meta, roots, a :class:`NodeSource`
for held nodes) and either returns or raises :class:`~cairn.errors.VerificationError` naming
what is wrong; none of them writes. :meth:`cairn.log.Log.verify_and_apply` runs them in order:
fork and length rules, the batch to check against, the upgrade's nodes and signature, the
proof's connection to held nodes, a seek's place, a fresh upgrade's agreement with the history
held. Storing what passed is the log's own step.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from cairn import flat_tree
from cairn.crypto import (
    MANIFEST,
    blake2b,
    decode_manifest,
    decode_signature,
    tree_signable,
    tree_signable_compat,
    verify,
)
from cairn.errors import DecodeError, VerificationError
from cairn.merkle import InvalidRequestError, NodeSource, TreeBatch, byte_offset
from cairn.messages import Data, Node
from cairn.proofs import verify_upgrade
from cairn.storage import Head, Meta

__all__ = [
    "check_connects",
    "check_fork_rules",
    "check_seek",
    "check_upgrade",
    "check_upgrade_signature",
    "confirmed_prefix",
    "conflicting_node",
    "manifest_for",
    "manifest_hash_bytes",
    "signature_ok",
    "start_batch",
]


def manifest_hash_bytes(encoded: bytes) -> bytes:
    """The key a manifest's exact bytes hash to."""
    return blake2b(MANIFEST + encoded)


def signature_ok(
    meta: Meta,
    root_hash: bytes,
    length: int,
    fork: int,
    signature: bytes,
    manifest: bytes | None = None,
    compat: bool | None = None,
) -> bool:
    """Whether ``signature`` signs this tree for the log's key (through ``manifest``, or the
    log's own, or as a compat key)."""
    manifest = manifest if manifest is not None else meta.manifest
    if compat is None:
        compat = meta.compat
    if manifest is not None:
        try:
            raw = decode_signature(signature)
            pk = decode_manifest(manifest).public_key
        except (VerificationError, DecodeError):
            return False
        return verify(tree_signable(meta.key, root_hash, length, fork), raw, pk)
    if compat:
        return verify(tree_signable_compat(root_hash, length, fork), signature, meta.key)
    return False


def manifest_for(meta: Meta, proof: Data) -> tuple[bytes | None, bool]:
    """(manifest, compat) to verify an upgrade with; checks a sent manifest against the key."""
    if meta.manifest is not None or meta.compat:
        return meta.manifest, meta.compat
    if proof.manifest is not None:
        if manifest_hash_bytes(proof.manifest) != meta.key:
            raise VerificationError("manifest does not hash to the log key")
        try:
            decode_manifest(proof.manifest)
        except DecodeError as exc:
            raise VerificationError(f"manifest cannot be verified by Cairn: {exc}") from exc
        return proof.manifest, False
    return None, True  # no manifest: the key must be the signer's public key (compat)


def check_fork_rules(proof: Data, head: Head, key: bytes) -> bool:
    """The fork and length rules a proof keeps before anything in it is hashed; True when it
    upgrades from 0 a log that holds a length (to a new fork, or over the history held)."""
    up = proof.upgrade
    if proof.fork < head.fork:
        raise VerificationError(f"proof is for fork {proof.fork}, log is at fork {head.fork}")
    fresh = head.length > 0 and up is not None and up.start == 0
    if proof.fork != head.fork and not fresh and head.length > 0:
        raise VerificationError(
            f"a proof for new fork {proof.fork} must carry an upgrade from 0"
        )
    if up is not None and not fresh and up.start != head.length:
        raise VerificationError(f"upgrade starts at {up.start}, log length is {head.length}")
    if up is None and proof.block is None and proof.hash is None and proof.seek is None:
        raise VerificationError("proof proves nothing")
    if proof.manifest is not None and manifest_hash_bytes(proof.manifest) != key:
        raise VerificationError("manifest does not hash to the log key")
    return fresh


def start_batch(proof: Data, head: Head, roots: Sequence[Node], fresh: bool) -> TreeBatch:
    """The tree the proof is checked against: empty for an upgrade from 0 (or an empty
    log), else the log's signed roots."""
    if fresh or head.length == 0:
        return TreeBatch(fork=proof.fork)
    return TreeBatch(
        fork=head.fork,
        length=head.length,
        byte_length=head.byte_length,
        roots=list(roots),
    )


def check_upgrade(proof: Data, unverified: Node | None, batch: TreeBatch) -> bool:
    """Grow ``batch`` by the upgrade's nodes; True when the block proof's top node became
    part of the upgraded tree (it needs no held node to connect to)."""
    up = proof.upgrade
    assert up is not None
    before = len(batch.nodes)
    connected = verify_upgrade(proof, unverified, batch)
    # verify_upgrade stops at the last root it needs (as hypercore's verifyUpgrade
    # does): upgrade nodes left over prove nothing, and a proof carrying them is refused
    if Counter(up.nodes) - Counter(batch.nodes[before:]):
        raise VerificationError("upgrade carries nodes that prove nothing")
    if up.signature is None:
        raise VerificationError("upgrade carries no signature")
    return connected


def check_upgrade_signature(
    meta: Meta, proof: Data, batch: TreeBatch, manifest: bytes | None, compat: bool
) -> None:
    """The upgraded tree must be signed by the log's key (through ``manifest``)."""
    assert proof.upgrade is not None and proof.upgrade.signature is not None
    if signature_ok(
        meta, batch.hash(), batch.length, proof.fork, proof.upgrade.signature, manifest, compat
    ):
        return
    hint = ""
    if manifest is None and meta.manifest is None and not meta.compat:
        hint = (
            " (the proof carries no manifest, so the key was taken as a compat "
            "public key: ask with manifest=True)"
        )
    raise VerificationError(
        f"signature does not verify for length {batch.length} fork {proof.fork}{hint}"
    )


def check_connects(held: NodeSource, unverified: Node, fresh: bool) -> None:
    """A block, hash or seek proof not tied to the upgrade must end at a node held."""
    if fresh:
        raise VerificationError("block proof does not connect to the upgrade")
    trusted = held.get_node(unverified.index)
    if trusted is None:
        raise VerificationError(f"proof ends at node {unverified.index}, which is not held")
    if trusted.hash != unverified.hash or trusted.size != unverified.size:
        raise VerificationError(f"proof does not match held node {unverified.index}")


def check_seek(
    held: NodeSource, head: Head, roots: Sequence[Node], nbytes: int, target: Node,
    batch: TreeBatch,
) -> None:
    """A seek proof must prove the subtree that holds the byte it names."""
    proven = {n.index: n for n in batch.nodes}

    class _Source:
        def get_node(self, index: int) -> Node | None:
            return proven.get(index) or held.get_node(index)

    tree_roots = batch.roots if batch.upgraded else roots
    length = batch.length if batch.upgraded else head.length
    total = batch.byte_length if batch.upgraded else head.byte_length
    try:
        start = byte_offset(_Source(), tree_roots, length, total, target.index)
    except InvalidRequestError as exc:
        raise VerificationError(f"seek proof cannot be placed in the tree: {exc}") from exc
    if not start <= nbytes <= start + target.size:
        raise VerificationError(
            f"seek proof covers bytes {start}..{start + target.size}, not byte {nbytes}"
        )


def conflicting_node(held: NodeSource, batch: TreeBatch) -> Node | None:
    """The first node of a fully remote proof that differs from the node held at its index."""
    for n in batch.nodes:
        mine = held.get_node(n.index)
        if mine is not None and mine.hash != n.hash:
            return n
    return None


def confirmed_prefix(held: NodeSource, length: int, batch: TreeBatch) -> int:
    """The longest held length whose roots all appear, equal, in the verified batch."""
    if length == 0:
        return 0
    proven = {n.index: n for n in batch.nodes}
    best = 0
    candidates = {length} | {(flat_tree.right_span(i) + 2) // 2 for i in proven}
    for candidate in sorted(candidates, reverse=True):
        if candidate > length or candidate <= best:
            continue
        roots = flat_tree.full_roots(2 * candidate)
        if all(i in proven and held.get_node(i) == proven[i] for i in roots):
            best = candidate
            break
    return best

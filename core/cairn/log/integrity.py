"""Checks of what a log holds on disk: its head and keys when opened, and every block and node.

:func:`check_head` runs each time a log is opened (the head's roots, signature, manifest and the
flags no signature covers); :func:`check_tree` re-hashes every held block and tree node up to the
signed length, for :meth:`cairn.log.Log.verify_all`. Both raise
:class:`~cairn.errors.StorageError` naming the first damage; neither writes.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence

from cairn import flat_tree
from cairn.crypto import decode_manifest, leaf_hash, manifest_hash, tree_hash
from cairn.crypto import key_pair as key_pair_of_seed
from cairn.errors import StorageError
from cairn.log.verify import signature_ok
from cairn.messages import Node
from cairn.storage import Head, LogStorage, Meta

__all__ = ["check_head", "check_tree"]

_U64 = struct.Struct("<Q").pack


def check_head(storage: LogStorage, meta: Meta, head: Head, roots: Sequence[Node]) -> None:
    """A log's head, key material and flags as opened, against what they must imply: the
    roots hash to the signed head, the signature verifies, the manifest hashes to the key."""
    roots_hash = tree_hash(roots)
    if roots_hash != head.tree_hash:
        raise StorageError(f"{storage.path}: tree roots do not match the signed head")
    if sum(r.size for r in roots) != head.byte_length:
        raise StorageError(f"{storage.path}: byte length does not match the tree")
    if head.length and (
        head.signature is None
        or not signature_ok(meta, head.tree_hash, head.length, head.fork, head.signature)
    ):
        raise StorageError(f"{storage.path}: head signature does not verify")
    if meta.manifest is not None and manifest_hash(decode_manifest(meta.manifest)) != meta.key:
        raise StorageError(f"{storage.path}: manifest does not hash to the key")
    # the flags no signature covers, against what they imply: a compat log's key is its
    # public key and it has no manifest; any other log's key is a manifest's hash; a log
    # is frozen exactly when it keeps fork evidence (both are written in one transaction)
    if meta.compat and (meta.manifest is not None or (
            meta.public_key is not None and meta.public_key != meta.key)):
        raise StorageError(f"{storage.path}: log flags are damaged (compat)")
    if not meta.compat and meta.public_key is not None and meta.public_key == meta.key:
        raise StorageError(f"{storage.path}: log flags are damaged (compat)")
    if meta.frozen != bool(storage.evidence()):
        raise StorageError(f"{storage.path}: log flags are damaged (frozen)")
    if meta.secret_key is not None and (
        meta.secret_key[32:] != meta.public_key
        or key_pair_of_seed(meta.secret_key[:32]).secret_key != meta.secret_key
    ):  # a damaged seed half would sign every later append with a key nobody trusts
        raise StorageError(f"{storage.path}: key pair is damaged")


def check_tree(storage: LogStorage, length: int, damaged: Iterable[int] = ()) -> tuple[int, int]:
    """Re-verify every held block and node up to the signed ``length``; (blocks, nodes) seen.

    Raises :class:`StorageError` naming the first bad block or node. Blocks listed in
    ``damaged`` are not checked against their data: the rest of the tree is checked with their
    stored leaf hashes.
    """
    skip = frozenset(damaged)
    nodes: dict[int, Node] = {}
    for n in storage.iter_nodes():
        if nodes.get(n.index, n) != n:  # a damaged index can land on another node's
            raise StorageError(f"tree node {n.index} is stored twice, differently: the "
                               "tree is damaged")
        nodes[n.index] = n
    blocks = 0
    for idx, data, digest in storage.iter_blocks(0, 1 << 62):
        if idx >= length:
            raise StorageError(f"block {idx} is beyond the signed length {length}")
        if idx not in skip and leaf_hash(data) != digest:
            raise StorageError(f"block {idx} is damaged: its data does not match its hash")
        leaf = Node(2 * idx, len(data), digest)
        known = nodes.get(2 * idx)
        if known is not None and known != leaf:
            raise StorageError(f"block {idx} is damaged: leaf node differs from its data")
        nodes[2 * idx] = leaf
        blocks += 1
    width = 2 * length
    for index in sorted(nodes):
        node = nodes[index]
        if flat_tree.right_span(index) >= width:
            raise StorageError(f"tree node {index} is beyond the signed length {length}")
        # two siblings are only ever stored with their parent (a proof stores the nodes it
        # computes on the way up): a parent gone is a damaged tree, as a moved index makes
        up = flat_tree.parent(index)
        if (flat_tree.sibling(index) in nodes and up not in nodes
                and flat_tree.right_span(up) < width):
            raise StorageError(f"tree node {up} is missing though both its children are "
                               "held: the tree is damaged")
        kids = flat_tree.children(index)
        if kids is None:
            continue
        a, b = nodes.get(kids[0]), nodes.get(kids[1])
        if a is None or b is None:
            continue
        size = a.size + b.size
        if (
            node.size != size
            or hashlib.blake2b(b"\x01" + _U64(size) + a.hash + b.hash, digest_size=32).digest()
            != node.hash
        ):
            first = flat_tree.left_span(index) // 2
            raise StorageError(
                f"tree node {index} (blocks {first}..{flat_tree.right_span(index) // 2}) "
                "does not match its children: block data or tree damaged"
            )
    return blocks, len(nodes)

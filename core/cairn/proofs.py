"""A log's proofs: hypercore's, move for move as lib/merkle-tree.js, and Cairn's range proofs.

:func:`generate_proof` answers a request (block, hash, seek, upgrade) from the nodes a
:class:`~cairn.merkle.NodeSource` holds; :func:`verify_tree` and :func:`verify_upgrade` check
one against trusted roots with no storage. :func:`range_proof_nodes` and :func:`verify_range`
are Cairn's extension: a contiguous run of blocks with one proof. The tree itself (batches,
roots, byte offsets) is :mod:`cairn.merkle`. Everything an attacker controls raises
:class:`~cairn.errors.VerificationError`.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cairn import flat_tree
from cairn.crypto import leaf_hash
from cairn.errors import NotAvailableError, VerificationError
from cairn.merkle import (
    MAX_LENGTH,
    InvalidRequestError,
    NodeSource,
    TreeBatch,
    block_node,
    byte_offset,
    need_node,
    parent_node,
)
from cairn.messages import (
    Data,
    DataBlock,
    DataHash,
    DataSeek,
    DataUpgrade,
    Node,
    RequestBlock,
    RequestSeek,
    RequestUpgrade,
)

__all__ = [
    "block_proof",
    "generate_proof",
    "range_proof_nodes",
    "verify_range",
    "verify_tree",
    "verify_upgrade",
]

_U64 = struct.Struct("<Q").pack


# -- seeking inside a proof ------------------------------------------------------------------------


def _unpadded(node: Node, padding: int, leaves: int) -> int:
    return node.size - padding * leaves if padding else node.size


def _seek_trusted_tree(source: NodeSource, root: int, nbytes: int, padding: int) -> int:
    if not nbytes:
        return root
    ite = flat_tree.Iterator(root)
    while ite.index & 1:
        left = source.get_node(ite.left_child())
        if left is None:
            ite.parent()
            return ite.index
        size = _unpadded(left, padding, ite.count_leaves())
        if size == nbytes:
            return ite.index
        if size > nbytes:
            continue
        nbytes -= size
        ite.sibling()
    return ite.index


def _seek_from_head(source: NodeSource, head: int, nbytes: int, padding: int) -> int:
    for root in flat_tree.full_roots(head):
        node = need_node(source, root)
        size = _unpadded(node, padding, flat_tree.count_leaves(root))
        if nbytes == size:
            return root
        if nbytes > size:
            nbytes -= size
            continue
        return _seek_trusted_tree(source, root, nbytes, padding)
    return head


def _seek_untrusted_tree(
    source: NodeSource,
    roots: Sequence[Node],
    length: int,
    byte_length: int,
    root: int,
    nbytes: int,
    padding: int,
) -> int:
    offset = byte_offset(source, roots, length, byte_length, root)
    if padding:
        offset -= padding * flat_tree.left_span(root) // 2
    if offset > nbytes:
        raise InvalidRequestError("invalid seek")
    if offset == nbytes:
        return root
    nbytes -= offset
    node = need_node(source, root)
    if _unpadded(node, padding, flat_tree.count_leaves(root)) <= nbytes:
        raise InvalidRequestError("invalid seek")
    return _seek_trusted_tree(source, root, nbytes, padding)


# -- proof generation ------------------------------------------------------------------------------


@dataclass(slots=True)
class _Indexed:
    value: bool
    index: int
    nodes: int
    last_index: int


@dataclass(slots=True)
class _Pending:
    node: list[Node] | None = None
    seek: list[Node] | None = None
    upgrade: list[Node] | None = None
    additional: list[Node] | None = None


def _normalize(block: RequestBlock | None, hash_: RequestBlock | None) -> _Indexed | None:
    if block is not None:
        return _Indexed(True, block.index * 2, block.nodes, block.index)
    if hash_ is not None:
        return _Indexed(False, hash_.index, hash_.nodes, flat_tree.right_span(hash_.index) // 2)
    return None


def _nodes_to_root(index: int, nodes: int, head: int) -> int:
    ite = flat_tree.Iterator(index)
    for _ in range(nodes):
        ite.parent()
        if ite.contains(head):
            raise InvalidRequestError("nodes is out of bounds")
    return ite.index


def _seek_proof(get: Callable[[int], Node], seek_root: int, root: int, p: _Pending) -> None:
    ite = flat_tree.Iterator(seek_root)
    p.seek = [get(ite.index)]
    while ite.index != root:
        ite.sibling()
        p.seek.append(get(ite.index))
        ite.parent()


def _block_and_seek_proof(
    get: Callable[[int], Node],
    node: _Indexed | None,
    seek: bool,
    seek_root: int,
    root: int,
    p: _Pending,
) -> None:
    if node is None:
        _seek_proof(get, seek_root, root, p)
        return
    ite = flat_tree.Iterator(node.index)
    p.node = []
    if not node.value:
        p.node.append(get(ite.index))
    while ite.index != root:
        ite.sibling()
        if seek and ite.contains(seek_root) and ite.index != seek_root:
            _seek_proof(get, seek_root, ite.index, p)
        else:
            p.node.append(get(ite.index))
        ite.parent()


def _upgrade_proof(
    get: Callable[[int], Node],
    node: _Indexed | None,
    seek: bool,
    frm: int,
    to: int,
    sub_tree: int,
    p: _Pending,
) -> None:
    if frm == 0:
        p.upgrade = []
    ite = flat_tree.Iterator(0)
    while ite.full_root(to):
        if ite.index + ite.factor // 2 < frm:  # the requester already has it
            ite.next_tree()
            continue
        if p.upgrade is None and ite.contains(frm - 2):  # connect to the tree they have
            p.upgrade = []
            root = ite.index
            target = frm - 2
            ite.seek(target)
            while ite.index != root:
                ite.sibling()
                if ite.index > target:
                    if p.node is None and p.seek is None and ite.contains(sub_tree):
                        _block_and_seek_proof(get, node, seek, sub_tree, ite.index, p)
                    else:
                        p.upgrade.append(get(ite.index))
                ite.parent()
            ite.next_tree()
            continue
        if p.upgrade is None:
            p.upgrade = []
        if p.node is None and p.seek is None and ite.contains(sub_tree):
            _block_and_seek_proof(get, node, seek, sub_tree, ite.index, p)
        else:
            p.upgrade.append(get(ite.index))
        ite.next_tree()


def _additional_upgrade_proof(get: Callable[[int], Node], frm: int, to: int, p: _Pending) -> None:
    if frm == 0:
        p.additional = []
    ite = flat_tree.Iterator(0)
    while ite.full_root(to):
        if ite.index + ite.factor // 2 < frm:
            ite.next_tree()
            continue
        if p.additional is None and ite.contains(frm - 2):
            p.additional = []
            root = ite.index
            target = frm - 2
            ite.seek(target)
            while ite.index != root:
                ite.sibling()
                if ite.index > target:
                    p.additional.append(get(ite.index))
                ite.parent()
            ite.next_tree()
            continue
        if p.additional is None:
            p.additional = []
        p.additional.append(get(ite.index))
        ite.next_tree()


def generate_proof(
    source: NodeSource,
    *,
    fork: int,
    length: int,
    byte_length: int,
    roots: Sequence[Node],
    signature: bytes | None,
    block: RequestBlock | None = None,
    hash: RequestBlock | None = None,
    seek: RequestSeek | None = None,
    upgrade: RequestUpgrade | None = None,
    request_id: int = 0,
    value: bytes | None = None,
    manifest: bytes | None = None,
) -> Data:
    """The proof hypercore sends for a request: ``request_id``, the block's ``value`` and the
    ``manifest`` go into the message as given (the block's value is the caller's to read)."""
    if length == 0:
        return Data(request_id, fork, manifest=manifest)
    if block is not None and hash is None and seek is None and upgrade is None:
        return block_proof(source, fork, length, block, request_id, value, manifest)
    return _general_proof(source, fork=fork, length=length, byte_length=byte_length, roots=roots,
                          signature=signature, block=block, hash=hash, seek=seek,
                          upgrade=upgrade, request_id=request_id, value=value,
                          manifest=manifest)


def block_proof(source: NodeSource, fork: int, length: int, block: RequestBlock,
                 request_id: int, value: bytes | None, manifest: bytes | None) -> Data:
    """A plain block request (all a downloader sends after its first): what
    :func:`_general_proof` makes of it, without what it does not need."""
    index = 2 * block.index
    if index >= 2 * length:
        raise InvalidRequestError(f"node {index} is outside length {length}")
    # up ``nodes`` levels (flat_tree.Iterator's moves in plain ints, as _nodes_to_root makes
    # them): none may hold the head; then the sibling at each level on the way
    head = 2 * length
    levels = block.nodes
    i, off, factor = index, block.index, 2
    for _ in range(levels):
        i = i - factor // 2 if off & 1 else i + factor // 2
        off >>= 1
        factor <<= 1
        if i - factor // 2 < head < i + factor // 2:
            raise InvalidRequestError("nodes is out of bounds")
    proof: list[Node] = []
    get = source.get_node
    i, off, factor = index, block.index, 2
    for _ in range(levels):
        sibling = i - factor if off & 1 else i + factor
        node = get(sibling)
        if node is None:
            raise InvalidRequestError(f"tree node {sibling} is not stored")
        proof.append(node)
        i = i - factor // 2 if off & 1 else i + factor // 2
        off >>= 1
        factor <<= 1
    return Data(request_id, fork, DataBlock(block.index, value, tuple(proof)), None, None, None,
                manifest)


def _general_proof(
    source: NodeSource,
    *,
    fork: int,
    length: int,
    byte_length: int,
    roots: Sequence[Node],
    signature: bytes | None,
    block: RequestBlock | None,
    hash: RequestBlock | None,
    seek: RequestSeek | None,
    upgrade: RequestUpgrade | None,
    request_id: int,
    value: bytes | None,
    manifest: bytes | None,
) -> Data:
    def get(i: int) -> Node:
        return need_node(source, i)

    head = 2 * length
    frm = upgrade.start * 2 if upgrade else 0
    to = frm + upgrade.length * 2 if upgrade else head
    node = _normalize(block, hash)

    if upgrade is not None and (frm >= to or to > head):
        raise InvalidRequestError(
            f"invalid upgrade {upgrade.start}+{upgrade.length} for length {length}"
        )
    if seek is not None and upgrade is not None and node is not None and node.index >= frm:
        raise InvalidRequestError("cannot both seek and ask for a block when upgrading")
    if node is not None and flat_tree.right_span(node.index) >= head:
        raise InvalidRequestError(f"node {node.index} is outside length {length}")

    sub_tree = head
    p = _Pending()
    if node is not None and (upgrade is None or node.last_index < upgrade.start):
        sub_tree = _nodes_to_root(node.index, node.nodes, to)
        seek_root = (
            _seek_untrusted_tree(
                source, roots, length, byte_length, sub_tree, seek.bytes, seek.padding
            )
            if seek
            else head
        )
        _block_and_seek_proof(get, node, seek is not None, seek_root, sub_tree, p)
    elif (node is not None or seek is not None) and upgrade is not None:
        if seek is not None:
            sub_tree = _seek_from_head(source, to, seek.bytes, seek.padding)
        elif node is not None:
            sub_tree = node.index

    if upgrade is not None:
        _upgrade_proof(get, node, seek is not None, frm, to, sub_tree, p)
        if head > to:
            _additional_upgrade_proof(get, to, head, p)

    data_block = data_hash = data_seek = data_upgrade = None
    if block is not None:
        if p.node is None:
            raise InvalidRequestError("invalid block request")
        data_block = DataBlock(block.index, value, tuple(p.node))
    elif hash is not None:
        if p.node is None:
            raise InvalidRequestError("invalid hash request")
        data_hash = DataHash(hash.index, tuple(p.node))
    if seek is not None and p.seek is not None:
        data_seek = DataSeek(seek.bytes, tuple(p.seek))
    if upgrade is not None:
        data_upgrade = DataUpgrade(
            upgrade.start,
            upgrade.length,
            tuple(p.upgrade or ()),
            tuple(p.additional or ()),
            signature,
        )
    return Data(request_id, fork, data_block, data_hash, data_seek, data_upgrade, manifest)


# -- proof verification ----------------------------------------------------------------------------


class _NodeQueue:
    __slots__ = ("extra", "i", "length", "nodes")

    def __init__(self, nodes: Sequence[Node], extra: Node | None = None) -> None:
        self.i = 0
        self.nodes = nodes
        self.extra = extra
        self.length = len(nodes) + (0 if extra is None else 1)

    def shift(self, index: int) -> Node:
        if self.extra is not None and self.extra.index == index:
            node = self.extra
            self.extra = None
            self.length -= 1
            return node
        if self.i >= len(self.nodes):
            raise VerificationError(f"proof is missing node {index}")
        node = self.nodes[self.i]
        self.i += 1
        if node.index != index:
            raise VerificationError(f"proof has node {node.index} where node {index} belongs")
        self.length -= 1
        return node


def verify_tree(proof: Data, nodes: list[Node]) -> Node | None:
    """Hash a proof's block/hash/seek part up to the highest node it reaches (still untrusted)."""
    if proof.block is not None:
        untrusted: tuple[int, bytes | None, Sequence[Node]] | None = (
            2 * proof.block.index,
            proof.block.value or b"",
            proof.block.nodes,
        )
    elif proof.hash is not None:
        untrusted = (proof.hash.index, None, proof.hash.nodes)
    else:
        untrusted = None
    seek = proof.seek
    if untrusted is None and (seek is None or not seek.nodes):
        return None

    root: Node | None = None
    if seek is not None and seek.nodes:
        ite = flat_tree.Iterator(seek.nodes[0].index)
        q = _NodeQueue(seek.nodes)
        root = q.shift(ite.index)
        nodes.append(root)
        while q.length > 0:
            n = q.shift(ite.sibling())
            root = parent_node(ite.parent(), root, n)
            nodes.append(n)
            nodes.append(root)

    if untrusted is None:
        return root

    index, value, proof_nodes = untrusted
    ite = flat_tree.Iterator(index)
    q = _NodeQueue(proof_nodes, root)
    root = block_node(index, value) if value is not None else q.shift(ite.index)
    nodes.append(root)
    while q.length > 0:
        n = q.shift(ite.sibling())
        root = parent_node(ite.parent(), root, n)
        nodes.append(n)
        nodes.append(root)
    return root


def verify_upgrade(proof: Data, block_root: Node | None, batch: TreeBatch) -> bool:
    """Grow ``batch`` to the proof's upgrade.

    Returns True when ``block_root`` was used, so the block part is connected to the signed tree.
    """
    upgrade = proof.upgrade
    assert upgrade is not None
    if upgrade.length == 0:
        raise VerificationError("upgrade of length 0")
    if upgrade.start + upgrade.length > MAX_LENGTH:
        raise VerificationError("upgrade length out of range")

    q = _NodeQueue(upgrade.nodes, block_root)
    grow = len(batch.roots) > 0
    i = 0
    to = 2 * (upgrade.start + upgrade.length)
    ite = flat_tree.Iterator(0)
    while ite.full_root(to):
        if i < len(batch.roots) and batch.roots[i].index == ite.index:
            i += 1
            ite.next_tree()
            continue
        if grow:
            grow = False
            root = ite.index
            if i < len(batch.roots):
                ite.seek(batch.roots[-1].index)
                while ite.index != root:
                    batch.append_root(q.shift(ite.sibling()), ite)
                ite.next_tree()
                continue
        batch.append_root(q.shift(ite.index), ite)
        ite.next_tree()

    if not batch.roots:
        raise VerificationError("upgrade produced no roots")
    extra = upgrade.additional_nodes
    ite.seek(batch.roots[-1].index)
    i = 0
    while i < len(extra) and extra[i].index == ite.sibling():
        batch.append_root(extra[i], ite)
        i += 1
    while i < len(extra):
        n = extra[i]
        i += 1
        while n.index != ite.index:
            if ite.factor == 2:
                raise VerificationError(f"unexpected node {n.index} in upgrade")
            ite.left_child()
        batch.append_root(n, ite)
        ite.sibling()
    if batch.length > MAX_LENGTH:
        raise VerificationError("upgrade length out of range")

    batch.signature = upgrade.signature
    batch.fork = proof.fork
    return q.extra is None


# -- contiguous runs with one proof (Cairn's range extension) -----------------------------------


def range_proof_nodes(
    get: Callable[[int], Node | None], length: int, start: int, end: int
) -> list[Node]:
    """The nodes that connect blocks [start, end) to the roots of a tree of ``length`` blocks.

    Every full subtree inside the range is computed by the verifier from the blocks; what it
    cannot compute (subtrees wholly outside the range, on the paths to the roots) is sent.
    """
    lo, hi = 2 * start, 2 * (end - 1)
    out: list[Node] = []

    def walk(i: int) -> None:
        left, right = flat_tree.spans(i)
        if right < lo or left > hi:
            n = get(i)
            if n is None:
                raise NotAvailableError(f"tree node {i} is not held")
            out.append(n)
            return
        if lo <= left and right <= hi:
            return
        kids = flat_tree.children(i)
        assert kids is not None
        walk(kids[0])
        walk(kids[1])

    for root in flat_tree.full_roots(2 * length):
        left, right = flat_tree.spans(root)
        if right < lo or left > hi:
            continue
        walk(root)
    return out


def verify_range(
    roots: Sequence[Node], length: int, start: int, values: Sequence[bytes], proof: Sequence[Node]
) -> tuple[list[bytes], list[Node]]:
    """Hash blocks [start, start+len(values)) up to the trusted ``roots`` with the ``proof``.

    Returns the leaf hashes and every parent node computed on the way (to store), or raises
    :class:`VerificationError`.
    """
    end = start + len(values)
    if not values or end > length:
        raise VerificationError(f"range {start}..{end} is outside length {length}")
    # the proof's nodes come in the order the verifier needs them (depth first, left to right):
    # one encoding per proof
    lo, hi = 2 * start, 2 * (end - 1)
    leaves = [leaf_hash(v) for v in values]
    made: list[Node] = []
    used = 0

    def compute(i: int) -> Node:
        nonlocal used
        left, right = flat_tree.spans(i)
        if right < lo or left > hi:
            if used >= len(proof) or proof[used].index != i:
                raise VerificationError(f"range proof lacks node {i} (or has it out of order)")
            n = proof[used]
            used += 1
            return n
        if not i & 1:
            j = i // 2 - start
            return Node(i, len(values[j]), leaves[j])
        kids = flat_tree.children(i)
        assert kids is not None
        a, b = compute(kids[0]), compute(kids[1])
        size = a.size + b.size
        n = Node(
            i,
            size,
            hashlib.blake2b(b"\x01" + _U64(size) + a.hash + b.hash, digest_size=32).digest(),
        )
        made.append(n)
        return n

    trusted = {r.index: r for r in roots}
    for root in flat_tree.full_roots(2 * length):
        left, right = flat_tree.spans(root)
        if right < lo or left > hi:
            continue
        got = compute(root)
        want = trusted.get(root)
        if want is None or want != got:
            raise VerificationError(f"blocks {start}..{end} do not hash to the signed root {root}")
    if used != len(proof):
        raise VerificationError("range proof has nodes that prove nothing")
    return leaves, made + list(proof)

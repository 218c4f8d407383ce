"""The Merkle tree of a log, and its proofs, move for move as hypercore's lib/merkle-tree.js.

Proof generation (:func:`generate_proof`) reads nodes through a :class:`NodeSource`; proof
verification (:func:`verify_proof`) needs no storage beyond the trusted nodes it is given.
Everything an attacker controls raises :class:`~cairn.errors.VerificationError`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cairn import flat_tree
from cairn.crypto import leaf_hash, parent_hash, tree_hash
from cairn.errors import NotAvailableError, VerificationError
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
    "InvalidRequestError",
    "NodeSource",
    "TreeBatch",
    "block_node",
    "byte_offset",
    "generate_proof",
    "parent_node",
    "root_nodes",
    "seek_block",
    "verify_tree",
    "verify_upgrade",
]

_MAX_LENGTH = 1 << 60  # keeps every flat-tree index within u64 with room to spare


class InvalidRequestError(NotAvailableError):
    """A proof was asked for that this tree cannot make (out of range, or nodes it lacks)."""


class NodeSource(Protocol):
    def get_node(self, index: int) -> Node | None: ...


def block_node(index: int, value: bytes) -> Node:
    """Leaf node at flat index ``index`` (= 2 × block number)."""
    return Node(index, len(value), leaf_hash(value))


def parent_node(index: int, a: Node, b: Node) -> Node:
    if a.index > b.index:
        a, b = b, a
    return Node(index, a.size + b.size, parent_hash(a.hash, b.hash, a.size + b.size))


def root_nodes(source: NodeSource, length: int) -> list[Node]:
    roots = []
    for i in flat_tree.full_roots(2 * length):
        n = source.get_node(i)
        if n is None:
            raise NotAvailableError(f"tree root {i} for length {length} is not stored")
        roots.append(n)
    return roots


@dataclass(slots=True)
class TreeBatch:
    """A tree state being built: roots grow as blocks or verified roots are appended.

    ``nodes`` collects every node created or verified, to be stored on commit.
    """

    fork: int = 0
    length: int = 0
    byte_length: int = 0
    roots: list[Node] = field(default_factory=list)
    nodes: list[Node] = field(default_factory=list)
    signature: bytes | None = None
    upgraded: bool = False

    def hash(self) -> bytes:
        return tree_hash(self.roots)

    def append(self, value: bytes) -> Node:
        head = self.length * 2
        leaf = Node(head, len(value), leaf_hash(value))
        self.append_root(leaf, flat_tree.Iterator(head))
        return leaf

    def append_root(self, node: Node, ite: flat_tree.Iterator) -> None:
        self.upgraded = True
        self.length += ite.factor // 2
        self.byte_length += node.size
        roots = self.roots
        roots.append(node)
        self.nodes.append(node)
        while len(roots) > 1:
            a = roots[-1]
            b = roots[-2]
            if ite.sibling() != b.index:
                ite.sibling()  # undo: the cursor always points at the last root
                break
            size = a.size + b.size
            p = Node(ite.parent(), size, parent_hash(b.hash, a.hash, size))
            self.nodes.append(p)
            roots.pop()
            roots[-1] = p


# -- byte offsets and seeking ----------------------------------------------------------------------


def byte_offset(
    source: NodeSource, roots: Sequence[Node], length: int, byte_length: int, index: int
) -> int:
    """Byte offset of tree node ``index`` (of its left-most block) in a tree with these roots."""
    if index == 2 * length:
        return byte_length
    if index & 1:
        index = flat_tree.left_span(index)
    head = 0
    offset = 0
    for root in roots:
        head += 2 * (root.index - head + 1)
        if index >= head:
            offset += root.size
            continue
        ite = flat_tree.Iterator(root.index)
        while ite.index != index:
            if index < ite.index:
                ite.left_child()
            else:
                offset += _need(source, ite.left_child()).size
                ite.sibling()
        return offset
    raise InvalidRequestError(f"node {index} is outside the tree")


def _need(source: NodeSource, index: int) -> Node:
    n = source.get_node(index)
    if n is None:
        raise InvalidRequestError(f"tree node {index} is not stored")
    return n


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
        node = _need(source, root)
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
    node = _need(source, root)
    if _unpadded(node, padding, flat_tree.count_leaves(root)) <= nbytes:
        raise InvalidRequestError("invalid seek")
    return _seek_trusted_tree(source, root, nbytes, padding)


def seek_block(source: NodeSource, roots: Sequence[Node], nbytes: int) -> tuple[int, int] | None:
    """The block holding byte ``nbytes`` and the offset inside it, from the nodes held.

    Returns ``None`` when the nodes needed to narrow it down are not held.
    """
    for root in roots:
        if nbytes == root.size:
            return (flat_tree.right_span(root.index) + 2) // 2, 0
        if nbytes > root.size:
            nbytes -= root.size
            continue
        ite = flat_tree.Iterator(root.index)
        while ite.index & 1:
            left = source.get_node(ite.left_child())
            if left is None:
                return None
            if left.size == nbytes:
                return (ite.right_span() + 2) // 2, 0
            if left.size > nbytes:
                continue
            nbytes -= left.size
            ite.sibling()
        return ite.index // 2, nbytes
    return None


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
        return _block_proof(source, fork, length, block, request_id, value, manifest)
    return _general_proof(source, fork=fork, length=length, byte_length=byte_length, roots=roots,
                          signature=signature, block=block, hash=hash, seek=seek,
                          upgrade=upgrade, request_id=request_id, value=value,
                          manifest=manifest)


def _block_proof(source: NodeSource, fork: int, length: int, block: RequestBlock,
                 request_id: int, value: bytes | None, manifest: bytes | None) -> Data:
    """A plain block request (all a downloader sends after its first): what
    :func:`_general_proof` makes of it, without what it does not need."""
    index = 2 * block.index
    if index >= 2 * length:
        raise InvalidRequestError(f"node {index} is outside length {length}")
    root = _nodes_to_root(index, block.nodes, 2 * length)
    proof: list[Node] = []
    i, off, factor = index, block.index, 2
    while i != root:  # the sibling, then up to the parent (flat_tree.Iterator's moves)
        proof.append(_need(source, i - factor if off & 1 else i + factor))
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
        return _need(source, i)

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
    if upgrade.start + upgrade.length > _MAX_LENGTH:
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
    if batch.length > _MAX_LENGTH:
        raise VerificationError("upgrade length out of range")

    batch.signature = upgrade.signature
    batch.fork = proof.fork
    return q.extra is None

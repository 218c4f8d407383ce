"""The Merkle tree of a log, move for move as hypercore's lib/merkle-tree.js.

A :class:`TreeBatch` grows a tree's roots block by block or root by root; :func:`root_nodes`,
:func:`byte_offset` and :func:`seek_block` read a held tree through a :class:`NodeSource`.
The proofs made from and checked against this tree are :mod:`cairn.proofs`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cairn import flat_tree
from cairn.crypto import leaf_hash, parent_hash, tree_hash
from cairn.errors import NotAvailableError
from cairn.messages import Node

__all__ = [
    "MAX_LENGTH",
    "InvalidRequestError",
    "NodeSource",
    "TreeBatch",
    "block_node",
    "byte_offset",
    "need_node",
    "parent_node",
    "root_nodes",
    "seek_block",
]

MAX_LENGTH = 1 << 60  # keeps every flat-tree index within u64 with room to spare


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
                offset += need_node(source, ite.left_child()).size
                ite.sibling()
        return offset
    raise InvalidRequestError(f"node {index} is outside the tree")


def need_node(source: NodeSource, index: int) -> Node:
    """Tree node ``index``, or :class:`InvalidRequestError` when it is not stored."""
    n = source.get_node(index)
    if n is None:
        raise InvalidRequestError(f"tree node {index} is not stored")
    return n


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

"""Flat in-order trees (the npm ``flat-tree`` package) over integer node indexes.

Leaves sit at even indexes (leaf ``i`` is node ``2i``); a node's depth is the number of trailing
one bits of its index. ``full_roots(2 * length)`` gives the roots of a log of ``length`` blocks.
"""

from __future__ import annotations

__all__ = [
    "Iterator",
    "children",
    "count_leaves",
    "depth",
    "full_roots",
    "index",
    "left_child",
    "left_span",
    "offset",
    "parent",
    "right_child",
    "right_span",
    "sibling",
    "spans",
]


def depth(i: int) -> int:
    """Number of trailing 1 bits of ``i``."""
    return ((i + 1) & -(i + 1)).bit_length() - 1


def offset(i: int, d: int | None = None) -> int:
    if not i & 1:
        return i >> 1
    if d is None:
        d = depth(i)
    return ((i + 1) >> d) - 1 >> 1


def index(d: int, o: int) -> int:
    return ((1 + 2 * o) << d) - 1


def parent(i: int) -> int:
    d = depth(i)
    return index(d + 1, offset(i, d) >> 1)


def sibling(i: int) -> int:
    d = depth(i)
    o = offset(i, d)
    return index(d, o - 1 if o & 1 else o + 1)


def left_child(i: int) -> int:
    if not i & 1:
        return -1
    d = depth(i)
    return index(d - 1, offset(i, d) * 2)


def right_child(i: int) -> int:
    if not i & 1:
        return -1
    d = depth(i)
    return index(d - 1, offset(i, d) * 2 + 1)


def children(i: int) -> tuple[int, int] | None:
    if not i & 1:
        return None
    d = depth(i)
    o = offset(i, d) * 2
    return index(d - 1, o), index(d - 1, o + 1)


def left_span(i: int) -> int:
    if not i & 1:
        return i
    d = depth(i)
    return offset(i, d) << (d + 1)


def right_span(i: int) -> int:
    if not i & 1:
        return i
    d = depth(i)
    return ((offset(i, d) + 1) << (d + 1)) - 2


def spans(i: int) -> tuple[int, int]:
    return left_span(i), right_span(i)


def count_leaves(i: int) -> int:
    return 1 << depth(i)


def full_roots(head: int) -> list[int]:
    """Roots of the tree whose leaves are the node indexes below ``head`` (an even number)."""
    if head & 1:
        raise ValueError("full_roots takes a leaf index (even)")
    n = head >> 1
    result: list[int] = []
    off = 0
    while n:
        factor = 1 << (n.bit_length() - 1)
        result.append(off + factor - 1)
        off += 2 * factor
        n -= factor
    return result


class Iterator:
    """A cursor over a flat tree, move for move the same as flat-tree's iterator."""

    __slots__ = ("factor", "index", "offset")

    def __init__(self, i: int = 0) -> None:
        self.index = 0
        self.offset = 0
        self.factor = 0
        self.seek(i)

    def seek(self, i: int) -> None:
        self.index = i
        if i & 1:
            d = depth(i)
            self.offset = offset(i, d)
            self.factor = 1 << (d + 1)
        else:
            self.offset = i >> 1
            self.factor = 2

    def is_left(self) -> bool:
        return not self.offset & 1

    def contains(self, i: int) -> bool:
        if i > self.index:
            return i < self.index + self.factor // 2
        if i < self.index:
            return i > self.index - self.factor // 2
        return True

    def prev(self) -> int:
        if not self.offset:
            return self.index
        self.offset -= 1
        self.index -= self.factor
        return self.index

    def next(self) -> int:
        self.offset += 1
        self.index += self.factor
        return self.index

    def count_leaves(self) -> int:
        return self.factor // 2

    def sibling(self) -> int:
        return self.next() if self.is_left() else self.prev()

    def parent(self) -> int:
        if self.offset & 1:
            self.index -= self.factor // 2
            self.offset = (self.offset - 1) // 2
        else:
            self.index += self.factor // 2
            self.offset //= 2
        self.factor *= 2
        return self.index

    def left_span(self) -> int:
        self.index = self.index - self.factor // 2 + 1
        self.offset = self.index // 2
        self.factor = 2
        return self.index

    def right_span(self) -> int:
        self.index = self.index + self.factor // 2 - 1
        self.offset = self.index // 2
        self.factor = 2
        return self.index

    def peek_right_span(self) -> int:
        return self.index + self.factor // 2 - 1

    def left_child(self) -> int:
        if self.factor == 2:
            return self.index
        self.factor //= 2
        self.index -= self.factor // 2
        self.offset *= 2
        return self.index

    def right_child(self) -> int:
        if self.factor == 2:
            return self.index
        self.factor //= 2
        self.index += self.factor // 2
        self.offset = 2 * self.offset + 1
        return self.index

    def next_tree(self) -> int:
        self.index = self.index + self.factor // 2 + 1
        self.offset = self.index // 2
        self.factor = 2
        return self.index

    def full_root(self, i: int) -> bool:
        """Grow the cursor (a leaf) to the largest full root that ends before leaf-index ``i``."""
        if i <= self.index or self.index & 1:
            return False
        while i > self.index + self.factor + self.factor // 2:
            self.index += self.factor // 2
            self.factor *= 2
            self.offset //= 2
        return True

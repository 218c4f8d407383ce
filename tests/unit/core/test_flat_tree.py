"""flat-tree behaviour, checked against its definitions (and JS's documented examples)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from cairn import flat_tree as ft


def test_known_values() -> None:
    assert ft.full_roots(10) == [3, 8]
    assert ft.full_roots(16) == [7]
    assert ft.full_roots(0) == []
    assert ft.full_roots(14) == [3, 9, 12]
    assert ft.parent(0) == 1 and ft.parent(2) == 1 and ft.parent(1) == 3 and ft.parent(5) == 3
    assert ft.sibling(0) == 2 and ft.sibling(1) == 5 and ft.sibling(5) == 1
    assert ft.children(3) == (1, 5) and ft.children(0) is None
    assert ft.spans(3) == (0, 6) and ft.spans(4) == (4, 4)
    assert ft.depth(7) == 3 and ft.depth(6) == 0
    assert ft.count_leaves(7) == 8


@given(st.integers(0, 2**40))
def test_iterator_agrees_with_functions(i: int) -> None:
    ite = ft.Iterator(i)
    assert ite.index == i
    assert ite.sibling() == ft.sibling(i)
    ite.seek(i)
    assert ite.parent() == ft.parent(i)
    ite.seek(i)
    if i & 1:
        assert ite.left_child() == ft.left_child(i)
        ite.seek(i)
        assert ite.right_child() == ft.right_child(i)
    ite.seek(i)
    assert ite.peek_right_span() == ft.right_span(i)


@given(st.integers(1, 2**30))
def test_full_roots_cover_the_leaves(length: int) -> None:
    roots = ft.full_roots(2 * length)
    assert sum(ft.count_leaves(r) for r in roots) == length
    pos = 0
    for r in roots:
        assert ft.left_span(r) == pos
        pos = ft.right_span(r) + 2
    assert pos == 2 * length

"""Which blocks a log holds: a paged bitset (32,768 blocks a page) with range operations."""

from __future__ import annotations

__all__ = ["Bitfield"]

PAGE_BITS = 1 << 15
_PAGE_BYTES = PAGE_BITS // 8
_FULL = b"\xff" * _PAGE_BYTES


class Bitfield:
    __slots__ = ("_pages",)

    def __init__(self) -> None:
        self._pages: dict[int, bytearray] = {}

    def has(self, i: int) -> bool:
        page = self._pages.get(i >> 15)
        if page is None:
            return False
        j = i & (PAGE_BITS - 1)
        return bool(page[j >> 3] & (1 << (j & 7)))

    def set(self, i: int, value: bool = True) -> None:
        self.set_range(i, i + 1, value)

    def set_range(self, start: int, end: int, value: bool = True) -> None:
        i = start
        while i < end:
            pno = i >> 15
            pstart = pno << 15
            lo = i - pstart
            hi = min(end - pstart, PAGE_BITS)
            page = self._pages.get(pno)
            if page is None:
                if not value:
                    i = pstart + hi
                    continue
                page = self._pages[pno] = bytearray(_PAGE_BYTES)
            _set_bits(page, lo, hi, value)
            if not value and not any(page):
                del self._pages[pno]
            i = pstart + hi

    def first_unset(self, start: int = 0) -> int:
        i = start
        while True:
            pno = i >> 15
            page = self._pages.get(pno)
            if page is None:
                return i
            j = i & (PAGE_BITS - 1)
            if j == 0 and page == _FULL:
                i += PAGE_BITS
                continue
            while j < PAGE_BITS:
                byte = page[j >> 3]
                if byte == 0xFF and j & 7 == 0:
                    j += 8
                    continue
                if not byte & (1 << (j & 7)):
                    return (pno << 15) + j
                j += 1
            i = (pno + 1) << 15

    def count(self, start: int, end: int) -> int:
        return sum(1 for i in range(start, end) if self.has(i))


def _set_bits(page: bytearray, lo: int, hi: int, value: bool) -> None:
    # head bits up to a byte boundary, whole bytes, tail bits
    while lo < hi and lo & 7:
        _bit(page, lo, value)
        lo += 1
    full_end = hi & ~7
    if lo < full_end:
        page[lo >> 3 : full_end >> 3] = (b"\xff" if value else b"\x00") * ((full_end - lo) >> 3)
        lo = full_end
    while lo < hi:
        _bit(page, lo, value)
        lo += 1


def _bit(page: bytearray, j: int, value: bool) -> None:
    if value:
        page[j >> 3] |= 1 << (j & 7)
    else:
        page[j >> 3] &= ~(1 << (j & 7)) & 0xFF

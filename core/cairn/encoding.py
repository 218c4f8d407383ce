"""compact-encoding (the npm package), the codec under every Holepunch wire format.

Encoders append to a ``bytearray``; decoders read from a :class:`Reader` and raise
:class:`~cairn.errors.DecodeError` (never anything else) on bad input.

``uint``: one byte up to 0xfc, else ``0xfd`` + u16le, ``0xfe`` + u32le, ``0xff`` + u64le.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import TypeVar

from cairn.errors import DecodeError

__all__ = [
    "MAX_UINT",
    "Reader",
    "decode_all",
    "encode_uint",
    "uint_size",
    "write_array",
    "write_buffer",
    "write_fixed",
    "write_optional_buffer",
    "write_string",
    "write_u16",
    "write_u24",
    "write_u32",
    "write_u64",
    "write_uint",
]

T = TypeVar("T")

MAX_UINT = 2**64 - 1

_U16 = struct.Struct("<H")
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

_SMALL = [bytes([i]) for i in range(0xFD)]


def encode_uint(n: int) -> bytes:
    """The compact-encoding bytes of an unsigned integer."""
    if n < 0xFD:
        if n < 0:
            raise ValueError(f"uint cannot be negative: {n}")
        return _SMALL[n]
    if n <= 0xFFFF:
        return b"\xfd" + _U16.pack(n)
    if n <= 0xFFFFFFFF:
        return b"\xfe" + _U32.pack(n)
    if n <= MAX_UINT:
        return b"\xff" + _U64.pack(n)
    raise ValueError(f"uint out of range: {n}")


def uint_size(n: int) -> int:
    if n < 0xFD:
        return 1
    if n <= 0xFFFF:
        return 3
    if n <= 0xFFFFFFFF:
        return 5
    return 9


def write_uint(out: bytearray, n: int) -> None:
    out += encode_uint(n)


def write_u16(out: bytearray, n: int) -> None:
    out += _U16.pack(n)


def write_u24(out: bytearray, n: int) -> None:
    out += n.to_bytes(3, "little")


def write_u32(out: bytearray, n: int) -> None:
    out += _U32.pack(n)


def write_u64(out: bytearray, n: int) -> None:
    out += _U64.pack(n)


def write_fixed(out: bytearray, data: bytes, size: int) -> None:
    if len(data) != size:
        raise ValueError(f"expected {size} bytes, got {len(data)}")
    out += data


def write_buffer(out: bytearray, data: bytes | None) -> None:
    """``c.buffer``: uint length then the bytes; ``None`` encodes as length 0."""
    if data is None:
        out += b"\x00"
        return
    out += encode_uint(len(data))
    out += data


write_optional_buffer = write_buffer


def write_string(out: bytearray, text: str) -> None:
    data = text.encode("utf-8")
    out += encode_uint(len(data))
    out += data


def write_array(out: bytearray, items: Sequence[T], write: Callable[[bytearray, T], None]) -> None:
    out += encode_uint(len(items))
    for item in items:
        write(out, item)


class Reader:
    """A cursor over bytes; every read checks bounds and raises DecodeError."""

    __slots__ = ("data", "end", "pos")

    def __init__(self, data: bytes, pos: int = 0, end: int | None = None) -> None:
        self.data = bytes(data)
        self.pos = pos
        self.end = len(self.data) if end is None else end

    def remaining(self) -> int:
        return self.end - self.pos

    def _need(self, n: int) -> int:
        pos = self.pos
        if n < 0 or pos + n > self.end:
            raise DecodeError(f"truncated: need {n} bytes at offset {pos}, have {self.end - pos}")
        self.pos = pos + n
        return pos

    def uint(self) -> int:
        pos = self.pos
        if pos < self.end:  # (the one-byte case without _need: the commonest read of all)
            a = self.data[pos]
            if a < 0xFD:
                self.pos = pos + 1
                return a
        pos = self._need(1)
        a = self.data[pos]
        if a == 0xFD:
            p = self._need(2)
            n: int = _U16.unpack_from(self.data, p)[0]
            return n
        if a == 0xFE:
            p = self._need(4)
            n = _U32.unpack_from(self.data, p)[0]
            return n
        p = self._need(8)
        n = _U64.unpack_from(self.data, p)[0]
        return n

    def u8(self) -> int:
        return self.data[self._need(1)]

    def u16(self) -> int:
        n: int = _U16.unpack_from(self.data, self._need(2))[0]
        return n

    def u24(self) -> int:
        p = self._need(3)
        return int.from_bytes(self.data[p : p + 3], "little")

    def u32(self) -> int:
        n: int = _U32.unpack_from(self.data, self._need(4))[0]
        return n

    def u64(self) -> int:
        n: int = _U64.unpack_from(self.data, self._need(8))[0]
        return n

    def fixed(self, size: int) -> bytes:
        p = self._need(size)
        return self.data[p : p + size]

    def buffer(self) -> bytes | None:
        """``c.buffer``: a zero length decodes as ``None`` (as in JS)."""
        n = self.uint()
        if n == 0:
            return None
        return self.fixed(n)

    def bytes_(self) -> bytes:
        """A length-prefixed byte string where empty and absent are the same: ``b""``."""
        n = self.uint()
        return self.fixed(n)

    def string(self) -> str:
        raw = self.bytes_()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"invalid UTF-8 string at offset {self.pos - len(raw)}") from exc

    def array(self, read: Callable[[Reader], T], max_items: int = 1 << 20) -> list[T]:
        n = self.uint()
        if n > max_items or n > self.remaining():
            raise DecodeError(f"array of {n} items does not fit in {self.remaining()} bytes")
        return [read(self) for _ in range(n)]

    def rest(self) -> bytes:
        p = self.pos
        self.pos = self.end
        return self.data[p : self.end]

    def done(self) -> None:
        if self.pos != self.end:
            raise DecodeError(f"{self.end - self.pos} trailing bytes at offset {self.pos}")


def decode_all(data: bytes, read: Callable[[Reader], T]) -> T:
    """Decode one value that must use all of ``data``."""
    r = Reader(data)
    value = read(r)
    r.done()
    return value

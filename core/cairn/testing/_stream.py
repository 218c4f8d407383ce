"""In-memory byte streams for testing stream protocol cores (Noise, secret-stream, Protomux)."""

from __future__ import annotations

__all__ = ["MemoryStream", "memory_stream_pair"]


class _Pipe:
    """One direction of a stream: bytes written at one end wait here to be read at the other."""

    __slots__ = ("buffer", "closed")

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.closed = False


class MemoryStream:
    """One end of a reliable in-memory byte stream; make a connected pair with `memory_stream_pair`.

    Bytes written with `write` at one end come out of `read` at the other end, in order, in
    whatever chunks the reader asks for, so a test can also cut a message at every byte boundary.
    `close()` ends this end's writing; the other end then sees `at_eof` once it has read the rest.
    """

    def __init__(self, incoming: _Pipe, outgoing: _Pipe) -> None:
        self._incoming = incoming
        self._outgoing = outgoing

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue `data` for the other end; raises `BrokenPipeError` after this end was closed."""
        if self._outgoing.closed:
            raise BrokenPipeError("write on a MemoryStream after close()")
        self._outgoing.buffer += data

    def read(self, max_bytes: int = -1) -> bytes:
        """Up to `max_bytes` of what the other end wrote (all of it if negative); b"" if none."""
        buffer = self._incoming.buffer
        size = len(buffer) if max_bytes < 0 else min(max_bytes, len(buffer))
        data = bytes(buffer[:size])
        del buffer[:size]
        return data

    def available(self) -> int:
        """How many bytes `read()` would return now."""
        return len(self._incoming.buffer)

    def close(self) -> None:
        """Stop writing; the other end reads what is left, then sees `at_eof`."""
        self._outgoing.closed = True

    @property
    def closed(self) -> bool:
        """True once `close()` was called on this end."""
        return self._outgoing.closed

    @property
    def at_eof(self) -> bool:
        """True once the other end closed and everything it wrote has been read."""
        return self._incoming.closed and not self._incoming.buffer


def memory_stream_pair() -> tuple[MemoryStream, MemoryStream]:
    """Two connected ends: what `a.write()` takes, `b.read()` gives, and the other way round."""
    a_to_b, b_to_a = _Pipe(), _Pipe()
    return MemoryStream(b_to_a, a_to_b), MemoryStream(a_to_b, b_to_a)

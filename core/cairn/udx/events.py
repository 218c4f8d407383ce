"""What a :class:`~cairn.udx.stream.StreamCore` hands out from ``next_event()``: frozen, slotted
dataclasses, matched on by the driver (:mod:`cairn.udx.aio`)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["StreamClosed", "StreamData", "StreamEnded", "StreamEvent", "StreamMessage"]


@dataclass(frozen=True, slots=True)
class StreamData:
    """Bytes of the stream, in order."""

    data: bytes


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer ended its side (its END packet and all before it arrived)."""


@dataclass(frozen=True, slots=True)
class StreamMessage:
    """An unreliable datagram the peer sent on the stream (a MESSAGE packet)."""

    data: bytes


@dataclass(frozen=True, slots=True)
class StreamClosed:
    """The stream is over: ``error`` is None after both sides ended (or we destroyed it), else
    why (``"peer gone: ..."``, ``"destroyed by the peer"``)."""

    error: str | None


StreamEvent = StreamData | StreamEnded | StreamMessage | StreamClosed

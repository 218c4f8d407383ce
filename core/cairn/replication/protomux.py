"""Protomux 3: many channels over one secret stream, as a sans-I/O core.

Every secret-stream message is one Protomux message ``uint channel ‖ uint type ‖ payload``.
Channel ids belong to the sender: each side numbers the channels it opens from 1, and a message
carries the sender's id. Channel 0 is the control channel:

====  ========  =====================================================================
type  name      payload
====  ========  =====================================================================
0     batch     ``uint channel`` then repeated ``uint length ‖ (uint type ‖ payload)``;
                a length 0 is followed by a new ``uint channel``
1     open      ``uint id ‖ string protocol ‖ optional buffer id ‖ handshake (the rest)``
2     reject    ``uint id`` (the id the *opener* gave the rejected channel)
3     close     ``uint id`` (the sender's own id)
====  ========  =====================================================================

There is no accept: both sides send ``open`` for the same ``(protocol, id)`` and each pairs the
other's open with its own. The JS peer may open first and send messages on its channel before
we open ours; :class:`Mux` holds them (up to ``max_buffered``) and delivers them once we pair.
A ``close`` from either side closes both directions. Local ids are reused, the most recently
freed first as in JS, once the peer can no longer confuse them (after a close of a paired
channel, or after the peer's open or reject answered ours).

Where JS is lax this core is strict: a batch entry longer than what is left of the message is a
:class:`~cairn.errors.DecodeError` (JS cuts it short), and so is a protocol name that is not
UTF-8 (JS substitutes U+FFFD). Where JS gets stuck this core answers: a ``close`` for a channel
we never accepted gets a ``reject`` back, so the peer may reuse its id.

:class:`Mux` has the verbs of every replication core (:mod:`cairn.replication`):
:meth:`~Mux.receive_data` takes one decrypted message, :meth:`~Mux.next_event` hands out the
events (:mod:`cairn.replication.events`), :meth:`~Mux.data_to_send` the messages to send.

The codec (:func:`encode_frames`, :func:`decode_message`) is pure; decoding arbitrary bytes
raises only :class:`~cairn.errors.DecodeError`. :class:`Mux` raises
:class:`~cairn.errors.RemoteError` subclasses (:class:`MuxError`, :class:`ChannelLimitError`) when
the peer breaks the protocol, and :class:`~cairn.errors.LocalError` when the caller does.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

from cairn.encoding import Reader, encode_uint
from cairn.errors import DecodeError, LocalError, RemoteError
from cairn.replication.events import (
    ChannelClosed,
    ChannelMessage,
    ChannelOpened,
    ChannelRejected,
    MuxEvent,
)

__all__ = [
    "BATCH",
    "CLOSE",
    "DEFAULT_MAX_BUFFERED",
    "DEFAULT_MAX_CHANNELS",
    "OPEN",
    "REJECT",
    "ChannelClosed",
    "ChannelLimitError",
    "ChannelMessage",
    "ChannelOpened",
    "ChannelRejected",
    "Close",
    "Data",
    "Frame",
    "Mux",
    "MuxError",
    "MuxEvent",
    "Open",
    "Reject",
    "decode_message",
    "encode_frame",
    "encode_frames",
]

BATCH: Final = 0
OPEN: Final = 1
REJECT: Final = 2
CLOSE: Final = 3

DEFAULT_MAX_CHANNELS: Final = 256
#: Bytes of messages held for channels the peer opened and we have not (JS counts 512 + size
#: per message, and so do we, so many tiny messages count too).
DEFAULT_MAX_BUFFERED: Final = 1 << 20
_MESSAGE_OVERHEAD: Final = 512
#: JS decodes batches inside batches; it never sends them. We accept this many levels.
_MAX_BATCH_DEPTH: Final = 4


class MuxError(RemoteError):
    """The peer broke the Protomux protocol (an open on a busy id, a reject for nothing, ...)."""


class ChannelLimitError(MuxError):
    """The peer opened more channels, or buffered more bytes, than this mux allows."""


# -- frames: the codec --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Data:
    """A message on a (non-zero) channel: the sender's channel id, a type and its payload."""

    channel: int
    type: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class Open:
    """Control 1: the sender opens its channel ``channel`` for ``(protocol, id)``."""

    channel: int
    protocol: str
    id: bytes | None = None
    handshake: bytes = b""


@dataclass(frozen=True, slots=True)
class Reject:
    """Control 2: the sender refuses the channel its peer opened as ``channel``."""

    channel: int


@dataclass(frozen=True, slots=True)
class Close:
    """Control 3: the sender closes its channel ``channel``."""

    channel: int


Frame = Data | Open | Reject | Close


def _control_body(frame: Open | Reject | Close) -> bytes:
    """``uint type ‖ payload`` of a control frame (what follows channel 0)."""
    if isinstance(frame, Open):
        protocol = frame.protocol.encode("utf-8")
        return b"".join(
            (
                encode_uint(OPEN),
                encode_uint(frame.channel),
                encode_uint(len(protocol)),
                protocol,
                encode_uint(len(frame.id)) + frame.id if frame.id else b"\x00",
                frame.handshake,
            )
        )
    kind = REJECT if isinstance(frame, Reject) else CLOSE
    return encode_uint(kind) + encode_uint(frame.channel)


def _channel_and_body(frame: Frame) -> tuple[int, bytes]:
    if isinstance(frame, Data):
        if frame.channel == 0:
            raise ValueError("channel 0 is the control channel: use Open, Reject or Close")
        return frame.channel, encode_uint(frame.type) + frame.payload
    return 0, _control_body(frame)


def encode_frame(frame: Frame) -> bytes:
    """One frame as one Protomux message."""
    channel, body = _channel_and_body(frame)
    return encode_uint(channel) + body


def encode_frames(frames: Sequence[Frame]) -> bytes:
    """Frames as one message: the frame itself when there is one, else a batch.

    A batch is what JS writes when corked: ``00 00 <channel>``, then each frame as
    ``uint length ‖ body``, with ``00 <channel>`` wherever the channel changes.
    """
    if not frames:
        raise ValueError("nothing to encode")
    if len(frames) == 1:
        return encode_frame(frames[0])
    parts: list[bytes] = []
    current: int | None = None
    for frame in frames:
        channel, body = _channel_and_body(frame)
        if current is None:
            parts.append(b"\x00\x00" + encode_uint(channel))
        elif channel != current:
            parts.append(b"\x00" + encode_uint(channel))
        current = channel
        parts.append(encode_uint(len(body)))
        parts.append(body)
    return b"".join(parts)


def decode_message(message: bytes) -> list[Frame]:
    """The frames of one Protomux message (a batch gives several; an empty message none).

    Control messages of unknown types are skipped, as JS skips them. Raises only
    :class:`~cairn.errors.DecodeError`.
    """
    if not message:
        return []  # JS ignores empty messages
    frames: list[Frame] = []
    r = Reader(message)
    _decode_one(r, r.uint(), frames, 0)
    return frames


def _decode_one(r: Reader, channel: int, out: list[Frame], depth: int) -> None:
    """Decode ``uint type ‖ payload`` (up to ``r.end``) sent on ``channel``."""
    kind = r.uint()
    if channel != 0:
        out.append(Data(channel, kind, r.rest()))
        return
    if kind == BATCH:
        if depth >= _MAX_BATCH_DEPTH:
            raise DecodeError(f"batches nested more than {_MAX_BATCH_DEPTH} deep")
        _decode_batch(r, out, depth + 1)
    elif kind == OPEN:
        local_id = r.uint()
        protocol = r.string()
        ident = r.buffer()
        out.append(Open(local_id, protocol, ident, r.rest()))
    elif kind in (REJECT, CLOSE):
        target = r.uint()
        r.rest()  # JS ignores trailing bytes here
        out.append(Reject(target) if kind == REJECT else Close(target))
    else:
        r.rest()


def _decode_batch(r: Reader, out: list[Frame], depth: int) -> None:
    end = r.end
    channel = r.uint()
    while r.pos < end:
        length = r.uint()
        if length == 0:
            channel = r.uint()
            continue
        if length > end - r.pos:
            raise DecodeError(
                f"batch entry of {length} bytes overruns the message ({end - r.pos} left)"
            )
        inner = Reader(r.data, r.pos, r.pos + length)
        _decode_one(inner, channel, out, depth)
        r.pos += length


# -- the mux ------------------------------------------------------------------------------

_Key = tuple[str, bytes | None]


@dataclass(slots=True)
class _Local:
    key: _Key
    remote_id: int | None = None
    closed: bool = False


@dataclass(slots=True)
class _Remote:
    key: _Key
    handshake: bytes
    channel: int | None = None  # our paired local channel
    pending: list[tuple[int, bytes]] | None = field(default_factory=list)  # None once paired


class Mux:
    """Protomux channel bookkeeping for one connection, without I/O.

    ::

        mux.receive_data(message)            # each decrypted secret-stream message
        while (event := mux.next_event()) is not None:
            ...                              # ChannelOpened, ChannelMessage, ...
        for message in mux.data_to_send():
            stream.send(message)             # each as one secret-stream message

    :meth:`open_channel`, :meth:`send`, :meth:`send_batch`, :meth:`close` and :meth:`reject`
    queue messages. When accepting a channel the peer already sent messages on, those messages
    come out of :meth:`next_event` after the call.

    ``max_channels`` caps the channels the peer may have open at once (and the ids it may use);
    ``max_buffered`` caps what it may send on channels we have not opened yet. Past either,
    :class:`ChannelLimitError` names the limit.
    """

    def __init__(
        self,
        *,
        max_channels: int = DEFAULT_MAX_CHANNELS,
        max_buffered: int = DEFAULT_MAX_BUFFERED,
    ) -> None:
        if max_channels < 1:
            raise ValueError("max_channels must be at least 1")
        self.max_channels = max_channels
        self.max_buffered = max_buffered
        self._local: list[_Local | None] = []  # index = local id - 1
        self._free: list[int] = []  # reusable local ids
        self._remote: list[_Remote | None] = []  # index = remote id - 1
        self._remote_open = 0
        self._outgoing: dict[_Key, deque[int]] = {}  # our opens awaiting the peer's
        self._incoming: dict[_Key, deque[int]] = {}  # the peer's opens awaiting ours
        self._buffered = 0
        self._out: list[bytes] = []
        self._events: deque[MuxEvent] = deque()

    # -- sending ---------------------------------------------------------------------------

    def open_channel(self, protocol: str, id: bytes | None = None, handshake: bytes = b"") -> int:
        """Open (or accept) a channel for ``(protocol, id)``; return its local id.

        If the peer already opened one for the same key, this pairs with the oldest such.
        """
        key: _Key = (protocol, id or None)
        if self._ids_in_use() >= self.max_channels:
            raise LocalError(
                f"already {self.max_channels} channels open or awaiting the peer (max_channels)"
            )
        local_id = self._free.pop() if self._free else len(self._local) + 1
        if local_id > len(self._local):
            self._local.append(None)
        entry = _Local(key)
        self._local[local_id - 1] = entry
        self._out.append(encode_frame(Open(local_id, protocol, key[1], handshake)))
        waiting = self._incoming.get(key)
        if waiting:
            remote_id = waiting.popleft()
            if not waiting:
                del self._incoming[key]
            self._pair(local_id, remote_id)
        else:
            self._outgoing.setdefault(key, deque()).append(local_id)
        return local_id

    def send(self, channel: int, type: int, payload: bytes) -> None:
        """Queue one message on our channel ``channel``."""
        self._check_channel(channel)
        self._out.append(encode_frame(Data(channel, type, bytes(payload))))

    def send_batch(self, messages: Iterable[tuple[int, int, bytes]]) -> None:
        """Queue ``(channel, type, payload)`` messages as one batch message."""
        frames: list[Frame] = []
        for channel, kind, payload in messages:
            self._check_channel(channel)
            frames.append(Data(channel, kind, bytes(payload)))
        if frames:
            self._out.append(encode_frames(frames))

    def close(self, channel: int) -> None:
        """Close our channel ``channel`` (both directions)."""
        entry = self._check_channel(channel)
        entry.closed = True
        self._out.append(encode_frame(Close(channel)))
        if entry.remote_id is not None:
            self._remote[entry.remote_id - 1] = None
            self._remote_open -= 1
            self._release(channel)
        # unpaired: the id stays reserved until the peer's open or reject answers ours

    def reject(self, remote_id: int) -> None:
        """Refuse the channel the peer opened as ``remote_id`` (one we have not accepted)."""
        remote = self._remote_entry(remote_id)
        if remote is None or remote.channel is not None:
            raise LocalError(f"the peer has no unanswered channel {remote_id} to reject")
        self._drop_incoming(remote_id, remote)
        self._out.append(encode_frame(Reject(remote_id)))

    def data_to_send(self) -> list[bytes]:
        """The queued messages, in order; send each as one secret-stream message."""
        out, self._out = self._out, []
        return out

    # -- receiving -------------------------------------------------------------------------

    def receive_data(self, message: bytes) -> None:
        """Take one decrypted message; its events come out of :meth:`next_event`.

        Raises :class:`~cairn.errors.DecodeError` for malformed bytes and :class:`MuxError`
        (or :class:`ChannelLimitError`) for protocol violations: drop the connection then.
        """
        for frame in decode_message(message):
            if isinstance(frame, Data):
                self._on_data(frame)
            elif isinstance(frame, Open):
                self._on_open(frame)
            elif isinstance(frame, Reject):
                self._on_reject(frame.channel)
            else:
                self._on_close(frame.channel)

    def next_event(self) -> MuxEvent | None:
        """The next event (of a message taken, or a backlog :meth:`open_channel` delivered), or
        ``None`` when there is none."""
        return self._events.popleft() if self._events else None

    # -- internals -------------------------------------------------------------------------

    def _ids_in_use(self) -> int:
        # closed channels whose open the peer has not answered yet still hold their id
        return len(self._local) - len(self._free)

    def _check_channel(self, channel: int) -> _Local:
        entry = self._local[channel - 1] if 0 < channel <= len(self._local) else None
        if entry is None or entry.closed:
            raise LocalError(f"channel {channel} is not open")
        return entry

    def _remote_entry(self, remote_id: int) -> _Remote | None:
        return self._remote[remote_id - 1] if 0 < remote_id <= len(self._remote) else None

    def _release(self, local_id: int) -> None:
        self._local[local_id - 1] = None
        self._free.append(local_id)

    def _pair(self, local_id: int, remote_id: int) -> None:
        local = self._local[local_id - 1]
        remote = self._remote[remote_id - 1]
        assert local is not None and remote is not None
        local.remote_id = remote_id
        remote.channel = local_id
        pending, remote.pending = remote.pending or [], None
        for kind, payload in pending:
            self._buffered -= _MESSAGE_OVERHEAD + len(payload)
            self._events.append(ChannelMessage(local_id, kind, payload))

    def _drop_incoming(self, remote_id: int, remote: _Remote) -> None:
        for kind_payload in remote.pending or ():
            self._buffered -= _MESSAGE_OVERHEAD + len(kind_payload[1])
        waiting = self._incoming.get(remote.key)
        if waiting is not None and remote_id in waiting:
            waiting.remove(remote_id)
            if not waiting:
                del self._incoming[remote.key]
        self._remote[remote_id - 1] = None
        self._remote_open -= 1

    def _on_data(self, frame: Data) -> None:
        remote = self._remote_entry(frame.channel)
        if remote is None:
            return  # a channel already closed (messages may cross a close): ignore, as JS does
        if remote.channel is not None:
            self._events.append(ChannelMessage(remote.channel, frame.type, frame.payload))
            return
        assert remote.pending is not None
        self._buffered += _MESSAGE_OVERHEAD + len(frame.payload)
        if self._buffered > self.max_buffered:
            raise ChannelLimitError(
                f"the peer sent more than max_buffered={self.max_buffered} bytes on channels "
                f"not opened here"
            )
        remote.pending.append((frame.type, frame.payload))

    def _on_open(self, frame: Open) -> None:
        remote_id = frame.channel
        if remote_id == 0:
            # JS refuses an open of the control channel the same way
            self._out.append(encode_frame(Reject(0)))
            return
        if remote_id > self.max_channels or self._remote_open >= self.max_channels:
            raise ChannelLimitError(
                f"the peer opened more than max_channels={self.max_channels} channels "
                f"(open for channel {remote_id})"
            )
        if remote_id == len(self._remote) + 1:
            self._remote.append(None)  # ids grow by one at most, as in JS
        if remote_id > len(self._remote) or self._remote[remote_id - 1] is not None:
            raise MuxError(f"the peer opened channel {remote_id}, which is not free")
        key: _Key = (frame.protocol, frame.id)
        waiting = self._outgoing.get(key)
        if waiting:
            local_id = waiting.popleft()
            if not waiting:
                del self._outgoing[key]
            local = self._local[local_id - 1]
            assert local is not None
            if local.closed:
                # we closed before the peer answered: its open is the answer, the id is free
                self._release(local_id)
                return
            self._remote[remote_id - 1] = _Remote(key, frame.handshake)
            self._remote_open += 1
            self._pair(local_id, remote_id)
            self._events.append(
                ChannelOpened(remote_id, frame.protocol, frame.id, frame.handshake, local_id)
            )
            return
        self._remote[remote_id - 1] = _Remote(key, frame.handshake)
        self._remote_open += 1
        self._incoming.setdefault(key, deque()).append(remote_id)
        self._events.append(
            ChannelOpened(remote_id, frame.protocol, frame.id, frame.handshake, None)
        )

    def _on_reject(self, local_id: int) -> None:
        local = self._local[local_id - 1] if 0 < local_id <= len(self._local) else None
        waiting = self._outgoing.get(local.key) if local is not None else None
        if local is None or waiting is None or local_id not in waiting:
            raise MuxError(f"the peer rejected channel {local_id}, which awaits no answer")
        waiting.remove(local_id)
        if not waiting:
            del self._outgoing[local.key]
        self._release(local_id)
        if not local.closed:
            self._events.append(ChannelRejected(local_id))

    def _on_close(self, remote_id: int) -> None:
        remote = self._remote_entry(remote_id)
        if remote is None:
            return  # id 0, unknown or already closed: ignore, as JS does
        if remote.channel is None:
            # closed before we answered: answer with a reject so the peer can reuse its id
            self._drop_incoming(remote_id, remote)
            self._out.append(encode_frame(Reject(remote_id)))
            self._events.append(ChannelClosed(None, remote_id))
            return
        local_id = remote.channel
        self._remote[remote_id - 1] = None
        self._remote_open -= 1
        self._release(local_id)
        self._events.append(ChannelClosed(local_id, remote_id))

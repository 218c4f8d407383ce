"""Many logs over one connection: Protomux channels of ``hypercore/alpha``, one
:class:`~cairn.replication.session.Session` each, without I/O.

A :class:`Replicator` has the verbs of the cores it drives (:mod:`cairn.replication`): it takes
the decrypted secret-stream messages of one connection in (:meth:`Replicator.receive_data`),
passes its sessions' events on (:meth:`Replicator.next_event`) and gives messages to encrypt and
send out (:meth:`Replicator.data_to_send`). A remote that opens a channel for a log we do not
have is refused; one that proves it knows a log's key gets that log served.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from cairn.errors import RemoteError
from cairn.log import Log
from cairn.messages import PROTOCOL
from cairn.replication.events import (
    ChannelClosed,
    ChannelMessage,
    ChannelOpened,
    ChannelRejected,
    MuxEvent,
    SessionEvent,
)
from cairn.replication.protomux import Mux
from cairn.replication.session import Session

__all__ = ["PeerError", "Replicator"]

log = logging.getLogger(__name__)


class PeerError(RemoteError):
    """The peer broke the protocol; the connection should be closed with this reason."""


@dataclass(slots=True)
class _Channel:
    session: Session
    local_id: int | None = None
    remote_opened: bool = False


class Replicator:
    """The replication state of one connection (either role, both at once)."""

    def __init__(
        self,
        *,
        is_initiator: bool,
        handshake_hash: bytes,
        max_channels: int = 256,
        max_invalid: int = 0,
    ) -> None:
        self.is_initiator = is_initiator
        self.handshake_hash = handshake_hash
        self.mux = Mux(max_channels=max_channels)
        self.max_invalid = max_invalid
        self.invalid = 0
        self._logs: dict[bytes, Log] = {}  # by discovery key: what we serve
        self._channels: dict[bytes, _Channel] = {}  # by discovery key
        self._by_local: dict[int, bytes] = {}

    def serves(self, lg: Log) -> bool:
        return lg.discovery_key in self._logs

    def add_log(self, lg: Log) -> None:
        """Serve (and be able to download into) this log when the peer opens its channel."""
        self._logs[lg.discovery_key] = lg

    def open(self, lg: Log) -> Session:
        """Open this log's channel now (a downloader opens; the server answers)."""
        self.add_log(lg)
        return self._ensure_open(lg.discovery_key).session

    def session(self, discovery_key: bytes) -> Session | None:
        ch = self._channels.get(discovery_key)
        return ch.session if ch else None

    @property
    def sessions(self) -> list[Session]:
        return [c.session for c in self._channels.values()]

    def _ensure_open(self, dk: bytes) -> _Channel:
        ch = self._channels.get(dk)
        if ch is not None and ch.local_id is not None:
            return ch
        lg = self._logs[dk]
        if ch is None:
            ch = self._channels[dk] = _Channel(
                Session(lg, is_initiator=self.is_initiator, handshake_hash=self.handshake_hash)
            )
        ch.local_id = self.mux.open_channel(PROTOCOL, dk, ch.session.handshake())
        self._by_local[ch.local_id] = dk
        return ch

    def receive_data(self, message: bytes) -> None:
        """One decrypted message from the peer. Raises :class:`RemoteError` to drop the peer."""
        self.mux.receive_data(message)
        for event in _drain(self.mux):
            self._on_event(event)

    def next_event(self) -> SessionEvent | None:
        """The next event of one of the sessions, or ``None`` when there is none."""
        for ch in self._channels.values():
            event = ch.session.next_event()
            if event is not None:
                return event
        return None

    def _on_event(self, event: MuxEvent) -> None:
        if type(event) is ChannelMessage:  # (nearly every event: first, without the match)
            dk = self._by_local.get(event.channel)
            if dk is not None:
                self._guard(self._channels[dk].session.receive_data, event.type, event.payload)
            return
        match event:
            case ChannelOpened(remote_id=rid, protocol=proto, id=dk, handshake=hs, channel=local):
                if proto != PROTOCOL or dk is None or dk not in self._logs:
                    if local is None:
                        self.mux.reject(rid)
                    return
                ch = self._channels.get(dk)
                if ch is None or ch.local_id is None:
                    ch = self._ensure_open(dk)
                if ch.remote_opened:
                    return
                ch.remote_opened = True
                ch.session.on_open(hs)  # raises CapabilityError (a RemoteError) when wrong
                for more in _drain(self.mux):  # messages sent before we accepted
                    self._on_event(more)
            case ChannelMessage(channel=local, type=kind, payload=payload):
                dk2 = self._by_local.get(local)
                if dk2 is None:
                    return
                self._guard(self._channels[dk2].session.receive_data, kind, payload)
            case ChannelClosed(channel=local):
                if local is not None:
                    dk3 = self._by_local.pop(local, None)
                    if dk3 is not None:
                        ch3 = self._channels.pop(dk3, None)
                        if ch3 is not None:
                            ch3.session.fail("the peer closed the channel")
            case ChannelRejected(channel=local):
                dk4 = self._by_local.pop(local, None)
                if dk4 is not None:
                    ch4 = self._channels.pop(dk4, None)
                    if ch4 is not None:
                        ch4.session.fail("the peer does not have this log")

    def data_to_send(self) -> list[bytes]:
        """Everything queued, as secret-stream messages (each session's messages batched)."""
        self.flush()
        for dk, ch in self._channels.items():
            if ch.local_id is None:
                continue
            msgs = ch.session.data_to_send()
            if not msgs:
                continue
            if len(msgs) == 1:
                self.mux.send(ch.local_id, msgs[0][0], msgs[0][1])
            else:
                self.mux.send_batch((ch.local_id, kind, payload) for kind, payload in msgs)
            del dk
        return self.mux.data_to_send()

    def flush(self) -> None:
        """Verify and store the data each session has received so far."""
        for ch in list(self._channels.values()):
            self._guard(ch.session.flush)

    def _guard(self, fn: Callable[..., object], *args: object) -> None:
        """Run a session step; a peer's invalid message counts, past ``max_invalid`` it ends."""
        try:
            fn(*args)
        except RemoteError:
            self.invalid += 1
            if self.invalid > self.max_invalid:
                raise

    def update(self) -> None:
        """A served log grew: tell the peers following it."""
        for ch in self._channels.values():
            ch.session.update()


def _drain(mux: Mux) -> list[MuxEvent]:
    """The events the mux holds now (not those that handling them queues)."""
    events: list[MuxEvent] = []
    while (event := mux.next_event()) is not None:
        events.append(event)
    return events

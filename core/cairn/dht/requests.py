"""Requests out of a DHT node: one request in flight, and the congestion window they share.

:class:`Outgoing` is a request the node has sent (or queued) and not yet seen answered: its
datagram, retries, deadlines and what to call when it ends. :class:`CongestionWindow` is
dht-rpc's: at most :data:`MAX_WINDOW` sends per :data:`CONGESTION_SLOT` seconds and twice that
over four slots; a reply frees its slot. Both are plain state: the node drives them with
``now`` (:meth:`cairn.dht.node.DHTNode.handle_timer`).
"""

from __future__ import annotations

from collections.abc import Callable

from cairn.dht.events import Reply
from cairn.dht.messages import Address

__all__ = ["CONGESTION_SLOT", "DEFAULT_TIMEOUT", "MAX_WINDOW", "CongestionWindow", "Outgoing"]

CONGESTION_SLOT = 0.75
MAX_WINDOW = 80  # requests per congestion slot, as dht-rpc
DEFAULT_TIMEOUT = 1.0  # a request's timeout with no RTT known, else its cap (times the sends)


class Outgoing:
    """One request in flight: its datagram, where it goes, its retries and its deadlines."""

    __slots__ = (
        "blame", "data", "deadline", "on_done", "on_slow", "retries", "sent", "slow",
        "slow_at", "socket", "started", "tid", "timeout", "to",
    )

    def __init__(self, tid: int, to: Address, data: bytes, socket: int, retries: int,
                 on_done: Callable[[Reply | None, str | None], None],
                 on_slow: Callable[[], None] | None) -> None:
        self.tid = tid
        self.to = to
        self.data = data
        self.socket = socket
        self.retries = retries
        self.sent = 0
        self.deadline = 0.0
        self.timeout = DEFAULT_TIMEOUT
        self.slow_at = 0.0
        self.slow = False
        self.started = 0.0
        # a timeout says the peer is gone (dead for a while, out of the table); False for a
        # request the peer relays to a third party who may stay silent by choice
        self.blame = True
        self.on_done = on_done
        self.on_slow = on_slow


class CongestionWindow:
    """dht-rpc's window: at most MAX_WINDOW sends per 0.75 s slot and 2x that over 4 slots."""

    __slots__ = ("slot", "total", "window")

    def __init__(self) -> None:
        self.window = [0, 0, 0, 0]
        self.total = 0
        self.slot = 0

    def advance(self, now: float) -> None:
        slot = int(now / CONGESTION_SLOT)
        steps = min(slot - self.slot, 4)
        for _ in range(max(steps, 0)):
            self.slot += 1
            i = self.slot & 3
            self.total -= self.window[i]
            self.window[i] = 0
        self.slot = max(self.slot, slot)

    def full(self) -> bool:
        return self.total >= 2 * MAX_WINDOW or self.window[self.slot & 3] >= MAX_WINDOW

    def send(self) -> None:
        self.total += 1
        self.window[self.slot & 3] += 1

    def recv(self) -> None:
        i = self.slot & 3
        if self.window[i] > 0:
            self.window[i] -= 1
            self.total -= 1

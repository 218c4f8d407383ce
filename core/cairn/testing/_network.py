"""A deterministic datagram network for sans-I/O cores: seeded loss, delay, duplication, partitions.

A test registers each core's address, hands every datagram a core wants to send to `send`, and
feeds `deliver_due(now)` back to the cores. Every random choice comes from one seeded generator in
a fixed order, so the same seed and the same calls give the same deliveries, and a failure replays.
"""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from typing import NamedTuple

from cairn.testing._clock import FakeClock
from cairn.testing._random import SeededRandom

__all__ = ["Address", "Datagram", "FakeNetwork", "NetworkStats"]

Address = tuple[str, int]
"""A UDP endpoint, `(host, port)`, as asyncio's datagram transports use it."""


class Datagram(NamedTuple):
    """One delivered datagram: who sent it, to whom, and its bytes."""

    src: Address
    dst: Address
    data: bytes


@dataclass(slots=True)
class NetworkStats:
    """Counters over the life of a `FakeNetwork`.

    `sent` counts calls to `send`; `lost` datagrams were dropped by the loss probability,
    `partitioned` ones crossed a partition (at send or at delivery time), `unreachable` ones were
    addressed to an endpoint that was not registered when they arrived; `duplicated` counts the
    extra copies made; `delivered` counts what `deliver_due` returned.
    """

    sent: int = 0
    delivered: int = 0
    lost: int = 0
    duplicated: int = 0
    partitioned: int = 0
    unreachable: int = 0


class FakeNetwork:
    """An in-memory, seeded, lossy datagram network between registered addresses.

    `loss` and `duplicate` are probabilities per datagram; each copy's delay is drawn uniformly
    from `[min_delay, max_delay]` seconds. Datagrams come out of `deliver_due` ordered by arrival
    time, ties in the order they were sent, so two datagrams with different delays may arrive in
    the other order, as on a real network. Time comes from `clock` (a `FakeClock` made at 0 when
    none is given); `send` and `deliver_due` also take an explicit `now` for tests that keep time
    themselves.
    """

    def __init__(
        self,
        seed: int | random.Random = 0,
        *,
        loss: float = 0.0,
        min_delay: float = 0.0,
        max_delay: float = 0.0,
        duplicate: float = 0.0,
        clock: FakeClock | None = None,
    ) -> None:
        for name, p in (("loss", loss), ("duplicate", duplicate)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} is a probability in [0, 1], got {p!r}")
        if not (math.isfinite(max_delay) and 0.0 <= min_delay <= max_delay):
            raise ValueError(
                "delays need 0 <= min_delay <= max_delay, finite; "
                f"got min_delay={min_delay!r}, max_delay={max_delay!r}"
            )
        self.rng: random.Random = seed if isinstance(seed, random.Random) else SeededRandom(seed)
        self.loss = loss
        self.min_delay = min_delay
        self.max_delay = max_delay
        self.duplicate = duplicate
        self.clock = clock if clock is not None else FakeClock()
        self.stats = NetworkStats()
        self._endpoints: set[Address] = set()
        self._partitions: set[frozenset[Address]] = set()
        self._queue: list[tuple[float, int, Datagram]] = []
        self._sent_copies = 0

    # -- endpoints -------------------------------------------------------------------------------

    def register(self, address: Address) -> None:
        """Attach an endpoint; datagrams to it are delivered from now on."""
        if address in self._endpoints:
            raise ValueError(f"address {address!r} is already registered")
        self._endpoints.add(address)

    def unregister(self, address: Address) -> None:
        """Detach an endpoint (a node leaving: churn); datagrams on their way to it are lost."""
        self._endpoints.remove(address)

    @property
    def endpoints(self) -> frozenset[Address]:
        """The registered addresses."""
        return frozenset(self._endpoints)

    # -- partitions ------------------------------------------------------------------------------

    def partition(self, a: Address, b: Address) -> None:
        """Cut the link between `a` and `b` in both directions, including datagrams in flight."""
        if a == b:
            raise ValueError(f"cannot partition {a!r} from itself")
        self._partitions.add(frozenset((a, b)))

    def heal(self, a: Address | None = None, b: Address | None = None) -> None:
        """Restore the link between `a` and `b`; with no arguments, restore every link."""
        if a is None and b is None:
            self._partitions.clear()
        elif a is not None and b is not None:
            self._partitions.discard(frozenset((a, b)))
        else:
            raise TypeError("heal() takes both addresses or neither")

    def is_partitioned(self, a: Address, b: Address) -> bool:
        """True when the link between `a` and `b` is cut."""
        return frozenset((a, b)) in self._partitions

    # -- traffic ---------------------------------------------------------------------------------

    def send(
        self, src: Address, dst: Address, data: bytes | bytearray, now: float | None = None
    ) -> None:
        """Put a datagram from `src` to `dst` on the wire at time `now` (the clock's by default)."""
        if src not in self._endpoints:
            raise ValueError(f"send from {src!r}, which is not registered")
        sent_at = self.clock.now() if now is None else now
        self.stats.sent += 1
        if self.is_partitioned(src, dst):
            self.stats.partitioned += 1
            return
        # Always draw the same numbers in the same order, so one seed gives one history.
        lost = self.rng.random() < self.loss
        copies = 2 if self.rng.random() < self.duplicate else 1
        delays = [self.rng.uniform(self.min_delay, self.max_delay) for _ in range(copies)]
        if lost:
            self.stats.lost += 1
            return
        self.stats.duplicated += copies - 1
        datagram = Datagram(src, dst, bytes(data))
        for delay in delays:
            heapq.heappush(self._queue, (sent_at + delay, self._sent_copies, datagram))
            self._sent_copies += 1

    def deliver_due(self, now: float | None = None) -> list[Datagram]:
        """Every datagram that has arrived by `now` (the clock's by default), in arrival order.

        Datagrams whose link was cut while in flight, or whose destination is not registered,
        are dropped here and counted in `stats`.
        """
        until = self.clock.now() if now is None else now
        due: list[Datagram] = []
        while self._queue and self._queue[0][0] <= until:
            _, _, datagram = heapq.heappop(self._queue)
            if self.is_partitioned(datagram.src, datagram.dst):
                self.stats.partitioned += 1
            elif datagram.dst not in self._endpoints:
                self.stats.unreachable += 1
            else:
                self.stats.delivered += 1
                due.append(datagram)
        return due

    def next_arrival(self) -> float | None:
        """When the earliest datagram in flight arrives, or None if nothing is in flight."""
        return self._queue[0][0] if self._queue else None

    def pending(self) -> int:
        """How many datagrams (copies included) are in flight."""
        return len(self._queue)

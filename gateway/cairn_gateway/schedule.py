"""Download scheduling: in what order a collection round takes the edges, how many it syncs at
once, and when it tries an unreachable edge again.

No I/O and no clock of its own: the time comes in as ``now`` (the collector's monotonic clock),
the jitter from a ``random.Random`` the caller seeds. An edge that cannot be reached
(connection refused, no answer in time) waits ``initial`` seconds, then twice that after each
further failure, up to ``cap``; each wait is jittered down by up to ``jitter`` of itself so that
edges (and gateways) that failed together do not all come back at the same instant. A success
resets it. Each change of state (reachable -> unreachable, and back) is logged once.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from random import Random

__all__ = ["Backoff", "EdgeState", "EdgeStatus", "Schedule"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Waits before an unreachable edge is tried again: ``initial`` doubling to ``cap``."""

    initial: float = 1.0
    cap: float = 300.0
    jitter: float = 0.2  # a wait d is drawn from [(1 - jitter) * d, d]

    def __post_init__(self) -> None:
        if not 0 < self.initial <= self.cap:
            raise ValueError(f"backoff: need 0 < initial ({self.initial:g}) <= cap "
                             f"({self.cap:g})")
        if not 0 <= self.jitter < 1:
            raise ValueError(f"backoff: jitter {self.jitter:g} is not in [0, 1)")

    def delay(self, failures: int, rng: Random) -> float:
        """The wait after ``failures`` (>= 1) failures in a row."""
        base = min(self.cap, self.initial * 2.0 ** min(failures - 1, 64))
        return base * (1.0 - self.jitter * rng.random())


@dataclass(slots=True)
class EdgeState:
    """What the schedule knows of one edge (by its device record key)."""

    failures: int = 0  # in a row; 0: reachable
    delay: float = 0.0  # the current wait (0: reachable)
    next_try: float = 0.0  # no attempt before this time (the schedule's clock)
    error: str | None = None  # the last failure's reason


@dataclass(frozen=True, slots=True)
class EdgeStatus:
    """An edge's state as the API shows it."""

    reachable: bool
    failures: int
    backoff: float  # seconds: the current wait (0: reachable)
    retry_in: float  # seconds until the next attempt (0: at the next round)
    error: str | None


class Schedule:
    """Edge order, concurrency and backoff for the collector's rounds."""

    def __init__(self, concurrency: int = 4, backoff: Backoff | None = None,
                 rng: Random | None = None) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency {concurrency} is not at least 1")
        self.concurrency = concurrency
        self.backoff = backoff if backoff is not None else Backoff()
        self.rng = rng if rng is not None else Random(0)  # noqa: S311 - jitter, not secrets
        self.edges: dict[bytes, EdgeState] = {}

    @staticmethod
    def order(edges: Iterable[tuple[bytes, int]]) -> list[bytes]:
        """(record key, priority) pairs -> record keys, highest priority first, then by key."""
        return [k for k, _ in sorted(edges, key=lambda e: (-e[1], e[0]))]

    def ready(self, edge: bytes, now: float) -> bool:
        """Whether a round at ``now`` should try the edge."""
        state = self.edges.get(edge)
        return state is None or now >= state.next_try

    def failed(self, edge: bytes, now: float, error: str) -> float:
        """The edge could not be reached at ``now``: the wait before it is tried again."""
        state = self.edges.setdefault(edge, EdgeState())
        state.failures += 1
        state.delay = self.backoff.delay(state.failures, self.rng)
        state.next_try = now + state.delay
        state.error = error
        if state.failures == 1:
            log.warning("edge %s is unreachable (%s): retrying in %.1f s, then with a doubling "
                        "wait up to %g s", edge.hex()[:16], error, state.delay, self.backoff.cap)
        else:
            log.debug("edge %s still unreachable (%s, %d failures): next try in %.1f s",
                      edge.hex()[:16], error, state.failures, state.delay)
        return state.delay

    def succeeded(self, edge: bytes, now: float) -> None:
        """The edge answered: reset its backoff."""
        state = self.edges.setdefault(edge, EdgeState())
        if state.failures:
            log.info("edge %s is reachable again after %d failed attempts", edge.hex()[:16],
                     state.failures)
        state.failures, state.delay, state.next_try, state.error = 0, 0.0, now, None

    def status(self, now: float) -> dict[bytes, EdgeStatus]:
        """Every edge tried so far: reachable or not, its wait and when it is tried again."""
        return {k: EdgeStatus(s.failures == 0, s.failures, s.delay,
                              max(0.0, s.next_try - now) if s.failures else 0.0, s.error)
                for k, s in self.edges.items()}

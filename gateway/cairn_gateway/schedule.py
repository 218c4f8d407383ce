"""Download scheduling: in what order a collection round takes the edges, how many it syncs at
once, and when it tries an unreachable edge again.

No I/O and no clock of its own: the time comes in as ``now`` (the collector's monotonic clock),
the jitter from a ``random.Random`` the caller seeds. An edge that cannot be reached
(connection refused, no answer in time) waits ``initial`` seconds, then twice that after each
further failure, up to ``cap``; each wait is jittered down by up to ``jitter`` of itself so that
edges (and gateways) that failed together do not all come back at the same instant. A success
resets it. Each change of state (reachable -> unreachable, and back) is logged once. An edge
that answers and then refuses us (a gateway key it does not allow: it closes after the
handshake) backs off the same way.

A device's other troubles (a record listing one log key twice, a stream stopped, its time
budget used up) are noted apart (:meth:`Schedule.noted`): they do not make it wait, and the
API shows them as the edge's ``error`` when it is reachable. :class:`Limits` are what one
device may take in one round.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from random import Random

__all__ = ["Backoff", "EdgeState", "EdgeStatus", "Limits", "Schedule"]

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


@dataclass(frozen=True, slots=True)
class Limits:
    """What one device may take in one round (``[collect]`` in docs/gateway.md).

    ``device_budget``: seconds for its record lookup, and again for its streams' downloads
    together; what is not done by then is left for the next round (a tarpit holds a sync slot
    that long, then backs off). ``max_samples``: samples stored from it in one round; the blocks
    beyond wait, held in the replica, for the next round. ``past_window`` / ``future_window``:
    a sample timed earlier than ``past_window`` seconds before the gateway first took samples
    of its stream, or later than ``future_window`` seconds after now (the gateway's clock), is
    refused and counted, never stored."""

    device_budget: float = 10.0
    max_samples: int = 100_000
    past_window: float = 3650 * 86400.0
    future_window: float = 10.0

    def __post_init__(self) -> None:
        if not self.device_budget > 0:
            raise ValueError(f"device budget {self.device_budget:g} is not positive")
        if self.max_samples < 1:
            raise ValueError(f"max samples {self.max_samples} is not at least 1")
        if not (self.past_window >= 0 and self.future_window >= 0):
            raise ValueError("the past and future windows must not be negative")


@dataclass(slots=True)
class EdgeState:
    """What the schedule knows of one edge (by its device record key)."""

    failures: int = 0  # in a row; 0: reachable
    delay: float = 0.0  # the current wait (0: reachable)
    next_try: float = 0.0  # no attempt before this time (the schedule's clock)
    error: str | None = None  # the last failure's reason
    problem: str | None = None  # trouble of its last round that is not a failure to reach it


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

    def noted(self, edge: bytes, problem: str | None) -> None:
        """The edge's last round had this trouble (None: none), which does not make it wait:
        a record listing one log key twice, a stream that could not be synced. Logged when
        it changes."""
        state = self.edges.setdefault(edge, EdgeState())
        if problem is not None and problem != state.problem:
            log.warning("edge %s: %s", edge.hex()[:16], problem)
        state.problem = problem

    def status(self, now: float) -> dict[bytes, EdgeStatus]:
        """Every edge tried so far: reachable or not, its wait and when it is tried again;
        ``error``: why it is waiting, else the trouble of its last round."""
        return {k: EdgeStatus(s.failures == 0, s.failures, s.delay,
                              max(0.0, s.next_try - now) if s.failures else 0.0,
                              s.error if s.error is not None else s.problem)
                for k, s in self.edges.items()}

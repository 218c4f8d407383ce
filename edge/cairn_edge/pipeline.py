"""The ingest pipeline without I/O: message -> readings -> validated samples -> group commit.

:meth:`Pipeline.submit` takes one MQTT message and an acknowledgement token; :meth:`commit`
writes what was buffered (one frame per stream) and returns the tokens that may now be
acknowledged, in the order the messages arrived (MQTT wants PUBACKs in order). A message is
acknowledged only once everything it carried is committed; a rejected message (malformed,
invalid) is counted, logged once per reason per minute, and acknowledged in its turn so the
broker does not redeliver it forever. Nothing of a rejected message is stored: a message is
validated whole before any of its samples is buffered.

Time: a stream's frames are time-ordered, so a sample committed with a time ahead of the clock
would make every honest sample stamped before that time "late". A sample more than
``max_future`` seconds ahead is rejected (``future``); one ahead by less is held in the buffer
until the clock reaches its time, and its message acknowledged only then. So nothing is ever
committed with a time ahead of the clock, and a future-stamped reading cannot push the readings
after it into ``/late``.

Kinds of value: a stream holds one kind of value (number, boolean, string or data: SenML ``v``,
``vb``, ``vs``, ``vd``), the first kind it was given (after a restart: the kind of its newest
sample in the log). A reading of another kind for that stream is refused alone, not its whole
message: counted in :attr:`IngestStats.refused_samples` as ``kind-changed`` and logged (once a
minute), while the other readings of the message are stored. A device whose quantity really
changes kind should name it differently (``door`` and ``door_code``); a log of one kind is what
lets the gateway roll it up and a dashboard draw it.

Duplicates and equal times: see :mod:`cairn_edge.streams` (an identical redelivery is stored
once; two readings that differ are both stored, whatever their times).
"""

from __future__ import annotations

import fnmatch
import logging
import math
from collections import Counter, deque
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

from cairn.fleet.units import SENML_UNITS
from cairn.frames import Sample
from cairn_edge.adapters import Decoded, Decoder, Reading, Rejected, Route
from cairn_edge.config import RangeRule
from cairn_edge.streams import StreamStore, value_kind

__all__ = ["IngestStats", "Pipeline", "Validator"]

log = logging.getLogger(__name__)


class Validator:
    """Units, value ranges and timestamps of readings, against the config and the clock."""

    def __init__(self, *, floor: float, max_future: float, units: Sequence[str] = (),
                 ranges: Sequence[RangeRule] = ()) -> None:
        self.floor = floor
        self.max_future = max_future
        self.units = SENML_UNITS | set(units)
        self.ranges = list(ranges)
        self._range_cache: dict[str, RangeRule | None] = {}

    def _rule(self, stream: str) -> RangeRule | None:
        if stream not in self._range_cache:
            self._range_cache[stream] = next(
                (r for r in self.ranges if fnmatch.fnmatchcase(stream, r.pattern)), None)
        return self._range_cache[stream]

    def sample(self, r: Reading, received: float) -> tuple[str, Sample]:
        """(stream, sample) for a reading, or :class:`Rejected`."""
        stream = f"{r.device}/{r.quantity}"
        if r.unit is not None and r.unit not in self.units:
            raise Rejected("unknown-unit", f"{stream}: unit {r.unit[:20]!r} is not a SenML unit")
        t = received if r.time is None else r.time
        if t < self.floor:
            raise Rejected("too-old", f"{stream}: time {t:.0f} is before the floor "
                                      f"{self.floor:.0f} (a clock not set yet?)")
        if t > received + self.max_future:
            raise Rejected("future", f"{stream}: time {t:.0f} is {t - received:.0f} s ahead")
        rule = self._rule(stream)
        if rule is not None and isinstance(r.value, float) and not (
                rule.min <= r.value <= rule.max):
            raise Rejected("out-of-range", f"{stream}: {r.value:g} outside "
                                           f"[{rule.min:g}, {rule.max:g}] ({rule.pattern})")
        try:
            return stream, Sample(stream, r.unit, t, r.value)
        except ValueError as exc:
            raise Rejected("bad-sample", f"{stream}: {exc}") from None


@dataclass(slots=True)
class IngestStats:
    messages: int = 0
    accepted: int = 0  # samples committed
    rejected: Counter[str] = field(default_factory=Counter)  # messages, by reason
    late: int = 0
    duplicates: int = 0  # samples delivered again (not stored twice)
    commits: int = 0
    frames: int = 0
    ignored: int = 0  # status and description topics
    refused_samples: Counter[str] = field(default_factory=Counter)  # readings alone, by reason


class _RateLimitedLog:
    """One log line per reason per ``period`` seconds, with how many were not logged."""

    def __init__(self, period: float = 60.0) -> None:
        self.period = period
        self.last: dict[str, float] = {}
        self.quiet: Counter[str] = Counter()

    def reject(self, now: float, topic: str, exc: Rejected, what: str = "a message") -> None:
        last = self.last.get(exc.reason)
        if last is not None and now - last < self.period:
            self.quiet[exc.reason] += 1
            return
        self.last[exc.reason] = now
        more = self.quiet.pop(exc.reason, 0)
        log.warning("rejected %s on %s: %s%s", what, topic, exc,
                    f" ({more} more of this reason not logged)" if more else "")


class Pipeline:
    def __init__(self, store: StreamStore, validator: Validator, routes: Sequence[Route], *,
                 commit_interval: float = 1.0, commit_samples: int = 10_000,
                 clock: Callable[[], float]) -> None:
        self.store = store
        self.validator = validator
        self.routes = list(routes)
        # remembers what devices describe (Home Assistant discovery, Homie attributes): units
        # and datatypes for their later value messages
        self.decoder = Decoder(self.routes)
        self.commit_interval = commit_interval
        self.commit_samples = commit_samples
        self.clock = clock
        self.stats = IngestStats()
        self._batches: dict[str, list[Sample]] = {}
        self._buffered = 0
        self._first: float | None = None  # when the oldest buffered sample arrived
        self._held: float = math.inf  # the earliest time of a sample held for its time
        self._released = False  # stopping: hold nothing
        # (token, ready, not before): in arrival order; "not before" is the newest time of the
        # message's samples (it is acknowledged once the clock has passed it)
        self._tokens: deque[tuple[Hashable, bool, float]] = deque()
        self._log = _RateLimitedLog()
        self.latest: dict[str, Sample] = {}  # each stream's newest committed sample
        self.changed: dict[str, float] = {}  # when it last changed (for the DHT record)
        self.kinds: dict[str, str] = {}  # each stream's kind of value (the first wins)

    def submit(self, topic: str, payload: bytes, content_type: str | None,
               token: Hashable) -> None:
        now = self.clock()
        self.stats.messages += 1
        try:
            readings = self.decoder.decode(topic, payload, content_type, now)
            if readings is None:
                self.stats.ignored += 1
                self._tokens.append((token, True, -math.inf))
                return
            samples = self._valid(readings, now, topic)
        except Rejected as exc:
            self.stats.rejected[exc.reason] += 1
            self._log.reject(now, topic, exc)
            self._tokens.append((token, True, -math.inf))  # acked in its turn, stored nothing
            return
        samples = [(stream, sample) for stream, sample in samples
                   if self._of_its_kind(stream, sample, now, topic)]
        if not samples:  # every reading refused alone: acked in its turn, stored nothing
            self._tokens.append((token, True, -math.inf))
            return
        for stream, sample in samples:
            self._batches.setdefault(stream, []).append(sample)
        self._buffered += len(samples)
        if self._first is None:
            self._first = now
        newest = max((sample.time for _, sample in samples), default=-math.inf)
        self._tokens.append((token, False, newest))

    def _valid(self, readings: Decoded, now: float, topic: str) -> list[tuple[str, Sample]]:
        """The readings the validator takes; one it refuses (an unknown unit, out of range) is
        refused alone, beside the items the adapter refused, counted by reason. A message none
        of whose readings is taken is rejected whole (the first refusal's reason)."""
        taken: list[tuple[str, Sample]] = []
        refused: list[Rejected] = []
        for reading in readings:
            try:
                taken.append(self.validator.sample(reading, now))
            except Rejected as exc:
                refused.append(exc)
        if refused and not taken:
            raise refused[0]
        if readings.refused and not taken and not refused:
            first = readings.refused[0]
            raise Rejected(first.reason, first.detail)
        self.stats.refused_samples.update(readings.reasons())
        for one in refused:
            self.stats.refused_samples[one.reason] += 1
            self._log.reject(now, topic, one, "a reading")
        return taken

    def _of_its_kind(self, stream: str, sample: Sample, now: float, topic: str) -> bool:
        """Whether the sample's kind of value is its stream's (the first kind the stream was
        given, or the kind its log holds); a sample of another kind is counted and logged."""
        kind = value_kind(sample.value)
        fixed = self.kinds.get(stream)
        if fixed is None:
            fixed = self.kinds[stream] = self.store.kind(stream) or kind
        if kind == fixed:
            return True
        self.stats.refused_samples["kind-changed"] += 1
        self._log.reject(now, topic, Rejected(
            "kind-changed", f"{stream}: a {kind} value, but the stream holds {fixed} values "
                            "(a stream keeps the kind it was first given)"), "a reading")
        return False

    def due(self) -> float:
        """When the next commit is due (clock time), ``inf`` with nothing buffered."""
        held = self._held + self.commit_interval  # (inf when nothing is held)
        if self._first is None:
            return held
        if self._buffered >= self.commit_samples:
            return self.clock()
        return min(self._first + self.commit_interval, held)

    def commit(self) -> list[Hashable]:
        """Write the buffered samples; the tokens that may be acknowledged now, in order."""
        now = self.clock()
        until = math.inf if self._released else now
        batches = {}
        held: dict[str, list[Sample]] = {}
        for stream, items in self._batches.items():
            due = [x for x in items if x.time <= until]
            if due:
                batches[stream] = due
            if len(due) < len(items):
                held[stream] = [x for x in items if x.time > until]
        self._batches = held
        self._held = min((x.time for items in held.values() for x in items), default=math.inf)
        if batches:
            result = self.store.commit(batches)
            for stream, items in batches.items():
                newest = items[0]  # the last to arrive of the newest time (as stored)
                for x in items:
                    if x.time >= newest.time:
                        newest = x
                old = self.latest.get(stream)
                if old is None or newest.time >= old.time:
                    if old is None or old.value != newest.value:
                        self.changed[stream] = now
                    self.latest[stream] = newest
            self.stats.accepted += result.samples
            self.stats.late += result.late
            self.stats.duplicates += result.duplicates
            self.stats.frames += result.frames
            self.stats.commits += 1
        self._buffered = 0
        self._first = None
        out = []
        while self._tokens and self._tokens[0][2] <= until:  # in order: stop at a held one
            out.append(self._tokens.popleft()[0])
        return out

    def release(self) -> None:
        """Let every later :meth:`commit` write the samples held for their time too (when
        stopping: with the embedded broker their messages were acknowledged already)."""
        self._released = True

    def ready(self) -> list[Hashable]:
        """Tokens at the head of the queue that need no commit (rejected, ignored)."""
        out = []
        while self._tokens and self._tokens[0][1]:
            out.append(self._tokens.popleft()[0])
        return out

"""What the API's query parameters mean: times, steps, sample cursors (no I/O, no HTTP).

Every function takes the text a client sent and returns a value or raises
:class:`ParameterError` with one line that names the parameter, says what was wrong and what
to send instead; :mod:`cairn_gateway.api` answers it as a 422.

============  =================================================================================
``from/to``   epoch seconds (``1764000000``, ``1764000000.5``) or ISO 8601
              (``2026-12-05T10:00:00Z``, ``2026-12-05``; without an offset: UTC). A number of
              magnitude ``MS_BOUND`` or more is refused as milliseconds: it would be after the
              year 5000, and Grafana's ``${__from}`` is milliseconds (``:date:seconds`` is not).
``step``      seconds (``60``), or a duration as Grafana's ``$__interval`` writes it: a number
              and ``ms``, ``s``, ``m``, ``h``, ``d``, ``w`` or ``y`` (365 days). :func:`pick_step`
              makes it a whole number of minutes (of hours past an hour: the hour rollups are
              the ones retention keeps), coarser when the window would hold more than the
              point limit, and says why it changed it.
``cursor``    where the last page of samples ended: ``TIME_BLOCK_POSITION`` as the API gave
              it (``Link: <...>; rel="next"``); any other text is refused.
============  =================================================================================
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from cairn.errors import UsageError

__all__ = ["MAX_STEP", "MS_BOUND", "Cursor", "ParameterError", "StepChoice", "parse_cursor",
           "parse_step", "parse_time", "pick_step"]

#: epoch seconds of this magnitude are the year 5138: such a number is milliseconds
MS_BOUND = 1e11
#: the longest step: 100 years
MAX_STEP = 100 * 365 * 86400
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400,
          "y": 365 * 86400}
_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?|[+-]?(?:nan|inf)",
                     re.ASCII | re.IGNORECASE)
_DURATION = re.compile(r"(\d{1,12}(?:\.\d{1,9})?)(ms|s|m|h|d|w|y)")
_MAX_BLOCK = 2**62  # block numbers and positions a cursor may carry (SQLite integers)
_CURSOR = re.compile(r"(-?\d{1,20}(?:\.\d{1,20})?(?:e[+-]?\d{1,3})?)_(\d{1,19})_(\d{1,19})",
                     re.ASCII)


class ParameterError(UsageError, ValueError):
    """A query parameter the API cannot use: the message names it and says what to send."""


def _number(text: str) -> float | None:
    """A decimal number in ASCII (``float`` alone also takes ``1_0`` and other scripts'
    digits), else None."""
    return float(text) if _NUMBER.fullmatch(text) else None


def _show(text: str) -> str:
    return repr(text[:40] + ("..." if len(text) > 40 else ""))


def parse_time(name: str, text: str) -> float:
    """``from`` or ``to``: epoch seconds, or ISO 8601 (UTC without an offset)."""
    text = text.strip()
    value = _number(text)
    if value is not None:
        if not math.isfinite(value):
            raise ParameterError(f"{name} must be finite epoch seconds, not {_show(text)}")
        if abs(value) >= MS_BOUND:
            raise ParameterError(
                f"{name}={text[:24]} looks like milliseconds (as seconds it is after the year "
                f"5000): give epoch seconds ({value / 1000:.0f}) or ISO 8601 "
                "(2026-12-05T10:00:00Z); in Grafana, ${__from:date:seconds}")
        return value
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ParameterError(f"{name}={_show(text)} is neither epoch seconds nor an ISO 8601 "
                             "time (e.g. 1764928800 or 2026-12-05T10:00:00Z)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.timestamp()


def parse_step(text: str) -> float:
    """``step``: seconds, or a duration such as ``30s``, ``5m``, ``1h``, ``1d`` (> 0)."""
    text = text.strip()
    seconds = _number(text)
    if seconds is None:
        m = _DURATION.fullmatch(text)
        if m is None:
            raise ParameterError(f"step={_show(text)} is not seconds or a duration such as "
                                 "30s, 5m, 1h, 1d (Grafana's $__interval)")
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_STEP):
        raise ParameterError(f"step={_show(text)} must be more than 0 and at most 100 years")
    return seconds


@dataclass(frozen=True, slots=True)
class StepChoice:
    """The step served and, when it is not the one asked for, why (else None)."""

    step: int
    note: str | None


def pick_step(requested: float, start: float, end: float, max_points: int) -> StepChoice:
    """The bucket width for ``[start, end)``: ``requested`` rounded up to whole minutes (whole
    hours past an hour), then coarser if the window would hold more than ``max_points``
    buckets."""
    step = _round_up(requested)
    why = None
    if step != requested:
        why = f"step {requested:g} s served as {step} s (whole minutes; whole hours past an hour)"
    need = (end - start) / max_points
    if need > step:
        coarse = _round_up(need)
        why = (f"step {requested:g} s would be {math.ceil((end - start) / step)} buckets (at most "
               f"{max_points}): served {coarse} s buckets")
        step = coarse
    return StepChoice(step, why)


def _round_up(seconds: float) -> int:
    width = 3600 if seconds > 3600 else 60
    return max(width, math.ceil(seconds / width) * width)


@dataclass(frozen=True, slots=True)
class Cursor:
    """A sample's place in a stream's order (time, then block, then position in the block)."""

    time: float
    block: int
    k: int

    def __str__(self) -> str:
        return f"{self.time!r}_{self.block}_{self.k}"


def parse_cursor(text: str) -> Cursor:
    m = _CURSOR.fullmatch(text)
    if m is None:
        raise ParameterError(f"cursor={_show(text)} is not one this gateway gave: pass back the "
                             "cursor of the Link header's next page as it is")
    cursor = Cursor(float(m.group(1)), int(m.group(2)), int(m.group(3)))
    if not math.isfinite(cursor.time) or cursor.block >= _MAX_BLOCK or cursor.k >= _MAX_BLOCK:
        raise ParameterError(f"cursor={_show(text)} is out of range")
    return cursor

"""The frame model: :class:`Sample`, :class:`Frame` and its deterministic encoding.

A block of a stream's log is a *frame*: the samples of one stream appended in one commit, encoded
as a SenML CBOR pack (RFC 8428, section 6) with a base time, so any SenML decoder reads a block.
This module holds what a frame is (the checks every sample passes, the bounds, the SenML CBOR
labels) and how one is written; reading one back is :mod:`cairn.frames.decode` (any pack) and
:mod:`cairn.frames.fast` (the packs :meth:`Frame.encode` writes), behind :meth:`Frame.decode`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Final, TypeAlias

import cbor2

from cairn.errors import DecodeError

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_NAME_LENGTH",
    "MAX_RECORDS",
    "MAX_UNIT_LENGTH",
    "Frame",
    "Sample",
    "Value",
]

_SENML_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-:./_]*")

#: A sample's value: a number (SenML ``v``), a string (``vs``), a boolean (``vb``), bytes (``vd``).
Value: TypeAlias = float | str | bool | bytes

#: Most records (samples) in one frame, for encoding and decoding.
MAX_RECORDS: Final = 100_000
#: Most bytes of one encoded frame; :meth:`Frame.decode` refuses longer input before parsing it.
MAX_FRAME_BYTES: Final = 16 * 1024 * 1024
#: Most characters in a sample's (resolved) name.
MAX_NAME_LENGTH: Final = 256
#: Most characters in a unit.
MAX_UNIT_LENGTH: Final = 64

# SenML CBOR labels (RFC 8428, table 4), shared with the decoders. The table is closed:
# extensions use text labels.
BVER: Final = -1
BN: Final = -2
BT: Final = -3
BU: Final = -4
BV: Final = -5
BS: Final = -6
N: Final = 0
U: Final = 1
V: Final = 2
VS: Final = 3
VB: Final = 4
S: Final = 5
T: Final = 6
UT: Final = 7
VD: Final = 8

LABEL_NAMES: Final = {
    BVER: "bver",
    BN: "bn",
    BT: "bt",
    BU: "bu",
    BV: "bv",
    BS: "bs",
    N: "n",
    U: "u",
    V: "v",
    VS: "vs",
    VB: "vb",
    S: "s",
    T: "t",
    UT: "ut",
    VD: "vd",
}
VALUE_LABELS: Final = frozenset({V, VS, VB, VD})
#: The SenML version Cairn reads (RFC 8428's default); a pack asking for a later one is refused.
SENML_VERSION: Final = 10

def _check_text(field_name: str, value: object, limit: int) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{field_name} must be a str, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{field_name} must not be empty")
    if len(value) > limit:
        raise ValueError(f"{field_name} has {len(value)} characters, at most {limit} allowed")
    _check_utf8(field_name, value)
    return value


def _check_utf8(field_name: str, value: str) -> None:
    if value.isascii():
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(f"{field_name} is not encodable as UTF-8: {exc.reason}") from None


def _finite(field_name: str, value: object) -> float:
    """``value`` (an int or float, not a bool) as a finite float, or ValueError naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{field_name} must be a number, got {type(value).__name__}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{field_name} is too large for a float: {value}") from None
    if not math.isfinite(number):
        raise ValueError(f"{field_name} must be finite, got {number}")
    return number


@dataclass(frozen=True, slots=True)
class Sample:
    """One reading of a stream.

    ``name``: non-empty, at most :data:`MAX_NAME_LENGTH` characters (SenML's resolved name),
    made of the characters RFC 8428 (4.5.1) allows, so any SenML reader accepts the frame.
    ``unit``: ``None`` or a non-empty SenML unit such as ``"Cel"``, at most
    :data:`MAX_UNIT_LENGTH` characters.
    ``time``: seconds since the Unix epoch (UTC), finite; an int is stored as a float and
    ``-0.0`` as ``0.0``.
    ``value``: a finite number (an int is stored as a float, ``-0.0`` as ``0.0``), a str, a bool
    or bytes
    (a bytearray or memoryview is stored as bytes). NaN and infinities are refused because
    SenML JSON cannot carry them and a frame must convert to SenML JSON without loss.

    Invalid input raises :class:`ValueError` whose message starts with the field's name.
    """

    name: str
    unit: str | None
    time: float
    value: Value

    def __post_init__(self) -> None:
        _check_text("name", self.name, MAX_NAME_LENGTH)
        if not _SENML_NAME.fullmatch(self.name):
            raise ValueError(
                f"name {self.name[:40]!r} is not a SenML name (RFC 8428 4.5.1: start with a "
                "letter or digit, then letters, digits or - : . / _)"
            )
        if self.unit is not None:
            _check_text("unit", self.unit, MAX_UNIT_LENGTH)
        object.__setattr__(self, "time", _finite("time", self.time) + 0.0)  # -0.0 -> 0.0
        value = self.value
        if isinstance(value, bool):
            return
        if isinstance(value, (int, float)):
            # + 0.0: -0.0 is stored as 0.0, as decoding (base value + value) gives it back
            object.__setattr__(self, "value", _finite("value", value) + 0.0)
        elif isinstance(value, str):
            _check_utf8("value", value)
        elif isinstance(value, (bytearray, memoryview)):
            object.__setattr__(self, "value", bytes(value))
        elif not isinstance(value, bytes):
            raise ValueError(
                f"value must be a float, str, bool or bytes, got {type(value).__name__}"
            )


@dataclass(frozen=True, slots=True)
class Frame:
    """The samples of one stream appended in one commit: one block of the stream's log.

    ``samples`` is non-empty, at most :data:`MAX_RECORDS` long, in any time order (the order is
    kept through encoding). A list is accepted and stored as a tuple.
    """

    samples: tuple[Sample, ...]
    _start: float = field(init=False, repr=False, compare=False)
    _end: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        samples = self.samples
        if not isinstance(samples, tuple):
            samples = tuple(samples)
            object.__setattr__(self, "samples", samples)
        if not samples:
            raise ValueError("samples must not be empty")
        if len(samples) > MAX_RECORDS:
            raise ValueError(f"samples has {len(samples)} items, at most {MAX_RECORDS} allowed")
        for i, s in enumerate(samples):
            if not isinstance(s, Sample):
                raise ValueError(f"samples[{i}] is {type(s).__name__}, not Sample")
        times = [s.time for s in samples]
        object.__setattr__(self, "_start", min(times))
        object.__setattr__(self, "_end", max(times))

    @property
    def start(self) -> float:
        """The earliest sample time."""
        return self._start

    @property
    def end(self) -> float:
        """The latest sample time."""
        return self._end

    def encode(self) -> bytes:
        """This frame as a SenML CBOR pack, the same bytes for the same frame every time.

        The first record carries ``bt`` (the first sample's time); every other record carries
        ``t`` = its time minus ``bt`` (left out when 0). When that difference would not give the
        time back exactly in float arithmetic, the record carries a new ``bt`` instead. One name
        for all samples goes once as ``bn``, otherwise each record has ``n``; likewise one unit
        for all goes once as ``bu``, otherwise each record with a unit has ``u``.
        Raises :class:`ValueError` if the encoding would exceed :data:`MAX_FRAME_BYTES`.
        """
        samples = self.samples
        first = samples[0]
        one_name = all(s.name == first.name for s in samples)
        one_unit = first.unit is not None and all(s.unit == first.unit for s in samples)
        records: list[dict[int, object]] = []
        base_time = first.time
        for i, s in enumerate(samples):
            record: dict[int, object] = {}
            if i == 0:
                record[BT] = base_time
                if one_name:
                    record[BN] = s.name
                if one_unit:
                    record[BU] = s.unit
            else:
                offset = s.time - base_time
                if math.isfinite(offset) and base_time + offset == s.time:
                    if offset != 0.0:
                        record[T] = offset
                else:
                    base_time = s.time
                    record[BT] = base_time
            if not one_name:
                record[N] = s.name
            if not one_unit and s.unit is not None:
                record[U] = s.unit
            value = s.value
            if isinstance(value, bool):
                record[VB] = value
            elif isinstance(value, float):
                record[V] = value
            elif isinstance(value, str):
                record[VS] = value
            else:
                record[VD] = value
            records.append(record)
        data: bytes = cbor2.dumps(records, canonical=True)
        if len(data) > MAX_FRAME_BYTES:
            raise ValueError(f"frame encodes to {len(data)} bytes, at most {MAX_FRAME_BYTES}")
        return data

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> Frame:
        """The frame in a SenML CBOR pack; raises only :class:`DecodeError` for bad input.

        Base fields (``bn``, ``bt``, ``bu``, ``bv``) apply to their own record and the ones after
        it until changed (RFC 8428, section 4.6). A time is always ``bt + t``: unlike RFC 8428,
        small values are *not* taken as relative to the receiver's clock. See ``docs/frames.md``
        for everything accepted and refused.
        """
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"Frame.decode takes bytes, got {type(data).__name__}")
        size = memoryview(data).nbytes
        if size > MAX_FRAME_BYTES:  # checked before copying anything
            raise DecodeError(f"frame is {size} bytes, at most {MAX_FRAME_BYTES} allowed")
        body = bytes(data)
        fast = fast_decode(body)
        return fast if fast is not None else full_decode(body)


# The decoders build Frames and Samples, so they are imported once both exist (a function-level
# import in Frame.decode costs about a microsecond a call, a fifth of a one-sample decode).
from cairn.frames.decode import full_decode  # noqa: E402
from cairn.frames.fast import fast_decode  # noqa: E402

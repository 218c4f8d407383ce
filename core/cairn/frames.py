"""Frames: the block format of a stream's log (DESIGN.md, decision 5).

A block is a *frame*: the samples of one stream appended in one commit, encoded as a SenML CBOR
pack (RFC 8428, section 6) with a base time, so any SenML decoder reads a block. A 1 Hz sensor
gets one sample per block, a 100 Hz one about a hundred.

- :class:`Sample` is one reading: name, unit, time (seconds since the Unix epoch, UTC), value.
- :class:`Frame` is a non-empty tuple of samples; :meth:`Frame.encode` gives the same bytes for
  the same frame every time (deterministic CBOR), :meth:`Frame.decode` reads any SenML CBOR pack
  within Cairn's bounds and raises only :class:`~cairn.errors.DecodeError` on anything else.
- :func:`seek_time` finds, in O(log n) block reads, the first block of a log whose frame has a
  sample at or after a given time; :func:`frame_at` reads and decodes one block.

The byte layout and the exact rules are in ``docs/frames.md``.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Final, Protocol, TypeAlias

import cbor2

from cairn.errors import DecodeError

_SENML_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9\-:./_]*")

__all__ = [
    "MAX_FRAME_BYTES",
    "MAX_NAME_LENGTH",
    "MAX_RECORDS",
    "MAX_UNIT_LENGTH",
    "BlockSource",
    "Frame",
    "Sample",
    "Value",
    "frame_at",
    "seek_time",
]

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

# SenML CBOR labels (RFC 8428, table 4). The table is closed: extensions use text labels.
_BVER: Final = -1
_BN: Final = -2
_BT: Final = -3
_BU: Final = -4
_BV: Final = -5
_BS: Final = -6
_N: Final = 0
_U: Final = 1
_V: Final = 2
_VS: Final = 3
_VB: Final = 4
_S: Final = 5
_T: Final = 6
_UT: Final = 7
_VD: Final = 8

_LABEL_NAMES: Final = {
    _BVER: "bver",
    _BN: "bn",
    _BT: "bt",
    _BU: "bu",
    _BV: "bv",
    _BS: "bs",
    _N: "n",
    _U: "u",
    _V: "v",
    _VS: "vs",
    _VB: "vb",
    _S: "s",
    _T: "t",
    _UT: "ut",
    _VD: "vd",
}
_VALUE_LABELS: Final = frozenset({_V, _VS, _VB, _VD})
#: The SenML version Cairn reads (RFC 8428's default); a pack asking for a later one is refused.
_SENML_VERSION: Final = 10

# Bounds of the structural pre-scan (see _scan).
_MAX_DEPTH: Final = 8  # pack array, record map, then nesting inside ignored extension fields
_MAX_ITEMS: Final = 24 * MAX_RECORDS  # every CBOR data item, keys included
_TAG_DECIMAL_FRACTION: Final = 4
_SELF_DESCRIBE: Final = b"\xd9\xd9\xf7"  # tag 55799, allowed once, in front of the pack
#: Major type 7 items a frame may hold, by additional information: their size in bytes.
_SIMPLE_SIZES: Final = {20: 1, 21: 1, 22: 1, 25: 3, 26: 5, 27: 9}  # false true null, floats


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
                record[_BT] = base_time
                if one_name:
                    record[_BN] = s.name
                if one_unit:
                    record[_BU] = s.unit
            else:
                offset = s.time - base_time
                if math.isfinite(offset) and base_time + offset == s.time:
                    if offset != 0.0:
                        record[_T] = offset
                else:
                    base_time = s.time
                    record[_BT] = base_time
            if not one_name:
                record[_N] = s.name
            if not one_unit and s.unit is not None:
                record[_U] = s.unit
            value = s.value
            if isinstance(value, bool):
                record[_VB] = value
            elif isinstance(value, float):
                record[_V] = value
            elif isinstance(value, str):
                record[_VS] = value
            else:
                record[_VD] = value
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
        fast = _fast_decode(body)
        return fast if fast is not None else _full_decode(body)


def _full_decode(body: bytes) -> Frame:
    """Any SenML CBOR pack within Cairn's bounds (Frame.decode when the fast path declines)."""
    if body.startswith(_SELF_DESCRIBE):
        body = body[len(_SELF_DESCRIBE) :]
    _scan(body)
    try:
        pack = cbor2.loads(body, max_depth=_MAX_DEPTH + 2, allow_duplicate_keys=False)
    except Exception as exc:  # hostile CBOR can raise many types: all mean "malformed"
        raise DecodeError(f"invalid CBOR: {type(exc).__name__}: {_brief(exc)}") from None
    try:
        return Frame(tuple(_resolve(pack)))
    except DecodeError:
        raise
    except Exception as exc:  # belt and braces: nothing but DecodeError leaves decode
        raise DecodeError(f"invalid SenML pack: {_brief(exc)}") from None


# -- decoding -------------------------------------------------------------------------------------


def _brief(thing: object) -> str:
    """A short repr for an error message: hostile input may hold megabytes in one item."""
    text = str(thing) if isinstance(thing, BaseException) else repr(thing)
    return text if len(text) <= 60 else text[:57] + "..."


def _head(data: bytes, pos: int) -> tuple[int, int | None, int]:
    """(major type, argument or None for indefinite length, position after the head)."""
    if pos >= len(data):
        raise DecodeError("CBOR is truncated")
    initial = data[pos]
    major, info = initial >> 5, initial & 0x1F
    pos += 1
    if info < 24:
        return major, info, pos
    if info == 31:
        if major in (0, 1, 6):
            raise DecodeError(f"CBOR major type {major} cannot have indefinite length")
        return major, None, pos
    if info > 27:
        raise DecodeError(f"reserved CBOR additional information {info}")
    size = 1 << (info - 24)
    end = pos + size
    if end > len(data):
        raise DecodeError("CBOR is truncated")
    return major, int.from_bytes(data[pos:end], "big"), end


def _scan(data: bytes) -> None:
    """Check the structure of ``data`` before cbor2 builds any object from it.

    ``data`` must be exactly one well-formed CBOR array (no trailing bytes) of 1 to
    :data:`MAX_RECORDS` items, at most ``_MAX_DEPTH`` containers deep and ``_MAX_ITEMS`` items in
    all, with no tag but the decimal fraction (tag 4 on ``[int, int]``, which RFC 8428 allows
    for numbers) and no simple value but false, true, null and floats. This rules out the tags
    cbor2 would turn into other types (dates, sets, shared references that make cycles...).
    """
    end = len(data)
    major, arg, pos = _head(data, 0)
    if major != 4:
        raise DecodeError(f"a SenML pack is a CBOR array, got CBOR major type {major}")
    if arg == 0:
        raise DecodeError("the pack is empty")
    if arg is not None and arg > MAX_RECORDS:
        raise DecodeError(f"the pack has {arg} records, at most {MAX_RECORDS} allowed")
    # Open containers: [items still expected (-1: indefinite), items seen, is a map].
    stack: list[list[int]] = [[-1 if arg is None else arg, 0, 0]]
    items = 1
    while stack:
        top = stack[-1]
        if top[0] == 0:
            stack.pop()
            continue
        if pos >= end:
            raise DecodeError("CBOR is truncated")
        if data[pos] == 0xFF:  # break
            if top[0] != -1:
                raise DecodeError("CBOR break outside an indefinite-length item")
            if top[2] and top[1] % 2:
                raise DecodeError("CBOR map has a key without a value")
            if len(stack) == 1 and top[1] == 0:
                raise DecodeError("the pack is empty")
            pos += 1
            stack.pop()
            continue
        if top[0] > 0:
            top[0] -= 1
        top[1] += 1
        if len(stack) == 1 and top[1] > MAX_RECORDS:
            raise DecodeError(f"the pack has more than {MAX_RECORDS} records")
        items += 1
        if items > _MAX_ITEMS:
            raise DecodeError(f"the pack has more than {_MAX_ITEMS} CBOR items")
        initial = data[pos]
        if initial >> 5 == 7:  # floats and the simple values false, true, null
            size = _SIMPLE_SIZES.get(initial & 0x1F)
            if size is None:
                raise DecodeError(f"CBOR simple value 0x{initial:02x} is not accepted in a frame")
            pos += size
            if pos > end:
                raise DecodeError("CBOR is truncated")
            continue
        major, arg, pos = _head(data, pos)
        if major in (0, 1):
            continue
        if major in (2, 3):
            if arg is not None:
                pos += arg
                if pos > end:
                    raise DecodeError("CBOR is truncated")
                continue
            while True:  # indefinite-length string: definite chunks of the same type, then break
                if pos >= end:
                    raise DecodeError("CBOR is truncated")
                if data[pos] == 0xFF:
                    pos += 1
                    break
                chunk_major, chunk, pos = _head(data, pos)
                if chunk_major != major or chunk is None:
                    raise DecodeError("bad chunk in an indefinite-length CBOR string")
                pos += chunk
                if pos > end:
                    raise DecodeError("CBOR is truncated")
            continue
        if major in (4, 5):
            if len(stack) >= _MAX_DEPTH:
                raise DecodeError(f"CBOR nests more than {_MAX_DEPTH} containers deep")
            if arg is None:
                count = -1
            else:
                count = arg * 2 if major == 5 else arg
                if count > end - pos:  # every item takes at least one byte
                    raise DecodeError("CBOR is truncated")
            stack.append([count, 0, int(major == 5)])
            continue
        if major == 6:
            if arg != _TAG_DECIMAL_FRACTION:
                raise DecodeError(f"CBOR tag {arg} is not accepted in a frame")
            if pos >= end or data[pos] not in (0x82, 0x9F):  # [a, b] or [_ a, b]
                raise DecodeError("a decimal fraction must be a two-item array")
            indefinite = data[pos] == 0x9F
            pos += 1
            for _ in range(2):
                part, part_arg, pos = _head(data, pos)
                if part not in (0, 1) or part_arg is None:
                    raise DecodeError("a decimal fraction must be [exponent, mantissa] integers")
            if indefinite:
                if pos >= end or data[pos] != 0xFF:
                    raise DecodeError("a decimal fraction must be a two-item array")
                pos += 1
            continue
    if pos != end:
        raise DecodeError(f"{end - pos} bytes after the pack")


def _number(label: int, item: object) -> float:
    if type(item) is int or type(item) is float or type(item) is Decimal:
        try:
            number = float(item)
        except (OverflowError, ValueError):
            number = math.inf
        if math.isfinite(number):
            return number
        raise DecodeError(f"{_LABEL_NAMES[label]} is not a finite number")
    raise DecodeError(f"{_LABEL_NAMES[label]} must be a number, got {type(item).__name__}")


def _text(label: int, item: object) -> str:
    if type(item) is not str:
        raise DecodeError(f"{_LABEL_NAMES[label]} must be a text string, got {type(item).__name__}")
    return item


def _resolve(pack: object) -> list[Sample]:
    """Resolve a decoded pack's records into samples (RFC 8428, section 4.6)."""
    if type(pack) is not list:
        raise DecodeError(f"a SenML pack is an array, got {type(pack).__name__}")
    base_name = ""
    base_time = 0.0
    base_unit: str | None = None
    base_value = 0.0
    samples: list[Sample] = []
    for index, record in enumerate(pack):
        if type(record) is not dict:
            raise DecodeError(f"record {index} is {type(record).__name__}, not a map")
        try:
            name: str | None = None
            unit: str | None = None
            offset = 0.0
            values: list[tuple[int, object]] = []
            for label, item in record.items():
                if type(label) is str:
                    if label.endswith("_"):
                        raise DecodeError(f"must-understand field {_brief(label)} is not supported")
                    continue  # RFC 8428, section 4.4: other extension fields are ignored
                if type(label) is not int:
                    raise DecodeError(
                        f"label {_brief(label)} is {type(label).__name__}, not int or str"
                    )
                if label == _BN:
                    base_name = _text(label, item)
                elif label == _BT:
                    base_time = _number(label, item)
                elif label == _BU:
                    base_unit = _text(label, item)
                elif label == _BV:
                    base_value = _number(label, item)
                elif label == _BVER:
                    if type(item) is not int or not 1 <= item <= _SENML_VERSION:
                        raise DecodeError(f"SenML version {_brief(item)} is not supported")
                elif label == _N:
                    name = _text(label, item)
                elif label == _U:
                    unit = _text(label, item)
                elif label == _T:
                    offset = _number(label, item)
                elif label == _UT:
                    _number(label, item)  # checked, then ignored
                elif label in _VALUE_LABELS:
                    values.append((label, item))
                elif label in (_S, _BS):
                    raise DecodeError(f"{_LABEL_NAMES[label]} (sum) is not supported")
                else:
                    raise DecodeError(f"unknown SenML label {label}")
            if not values:
                raise DecodeError("no value (v, vs, vb or vd)")
            if len(values) > 1:
                names = ", ".join(_LABEL_NAMES[label] for label, _ in values)
                raise DecodeError(f"more than one value ({names})")
            label, item = values[0]
            value: Value
            if label == _V:
                value = base_value + _number(label, item)
                if not math.isfinite(value):
                    raise DecodeError("bv + v is not finite")
            elif label == _VS:
                value = _text(label, item)
            elif label == _VB:
                if type(item) is not bool:
                    raise DecodeError(f"vb must be a boolean, got {type(item).__name__}")
                value = item
            else:
                if type(item) is not bytes:
                    raise DecodeError(f"vd must be a byte string, got {type(item).__name__}")
                value = item
            time = base_time + offset
            if not math.isfinite(time):
                raise DecodeError("bt + t is not finite")
            full_name = base_name + (name or "")
            samples.append(Sample(full_name, unit if unit is not None else base_unit, time, value))
        except DecodeError as exc:
            raise DecodeError(f"record {index}: {exc}") from None
        except ValueError as exc:  # from Sample: name or unit out of bounds
            raise DecodeError(f"record {index}: {exc}") from None
    return samples


# -- the fast path: packs as Frame.encode writes them ---------------------------------------------

_F16: Final = struct.Struct(">e").unpack_from
_F32: Final = struct.Struct(">f").unpack_from
_F64: Final = struct.Struct(">d").unpack_from
#: The labels the fast path reads, by their one-byte CBOR encoding, as (label, bit).
_FAST_LABELS: Final = {0x21: (_BN, 1), 0x22: (_BT, 2), 0x23: (_BU, 4), 0x24: (_BV, 8),
                       0x00: (_N, 16), 0x01: (_U, 32), 0x06: (_T, 64), 0x02: (_V, 128),
                       0x03: (_VS, 256), 0x04: (_VB, 512), 0x08: (_VD, 1024)}
_VALUE_BITS: Final = 128 | 256 | 512 | 1024
_NO_ITEM: Final = object()
#: (name, unit) pairs that passed Sample's checks: the fast path builds their samples without
#: running the checks again. Bounded: emptied when full.
_CHECKED: dict[tuple[str, str | None], None] = {}
_CHECKED_MAX: Final = 4096


def _fast_item(data: bytes, pos: int) -> tuple[object, int]:
    """One CBOR item of the kinds Frame.encode writes (a float, an int, a text or byte string
    of definite length, false, true), or (_NO_ITEM, pos) for anything else."""
    b = data[pos]
    if b == 0xFB:
        return _F64(data, pos + 1)[0], pos + 9
    if b == 0xFA:
        return _F32(data, pos + 1)[0], pos + 5
    if b == 0xF9:
        return _F16(data, pos + 1)[0], pos + 3
    if b == 0xF4 or b == 0xF5:
        return b == 0xF5, pos + 1
    major = b >> 5
    info = b & 0x1F
    if info < 24:
        arg, pos = info, pos + 1
    elif info < 28:
        size = 1 << (info - 24)
        arg, pos = int.from_bytes(data[pos + 1 : pos + 1 + size], "big"), pos + 1 + size
    else:
        return _NO_ITEM, pos
    if major == 3 or major == 2:
        end = pos + arg
        if end > len(data):
            return _NO_ITEM, pos
        chunk = data[pos:end]
        if major == 2:
            return chunk, end
        try:
            return chunk.decode("utf-8"), end
        except UnicodeDecodeError:
            return _NO_ITEM, pos
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    return _NO_ITEM, pos


def _fast_decode(body: bytes) -> Frame | None:
    """The frame in ``body`` when it is a plain pack like the ones :meth:`Frame.encode` writes:
    an array of at most 23 maps, each with one-byte labels among bn bt bu bv n u t v vs vb vd,
    each at most once, holding floats, ints, definite strings or booleans. Anything else, and
    anything such a pack holds that the full decoder would refuse, gives None: the caller then
    decodes it the full way, which raises the error. Same result as the full way, about five
    times faster (issue 8: a gateway decodes every downloaded block)."""
    end = len(body)
    if end < 4 or not 0x81 <= body[0] <= 0x97:
        return None
    count = body[0] - 0x80
    pos = 1
    base_name = ""
    base_time = 0.0
    base_unit: str | None = None
    base_value = 0.0
    samples: list[Sample] = []
    try:
        for _ in range(count):
            head = body[pos]
            if not 0xA1 <= head <= 0xB7:
                return None
            pos += 1
            seen = 0
            name: object = None
            unit: object = None
            offset = 0.0
            value: object = _NO_ITEM
            vlabel = _V
            for _ in range(head - 0xA0):
                entry = _FAST_LABELS.get(body[pos])
                if entry is None:
                    return None
                label, bit = entry
                if seen & bit:
                    return None
                seen |= bit
                item, pos = _fast_item(body, pos + 1)
                if item is _NO_ITEM:
                    return None
                if bit & _VALUE_BITS:
                    value = item
                    vlabel = label
                elif label == _BN:
                    if type(item) is not str:
                        return None
                    base_name = item
                elif label == _BU:
                    if type(item) is not str:
                        return None
                    base_unit = item
                elif label == _N:
                    name = item
                elif label == _U:
                    unit = item
                else:  # bt, bv, t: numbers
                    if type(item) is not float and type(item) is not int:
                        return None
                    number = float(item)
                    if not math.isfinite(number):
                        return None
                    if label == _BT:
                        base_time = number
                    elif label == _BV:
                        base_value = number
                    else:
                        offset = number
            values = seen & _VALUE_BITS
            if not values or values & (values - 1):
                return None  # no value, or more than one
            if vlabel == _V:
                if type(value) is not float and type(value) is not int:
                    return None
                value = base_value + float(value) + 0.0
            elif vlabel == _VS:
                if type(value) is not str:
                    return None
            elif vlabel == _VB:
                if type(value) is not bool:
                    return None
            elif type(value) is not bytes:
                return None
            if name is not None and type(name) is not str:
                return None
            if unit is not None and type(unit) is not str:
                return None
            t = base_time + offset + 0.0
            if not math.isfinite(t) or (type(value) is float and not math.isfinite(value)):
                return None
            full = base_name + name if name is not None else base_name
            u = unit if unit is not None else base_unit
            if (full, u) in _CHECKED:
                sample = _NEW(Sample)
                _SET(sample, "name", full)
                _SET(sample, "unit", u)
                _SET(sample, "time", t)
                _SET(sample, "value", value)
            else:
                try:
                    sample = Sample(full, u, t, value)
                except ValueError:
                    return None
                if len(_CHECKED) >= _CHECKED_MAX:
                    _CHECKED.clear()
                _CHECKED[full, u] = None
            samples.append(sample)
    except (IndexError, struct.error):
        return None  # truncated
    if pos != end:
        return None
    frame = _NEW(Frame)
    times = [x.time for x in samples]
    _SET(frame, "samples", tuple(samples))
    _SET(frame, "_start", min(times))
    _SET(frame, "_end", max(times))
    return frame


_NEW: Final = object.__new__  # frozen dataclasses built without their checks (done above)
_SET: Final = object.__setattr__


# -- reading logs ---------------------------------------------------------------------------------


class BlockSource(Protocol):
    """What :func:`seek_time` and :func:`frame_at` need of a log; :class:`cairn.log.Log` has it."""

    @property
    def length(self) -> int: ...

    def get(self, index: int) -> bytes: ...


def frame_at(log: BlockSource, index: int) -> Frame:
    """The frame in block ``index`` of ``log``.

    Raises :class:`~cairn.errors.NotAvailableError` (from ``log.get``) when the block is not
    held, and :class:`DecodeError` naming the index when the block is not a valid frame.
    """
    if isinstance(index, bool) or not isinstance(index, int) or index < 0:
        raise ValueError(f"index must be a non-negative int, got {index!r}")
    data = log.get(index)
    try:
        return Frame.decode(data)
    except DecodeError as exc:
        raise DecodeError(f"block {index} is not a valid frame: {exc}") from exc


def seek_time(log: BlockSource, t: float) -> int:
    """The index of the first block whose frame has a sample at or after ``t`` (end >= ``t``).

    Returns ``log.length`` when there is none. A binary search: at most
    ``ceil(log2(length + 1))`` block reads. It is exact when the log's frames are in time
    order, meaning both their start and their end times never decrease from one block to the
    next (frames may overlap). On a log out of that order the result is some index in
    ``0..length``, not necessarily the first match.

    Raises :class:`~cairn.errors.NotAvailableError` (its message names the block) when a block
    the search needs is not held, and :class:`DecodeError` when one is not a valid frame.
    """
    if math.isnan(t):
        raise ValueError("t must not be NaN")
    lo, hi = 0, log.length
    while lo < hi:
        mid = (lo + hi) // 2
        if frame_at(log, mid).end >= t:
            hi = mid
        else:
            lo = mid + 1
    return lo

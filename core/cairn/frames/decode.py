"""The full frame decoder: any SenML CBOR pack within Cairn's bounds.

:meth:`Frame.decode` bounds the input's size, tries the fast path (:mod:`cairn.frames.fast`) and
falls back to :func:`full_decode`, which reads any SenML CBOR pack within Cairn's bounds: a
structural pre-scan of the CBOR before cbor2 builds any object, then the records resolved into
samples (RFC 8428, section 4.6). It raises only :class:`~cairn.errors.DecodeError` on bad bytes
(a remote error; the fast path raises nothing): the fuzz harness holds it to that.
"""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Final

import cbor2

from cairn.errors import DecodeError
from cairn.frames.model import (
    BN,
    BS,
    BT,
    BU,
    BV,
    BVER,
    LABEL_NAMES,
    MAX_RECORDS,
    SENML_VERSION,
    UT,
    VALUE_LABELS,
    VB,
    VS,
    Frame,
    N,
    S,
    Sample,
    T,
    U,
    V,
    Value,
)

__all__ = ["full_decode"]

# Bounds of the structural pre-scan (see _scan).
_MAX_DEPTH: Final = 8  # pack array, record map, then nesting inside ignored extension fields
_MAX_ITEMS: Final = 24 * MAX_RECORDS  # every CBOR data item, keys included
_TAG_DECIMAL_FRACTION: Final = 4
_SELF_DESCRIBE: Final = b"\xd9\xd9\xf7"  # tag 55799, allowed once, in front of the pack
#: Major type 7 items a frame may hold, by additional information: their size in bytes.
_SIMPLE_SIZES: Final = {20: 1, 21: 1, 22: 1, 25: 3, 26: 5, 27: 9}  # false true null, floats


def full_decode(body: bytes) -> Frame:
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
        raise DecodeError(f"{LABEL_NAMES[label]} is not a finite number")
    raise DecodeError(f"{LABEL_NAMES[label]} must be a number, got {type(item).__name__}")


def _text(label: int, item: object) -> str:
    if type(item) is not str:
        raise DecodeError(f"{LABEL_NAMES[label]} must be a text string, got {type(item).__name__}")
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
                if label == BN:
                    base_name = _text(label, item)
                elif label == BT:
                    base_time = _number(label, item)
                elif label == BU:
                    base_unit = _text(label, item)
                elif label == BV:
                    base_value = _number(label, item)
                elif label == BVER:
                    if type(item) is not int or not 1 <= item <= SENML_VERSION:
                        raise DecodeError(f"SenML version {_brief(item)} is not supported")
                elif label == N:
                    name = _text(label, item)
                elif label == U:
                    unit = _text(label, item)
                elif label == T:
                    offset = _number(label, item)
                elif label == UT:
                    _number(label, item)  # checked, then ignored
                elif label in VALUE_LABELS:
                    values.append((label, item))
                elif label in (S, BS):
                    raise DecodeError(f"{LABEL_NAMES[label]} (sum) is not supported")
                else:
                    raise DecodeError(f"unknown SenML label {label}")
            value = _value(values, base_value)
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


def _value(values: list[tuple[int, object]], base_value: float) -> Value:
    """A record's one value: ``bv + v``, ``vs``, ``vb`` or ``vd``, as (label, item) pairs."""
    if not values:
        raise DecodeError("no value (v, vs, vb or vd)")
    if len(values) > 1:
        names = ", ".join(LABEL_NAMES[label] for label, _ in values)
        raise DecodeError(f"more than one value ({names})")
    label, item = values[0]
    if label == V:
        number = base_value + _number(label, item)
        if not math.isfinite(number):
            raise DecodeError("bv + v is not finite")
        return number
    if label == VS:
        return _text(label, item)
    if label == VB:
        if type(item) is not bool:
            raise DecodeError(f"vb must be a boolean, got {type(item).__name__}")
        return item
    if type(item) is not bytes:
        raise DecodeError(f"vd must be a byte string, got {type(item).__name__}")
    return item

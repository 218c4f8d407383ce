"""SenML (RFC 8428) packs in JSON or CBOR.

Resolution (RFC 8428 4.6): base fields carry forward (``bn`` + ``n`` is the name, ``bt`` + ``t``
the time, ``bu`` the unit unless ``u``, ``bv`` + ``v`` the value, ``bs`` + ``s`` the sum);
a resolved time below 2**28 counts from "now" (4.5.3). Every value kind is read: ``v``
(number), ``vs`` (string), ``vb`` (boolean), ``vd`` (data: kept as its base64url text, CBOR's
byte string encoded so). A sum ``s`` is a reading of its own, ``<quantity>-sum``, in the
record's unit. A record may carry a value, a sum, or both. A record without ``n`` whose unit
is not the base unit measures something else of the same thing (RFC 8428's humidity sensor
that also reports ``lat``, ``lon`` and ``%EL``): its stream is ``<quantity>-<unit>``, apart
from the base unit's.

Refused whole: a pack that is not an array of maps, a field name ending in ``_`` (RFC 8428
4.4: must be understood, and is not), a ``bver`` other than 1..10. Refused per record (the
others are read): a record without a value or sum, with two values, a value of the wrong
type, a name that is not a SenML name. A record whose base field is broken refuses itself and
every record after it (their names, times or units would be wrong).
"""

from __future__ import annotations

import base64
import re
from typing import Any

import cbor2

from cairn_edge.adapters.common import (
    _NAME,
    Collector,
    Decoded,
    Rejected,
    _json,
    _number,
    _quantity,
    slug,
)

MAX_RECORDS = 2_000  # SenML records in one pack
RELATIVE_LIMIT = 2**28  # RFC 8428: resolved times below this are relative to now
_B64URL = re.compile(r"[A-Za-z0-9_\-]*={0,2}")

#: RFC 8428 table 4: SenML CBOR's integer labels.
_CBOR_LABELS = {-1: "bver", -2: "bn", -3: "bt", -4: "bu", -5: "bv", -6: "bs", 0: "n", 1: "u",
                2: "v", 3: "vs", 4: "vb", 5: "s", 6: "t", 7: "ut", 8: "vd"}  # fmt: skip
_KNOWN_LABELS = frozenset(_CBOR_LABELS.values())

def _senml_records(payload: bytes, content_type: str | None) -> list[dict[str, Any]]:
    cbor = content_type == "application/senml+cbor" or (
        content_type is None and payload[:1] and payload[0] >> 5 in (4, 5)
        and payload[:1] != b"["
    )
    if cbor:
        try:
            raw = cbor2.loads(payload)
        except (cbor2.CBORDecodeError, ValueError, RecursionError, MemoryError) as exc:
            raise Rejected("bad-cbor", f"not CBOR ({str(exc)[:60]})") from None
        if not isinstance(raw, list):
            raise Rejected("bad-senml", "a SenML pack is an array")
        records = []
        for rec in raw:
            if not isinstance(rec, dict):
                raise Rejected("bad-senml", "a SenML record is a map")
            out = {}
            for k, v in rec.items():
                label = _CBOR_LABELS.get(k) if isinstance(k, int) else k
                if label is None or not isinstance(label, str):
                    raise Rejected("bad-senml", f"unknown SenML CBOR label {k!r}")
                out[label] = v
            records.append(out)
        return records
    doc = _json(payload)
    if not isinstance(doc, list) or not all(isinstance(r, dict) for r in doc):
        raise Rejected("bad-senml", "a SenML pack is an array of objects")
    return doc


def decode_senml(device: str, payload: bytes, content_type: str | None,
                 received: float) -> Decoded:
    """RFC 8428 resolution: base fields carry forward; name = bn + n; time = bt + t."""
    records = _senml_records(payload, content_type)
    if not records:
        raise Rejected("empty", "an empty SenML pack")
    if len(records) > MAX_RECORDS:
        raise Rejected("too-large", f"{len(records)} records (most {MAX_RECORDS})")
    base = _Base()
    out = Collector(device)
    for k, rec in enumerate(records):
        unknown = set(rec) - _KNOWN_LABELS
        mandatory = [x for x in unknown if isinstance(x, str) and x.endswith("_")]
        if mandatory:
            raise Rejected("bad-senml", f"record {k}: must-understand field {mandatory[0]!r}")
        if "bver" in rec and (not isinstance(rec["bver"], int) or isinstance(rec["bver"], bool)
                              or not 1 <= rec["bver"] <= 10):
            raise Rejected("bad-senml", f"record {k}: SenML version {rec['bver']!r}")
        try:
            base.update(rec, k)
        except Rejected as exc:
            out.refuse(exc)
            for j in range(k + 1, len(records)):
                out.refuse(Rejected(exc.reason, f"record {j}: after a broken base field"))
            break
        try:
            _record(out, base, rec, k, device, received)
        except Rejected as exc:
            out.refuse(exc)
    return out.result("SenML")


class _Base:
    """The base fields in force."""

    def __init__(self) -> None:
        self.bn = ""
        self.bt = 0.0
        self.bu: str | None = None
        self.bv = 0.0
        self.bs = 0.0

    def update(self, rec: dict[str, Any], k: int) -> None:
        if "bn" in rec:
            if not isinstance(rec["bn"], str):
                raise Rejected("wrong-type", f"record {k}: bn is not text")
            self.bn = rec["bn"]
        if "bt" in rec:
            self.bt = _number(rec["bt"], f"record {k}: bt")
        if "bu" in rec:
            if not isinstance(rec["bu"], str):
                raise Rejected("wrong-type", f"record {k}: bu is not text")
            self.bu = rec["bu"]
        if "bv" in rec:
            self.bv = _number(rec["bv"], f"record {k}: bv")
        if "bs" in rec:
            self.bs = _number(rec["bs"], f"record {k}: bs")


def _record(out: Collector, base: _Base, rec: dict[str, Any], k: int, device: str,
            received: float) -> None:
    n = rec.get("n", "")
    if not isinstance(n, str):
        raise Rejected("wrong-type", f"record {k}: n is not text")
    name = base.bn + n
    if not name or not _NAME.fullmatch(name) or len(name) > 200:
        raise Rejected("bad-name", f"record {k}: {name[:40]!r} is not a SenML name")
    unit = rec.get("u", base.bu)
    if unit is not None and not isinstance(unit, str):
        raise Rejected("wrong-type", f"record {k}: u is not text")
    t = base.bt + _number(rec.get("t", 0.0), f"record {k}: t")
    if abs(t) < RELATIVE_LIMIT:
        t = received + t  # relative to "now" (RFC 8428 4.5.3)
    values = [x for x in ("v", "vs", "vb", "vd") if x in rec]
    if len(values) > 1:
        raise Rejected("bad-senml", f"record {k}: {len(values)} values (one of v, vs, vb, vd)")
    if not values and "s" not in rec:
        raise Rejected("bad-senml", f"record {k}: neither a value nor a sum")
    head, sep, rest = name.partition("/")
    if sep and head == device:
        name = rest  # "board-1/temperature" from board-1: quantity "temperature"
    quantity = _quantity(name.replace("/", "-").replace(":", "-").replace(".", "-"))
    if "n" not in rec and base.bu is not None and unit not in (None, base.bu):
        quantity = _quantity(f"{quantity}-{slug(unit)}")  # one name, another unit: lat, lon
    value: float | str | bool | None = None
    if "v" in rec:
        value = base.bv + _number(rec["v"], f"record {k}: v")
    elif "vs" in rec:
        if not isinstance(rec["vs"], str) or len(rec["vs"]) > 1024:
            raise Rejected("wrong-type", f"record {k}: vs is not text (at most 1 kB)")
        value = rec["vs"]
    elif "vb" in rec:
        if not isinstance(rec["vb"], bool):
            raise Rejected("wrong-type", f"record {k}: vb is not a boolean")
        value = rec["vb"]
    elif "vd" in rec:
        value = _data_value(rec["vd"], k)
    sum_ = None if "s" not in rec else base.bs + _number(rec["s"], f"record {k}: s")
    if value is not None:
        out.add(quantity, unit, t, value)
    if sum_ is not None:
        out.add(_quantity(f"{quantity}-sum"), unit, t, sum_)


def _data_value(vd: object, k: int) -> str:
    """``vd`` as base64url text (RFC 8428 4.3: base64url in JSON, a byte string in CBOR)."""
    if isinstance(vd, bytes):
        vd = base64.urlsafe_b64encode(vd).decode("ascii").rstrip("=")
    if not isinstance(vd, str) or len(vd) > 1024 or not _B64URL.fullmatch(vd):
        raise Rejected("wrong-type", f"record {k}: vd is not base64url data (at most 1 kB)")
    return vd

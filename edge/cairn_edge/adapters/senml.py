"""SenML (RFC 8428) packs in JSON or CBOR."""

from __future__ import annotations

from typing import Any

import cbor2

from cairn_edge.adapters.common import (
    _NAME,
    Reading,
    Rejected,
    _json,
    _number,
    _quantity,
)

MAX_RECORDS = 2_000  # SenML records in one pack
RELATIVE_LIMIT = 2**28  # RFC 8428: resolved times below this are relative to now

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
                 received: float) -> list[Reading]:
    """RFC 8428 resolution: base fields carry forward; name = bn + n; time = bt + t."""
    records = _senml_records(payload, content_type)
    if not records:
        raise Rejected("empty", "an empty SenML pack")
    if len(records) > MAX_RECORDS:
        raise Rejected("too-large", f"{len(records)} records (most {MAX_RECORDS})")
    bn, bt, bu, bv = "", 0.0, None, 0.0
    out = []
    for k, rec in enumerate(records):
        unknown = set(rec) - _KNOWN_LABELS
        mandatory = [x for x in unknown if isinstance(x, str) and x.endswith("_")]
        if mandatory:
            raise Rejected("bad-senml", f"record {k}: must-understand field {mandatory[0]!r}")
        if "bver" in rec and rec["bver"] not in (5, 10):
            raise Rejected("bad-senml", f"record {k}: SenML version {rec['bver']!r}")
        if "bn" in rec:
            if not isinstance(rec["bn"], str):
                raise Rejected("wrong-type", f"record {k}: bn is not text")
            bn = rec["bn"]
        if "bt" in rec:
            bt = _number(rec["bt"], f"record {k}: bt")
        if "bu" in rec:
            if not isinstance(rec["bu"], str):
                raise Rejected("wrong-type", f"record {k}: bu is not text")
            bu = rec["bu"]
        if "bv" in rec:
            bv = _number(rec["bv"], f"record {k}: bv")
        n = rec.get("n", "")
        if not isinstance(n, str):
            raise Rejected("wrong-type", f"record {k}: n is not text")
        name = bn + n
        if not name or not _NAME.fullmatch(name) or len(name) > 200:
            raise Rejected("bad-name", f"record {k}: {name[:40]!r} is not a SenML name")
        unit = rec.get("u", bu)
        if unit is not None and not isinstance(unit, str):
            raise Rejected("wrong-type", f"record {k}: u is not text")
        t = bt + _number(rec.get("t", 0.0), f"record {k}: t")
        if abs(t) < RELATIVE_LIMIT:
            t = received + t  # relative to "now" (RFC 8428 4.5.3)
        values = [x for x in ("v", "vs", "vb", "vd") if x in rec]
        if "s" in rec and not values:
            raise Rejected("unsupported", f"record {k}: sums without values are not stored")
        if len(values) != 1:
            raise Rejected("bad-senml", f"record {k}: {len(values)} values (one of v, vs, vb)")
        value: float | str | bool
        if "v" in rec:
            value = bv + _number(rec["v"], f"record {k}: v")
        elif "vs" in rec:
            if not isinstance(rec["vs"], str) or len(rec["vs"]) > 1024:
                raise Rejected("wrong-type", f"record {k}: vs is not text (at most 1 kB)")
            value = rec["vs"]
        elif "vb" in rec:
            if not isinstance(rec["vb"], bool):
                raise Rejected("wrong-type", f"record {k}: vb is not a boolean")
            value = rec["vb"]
        else:
            raise Rejected("unsupported", f"record {k}: data values (vd) are not stored")
        head, sep, quantity = name.partition("/")
        if sep and head == device:
            name = quantity  # "board-1/temperature" from board-1: quantity "temperature"
        out.append(Reading(device, _quantity(name.replace("/", "-").replace(":", "-")
                                             .replace(".", "-")), unit, t, value))
    return out

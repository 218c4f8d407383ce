"""A gateway's address record: where edges dial it (issue 19).

A signed mutable DHT record under the gateway's **Noise** key pair (the key edges pin in
``[replication].gateways``), so an edge that knows only the gateway's key finds where to dial
it, and the DHT's signature check proves the record is that key's. The value is a CBOR map:

====  ================================================================================
0     format version (1)
1     time the record was made, whole seconds since the epoch
2     addresses ``[[host, port], ...]`` the gateway accepts edges on (at most 16)
====  ================================================================================
"""

from __future__ import annotations

from collections.abc import Sequence

import cbor2

from cairn.errors import DecodeError

__all__ = ["MAX_ADDRESSES", "GatewayRecordError", "decode_gateway_record",
           "encode_gateway_record"]

VERSION = 1
MAX_ADDRESSES = 16


class GatewayRecordError(DecodeError, ValueError):
    """A value that is not a Cairn gateway address record: says what is wrong."""


def encode_gateway_record(time: int, addresses: Sequence[tuple[str, int]]) -> bytes:
    return cbor2.dumps({0: VERSION, 1: time,
                        2: [[h, p] for h, p in list(addresses)[:MAX_ADDRESSES]]})


def decode_gateway_record(value: bytes) -> list[tuple[str, int]]:
    """The addresses; :class:`GatewayRecordError` for anything malformed."""
    try:
        doc = cbor2.loads(value)
    except (cbor2.CBORDecodeError, ValueError, RecursionError) as exc:
        raise GatewayRecordError(f"not CBOR: {exc}") from None
    if not isinstance(doc, dict) or doc.get(0) != VERSION or not isinstance(doc.get(1), int):
        raise GatewayRecordError("not a version 1 Cairn gateway record")
    raw = doc.get(2)
    if not isinstance(raw, list) or len(raw) > MAX_ADDRESSES:
        raise GatewayRecordError(f"addresses: a list of at most {MAX_ADDRESSES}")
    out = []
    for a in raw:
        if not (isinstance(a, list) and len(a) == 2 and isinstance(a[0], str)
                and 0 < len(a[0]) <= 253 and isinstance(a[1], int) and 0 < a[1] <= 65535):
            raise GatewayRecordError("bad address: [host, port]")
        out.append((a[0], a[1]))
    return out

"""A device record sent in-band (issue 19): the edge's signed DHT record on its own connection.

An edge behind a firewall that drops UDP can never put its record on the DHT, yet the gateway
admits a dialling edge only by the Noise key its record names (field 8). So an edge that dials
a gateway sends, as the first message after the Noise handshake (and again whenever its record
changes), the very bytes it would put on the DHT: record public key, seq, value, signature
(:func:`cairn.dht.records.encode_mutable_put`), behind :data:`MAGIC`. The gateway checks it as
the DHT checks a mutable record (the signature over ``seq`` and ``value`` by the record key),
plus what only it knows (the key is enrolled, the seq is not older than the record it holds,
field 8 is the connection's remote key): see ``Collector.in_band`` in the gateway.

:data:`MAGIC` starts with a protomux control byte and a type no protomux peer sends, so the
message can never be taken for replication; only Cairn gateways see it (an edge dials only
the gateways it pins).
"""

from __future__ import annotations

from cairn.dht.records import MAX_VALUE_SIZE, MutableRecord, decode_mutable_put, encode_mutable_put
from cairn.errors import DecodeError

__all__ = ["MAGIC", "MAX_IN_BAND", "InBandRecordError", "decode_in_band", "encode_in_band",
           "is_in_band"]

MAGIC = b"\x00\xfe\x7fcairn-record/1"
#: magic, key, seq (a varint of at most 10 bytes), value length (3) and value, signature
MAX_IN_BAND = len(MAGIC) + 32 + 10 + 3 + MAX_VALUE_SIZE + 64


class InBandRecordError(DecodeError):
    """An in-band device record that is not one: truncated, oversized, trailing bytes."""


def is_in_band(message: bytes) -> bool:
    """Whether a message on the secret stream is an in-band record (not replication)."""
    return message.startswith(MAGIC)


def encode_in_band(public_key: bytes, record: MutableRecord) -> bytes:
    return MAGIC + encode_mutable_put(public_key, record)


def decode_in_band(message: bytes) -> tuple[bytes, MutableRecord]:
    """The record key and the signed record (the signature not checked here)."""
    if not is_in_band(message):
        raise InBandRecordError("not an in-band record (no magic)")
    if len(message) > MAX_IN_BAND:
        raise InBandRecordError(f"in-band record of {len(message)} bytes: more than "
                                f"{MAX_IN_BAND}")
    body = message[len(MAGIC):]
    try:
        key, rec = decode_mutable_put(body)
    except (DecodeError, ValueError, IndexError) as exc:
        raise InBandRecordError(f"in-band record truncated or malformed: {exc}") from None
    used = len(encode_mutable_put(key, rec))
    if used != len(body):
        raise InBandRecordError(f"in-band record with {len(body) - used} trailing bytes")
    if len(rec.value) > MAX_VALUE_SIZE:
        raise InBandRecordError(f"in-band record value of {len(rec.value)} bytes: more than "
                                f"{MAX_VALUE_SIZE}")
    return key, rec

"""The device's DHT record: its latest readings, its streams and where to replicate them.

One signed mutable record (hyperdht ``mutable_put``, at most 1,000 bytes of value) under the
device's record key pair (derived from its seed). The value is a CBOR map with integer keys:

====  ======================================================================================
0     format version (1)
1     time the record was made, whole seconds since the epoch
2     replication address ``[host, port]`` (absent when not serving)
3     stream names, in the order of 4
4     the streams' log keys, 32 bytes each in the order of 3: in clear (a byte string) when
      the fleet is public, else a list with one ``crypto_box_seal`` of those bytes for each
      gateway key in the config (Ed25519 keys, converted to X25519)
5     latest readings ``[[stream index, time - field 1, value], ...]``, the most recently
      changed first
6     readings left out because the record was full
7     streams left out because the record was full
8     the device's Noise static public key, 32 bytes (absent in records made before issue 19):
      what a gateway admits when the edge dials in, bound to this record key by the signature
====  ======================================================================================

Reading values are floats, text or booleans as in the stream. A gateway opens field 4 with its
Noise key pair; anyone can read names and readings (the record is public on the DHT), nobody
without a gateway key learns the log keys, which are the capability to replicate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

import cbor2
from nacl import bindings as sodium
from nacl.exceptions import CryptoError

from cairn.crypto import KeyPair
from cairn.errors import DecodeError

__all__ = ["MAX_VALUE", "DeviceRecord", "LatestReading", "RecordError", "check_fleet_name",
           "decode_record", "encode_record", "fleet_topic"]

MAX_VALUE = 1000  # hyperdht's limit on a mutable record's value
VERSION = 1
_KEY = 32


def check_fleet_name(fleet: object, where: str = "fleet") -> str:
    """The fleet-name rule: a string of 1 to 64 characters. ``ValueError`` naming ``where``."""
    if not isinstance(fleet, str) or not 0 < len(fleet) <= 64:
        raise ValueError(f"{where}: a name of 1 to 64 characters")
    return fleet


def fleet_topic(fleet: str) -> bytes:
    """The DHT topic a fleet's devices announce their record keys on."""
    return hashlib.blake2b(f"cairn-fleet:{fleet}".encode(), digest_size=32).digest()


class RecordError(DecodeError, ValueError):
    """A record value that is not a Cairn device record: says what is wrong."""


@dataclass(frozen=True, slots=True)
class LatestReading:
    stream: str
    time: float
    value: float | str | bool


@dataclass(slots=True)
class DeviceRecord:
    time: int
    address: tuple[str, int] | None = None
    streams: list[tuple[str, bytes | None]] = field(default_factory=list)  # name, log key
    readings: list[LatestReading] = field(default_factory=list)
    readings_omitted: int = 0
    streams_omitted: int = 0
    noise_key: bytes | None = None  # the key the edge dials gateways with (field 8)


def _to_x25519(ed25519_public: bytes) -> bytes:
    return bytes(sodium.crypto_sign_ed25519_pk_to_curve25519(ed25519_public))


def encode_record(rec: DeviceRecord, gateways: Sequence[bytes] | None) -> bytes:
    """The record's value, at most :data:`MAX_VALUE` bytes: readings (newest first) and then
    streams are left out, and counted, until it fits. ``gateways`` None: keys in clear."""
    streams: list[tuple[str, bytes | None]] = [(n, k) for n, k in rec.streams if k is not None]
    readings = list(rec.readings)
    left_out_streams = len(rec.streams) - len(streams)
    while True:
        value = _encode(rec, streams, readings, gateways, len(rec.readings) - len(readings),
                        left_out_streams)
        if len(value) <= MAX_VALUE:
            return value
        if readings:
            readings.pop()
        elif streams:
            streams.pop()
            left_out_streams += 1
        else:
            raise RecordError("the record does not fit in 1,000 bytes even without streams "
                              "and readings (too many gateways?)")


def _encode(rec: DeviceRecord, streams: list[tuple[str, bytes | None]],
            readings: list[LatestReading], gateways: Sequence[bytes] | None, r_out: int,
            s_out: int) -> bytes:
    names = [n for n, _ in streams]
    keys = b"".join(k for _, k in streams if k is not None)
    doc: dict[int, object] = {0: VERSION, 1: rec.time, 3: names}
    if rec.address is not None:
        doc[2] = [rec.address[0], rec.address[1]]
    if gateways is None:
        doc[4] = keys
    else:
        doc[4] = [bytes(sodium.crypto_box_seal(keys, _to_x25519(g))) for g in gateways]
    index = {n: i for i, n in enumerate(names)}
    doc[5] = [[index[r.stream], round(r.time - rec.time, 3), r.value]
              for r in readings if r.stream in index]
    if r_out:
        doc[6] = r_out
    if s_out:
        doc[7] = s_out
    if rec.noise_key is not None:
        doc[8] = rec.noise_key
    return cbor2.dumps(doc)


def decode_record(value: bytes, gateway: KeyPair | None = None) -> DeviceRecord:
    """Read a record; with a gateway key pair, open the log keys sealed to it (else the keys
    are None unless they are in clear). :class:`RecordError` for anything malformed."""
    if len(value) > MAX_VALUE:
        raise RecordError(f"{len(value)} bytes: a record value is at most {MAX_VALUE}")
    try:
        doc = cbor2.loads(value)
    except (cbor2.CBORDecodeError, ValueError, RecursionError) as exc:
        raise RecordError(f"not CBOR: {exc}") from None
    if not isinstance(doc, dict) or doc.get(0) != VERSION:
        raise RecordError("not a version 1 Cairn device record")
    t = doc.get(1)
    names = doc.get(3, [])
    if not isinstance(t, int) or not 0 <= t < 1 << 63 or not isinstance(names, list) or not all(
            isinstance(n, str) for n in names):
        raise RecordError("bad time or stream names")
    rec = DeviceRecord(time=t)
    addr = doc.get(2)
    if addr is not None:
        if not (isinstance(addr, list) and len(addr) == 2 and isinstance(addr[0], str)
                and isinstance(addr[1], int) and 0 <= addr[1] <= 65535):
            raise RecordError("bad replication address")
        rec.address = (addr[0], addr[1])
    keys = _open_keys(doc.get(4), len(names), gateway)
    rec.streams = [(n, keys[i] if keys else None) for i, n in enumerate(names)]
    raw = doc.get(5, [])
    if not isinstance(raw, list):
        raise RecordError("bad readings")
    for item in raw:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], int)
                and 0 <= item[0] < len(names) and isinstance(item[1], int | float)
                and isinstance(item[2], int | float | str | bool)):
            raise RecordError("bad reading")
        v = item[2]
        try:  # a CBOR bignum does not fit a float
            at = t + float(item[1])
            reading: float | str | bool = (float(v) if isinstance(v, int)
                                           and not isinstance(v, bool) else v)
        except OverflowError:
            raise RecordError("a reading's time or value is out of range") from None
        rec.readings.append(LatestReading(names[item[0]], at, reading))
    r_out, s_out = doc.get(6, 0), doc.get(7, 0)
    if not isinstance(r_out, int) or not isinstance(s_out, int) or r_out < 0 or s_out < 0:
        raise RecordError("bad counts of what was left out")
    rec.readings_omitted, rec.streams_omitted = r_out, s_out
    noise = doc.get(8)
    if noise is not None and not (isinstance(noise, bytes) and len(noise) == _KEY):
        raise RecordError("bad Noise key (field 8): 32 bytes")
    rec.noise_key = noise
    return rec


def _open_keys(field4: object, n: int, gateway: KeyPair | None) -> list[bytes] | None:
    blob: bytes | None = None
    if isinstance(field4, bytes):
        blob = field4
    elif isinstance(field4, list):
        if gateway is None or gateway.secret_key is None:
            return None
        pk = _to_x25519(gateway.public_key)
        sk = bytes(sodium.crypto_sign_ed25519_sk_to_curve25519(gateway.secret_key))
        for box in field4:
            if not isinstance(box, bytes):
                raise RecordError("bad sealed keys")
            try:
                blob = bytes(sodium.crypto_box_seal_open(box, pk, sk))
                break
            except CryptoError:
                continue
        if blob is None:
            return None  # sealed to other gateways
    elif field4 is not None:
        raise RecordError("bad keys field")
    if blob is None:
        return None
    if len(blob) != _KEY * n:
        raise RecordError(f"{len(blob)} bytes of keys for {n} streams")
    return [blob[i * _KEY:(i + 1) * _KEY] for i in range(n)]

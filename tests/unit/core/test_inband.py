"""The in-band device record's framing (:mod:`cairn.fleet.inband`): what it accepts and the
one-line reason for what it does not. The gateway's checks are tested over real connections
in tests/integration/gateway/test_inband.py."""

from __future__ import annotations

import pytest

from cairn.crypto import derive_stream_key_pair
from cairn.dht.records import MAX_VALUE_SIZE, MutableRecord, sign_mutable, verify_mutable
from cairn.errors import DecodeError
from cairn.fleet.inband import (
    MAGIC,
    MAX_IN_BAND,
    InBandRecordError,
    decode_in_band,
    encode_in_band,
    is_in_band,
)

KEYS = derive_stream_key_pair(bytes(32), "record")


def message(value: bytes = b"record", seq: int = 7) -> bytes:
    assert KEYS.secret_key is not None
    return encode_in_band(KEYS.public_key,
                          MutableRecord(seq, value, sign_mutable(seq, value, KEYS.secret_key)))


def test_a_record_round_trips_and_verifies_as_the_dht_would() -> None:
    m = message()
    assert is_in_band(m)
    key, rec = decode_in_band(m)
    assert key == KEYS.public_key and rec.seq == 7 and rec.value == b"record"
    assert verify_mutable(key, rec)
    assert len(message(bytes(MAX_VALUE_SIZE), 2**64 - 1)) <= MAX_IN_BAND


def test_replication_messages_are_not_taken_for_one() -> None:
    assert not is_in_band(b"\x00\x01some protomux open")
    assert not is_in_band(b"\x01\x00")


@pytest.mark.parametrize(("data", "reason"), [
    (b"\x00\x00", "no magic"),
    (MAGIC, "truncated or malformed"),
    (message()[:-1], "truncated or malformed"),
    (message() + b"x", "1 trailing bytes"),
    (MAGIC + bytes(MAX_IN_BAND), "more than"),
])
def test_bad_framing_is_refused_with_its_reason(data: bytes, reason: str) -> None:
    with pytest.raises(InBandRecordError, match=reason) as got:
        decode_in_band(data)
    assert isinstance(got.value, DecodeError)
    assert "\n" not in str(got.value)

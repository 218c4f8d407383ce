"""The enrollment string: how a device's identity travels from the edge to the gateway's roster.

``cairn edge init`` and ``cairn edge keys`` print it; ``cairn gateway devices add`` takes it.
One line of ASCII, four parts separated by ``:``::

    cairn1:board-1:9f2c...64 hex digits...e01b:5d0a31c7
    ^      ^       ^                           ^
    |      |       |                           checksum: 8 hex digits, the first 4 bytes of
    |      |       |                           BLAKE2b("cairn-enroll-1:" + name + ":" + key hex)
    |      |       the device's record key (its DHT record's public key), 64 hex digits
    |      the suggested device name (the operator may choose another)
    version tag: ``cairn1``

The checksum catches a mistyped or truncated string (a changed digit, a lost character): such a
string is refused with a message saying so, never enrolled as some other key. It is not a
signature: whoever can hand the operator a string can hand them any key; the operator's trust is
in where the string came from (the board's own console).

A device name is 1 to 63 characters, letters, digits, ``.``, ``_`` and ``-``, starting with a
letter or digit (no ``:`` or ``/``, so it fits in a stream name's device part and in this
string).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from cairn.errors import DecodeError

__all__ = ["PREFIX", "Enrollment", "EnrollmentError", "check_device_name", "parse_enrollment",
           "parse_record_key"]

PREFIX = "cairn1"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")


class EnrollmentError(DecodeError):
    """An enrollment string, record key or device name that is not valid: says what is wrong."""


def check_device_name(name: object) -> str:
    """The device-name rule; :class:`EnrollmentError` saying why a name breaks it."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise EnrollmentError(
            f"device name {name!r} is not valid: 1 to 63 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit")
    return name


def parse_record_key(text: str) -> bytes:
    """A record key given as 64 hex digits."""
    t = text.strip()
    if not _HEX64.fullmatch(t):
        raise EnrollmentError(f"{_short(t)!r} is not a record key (64 hex digits)")
    return bytes.fromhex(t)


def _checksum(name: str, key_hex: str) -> str:
    data = f"cairn-enroll-1:{name}:{key_hex}".encode()
    return hashlib.blake2b(data, digest_size=4).hexdigest()


def _short(text: str) -> str:
    return text if len(text) <= 24 else text[:20] + "..."


@dataclass(frozen=True, slots=True)
class Enrollment:
    """A device's record key and its suggested name."""

    name: str
    record_key: bytes

    def __post_init__(self) -> None:
        check_device_name(self.name)
        if len(self.record_key) != 32:
            raise EnrollmentError("a record key is 32 bytes")

    def __str__(self) -> str:
        key = self.record_key.hex()
        return f"{PREFIX}:{self.name}:{key}:{_checksum(self.name, key)}"


def parse_enrollment(text: str) -> Enrollment:
    """Parse an enrollment string (surrounding blanks ignored, hex in either case)."""
    t = text.strip()
    parts = t.split(":")
    if parts[0] != PREFIX:
        raise EnrollmentError(f"{_short(t)!r} is not an enrollment string (it starts with "
                              f"'{PREFIX}:') nor a record key (64 hex digits)")
    if len(parts) != 4:
        raise EnrollmentError(f"an enrollment string has 4 parts ({PREFIX}:NAME:KEY:CHECKSUM), "
                              f"this one has {len(parts)}: copy the whole line")
    _, name, key_hex, check = parts
    check_device_name(name)
    if not _HEX64.fullmatch(key_hex):
        raise EnrollmentError(f"the record key in the enrollment string has {len(key_hex)} "
                              "characters, not 64 hex digits: copy the whole line")
    key_hex = key_hex.lower()
    if check.lower() != _checksum(name, key_hex):
        raise EnrollmentError("the enrollment string's checksum does not match: a character "
                              "was mistyped or lost; copy the whole line again")
    return Enrollment(name, bytes.fromhex(key_hex))

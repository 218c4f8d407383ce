"""The enrollment string (cairn.fleet.enrollment): what the edge prints and the gateway takes;
a mistyped one is refused with a message saying what is wrong, never read as another key."""

from __future__ import annotations

import random

import pytest

from cairn.errors import RemoteError
from cairn.fleet import Enrollment, EnrollmentError, check_device_name, parse_enrollment
from cairn.fleet.enrollment import parse_record_key
from tests.scorecard import record

KEY = bytes(range(32))
GOOD = str(Enrollment("board-1", KEY))


def test_it_round_trips_and_has_the_documented_shape() -> None:
    prefix, name, key, check = GOOD.split(":")
    assert (prefix, name, key, len(check)) == ("cairn1", "board-1", KEY.hex(), 8)
    assert parse_enrollment(GOOD) == Enrollment("board-1", KEY)
    with pytest.raises(EnrollmentError, match="checksum"):  # names are case-sensitive
        parse_enrollment(GOOD.replace("board-1", "BOARD-1"))
    # hex in either case, blanks around it ignored
    p, n, k, c = GOOD.split(":")
    assert parse_enrollment(f" {p}:{n}:{k.upper()}:{c.upper()}\n").record_key == KEY


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "not an enrollment string"),
        ("hello", "not an enrollment string"),
        ("cairn2:board-1:" + KEY.hex() + ":00000000", "not an enrollment string"),
        ("cairn1:board-1:" + KEY.hex(), "4 parts"),
        (GOOD + ":extra", "4 parts"),
        ("cairn1:board 1:" + KEY.hex() + ":00000000", "device name 'board 1'"),
        ("cairn1::" + KEY.hex() + ":00000000", "device name ''"),
        ("cairn1:-x:" + KEY.hex() + ":00000000", "starting with a letter"),
        ("cairn1:board-1:" + KEY.hex()[:-1] + ":00000000", "63 characters"),
        ("cairn1:board-1:" + "zz" * 32 + ":00000000", "not 64 hex digits"),
        (GOOD[:-1] + ("0" if GOOD[-1] != "0" else "1"), "checksum"),
        (GOOD.replace("board-1", "board-2"), "checksum"),
    ],
)
def test_bad_strings_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(EnrollmentError, match=message) as info:
        parse_enrollment(text)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, RemoteError)  # bytes from outside: the error tree's branch


def test_every_mistyped_character_is_caught() -> None:
    """A substitution of any one character of the key, name or checksum: refused (the
    checksum), never parsed as another key. Seeded; each position is tried."""
    rng = random.Random(17)
    runs = accepted = 0
    start = len("cairn1:")
    for i in range(start, len(GOOD)):
        if GOOD[i] == ":":
            continue
        alphabet = "0123456789abcdef" if i > len("cairn1:board-1:") else "abcdefgh-123"
        for wrong in rng.sample([c for c in alphabet if c != GOOD[i]], 3):
            runs += 1
            typo = GOOD[:i] + wrong + GOOD[i + 1:]
            try:
                parse_enrollment(typo)
                accepted += 1
            except EnrollmentError:
                pass
    record("fleet", "mistyped enrollment strings (one character changed)", runs, accepted,
           "accepted", detail="every position of a cairn1 string, 3 substitutions each")
    assert runs > 200 and accepted == 0


def test_truncated_strings_are_refused() -> None:
    for n in range(len(GOOD)):
        with pytest.raises(EnrollmentError):
            parse_enrollment(GOOD[:n])


def test_the_device_name_rule() -> None:
    for ok in ("board-1", "a", "B.2_x-y", "9" * 63):
        assert check_device_name(ok) == ok
    for bad in ("", "-a", ".a", "a/b", "a:b", "a b", "é", "9" * 64, None, 7):
        with pytest.raises(EnrollmentError, match="not valid"):
            check_device_name(bad)
    with pytest.raises(EnrollmentError):
        Enrollment("board-1", b"short")


def test_a_bare_record_key() -> None:
    assert parse_record_key(" " + KEY.hex().upper() + "\n") == KEY
    for bad in ("", "ab", KEY.hex()[:-1], KEY.hex() + "0", "g" * 64):
        with pytest.raises(EnrollmentError, match="not a record key"):
            parse_record_key(bad)

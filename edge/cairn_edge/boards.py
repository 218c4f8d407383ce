"""Board logins for the embedded broker: a Mosquitto password file, and the topics a board owns.

The file is the one ``mosquitto_passwd`` writes (so one tool serves both brokers)::

    board-1:$7$101$<salt, base64>$<PBKDF2-HMAC-SHA512 of the password, base64>
    board-2:$6$<salt, base64>$<SHA-512 of password + salt, base64>   (older Mosquitto)

one ``name:hash`` a line, ``#`` comments. A line without such a hash (a password in clear) is
refused, and so is a file that other users may read or write (``chmod o-rwx``).

A board logged in as ``X`` may publish (and subscribe) only under its own topics, taken from
the edge's routes: the route's filter up to its device level, with ``X`` there and ``#`` after
it (``senml/+/+`` gives ``senml/X/#``, ``+/sensor/+/state`` gives ``X/#``, as Mosquitto's
``%u/#`` in deploy/mosquitto/acl), and the whole filter of a route whose ``device`` is ``X``.
A board may not be named as a route's first level (``senml`` would own ``senml/#``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import secrets
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cairn.settings import ConfigError
from cairn_edge.adapters import Route, match_topic

__all__ = ["EdgeLogin", "check_names", "check_password", "is_loopback", "load_boards",
           "own_filters", "topic_allowed"]

_MAX_ITERATIONS = 10_000_000  # a hash asking for more would stall every login


@dataclass(frozen=True, slots=True)
class EdgeLogin:
    """How the edge's own client logs in to its embedded broker: made fresh at each start,
    known only to this process (the broker forgets everything at a restart anyway). The client
    id is unguessable too: amqtt ends a session of the same client id before it checks the
    login, so a fixed id would let any client cut the edge off."""

    user: str
    secret: str = field(repr=False)
    client_id: str

    @classmethod
    def new(cls, client_id: str) -> EdgeLogin:
        return cls(f"cairn-edge-{secrets.token_hex(8)}", secrets.token_urlsafe(32),
                   f"{client_id}-{secrets.token_hex(8)}")


def is_loopback(host: str) -> bool:
    """Whether a listener on ``host`` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: whatever it resolves to, assume the network


def load_boards(path: Path, where: str = "[mqtt].boards_file") -> dict[str, str]:
    """Board name -> password hash, from a mosquitto_passwd file; ConfigError names the line."""
    try:
        mode = path.stat().st_mode
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: cannot read {path} ({exc})") from None
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        raise ConfigError(f"{where}: {path} may be read or written by any user: "
                          f"chmod o-rwx {path}")
    boards: dict[str, str] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep or not name or any(c in name for c in "/+#\0 "):
            raise ConfigError(f"{where}: {path} line {n}: not 'board-name:hash' (a board name "
                              "has no '/', '+', '#' or space)")
        if _parse(hashed) is None:
            raise ConfigError(f"{where}: {path} line {n}: board {name!r} has no mosquitto_passwd "
                              "hash ($7$ or $6$): make the file with mosquitto_passwd")
        if name in boards:
            raise ConfigError(f"{where}: {path} line {n}: board {name!r} is listed twice")
        boards[name] = hashed
    return boards


def _parse(hashed: str) -> tuple[str, int, bytes, bytes] | None:
    parts = hashed.split("$")
    try:
        if len(parts) == 5 and parts[:2] == ["", "7"]:
            rounds = int(parts[2])
            if not 1 <= rounds <= _MAX_ITERATIONS:
                return None
            return "7", rounds, base64.b64decode(parts[3], validate=True), \
                base64.b64decode(parts[4], validate=True)
        if len(parts) == 4 and parts[:2] == ["", "6"]:
            return "6", 1, base64.b64decode(parts[2], validate=True), \
                base64.b64decode(parts[3], validate=True)
    except (ValueError, binascii.Error):
        return None
    return None


def check_password(hashed: str, password: str) -> bool:
    """Whether ``password`` is the one ``hashed`` (a mosquitto_passwd hash) was made from."""
    parsed = _parse(hashed)
    if parsed is None:
        return False
    kind, rounds, salt, digest = parsed
    secret = password.encode()
    if kind == "7":
        got = hashlib.pbkdf2_hmac("sha512", secret, salt, rounds, dklen=len(digest))
    else:
        got = hashlib.sha512(secret + salt).digest()
    return hmac.compare_digest(got, digest)


def own_filters(board: str, routes: Sequence[Route]) -> list[str]:
    """The topic filters board ``board`` may publish and subscribe to."""
    out: list[str] = []
    for r in routes:
        levels = r.filter.split("/")
        if r.device is not None:
            if r.device == board:
                out.append(r.filter)
            continue
        plus = [k for k, level in enumerate(levels) if level == "+"]
        if len(plus) < r.device_level:
            continue  # a bridge's or a description route (zigbee2mqtt/#): no board's own
        k = plus[r.device_level - 1]
        out.append("/".join([*levels[:k], board, "#"]))
    return sorted(set(out))


def topic_allowed(topic: str, filters: Sequence[str]) -> bool:
    """Whether ``topic`` (a topic, or a filter being subscribed) lies under one of ``filters``.
    A wildcard in a subscribed filter must be covered by the same or a wider one."""
    for f in filters:
        if "+" in topic or "#" in topic:
            if _filter_within(topic.split("/"), f.split("/")):
                return True
        elif match_topic(f, topic) is not None:
            return True
    return False


def _filter_within(asked: list[str], allowed: list[str]) -> bool:
    for k, level in enumerate(allowed):
        if level == "#":
            return True
        if k >= len(asked):
            return False
        if asked[k] == "#" or (asked[k] == "+" and level != "+"):
            return False
        if level not in ("+", asked[k]):
            return False
    return len(asked) == len(allowed)


def check_names(boards: Sequence[str], routes: Sequence[Route],
                where: str = "[mqtt].boards_file") -> None:
    """Refuse a board named as a fixed level before a route's device (``senml``, ``tele``,
    ``homie``, the ``5`` of ``homie/5/...``, ``zigbee2mqtt``): through a route whose device is
    at that level it would own that route's every topic (``senml/#``, ``homie/5/#``)."""
    fixed: set[str] = set()
    for r in routes:
        levels = r.filter.split("/")
        plus = [k for k, level in enumerate(levels) if level == "+"]
        end = plus[r.device_level - 1] if len(plus) >= r.device_level else len(levels)
        fixed.update(level for level in levels[:end] if level not in ("+", "#"))
    clash = sorted(set(boards) & fixed)
    if clash:
        raise ConfigError(f"{where}: board name(s) {', '.join(clash)} are fixed topic levels "
                          "of the routes: rename the board(s)")

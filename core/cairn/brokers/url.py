"""MQTT broker addresses: ``mqtt://[user:password@]host[:port]`` or ``mqtts://...``.

Shared by the simulator, the edge agent and the demo (no MQTT library needed to parse one). A
password in a URL is a credential: nothing here puts it in a message, a repr or a log line
(:meth:`Broker.url` has no credentials, :func:`redact` hides the password of a URL as given).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from cairn.errors import UsageError

__all__ = ["Broker", "BrokerURLError", "parse_broker", "redact"]


class BrokerURLError(UsageError, ValueError):
    """A broker URL the operator gave is not ``mqtt[s]://[user:password@]host[:port]``: says
    what is wrong with it (the password redacted)."""


@dataclass(frozen=True, slots=True)
class Broker:
    """Where to connect: ``mqtt://[user:password@]host[:port]`` or ``mqtts://...``."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = field(default=None, repr=False)

    def url(self) -> str:
        """The address without credentials: what log lines and messages show."""
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def redact(url: str) -> str:
    """``url`` with the password of its ``user:password@`` part replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    netloc, slash, tail = rest.partition("/")
    userinfo, at, hostport = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostport}{slash}{tail}"


def parse_broker(url: str) -> Broker:
    """Parse a broker URL; :class:`BrokerURLError` says what is wrong with it."""
    shown = redact(url)
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        raise BrokerURLError(f"broker URL {shown!r}: {exc}") from None
    if parts.scheme not in ("mqtt", "mqtts"):
        raise BrokerURLError(f"broker URL {shown!r}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise BrokerURLError(f"broker URL {shown!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise BrokerURLError(f"broker URL {shown!r}: only mqtt[s]://[user:password@]host[:port]")
    try:
        port = parts.port
    except ValueError as exc:
        raise BrokerURLError(f"broker URL {shown!r}: bad port ({exc})") from None
    tls = parts.scheme == "mqtts"
    return Broker(
        parts.hostname,
        port if port is not None else (8883 if tls else 1883),
        tls,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
    )



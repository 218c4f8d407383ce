"""MQTT broker addresses: ``mqtt://[user:password@]host[:port]`` or ``mqtts://...``.

Shared by the simulator and the edge agent (no MQTT library needed to parse one).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

__all__ = ["Broker", "parse_broker"]


@dataclass(frozen=True, slots=True)
class Broker:
    """Where to connect: ``mqtt://[user:password@]host[:port]`` or ``mqtts://...``."""

    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None

    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def parse_broker(url: str) -> Broker:
    """Parse a broker URL; ValueError says what is wrong with it."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"broker URL {url!r}: scheme must be mqtt:// or mqtts://")
    if not parts.hostname:
        raise ValueError(f"broker URL {url!r}: no host")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"broker URL {url!r}: only mqtt[s]://[user:password@]host[:port]")
    try:
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"broker URL {url!r}: bad port ({exc})") from None
    tls = parts.scheme == "mqtts"
    return Broker(
        parts.hostname,
        port if port is not None else (8883 if tls else 1883),
        tls,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
    )



"""The embedded MQTT broker (amqtt, pure Python): who may log in, and what each board may do.

Without a boards file (the demo, a board on this machine) anyone may connect, and the broker
listens on loopback only. With one (``[mqtt] boards_file``, a mosquitto_passwd file), every
client logs in: a board as itself, publishing and subscribing only under its own topics
(:func:`cairn_edge.boards.own_filters`); the edge's own client with a login made at start
(:class:`cairn_edge.boards.EdgeLogin`), subscribing to everything and publishing nothing.
The broker itself is :func:`cairn.brokers.start_embedded`; this module is the edge's policy
for it. Imported only when the embedded broker starts (amqtt is an optional dependency).
"""

from __future__ import annotations

import hmac
import logging
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from amqtt.contexts import Action  # type: ignore[import-untyped]
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin  # type: ignore[import-untyped]

from cairn.brokers import start_embedded
from cairn.settings import ConfigError
from cairn_edge.adapters import Route
from cairn_edge.boards import EdgeLogin, check_password, is_loopback, own_filters, topic_allowed

__all__ = ["BoardLogin", "BoardTopics", "start"]

log = logging.getLogger(__name__)


class _Quiet:
    """One warning per kind per minute, with how many were not logged (a client that tries
    again and again must not fill the disk with log lines)."""

    def __init__(self, period: float = 60.0) -> None:
        self.period = period
        self.last: dict[str, float] = {}
        self.quiet: Counter[str] = Counter()

    def warn(self, kind: str, message: str, *args: object) -> None:
        now = time.monotonic()
        last = self.last.get(kind)
        if last is not None and now - last < self.period:
            self.quiet[kind] += 1
            return
        self.last[kind] = now
        more = self.quiet.pop(kind, 0)
        log.warning(message + (f" ({more} more not logged)" if more else ""), *args)


_quiet = _Quiet()


class BoardLogin(BaseAuthPlugin):  # type: ignore[misc]
    """A board logs in with its name and password (none needed without a boards file); the
    edge with its login of this start. Nobody else may take the edge's client id."""

    @dataclass
    class Config:
        boards: dict[str, str] = field(default_factory=dict)  # name -> mosquitto_passwd hash
        anonymous: bool = False
        edge_user: str = ""
        edge_secret: str = ""
        edge_client_id: str = ""

    async def authenticate(self, *, session: Any) -> bool:
        cfg = self.context.config
        user, password = session.username, session.password or ""
        edge = bool(cfg.edge_user) and user == cfg.edge_user and hmac.compare_digest(
            str(password).encode(), cfg.edge_secret.encode())
        if cfg.edge_client_id and session.client_id == cfg.edge_client_id and not edge:
            _quiet.warn("client-id", "refused a client taking the edge's client id (user %r)",
                        str(user)[:64])
            return False
        if edge or cfg.anonymous:
            return True
        hashed = cfg.boards.get(user) if isinstance(user, str) else None
        if hashed is not None and check_password(hashed, str(password)):
            return True
        _quiet.warn("login", "refused a login as %r: %s", str(user)[:64],
                    "no such board" if hashed is None else "wrong password")
        return False


class BoardTopics(BaseTopicPlugin):  # type: ignore[misc]
    """Each board publishes and subscribes under its own topics only; the edge reads all."""

    @dataclass
    class Config:
        filters: dict[str, list[str]] = field(default_factory=dict)  # board -> own filters
        anonymous: bool = False
        edge_user: str = ""

    async def topic_filtering(self, *, session: Any = None, topic: str | None = None,
                              action: Any = None) -> bool:
        cfg = self.context.config
        if cfg.anonymous or action == Action.RECEIVE:
            return True  # (what a client receives is what its subscriptions allowed)
        user = session.username if session is not None else None
        if cfg.edge_user and user == cfg.edge_user:
            return bool(action == Action.SUBSCRIBE)
        allowed = topic is not None and topic_allowed(topic, cfg.filters.get(user, []))
        if not allowed and action == Action.PUBLISH:
            _quiet.warn("publish", "refused board %r publishing to %r: not one of its topics",
                        str(user)[:64], (topic or "")[:200])
        return allowed


async def start(host: str, port: int, *, boards: Mapping[str, str] | None = None,
                routes: Sequence[Route] = (), edge: EdgeLogin | None = None) -> Any:
    """Start the broker on ``host:port``; ConfigError for a listener beyond this machine
    without a boards file."""
    if boards is None and not is_loopback(host):
        raise ConfigError(f"[mqtt].listen: the embedded broker would take anonymous clients on "
                          f"{host}, beyond this machine: give [mqtt].boards_file (board "
                          "logins) or listen on 127.0.0.1")
    anonymous = boards is None
    login: dict[str, Any] = {"boards": dict(boards or {}), "anonymous": anonymous}
    if edge is not None:
        login.update(edge_user=edge.user, edge_secret=edge.secret, edge_client_id=edge.client_id)
    topics: dict[str, Any] = {
        "filters": {name: own_filters(name, routes) for name in boards or {}},
        "anonymous": anonymous, "edge_user": edge.user if edge is not None else ""}
    return await start_embedded(host, port, plugins={f"{__name__}.BoardLogin": login,
                                                     f"{__name__}.BoardTopics": topics})

"""Who may use the gateway's API, and the floor under every answer it gives.

Two bearer tokens, each in its own file (mode 0600, like a seed):

============  =======================================================================
read token    GET and HEAD on every route: Grafana's data source, Prometheus' scrape
admin token   every method, so also what changes state (POST, PUT, PATCH, DELETE)
============  =======================================================================

``GET /healthz`` and ``/readyz`` are open (a probe learns only that the gateway runs and
whether it collects, with no path or key). A request without
a valid token is a 401 with ``WWW-Authenticate: Bearer``; the read token on a method that
changes state is a 403. With no read token configured, reads are open (the gateway refuses to
start that way on an address other than loopback: :func:`cairn_gateway.serve.check_listen`);
with no admin token configured, nothing that changes state is allowed at all. Tokens are
compared in constant time.

:class:`Guard` is an ASGI middleware: it covers every route, the OpenAPI pages and unknown
paths alike, whoever adds them. It also bounds request bodies (413) and the time to receive
them (408), turns a number too large for SQLite into a 400, and any other unexpected error
into a 500 ``{"detail": "internal error"}``, logged as one line, never a traceback body.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cairn.errors import RemoteError, UsageError
from cairn.fleet.identity import read_secret, write_secret

__all__ = ["OPEN_PATHS", "ApiAuth", "Guard", "TokenError", "load_token", "new_token"]

log = logging.getLogger(__name__)

#: paths answered to GET and HEAD without a token
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
READ_METHODS = frozenset({"GET", "HEAD"})
MIN_TOKEN_CHARS = 32

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class TokenError(UsageError, ValueError):
    """A token file is missing, unreadable, too short or readable by others."""


def new_token(path: str | Path) -> str:
    """Write a fresh random token (43 URL-safe characters, 256 bits) to ``path``, which must
    not exist, mode 0600. Returns it."""
    token = secrets.token_urlsafe(32)
    write_secret(path, token, TokenError, "token")
    return token


def load_token(path: str | Path, what: str) -> bytes:
    """The token in ``path`` (its one line, surrounding whitespace stripped)."""
    text = read_secret(path, TokenError, what, "`cairn gateway init` writes one, or put "
                       f"{MIN_TOKEN_CHARS}+ random characters in it (chmod 600)")
    if len(text) < MIN_TOKEN_CHARS or not text.isprintable() or any(c.isspace() for c in text):
        raise TokenError(f"{Path(path)} does not hold a {what}: one line of at least "
                         f"{MIN_TOKEN_CHARS} printable characters without spaces")
    return text.encode("ascii")


@dataclass(frozen=True, slots=True)
class ApiAuth:
    """The tokens the API accepts; ``None``: not configured (see the module docstring)."""

    read: bytes | None = None
    admin: bytes | None = None

    @classmethod
    def from_files(cls, read: Path | None, admin: Path | None) -> ApiAuth:
        auth = cls(None if read is None else load_token(read, "read token"),
                   None if admin is None else load_token(admin, "admin token"))
        if auth.read is not None and auth.read == auth.admin:
            raise TokenError(f"{read} and {admin} hold the same token: the read token (given "
                             "to Grafana and Prometheus) would be an admin token")
        return auth

    def check(self, method: str, authorization: bytes | None) -> tuple[int, str] | None:
        """None if the request may go on, else (status, reason)."""
        given = _bearer(authorization)
        admin = given is not None and self.admin is not None \
            and hmac.compare_digest(given, self.admin)
        if method in READ_METHODS:
            if self.read is None or admin:
                return None
            if given is not None and hmac.compare_digest(given, self.read):
                return None
            return 401, _why(authorization, given, "a read token")
        if admin:
            return None
        if self.admin is None:
            return 403, "changing state needs the admin token and none is configured " \
                        "([api].admin_token_file)"
        if given is not None and self.read is not None and hmac.compare_digest(given, self.read):
            return 403, f"{method} needs the admin token; this is the read token"
        return 401, _why(authorization, given, "the admin token")


def _bearer(header: bytes | None) -> bytes | None:
    if header is None:
        return None
    scheme, _, value = header.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not value.strip():
        return None
    return value.strip()


def _why(header: bytes | None, given: bytes | None, needed: str) -> str:
    if header is None:
        return f"no Authorization header: send 'Authorization: Bearer <token>' with {needed}"
    if given is None:
        return "the Authorization header is not 'Bearer <token>'"
    return f"wrong token: this needs {needed}"


class Guard:
    """The API's outermost layer (inside uvicorn, outside FastAPI): see the module docstring."""

    def __init__(self, app: ASGIApp, auth: ApiAuth | None = None, *,
                 max_body_bytes: int = 65536, body_timeout: float = 10.0) -> None:
        self.app = app
        self.auth = auth if auth is not None else ApiAuth()
        self.max_body_bytes = max_body_bytes
        self.body_timeout = body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if scope["path"] not in OPEN_PATHS or scope["method"] not in READ_METHODS:
            refused = self.auth.check(scope["method"], headers.get(b"authorization"))
            if refused is not None:
                extra = [(b"www-authenticate", b'Bearer realm="cairn"')] \
                    if refused[0] == 401 else []
                await _answer(send, refused[0], refused[1], extra)
                return
        length = headers.get(b"content-length", b"0")
        if not length.isdigit() or int(length) > self.max_body_bytes:
            await _answer(send, 413, f"the body is larger than {self.max_body_bytes} bytes")
            return
        started = False
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        got = 0

        async def bounded_receive() -> Message:
            nonlocal got
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise _BodyError(408, "the request body took longer than "
                                      f"{self.body_timeout:g} s") from None
            got += len(message.get("body", b""))
            if got > self.max_body_bytes:
                raise _BodyError(413, f"the body is larger than {self.max_body_bytes} bytes")
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, bounded_receive, tracked_send)
        except _BodyError as exc:
            if not started:
                await _answer(send, exc.status, exc.reason)
        except OverflowError as exc:  # an integer SQLite cannot hold, from a query parameter
            if not started:
                await _answer(send, 400, f"a number in the request is out of range: {exc}")
        except Exception as exc:
            log.error("API %s %s failed: %s: %s", scope["method"], scope["path"],
                      type(exc).__name__, str(exc)[:200])
            if not started:
                await _answer(send, 500, "internal error (logged by the gateway)")


class _BodyError(RemoteError):
    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


async def _answer(send: Send, status: int, reason: str,
                  extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"detail": reason}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *(extra or [])]})
    await send({"type": "http.response.body", "body": body})

"""The API's HTTP server: uvicorn (h11) with the limits a hostile network needs.

uvicorn alone holds a connection that sends half a request for as long as the client likes
(there is no header timeout), accepts connections until the process runs out of file
descriptors, and then logs a traceback for every failed ``accept``. Here:

- a client has ``request_timeout`` seconds from its connection (or from the first byte after a
  response) to finish a request's headers, else the connection is closed (a slowloris client
  holding many half-sent requests is cut within that bound);
- a client that stops reading an answer (the server's send buffer full) for
  ``request_timeout`` seconds is disconnected, so it cannot hold a request's task for ever;
- at most ``max_connections`` are open: a new one past that drops the oldest connection still
  sending its headers, so an honest client is served while slow ones wait to be cut (if every
  connection is busy with a request, the new one is dropped instead);
- request line and headers larger than ``max_header_bytes`` are a 431 (:class:`HeaderLimit`),
  or a 400 while they still arrive (h11's limit);
- ``accept`` failing for lack of file descriptors (EMFILE, ENFILE...) is logged as one line
  per ``LOG_INTERVAL`` seconds with a count; asyncio retries the accept a second later, so
  the server serves again as soon as descriptors free up. Dropped and cut connections and
  malformed requests (uvicorn: a warning each) are counted and logged the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import os
import resource
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from cairn.errors import ServiceError
from cairn.settings import ConfigError

__all__ = ["LOG_INTERVAL", "ApiLimits", "HeaderLimit", "RateLimitedLog", "accept_error_handler",
           "check_listen", "is_loopback", "make_server", "protocol_class", "serve_api",
           "serving"]

log = logging.getLogger(__name__)

LOG_INTERVAL = 10.0
_OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


@dataclass(frozen=True, slots=True)
class ApiLimits:
    max_connections: int = 256
    request_timeout: float = 10.0
    max_header_bytes: int = 16384


class RateLimitedLog:
    """One warning per ``interval`` seconds per kind of event, with how many there were."""

    def __init__(self, interval: float = LOG_INTERVAL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.clock = clock
        self.counts: dict[str, int] = {}  # events since the last line, per kind
        self.last: dict[str, float] = {}  # when that line was logged
        self.totals: dict[str, int] = {}

    def note(self, kind: str, what: str) -> bool:
        """Count one event; log a line if the last one of its kind is ``interval`` old.
        Returns whether a line was logged."""
        self.totals[kind] = self.totals.get(kind, 0) + 1
        self.counts[kind] = self.counts.get(kind, 0) + 1
        now = self.clock()
        if now - self.last.get(kind, -float("inf")) < self.interval:
            return False
        n = self.counts.pop(kind)
        self.last[kind] = now
        log.warning("API: %s (%d time%s since the last such line)", what, n,
                    "" if n == 1 else "s")
        return True


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_listen(host: str, port: int, read_token: bool) -> None:
    """Refuse an API open to the network without a read token (:class:`ConfigError`)."""
    if not read_token and not is_loopback(host):
        raise ConfigError(f"[api].listen {host}:{port} is reachable from other hosts but "
                          "[api].read_token_file is not set: set it (and admin_token_file; "
                          "`cairn gateway init` writes both) or listen on 127.0.0.1")


def protocol_class(limits: ApiLimits, events: RateLimitedLog) -> type[H11Protocol]:
    """uvicorn's h11 protocol with the header deadline and the connection cap."""
    waiting: dict[Any, None] = {}  # connections still sending headers, oldest first

    class Guarded(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None  # for the headers of a request
        _stalled: asyncio.TimerHandle | None = None  # for a client that does not read

        def _arm(self) -> None:
            waiting[self] = None
            if self._deadline is None:
                self._deadline = self.loop.call_later(limits.request_timeout, self._expire)

        def _disarm(self) -> None:
            waiting.pop(self, None)
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _idle(self) -> bool:
            return self.cycle is None or self.cycle.response_complete

        def _expire(self) -> None:
            self._deadline = None
            if self._idle() and not self.transport.is_closing():
                events.note("slow", f"closed connections that took over "
                                    f"{limits.request_timeout:g} s to send a request")
                self.transport.abort()
            waiting.pop(self, None)

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()
            if len(self.connections) > limits.max_connections:
                victim = next((c for c in waiting if c is not self), self)
                events.note("cap", f"{limits.max_connections} connections open "
                                   "([api].max_connections): dropped the oldest one still "
                                   "sending its request")
                waiting.pop(victim, None)
                victim.transport.abort()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            if self._stalled is not None:
                self._stalled.cancel()
                self._stalled = None
            super().connection_lost(exc)

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            if self._idle():
                self._arm()  # part of a request: its headers have a deadline
            else:
                self._disarm()  # the headers are in: the app's time now

        def pause_writing(self) -> None:
            """The client stopped reading: it has ``request_timeout`` to start again."""
            super().pause_writing()
            if self._stalled is None:
                self._stalled = self.loop.call_later(limits.request_timeout, self._stall)

        def resume_writing(self) -> None:
            super().resume_writing()
            if self._stalled is not None:
                self._stalled.cancel()
                self._stalled = None

        def _stall(self) -> None:
            self._stalled = None
            if not self.transport.is_closing():
                events.note("stalled", "closed connections that stopped reading an answer for "
                                       f"{limits.request_timeout:g} s")
                self.transport.abort()

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and self._idle():
                waiting.pop(self, None)  # idle under keep-alive until its next byte

    return Guarded


class HeaderLimit:
    """A request whose line and headers are over ``limit`` bytes is a 431. (h11's limit covers
    only a request still arriving: one that comes in a single read passes it.)"""

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            size = len(scope["raw_path"]) + len(scope["query_string"]) + sum(
                len(k) + len(v) + 4 for k, v in scope["headers"])
            if size > self.limit:
                body = (f'{{"detail": "the request line and headers are {size} bytes (at most '
                        f'{self.limit})"}}').encode()
                await send({"type": "http.response.start", "status": 431,
                            "headers": [(b"content-type", b"application/json"),
                                        (b"content-length", str(len(body)).encode()),
                                        (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


def make_server(app: Any, host: str, port: int, limits: ApiLimits,
                events: RateLimitedLog | None = None) -> uvicorn.Server:
    events = events if events is not None else RateLimitedLog()
    config = uvicorn.Config(HeaderLimit(app, limits.max_header_bytes), host=host, port=port,
                            log_level="warning", lifespan="off",
                            http=protocol_class(limits, events), ws="none",
                            h11_max_incomplete_event_size=limits.max_header_bytes,
                            timeout_keep_alive=5, server_header=False)
    return uvicorn.Server(config)


def accept_error_handler(events: RateLimitedLog) -> Callable[[asyncio.AbstractEventLoop,
                                                             dict[str, Any]], None]:
    """A loop exception handler: an ``accept`` that failed for lack of resources is one
    rate-limited line, not a traceback; anything else goes to asyncio's default handler."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _OUT_OF_RESOURCES \
                and "accept" in str(context.get("message", "")):
            events.note("accept", f"cannot accept connections: {exc.strerror or exc} "
                                  "(raise the unit's LimitNOFILE or lower "
                                  "[api].max_connections); retrying every second")
            return
        if _late_accept_retry(context):
            return
        loop.default_exception_handler(context)

    return handle


def _late_accept_retry(context: dict[str, Any]) -> bool:
    """asyncio's retry of a failed ``accept`` (armed for 1 s later) that fired after the server
    closed its socket: a ValueError about fd -1, with nothing left to accept on."""
    callback = getattr(context.get("handle"), "_callback", None)
    return isinstance(context.get("exception"), ValueError) \
        and getattr(callback, "__name__", "") == "_start_serving"


def _without_late_accept_retries(previous: Callable[[asyncio.AbstractEventLoop,
                                                     dict[str, Any]], object] | None
                                 ) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """The loop's previous exception handler, less the accept retries still armed when the
    server stopped (they fire on a loaded machine while the process shuts down)."""

    def handle(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if _late_accept_retry(context):
            return
        if previous is not None:
            previous(loop, context)
        else:
            loop.default_exception_handler(context)

    return handle


@contextlib.asynccontextmanager
async def serving(app: Any, host: str, port: int, limits: ApiLimits
                  ) -> AsyncIterator[tuple[str, int]]:
    """Serve ``app`` while the block runs; yields the address it listens on. Raises
    :class:`OSError`-derived errors with a clear message if it cannot listen."""
    async with _running(app, host, port, limits) as (address, _task):
        yield address


async def serve_api(app: Any, host: str, port: int, limits: ApiLimits, *,
                    ready: Callable[[tuple[str, int]], None] | None = None) -> None:
    """Serve ``app`` until cancelled (then stop gracefully); ``ready(address)`` once it
    listens. A task of the gateway daemon's task group: a server that stops on its own is a
    :class:`ServiceError`, so the daemon fails loudly instead of running without its API."""
    async with _running(app, host, port, limits) as (address, task):
        if ready is not None:
            ready(address)
        await asyncio.wait({task})  # not `await task`: a cancellation stops it gracefully
        why = None if task.cancelled() else task.exception()
    raise ServiceError(f"the API on {host}:{port} stopped on its own"
                       + (f": {why!r}" if why is not None else "")) from why


def _check_listen(host: str, port: int) -> None:
    """:class:`ServiceError` in one line, before uvicorn logs its own, when ``host:port``
    cannot be listened on (in use, or not an address of this host)."""
    try:
        with socket.create_server((host, port)):
            pass
    except OSError as exc:
        why = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ServiceError(f"the API cannot listen on {host}:{port} ({why}): stop the process "
                           "that holds it or set another [api].listen") from None


async def _serve(server: Any) -> None:
    """uvicorn's ``serve``, with the ``sys.exit`` it calls when it cannot start (a port in
    use) turned into an error of this task: a SystemExit raised in a task would leave the
    event loop itself and end the process with a traceback."""
    try:
        await server.serve()
    except SystemExit as exc:
        raise ServiceError(f"the API server exited with status {exc.code}") from None


@contextlib.asynccontextmanager
async def _running(app: Any, host: str, port: int, limits: ApiLimits
                   ) -> AsyncIterator[tuple[tuple[str, int], asyncio.Task[None]]]:
    """The server's task while the block runs (scoped: created here, awaited on the way
    out), with the address it listens on."""
    _check_listen(host, port)
    loop = asyncio.get_running_loop()
    events = RateLimitedLog()
    previous = loop.get_exception_handler()
    loop.set_exception_handler(accept_error_handler(events))
    quiet = _MalformedRequests(events)
    files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if files != resource.RLIM_INFINITY and files < limits.max_connections + 64:
        log.warning("API: [api].max_connections is %d but this process may open only %d "
                    "files: raise LimitNOFILE (ulimit -n) or lower max_connections",
                    limits.max_connections, files)
    logging.getLogger("uvicorn.error").addFilter(quiet)
    server = make_server(app, host, port, limits, events)
    task = asyncio.create_task(_serve(server))
    try:
        while not server.started:  # uvicorn says it is up only through this flag
            if task.done():
                with contextlib.suppress(BaseException):
                    task.result()  # uvicorn logged why (a port in use...)
                raise ServiceError(f"the API could not listen on {host}:{port} (in use by "
                                   "another process, or not an address of this host): stop "
                                   "that process or set another [api].listen")
            await asyncio.sleep(0.01)
        yield server.servers[0].sockets[0].getsockname()[:2], task
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        loop.set_exception_handler(_without_late_accept_retries(previous))
        logging.getLogger("uvicorn.error").removeFilter(quiet)
        if events.totals:
            log.warning("API: since it started: %s", ", ".join(
                f"{n} {_TOTALS.get(kind, kind)}" for kind, n in sorted(events.totals.items())))


_TOTALS = {"accept": "failed accepts (out of file descriptors)",
           "cap": "connections dropped at max_connections",
           "invalid": "malformed requests",
           "slow": "connections cut for slow requests",
           "stalled": "connections cut for not reading"}


class _MalformedRequests(logging.Filter):
    """uvicorn logs a warning for every malformed request (a 400): counted instead."""

    def __init__(self, events: RateLimitedLog) -> None:
        super().__init__()
        self.events = events

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage() == "Invalid HTTP request received.":
            self.events.note("invalid", "answered 400 to malformed requests (or headers over "
                                        "[api].max_header_bytes)")
            return False
        return True

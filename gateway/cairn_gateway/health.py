"""The gateway's health: ``/healthz`` (alive: the process serves) and ``/readyz`` (ready: it
collects and can store), the line it logs per round and per live-push period.

:class:`GatewayHealth` is told each finished round (:meth:`~GatewayHealth.round_done`) and
each batch of samples a live push stored (:meth:`~GatewayHealth.live_stored`). ``/readyz``
answers 200 when every check passes, else 503, with a JSON body naming each check::

    {"ready": false, "checks": {
        "collecting": {"ok": false, "detail": "nothing stored for 1h2m (3 rounds of 10 s) ..."},
        "store": {"ok": true, "detail": "writable"}}}

- ``collecting``: a round or a live push stored samples within the last ``ready_rounds``
  collect intervals; or the last round, within that time, found no device to collect (an
  empty fleet is not a failure). Before the first round ends: not ready.
- ``store``: a file can be made in the data directory, and the database file is writable.

A round is logged in one info line (devices, blocks, samples, errors, duration; in JSON logs
the same as fields). Live pushes are summed and logged at most every ``LIVE_SUMMARY_EVERY``
seconds, when samples arrive.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from cairn.errors import StorageError

__all__ = ["LIVE_SUMMARY_EVERY", "STORE_CHECK_EVERY", "Alive", "Check", "Checks",
           "GatewayHealth", "Readiness", "RoundSummary", "add_health_routes"]

log = logging.getLogger("cairn_gateway.daemon")

LIVE_SUMMARY_EVERY = 60.0  # seconds between live-push summary lines at most
STORE_CHECK_EVERY = 1.0  # seconds a store check's answer is reused


@dataclass(frozen=True, slots=True)
class RoundSummary:
    """What one collection round did."""

    number: int
    devices: int  # devices whose streams were tried (not those waiting out a backoff)
    streams: int
    blocks: int
    samples: int
    errors: int  # streams that failed (unreachable edges, refused, stopped)
    duration: float  # seconds

    @classmethod
    def of(cls, number: int, devices: int, results: Iterable[Any],
           duration: float) -> RoundSummary:
        """From the round's ``SyncResult`` list (anything with ``blocks``, ``samples`` and
        ``error``)."""
        rs = list(results)
        return cls(number, devices, len(rs), sum(r.blocks for r in rs),
                   sum(r.samples for r in rs), sum(r.error is not None for r in rs), duration)

    def line(self) -> str:
        return (f"round {self.number}: {self.devices} devices, {self.streams} streams, "
                f"{self.blocks} blocks, {self.samples} samples, {self.errors} errors "
                f"in {self.duration:.2f} s")

    def fields(self) -> dict[str, Any]:
        return {"round": self.number, "devices": self.devices, "streams": self.streams,
                "blocks": self.blocks, "samples": self.samples, "errors": self.errors,
                "duration_s": round(self.duration, 3)}


def _ago(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m}m" if h else f"{m}m{s}s" if m else f"{s}s"


class GatewayHealth:
    """What the gateway did lately, on ``clock`` (monotonic seconds)."""

    def __init__(self, data_dir: Path, db: Path | None, interval: float, ready_rounds: int, *,
                 clock: Callable[[], float] = time.monotonic,
                 server: Callable[[], str | None] | None = None) -> None:
        self.data_dir = data_dir
        self.db = db  # the SQLite file (None: the store is on a database server)
        self.server = server  # a store on a server: why it takes no writes (None: it does)
        self.interval = interval
        self.ready_rounds = ready_rounds
        self.clock = clock
        self.started = clock()
        self.rounds = 0
        self.last_round: float | None = None  # when the last round ended
        self.last_empty: float | None = None  # ...when it had no device to collect
        self.last_stored: float | None = None  # when a round or a live push stored samples
        self.live_samples = self.live_batches = 0  # since the last live summary line
        self.live_since = self.started
        self._store_checked: tuple[float, tuple[bool, str]] | None = None

    # -- what happened ---------------------------------------------------------------------------

    def round_done(self, summary: RoundSummary) -> None:
        """A round ended: remember it and log its line."""
        now = self.clock()
        self.rounds += 1
        self.last_round = now
        self.last_empty = now if summary.devices == 0 else None
        if summary.samples:
            self.last_stored = now
        log.info("%s", summary.line(), extra=summary.fields())

    def round_failed(self) -> None:
        self.rounds += 1

    def live_stored(self, samples: int) -> None:
        """A live push stored ``samples``; a summary line at most every LIVE_SUMMARY_EVERY."""
        now = self.clock()
        if samples:
            self.last_stored = now
        self.live_samples += samples
        self.live_batches += 1
        if now - self.live_since >= LIVE_SUMMARY_EVERY:
            log.info("live push: %d samples in %d batches in the last %.0f s",
                     self.live_samples, self.live_batches, now - self.live_since,
                     extra={"live_samples": self.live_samples,
                            "live_batches": self.live_batches,
                            "period_s": round(now - self.live_since, 3)})
            self.live_samples = self.live_batches = 0
            self.live_since = now

    # -- checks ----------------------------------------------------------------------------------

    def collecting(self) -> tuple[bool, str]:
        now = self.clock()
        bound = self.ready_rounds * self.interval
        if self.last_stored is not None and now - self.last_stored <= bound:
            return True, f"stored samples {_ago(now - self.last_stored)} ago"
        if self.last_empty is not None and now - self.last_empty <= bound:
            return True, "no device to collect (the fleet is empty, or other gateways on the " \
                "shared store hold every lease); the last round ended " \
                f"{_ago(now - self.last_empty)} ago"
        if self.last_round is None:
            return False, f"no collection round has ended yet (started {_ago(now - self.started)}" \
                " ago)"
        since = "nothing stored since the gateway started" if self.last_stored is None \
            else f"nothing stored for {_ago(now - self.last_stored)}"
        return False, (f"{since} ({self.ready_rounds} rounds of {self.interval:g} s): are the "
                       "edges running, enrolled and reachable? (`cairn gateway edges`)")

    def store(self) -> tuple[bool, str]:
        """Whether the data directory and the database take writes; the probe file is made
        at most once every ``STORE_CHECK_EVERY`` seconds (``/readyz`` needs no token: a flood of
        probes must not become a flood of writes)."""
        now = self.clock()
        if self._store_checked is not None and now - self._store_checked[0] < STORE_CHECK_EVERY:
            return self._store_checked[1]
        result = self._check_store()
        self._store_checked = (now, result)
        return result

    def _check_store(self) -> tuple[bool, str]:
        try:
            fd, name = tempfile.mkstemp(prefix=".readyz-", dir=self.data_dir)
            try:
                os.write(fd, b"ok")
            finally:
                os.close(fd)
                os.unlink(name)
        except OSError as exc:
            # (no path: /readyz is open to probes without a token)
            return False, f"cannot write in the data directory: {exc.strerror or 'failed'}"
        if self.db is not None and self.db.exists() and not os.access(self.db, os.W_OK):
            return False, "the database file (gw.db) is not writable"
        if self.server is not None:
            problem = self.server()
            if problem is not None:
                return False, f"the database server: {problem}"
        return True, "writable"

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        checks = {}
        for name, check in (("collecting", self.collecting), ("store", self.store)):
            ok, detail = check()
            checks[name] = {"ok": ok, "detail": detail}
        ready = all(c["ok"] for c in checks.values())
        return ready, {"ready": ready, "rounds": self.rounds, "checks": checks}


class Alive(BaseModel):
    """``/healthz``: the gateway serves."""

    ok: bool
    streams: int | None = Field(description="streams in the store (null: the store cannot "
                                "be read now, its database server down: /readyz says why)")


class Check(BaseModel):
    ok: bool
    detail: str = Field(description="what the check found, in words")


class Checks(BaseModel):
    collecting: Check
    store: Check


class Readiness(BaseModel):
    """``/readyz``: 200 when every check passes, else 503 (the same body)."""

    ready: bool
    rounds: int = Field(description="collection rounds ended since the gateway started")
    checks: Checks


def add_health_routes(app: FastAPI, health: GatewayHealth | None,
                      streams: Callable[[], int]) -> None:
    """``/healthz``: 200 while the process serves. ``/readyz``: 200 or 503 with the checks
    (without ``health``, no collection runs here: the checks pass)."""

    @app.get("/healthz")
    async def healthz() -> Alive:
        try:  # alive whatever the store's server does (a liveness probe must not restart us)
            count: int | None = streams()
        except StorageError:
            count = None
        return Alive(ok=True, streams=count)

    @app.get("/readyz", response_model=Readiness,
             responses={503: {"model": Readiness, "description": "a check failed"}})
    async def readyz() -> JSONResponse:
        if health is None:
            ok = Check(ok=True, detail="no collection in this process")
            return JSONResponse(Readiness(ready=True, rounds=0, checks=Checks(
                collecting=ok, store=ok)).model_dump())
        ready, body = health.readiness()
        return JSONResponse(Readiness.model_validate(body).model_dump(),
                            status_code=200 if ready else 503)

"""The gateway's HTTP API: an ASGI app (FastAPI, with its OpenAPI spec at ``/openapi.json``).

Shaped for Grafana's Infinity data source: JSON arrays of flat objects, times in epoch seconds,
windows as ``from`` / ``to`` (epoch seconds) and ``step`` (seconds). Also ``/metrics`` for
Prometheus (written by :mod:`cairn_gateway.metrics`) and ``/healthz``. Devices are named by
their enrolled name (:mod:`cairn_gateway.roster`) and record key; a value is ``verified`` when
every block was verified to its device's key and the device is enrolled; log keys (the
capability to replicate a stream) are never served.

Every parameter is checked: a window the wrong way round, a step that is not a multiple of a
minute, or a window that would return more than ``MAX_POINTS`` rows is a 400 that says so.
Queries run on the event loop's thread, one at a time (one SQLite connection); their SQL is
in :mod:`cairn_gateway.queries` (typed rows), this module routes, checks and shapes.

Kinds of value (issue 20): a sample's value comes in its kind, JSON numbers, ``true``/``false``
and strings (data, SenML ``vd``: hex), with ``kind`` (``number``, ``boolean``, ``string``,
``data``); a stream has the kind of its first sample (``kind`` in ``/api/streams``, which
``?kind=boolean,string`` filters). ``/api/rollups`` of a boolean stream has ``mean`` = the share
of true; of a string or data stream, ``n`` and ``last`` per bucket (``mean``, ``min``, ``max``
null). Strings are served as stored: JSON escapes control characters, so a value cannot break
out of its field; in ``/metrics`` only numbers and booleans (1 or 0) appear.

Every request passes :class:`cairn_gateway.auth.Guard` first (bearer tokens, body limits,
errors as JSON without tracebacks); :mod:`cairn_gateway.serve` bounds the connections.
"""

from __future__ import annotations

import math
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import PlainTextResponse, Response
from pydantic import BaseModel, Field

from cairn.fleet.enrollment import EnrollmentError, parse_enrollment, parse_record_key
from cairn_gateway import queries
from cairn_gateway.auth import ApiAuth, Guard
from cairn_gateway.metrics import CONTENT_TYPE, GatewayMetrics
from cairn_gateway.roster import Roster, RosterError, display_name, reach
from cairn_gateway.schedule import EdgeStatus
from cairn_gateway.store import KINDS, ROLLED_UP, Store, describe_missing

__all__ = ["MAX_POINTS", "make_app"]

MAX_POINTS = 100_000


def _window(start: float, end: float) -> None:
    if not (math.isfinite(start) and math.isfinite(end)):
        raise HTTPException(400, "from and to must be finite epoch seconds")
    if end <= start:
        raise HTTPException(400, f"the window is empty or backwards: from {start:g} to {end:g}")


#: (stream id, from, to) -> fetch that window from its edge first, for on-demand streams
OnDemand = Callable[[int, float, float], Awaitable[object]]
#: each edge tried so far (by device record key) -> whether it is reachable, its backoff
Edges = Callable[[], Mapping[bytes, EdgeStatus]]


class Enrol(BaseModel):
    """``POST /api/devices``: an enrollment string, or a record key and a name."""

    enrollment: str | None = Field(None, max_length=200)
    record_key: str | None = Field(None, max_length=200)
    name: str | None = Field(None, max_length=200)


def make_app(store: Store, *, on_demand: OnDemand | None = None,
             demand: Callable[[int], bool] = lambda _stream: False,
             edges: Edges = dict, auth: ApiAuth | None = None,
             max_body_bytes: int = 65536, body_timeout: float = 10.0,
             metrics: GatewayMetrics | None = None) -> FastAPI:
    """The API over ``store``; ``auth``: its tokens (None: reads open, no state changes),
    checked with the limits by :class:`cairn_gateway.auth.Guard` on every route;
    ``metrics``: what ``/metrics`` serves (None: the store's and ``edges``' alone)."""
    app = FastAPI(title="Cairn gateway", version="1",
                  description="Verified sensor samples from a fleet's signed logs.")
    app.add_middleware(Guard, auth=auth, max_body_bytes=max_body_bytes,  # every route
                       body_timeout=body_timeout)
    conn = store.conn

    def stream_exists(stream: int) -> None:
        if not queries.stream_exists(conn, stream):
            raise HTTPException(404, f"no stream {stream}")

    async def fill(stream: int, start: float, end: float) -> None:
        """An on-demand stream: download the window from the edge before answering."""
        if on_demand is not None and demand(stream):
            await on_demand(stream, start, end)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "streams": queries.stream_count(conn)}

    @app.get("/api/devices")
    async def devices() -> list[dict[str, Any]]:
        """Each device the store knows: enrolled ones, removed ones (``removed``: their data is
        kept and flagged), and any stored before enrollment existed (``enrolled`` false).
        ``name`` is the enrolled name (never null). Its edge's reachability (``reachable``
        null: not tried yet), ``backoff`` (seconds, the current wait) and ``retry_in``
        (seconds to the next try). ``reach``: why it is or is not collected (``connected
        since T``, ``no address and not connected``, ``unreachable since T: error``...; null:
        not tried yet). Devices seen but not enrolled: ``/api/devices/pending``."""
        status = edges()
        states = reach(conn)
        out = []
        for d in queries.devices(conn):
            e = status.get(d.record_key)
            out.append({"id": d.id, "record_key": d.record_key.hex(),
                        "name": display_name(d.name, d.record_key),
                        "enrolled": d.enrolled is not None and d.removed is None,
                        "removed": d.removed is not None,
                        "enrolled_at": d.enrolled, "removed_at": d.removed,
                        "first_seen": d.first_seen, "last_seen": d.last_seen,
                        "reachable": None if e is None else e.reachable,
                        "failures": 0 if e is None else e.failures,
                        "backoff": 0.0 if e is None else e.backoff,
                        "retry_in": 0.0 if e is None else e.retry_in,
                        "error": None if e is None else e.error,
                        "reach": states.get(d.record_key)})
        return out

    @app.get("/api/devices/pending")
    async def pending() -> list[dict[str, Any]]:
        """Devices seen on the fleet topic but not enrolled (never downloaded): record key,
        first and last seen, and what their record says (stream names, time)."""
        return [{"record_key": m.record_key.hex(), "first_seen": m.first_seen,
                 "last_seen": m.last_seen, "streams": list(m.streams),
                 "record_time": m.record_time, "error": m.error}
                for m in Roster(conn).pending()]

    @app.post("/api/devices", status_code=201)
    async def enroll(body: Enrol) -> dict[str, Any]:
        """Enrol a device (admin token): ``enrollment``, the string ``cairn edge keys`` prints,
        or ``record_key`` (64 hex digits) with ``name``. Collected from the next round. 400:
        a string or name that is not valid; 409: the name is bound to another key, or the key
        is enrolled under another name."""
        try:
            if body.enrollment is not None:
                e = parse_enrollment(body.enrollment)
                key, name = e.record_key, body.name or e.name
            elif body.record_key is not None and body.name is not None:
                key, name = parse_record_key(body.record_key), body.name
            else:
                raise HTTPException(400, "give enrollment, or record_key and name")
            m = Roster(conn).enroll(key, name, time.time())
        except EnrollmentError as exc:
            raise HTTPException(400, str(exc)) from None
        except RosterError as exc:
            raise HTTPException(409, str(exc)) from None
        return m.as_dict()

    @app.delete("/api/devices/{name}")
    async def remove(name: str) -> dict[str, Any]:
        """Stop collecting the enrolled device ``name`` (admin token); its data is kept,
        flagged removed. 404: no enrolled device of that name."""
        try:
            return Roster(conn).remove(name, time.time()).as_dict()
        except RosterError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.get("/api/streams")
    async def streams(device: int | None = None, kind: str | None = Query(
            None, max_length=100, description="kinds of value, comma-separated: number, "
                                              "boolean, string, data")) -> list[dict[str, Any]]:
        """Each stream: its device's name and record key, and ``verified`` (every block
        verified to the device's key, which is enrolled); ``kind``: its kind of value (null
        before its first sample), ``other_kind``: samples stored of another kind. Log keys
        are never served."""
        kinds = None
        if kind is not None:
            kinds = frozenset(k.strip() for k in kind.split(","))
            if not kinds <= set(KINDS):
                bad = sorted(kinds - set(KINDS))[0]
                raise HTTPException(400, f"kind {bad[:20]!r} is not one of {', '.join(KINDS)}")
        return [{"id": s.id, "device_id": s.device_id,
                 "device": display_name(s.device_name, s.record_key),
                 "record_key": s.record_key.hex(), "name": s.name, "unit": s.unit,
                 "stored_blocks": s.stored_blocks, "status": s.status,
                 "verified": s.verified, "removed": s.removed, "kind": s.kind,
                 "other_kind": s.other_kind}
                for s in queries.streams(conn, device, kinds)]

    @app.get("/api/samples")
    async def samples(stream: int, from_: float = Query(alias="from"),
                      to: float = Query()) -> list[dict[str, Any]]:
        _window(from_, to)
        stream_exists(stream)
        await fill(stream, from_, to)
        n = queries.sample_count(conn, stream, from_, to)
        if n > MAX_POINTS:
            raise HTTPException(400, f"{n} samples in the window (at most {MAX_POINTS}): "
                                     "ask for rollups with a step instead")
        kind = store.kind(stream)
        return [{"time": x.time, "value": x.value, "kind": x.kind, "stream_kind": kind,
                 "block": x.block, "fork": x.fork}
                for x in queries.samples(conn, stream, from_, to)]

    @app.get("/api/rollups")
    async def rollups(stream: int, from_: float = Query(alias="from"), to: float = Query(),
                      step: int = 60) -> list[dict[str, Any]]:
        _window(from_, to)
        if step <= 0 or step % 60:
            raise HTTPException(400, f"step {step} is not a positive multiple of 60 seconds")
        if (to - from_) / step > MAX_POINTS:
            raise HTTPException(400, f"{(to - from_) / step:.0f} buckets (at most {MAX_POINTS})")
        stream_exists(stream)
        await fill(stream, from_, to)
        kind = store.kind(stream)
        if kind is not None and kind not in ROLLED_UP:  # strings, data: from the samples
            return [{"time": x.time, "n": x.n, "mean": None, "min": None, "max": None,
                     "last": x.last, "kind": kind}
                    for x in queries.states(conn, stream, from_, to, step)]
        s = store.series(stream, from_, to, step)
        return [{"time": b, "n": n, "mean": m, "min": lo, "max": hi, "kind": kind}
                for b, n, m, lo, hi in zip(s.bucket, s.n, s.mean, s.lo, s.hi, strict=True)]

    @app.get("/api/latest")
    async def latest() -> list[dict[str, Any]]:
        """Each stream's latest stored value, with its device's name and record key;
        ``verified``: every block verified and the device enrolled; ``removed``: the device
        was removed (its data is kept, not verified any more)."""
        return [{"stream": x.stream, "device": display_name(x.device_name, x.record_key),
                 "record_key": x.record_key.hex(), "name": x.name, "unit": x.unit,
                 "time": x.time, "value": x.value, "kind": x.kind,
                 "stream_kind": x.stream_kind, "verified": x.verified, "removed": x.removed}
                for x in queries.latest(conn)]

    @app.get("/api/integrity")
    async def integrity() -> list[dict[str, Any]]:
        """Each stream: ``status`` (``ok``, or why its collection stopped), and its holes:
        ``missing`` (one line: which blocks its edge would not serve, and why, or null),
        ``missing_blocks`` (how many) and ``missing_ranges`` (``start``, ``stop`` exclusive,
        ``reason``: ``damaged`` or ``not served``, ``since``); ``refused``: samples refused for
        their time; ``problem``: the last round's trouble that does not stop the stream.
        ``alert``: stopped or holes."""
        holes = store.missing()
        out = []
        for h in queries.health(conn):
            runs = holes.get(h.id, [])
            out.append({"stream": h.id, "name": h.name, "status": h.status,
                        "stored_blocks": h.stored_blocks,
                        "missing": describe_missing((a, z, r) for a, z, r, _ in runs) or None,
                        "missing_blocks": sum(z - a for a, z, _, _ in runs),
                        "missing_ranges": [{"start": a, "stop": z, "reason": r, "since": f}
                                           for a, z, r, f in runs],
                        "refused": h.refused, "problem": h.problem,
                        "alert": h.status != "ok" or bool(runs)})
        return out

    gauges = metrics if metrics is not None else GatewayMetrics(store, edges=edges)

    @app.get("/metrics", response_class=PlainTextResponse, summary="Metrics",
             operation_id="metrics_metrics_get")  # (as when the route was named metrics)
    async def metrics_text() -> Response:
        """Prometheus's text exposition (:mod:`cairn_gateway.metrics`)."""
        return Response(gauges.exposition(), media_type=CONTENT_TYPE)

    return app


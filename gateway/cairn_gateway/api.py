"""The gateway's HTTP API: an ASGI app (FastAPI, with its OpenAPI spec at ``/openapi.json``).

Shaped for Grafana's Infinity data source: JSON arrays of flat objects, times in epoch seconds.
Streams and devices are named as the CLI names them (``stream=board-1/temperature``,
``device=board-1``; numeric ids are accepted too); a window is ``from`` / ``to`` in epoch
seconds or ISO 8601 (a number in milliseconds is refused, saying so); a ``step`` is seconds or
a duration such as Grafana's ``$__interval`` (:mod:`cairn_gateway.windows`). Every route's
answer is a typed model (:mod:`cairn_gateway.schemas`). Also ``/metrics`` for Prometheus (written
by :mod:`cairn_gateway.metrics`), ``/healthz`` and ``/readyz`` (:mod:`cairn_gateway.health`).
Devices are named by their enrolled name (:mod:`cairn_gateway.roster`) and record key; a value
is ``verified`` when every block was verified to its device's key and the device is enrolled;
log keys (the capability to replicate a stream) are never served.

Any window is answered, however long: ``/api/rollups`` and ``/api/states`` serve a coarser step
than asked when the window would hold more than ``MAX_POINTS`` buckets (each row has the
``step`` served; the ``Cairn-Step-Note`` header says why; whole hours from the hour rollups
when the window starts before the minute rollups retention kept), ``/api/samples`` pages (at most
``limit`` rows; ``Link: <...>; rel="next"`` and ``Cairn-Next-Cursor`` give the next page).
A window the wrong way round is a 400, a parameter that cannot be read a 422 that says why.
Queries run on the event loop's thread, one at a time (one SQLite connection); their SQL is
in :mod:`cairn_gateway.queries` (typed rows), this module routes, checks and shapes.

Kinds of value (issue 20): a sample's value comes in its kind, JSON numbers, ``true``/``false``
and strings (data, SenML ``vd``: hex), with ``kind`` (``number``, ``boolean``, ``string``,
``data``); a stream has the kind of its first sample (``kind`` in ``/api/streams``, which
``?kind=boolean,string`` filters). ``/api/rollups`` of a boolean stream has ``mean`` = the share
of true; of a string or data stream, ``n`` and ``last`` per bucket (``mean``, ``min``, ``max``
null). Strings are served as stored: JSON escapes control characters, so a value cannot break
out of its field; in ``/metrics`` only numbers and booleans (1 or 0) appear.

``/docs`` (Swagger UI) and ``/redoc`` load their scripts from the gateway itself (the assets of
the ``fastapi-offline`` package, under ``/docs/assets/``): they work without internet.

Every request passes :class:`cairn_gateway.auth.Guard` first (bearer tokens, body limits,
errors as JSON without tracebacks); :mod:`cairn_gateway.serve` bounds the connections. A store
that fails (its database server down, its disk full) answers 503 with the reason in one line.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from fastapi import FastAPI, HTTPException, Query, Request, Response
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, PlainTextResponse
from pydantic import BaseModel, Field

from cairn.fleet.enrollment import EnrollmentError, parse_enrollment, parse_record_key
from cairn_gateway import queries
from cairn_gateway.auth import ApiAuth, Guard
from cairn_gateway.health import GatewayHealth, add_health_routes
from cairn_gateway.leases import holders
from cairn_gateway.metrics import CONTENT_TYPE, GatewayMetrics
from cairn_gateway.roster import Roster, RosterError, display_name, reach
from cairn_gateway.schedule import EdgeStatus
from cairn_gateway.schemas import (
    Device,
    Integrity,
    Latest,
    Member,
    MissingRange,
    Pending,
    Rollup,
    Sample,
    State,
    Stream,
)
from cairn_gateway.store import KINDS, ROLLED_UP, Store, StoreError, describe_missing
from cairn_gateway.windows import (
    ParameterError,
    StepChoice,
    parse_cursor,
    parse_step,
    parse_time,
    pick_step,
)

__all__ = ["DOC_ASSETS", "MAX_POINTS", "make_app"]

MAX_POINTS = 100_000

#: what /docs and /redoc load, served from the fastapi-offline package: name -> media type
DOC_ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css",
              "redoc.standalone.js": "text/javascript", "favicon.png": "image/png"}

_FROM = Query(alias="from", max_length=64, description="epoch seconds or ISO 8601 (UTC without "
              "an offset); milliseconds are refused")
_TO = Query(max_length=64, description="epoch seconds or ISO 8601, exclusive")
_STREAM = Query(max_length=300, description="a stream's name (board-1/temperature) or id")
_STEP = Query("60", max_length=32, description="seconds or a duration (30s, 5m, 1h, 1d: "
              "Grafana's $__interval); served in whole minutes, coarser for long windows")
_NEXT = {"Link": {"description": '<...>; rel="next": the next page (absent on the last)',
                  "schema": {"type": "string"}},
         "Cairn-Next-Cursor": {"description": "the next page's cursor (absent on the last)",
                               "schema": {"type": "string"}}}
_NOTE = {"Cairn-Step-Note": {"description": "why the step served is not the one asked for",
                             "schema": {"type": "string"}}}


def _window(start: float, end: float) -> None:
    if end <= start:
        raise HTTPException(400, f"the window is empty or backwards: from {start:g} to {end:g}")


def _times(start: str, end: str) -> tuple[float, float]:
    try:
        a, z = parse_time("from", start), parse_time("to", end)
    except ParameterError as exc:
        raise HTTPException(422, str(exc)) from None
    _window(a, z)
    return a, z


def _step(text: str, start: float, end: float) -> StepChoice:
    try:
        return pick_step(parse_step(text), start, end, MAX_POINTS)
    except ParameterError as exc:
        raise HTTPException(422, str(exc)) from None


def _hours_past_retention(chosen: StepChoice, start: float, minute: int | None,
                          hour: int | None) -> StepChoice:
    """Whole hours when the window starts before the minute rollups (which retention deleted
    with the samples) and the hour rollups reach further back: a panel shows the whole
    window, coarser, rather than a gap."""
    if hour is None or start >= (minute if minute is not None else math.inf) or \
            (minute is not None and hour >= minute // 3600 * 3600):  # the same first hour
        return chosen
    since = "none are kept" if minute is None else f"they start at {minute}"
    return StepChoice(3600, f"served 3600 s buckets from the hour rollups: the window starts "
                            f"before the minute rollups ({since}: retention)")


def _noted(chosen: StepChoice) -> dict[str, str]:
    return {} if chosen.note is None else {"Cairn-Step-Note": chosen.note}


def _json(rows: list[dict[str, Any]], headers: dict[str, str]) -> Response:
    """Rows of a long answer (up to ``MAX_POINTS``) written straight to JSON: the same shape
    as their model (the route's ``response_model``, tested), without building 100,000
    models on the event loop's thread. Values are finite (frames refuse NaN and infinities)."""
    body = json.dumps(rows, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    return Response(body.encode(), media_type="application/json", headers=headers)


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
             health: GatewayHealth | None = None,
             metrics: GatewayMetrics | None = None) -> FastAPI:
    """The API over ``store``; ``auth``: its tokens (None: reads open, no state changes),
    checked with the limits by :class:`cairn_gateway.auth.Guard` on every route;
    ``metrics``: what ``/metrics`` serves (None: the store's and ``edges``' alone)."""
    app = FastAPI(title="Cairn gateway", version="1", docs_url=None, redoc_url=None,
                  description="Verified sensor samples from a fleet's signed logs.")
    app.add_middleware(Guard, auth=auth, max_body_bytes=max_body_bytes,  # every route
                       body_timeout=body_timeout)
    conn = store.conn
    _docs(app)

    @app.exception_handler(StoreError)
    async def store_unavailable(_request: Request, exc: StoreError) -> JSONResponse:
        """The store failed (its server down or its disk full): 503 with the reason in one
        line (the store's errors name no password), not a 500 with a traceback."""
        return JSONResponse({"detail": str(exc).splitlines()[0] if str(exc) else "the store "
                             "failed"}, status_code=503, headers={"Retry-After": "5"})

    def stream_of(ref: str) -> int:
        found = queries.stream_id(conn, ref)
        if found is None:
            raise HTTPException(404, f"no stream {ref[:100]!r} (a name from /api/streams, "
                                     "e.g. board-1/temperature, or its id)")
        return found

    async def fill(stream: int, start: float, end: float) -> None:
        """An on-demand stream: download the window from the edge before answering."""
        if on_demand is not None and demand(stream):
            await on_demand(stream, start, end)

    add_health_routes(app, health, lambda: queries.stream_count(conn))

    @app.get("/api/devices")
    async def devices() -> list[Device]:
        """Each device the store knows: enrolled ones, removed ones (``removed``: their data is
        kept and flagged), and any stored before enrollment existed (``enrolled`` false).
        ``name`` is the enrolled name (never null). Its edge's reachability (``reachable``
        null: not tried yet), ``backoff`` (seconds, the current wait) and ``retry_in``
        (seconds to the next try). ``reach``: why it is or is not collected (``connected
        since T``, ``no address and not connected``, ``unreachable since T: error``...; null:
        not tried yet). ``holder``: the gateway collecting it, when several share a
        PostgreSQL store. Devices seen but not enrolled: ``/api/devices/pending``."""
        status = edges()
        states = reach(conn)
        held = holders(conn)
        out = []
        for d in queries.devices(conn):
            e = status.get(d.record_key)
            out.append(Device(
                id=d.id, record_key=d.record_key.hex(), name=display_name(d.name, d.record_key),
                enrolled=d.enrolled is not None and d.removed is None,
                removed=d.removed is not None, enrolled_at=d.enrolled, removed_at=d.removed,
                first_seen=d.first_seen, last_seen=d.last_seen,
                reachable=None if e is None else e.reachable,
                failures=0 if e is None else e.failures,
                backoff=0.0 if e is None else e.backoff,
                retry_in=0.0 if e is None else e.retry_in,
                error=None if e is None else e.error, reach=states.get(d.record_key),
                holder=held.get(d.record_key)))
        return out

    @app.get("/api/devices/pending")
    async def pending() -> list[Pending]:
        """Devices seen on the fleet topic but not enrolled (never downloaded): record key,
        first and last seen, and what their record says (stream names, time)."""
        return [Pending(record_key=m.record_key.hex(), first_seen=m.first_seen or 0.0,
                        last_seen=m.last_seen or 0.0, streams=list(m.streams),
                        record_time=m.record_time, error=m.error)
                for m in Roster(conn).pending()]

    @app.post("/api/devices", status_code=201)
    async def enroll(body: Enrol) -> Member:
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
        return Member(**m.as_dict())

    @app.delete("/api/devices/{name}")
    async def remove(name: str) -> Member:
        """Stop collecting the enrolled device ``name`` (admin token); its data is kept,
        flagged removed. 404: no enrolled device of that name."""
        try:
            return Member(**Roster(conn).remove(name, time.time()).as_dict())
        except RosterError as exc:
            raise HTTPException(404, str(exc)) from None

    @app.get("/api/streams")
    async def streams(device: str | None = Query(
            None, max_length=200, description="a device's name (board-1), record key or id"),
            kind: str | None = Query(
            None, max_length=100, description="kinds of value, comma-separated: number, "
                                              "boolean, string, data")) -> list[Stream]:
        """Each stream (of ``device``: a name names both keys of a re-keyed board): its
        device's name and record key, and ``verified`` (every block verified to the device's
        key, which is enrolled); ``kind``: its kind of value (null before its first sample),
        ``other_kind``: samples stored of another kind. Log keys are never served."""
        kinds = None
        if kind is not None:
            kinds = frozenset(k.strip() for k in kind.split(","))
            if not kinds <= set(KINDS):
                bad = sorted(kinds - set(KINDS))[0]
                raise HTTPException(400, f"kind {bad[:20]!r} is not one of {', '.join(KINDS)}")
        ids = None
        if device is not None:
            ids = queries.device_ids(conn, device)
            if not ids:
                raise HTTPException(404, f"no device {device[:100]!r} (a name from "
                                         "/api/devices, a record key or an id)")
        return [Stream(id=s.id, device_id=s.device_id,
                       device=display_name(s.device_name, s.record_key),
                       record_key=s.record_key.hex(), name=s.name, unit=s.unit,
                       stored_blocks=s.stored_blocks, status=s.status, verified=s.verified,
                       removed=s.removed, kind=s.kind, other_kind=s.other_kind)
                for s in queries.streams(conn, ids, kinds)]

    @app.get("/api/samples", response_model=list[Sample], responses={200: {"headers": _NEXT}})
    async def samples(request: Request, stream: str = _STREAM,
                      from_: str = _FROM, to: str = _TO,
                      limit: int = Query(MAX_POINTS, ge=1, le=MAX_POINTS,
                                         description="rows in a page"),
                      order: Literal["asc", "desc"] = Query(
                          "asc", description="asc: oldest first; desc: newest first"),
                      cursor: str | None = Query(None, max_length=100, description=(
                          "where the previous page ended (its Cairn-Next-Cursor)"))
                      ) -> Response:
        """A stream's samples in [from, to), oldest first (``order=desc``: newest first), a
        page of at most ``limit``: when more remain, ``Link: <...>; rel="next"`` and
        ``Cairn-Next-Cursor`` say where the next page starts."""
        start, end = _times(from_, to)
        try:
            after = None if cursor is None else parse_cursor(cursor)
        except ParameterError as exc:
            raise HTTPException(422, str(exc)) from None
        sid = stream_of(stream)
        await fill(sid, start, end)
        rows = queries.sample_page(
            conn, sid, start, end, limit + 1, newest_first=order == "desc",
            after=None if after is None else (after.time, after.block, after.k))
        headers = {}
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            token = f"{last.time!r}_{last.block}_{last.k}"
            url = request.url.include_query_params(cursor=token)
            headers = {"Link": f'<{url.path}?{url.query}>; rel="next"',
                       "Cairn-Next-Cursor": token}
        kind = store.kind(sid)
        return _json([{"time": x.time, "value": x.value, "kind": x.kind, "stream_kind": kind,
                       "block": x.block, "fork": x.fork} for x in rows], headers)

    @app.get("/api/rollups", response_model=list[Rollup], responses={200: {"headers": _NOTE}})
    async def rollups(stream: str = _STREAM, from_: str = _FROM, to: str = _TO,
                      step: str = _STEP) -> Response:
        """Buckets of ``step`` in [from, to): ``n``, ``mean``, ``min``, ``max`` (a boolean
        stream's mean: the share of true); a string or data stream's: ``n`` and ``last``.
        Each row has the ``step`` served: whole minutes, or coarser when the window would
        hold more than 100,000 buckets (then ``Cairn-Step-Note`` says so)."""
        start, end = _times(from_, to)
        chosen = _step(step, start, end)
        sid = stream_of(stream)
        await fill(sid, start, end)
        kind = store.kind(sid)
        if kind in ROLLED_UP and chosen.step < 3600:
            chosen = _hours_past_retention(chosen, start, *queries.rollup_reach(conn, sid))
        w = chosen.step
        if kind is not None and kind not in ROLLED_UP:  # strings, data: from the samples
            return _json([{"time": x.time, "n": x.n, "mean": None, "min": None, "max": None,
                           "last": x.last, "kind": kind, "step": w}
                          for x in queries.states(conn, sid, start, end, w)], _noted(chosen))
        s = store.series(sid, start, end, w)
        return _json([{"time": b, "n": n, "mean": m, "min": lo, "max": hi, "last": None,
                       "kind": kind, "step": w}
                      for b, n, m, lo, hi in zip(s.bucket, s.n, s.mean, s.lo, s.hi, strict=True)],
                     _noted(chosen))

    @app.get("/api/states", response_model=list[State], responses={200: {"headers": _NOTE}})
    async def states(stream: str = _STREAM, from_: str = _FROM, to: str = _TO,
                     step: str = _STEP) -> Response:
        """Buckets of ``step`` in [from, to) read from the samples, of a stream of any kind:
        how many samples (``n``) and the last one's value (``last``), what a state timeline
        shows. The ``step`` served as for ``/api/rollups``."""
        start, end = _times(from_, to)
        chosen = _step(step, start, end)
        sid = stream_of(stream)
        await fill(sid, start, end)
        kind = store.kind(sid)
        return _json([{"time": x.time, "n": x.n, "last": x.last, "kind": kind,
                       "step": chosen.step}
                      for x in queries.states(conn, sid, start, end, chosen.step)],
                     _noted(chosen))

    @app.get("/api/latest")
    async def latest() -> list[Latest]:
        """Each stream's latest stored value, with its device's name and record key;
        ``verified``: every block verified and the device enrolled; ``removed``: the device
        was removed (its data is kept, not verified any more)."""
        return [Latest(stream=x.stream, device=display_name(x.device_name, x.record_key),
                       record_key=x.record_key.hex(), name=x.name, unit=x.unit, time=x.time,
                       value=x.value, kind=x.kind, stream_kind=x.stream_kind,
                       verified=x.verified, removed=x.removed)
                for x in queries.latest(conn)]

    @app.get("/api/integrity")
    async def integrity() -> list[Integrity]:
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
            out.append(Integrity(
                stream=h.id, name=h.name, status=h.status, stored_blocks=h.stored_blocks,
                missing=describe_missing((a, z, r) for a, z, r, _ in runs) or None,
                missing_blocks=sum(z - a for a, z, _, _ in runs),
                missing_ranges=[MissingRange(start=a, stop=z, reason=r, since=f)
                                for a, z, r, f in runs],
                refused=h.refused, problem=h.problem,
                alert=h.status != "ok" or bool(runs)))
        return out

    gauges = metrics if metrics is not None else GatewayMetrics(store, edges=edges)

    @app.get("/metrics", response_class=PlainTextResponse, summary="Metrics",
             operation_id="metrics_metrics_get")  # (as when the route was named metrics)
    async def metrics_text() -> Response:
        """Prometheus's text exposition (:mod:`cairn_gateway.metrics`)."""
        return Response(gauges.exposition(), media_type=CONTENT_TYPE)

    return app


def _docs(app: FastAPI) -> None:
    """``/docs`` and ``/redoc`` with their assets served here, never from a CDN."""
    import fastapi_offline

    static = Path(fastapi_offline.__file__).parent / "static"

    @app.get("/docs", include_in_schema=False)
    async def swagger() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="Cairn gateway API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/docs/assets/favicon.png",
            swagger_ui_parameters={"validatorUrl": None})

    @app.get("/redoc", include_in_schema=False)
    async def redoc() -> HTMLResponse:
        return get_redoc_html(openapi_url="/openapi.json", title="Cairn gateway API",
                              redoc_js_url="/docs/assets/redoc.standalone.js",
                              redoc_favicon_url="/docs/assets/favicon.png",
                              with_google_fonts=False)

    @app.get("/docs/assets/{name}", include_in_schema=False)
    async def asset(name: str) -> FileResponse:
        if name not in DOC_ASSETS:
            raise HTTPException(404, f"no asset {name[:60]!r}")
        return FileResponse(static / name, media_type=DOC_ASSETS[name],
                            headers={"Cache-Control": "max-age=86400"})

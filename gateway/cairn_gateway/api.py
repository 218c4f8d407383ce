"""The gateway's HTTP API: an ASGI app (FastAPI, with its OpenAPI spec at ``/openapi.json``).

Shaped for Grafana's Infinity data source: JSON arrays of flat objects, times in epoch seconds,
windows as ``from`` / ``to`` (epoch seconds) and ``step`` (seconds). Also ``/metrics`` for
Prometheus (each stream's latest value as a gauge; each edge's reachability and backoff) and
``/healthz``.

Every parameter is checked: a window the wrong way round, a step that is not a multiple of a
minute, or a window that would return more than ``MAX_POINTS`` rows is a 400 that says so.
Queries run on the event loop's thread, one at a time (one SQLite connection).

Every request passes :class:`cairn_gateway.auth.Guard` first (bearer tokens, body limits,
errors as JSON without tracebacks); :mod:`cairn_gateway.serve` bounds the connections.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import PlainTextResponse

from cairn_gateway.auth import ApiAuth, Guard
from cairn_gateway.schedule import EdgeStatus
from cairn_gateway.store import Store

__all__ = ["MAX_POINTS", "make_app"]

MAX_POINTS = 100_000


def _window(start: float, end: float) -> None:
    if not (math.isfinite(start) and math.isfinite(end)):
        raise HTTPException(400, "from and to must be finite epoch seconds")
    if end <= start:
        raise HTTPException(400, f"the window is empty or backwards: from {start:g} to {end:g}")


def _label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


#: (stream id, from, to) -> fetch that window from its edge first, for on-demand streams
OnDemand = Callable[[int, float, float], Awaitable[object]]
#: each edge tried so far (by device record key) -> whether it is reachable, its backoff
Edges = Callable[[], Mapping[bytes, EdgeStatus]]


def make_app(store: Store, *, on_demand: OnDemand | None = None,
             demand: Callable[[int], bool] = lambda _stream: False,
             edges: Edges = dict, auth: ApiAuth | None = None,
             max_body_bytes: int = 65536, body_timeout: float = 10.0) -> FastAPI:
    """The API over ``store``; ``auth``: its tokens (None: reads open, no state changes),
    checked with the limits by :class:`cairn_gateway.auth.Guard` on every route."""
    app = FastAPI(title="Cairn gateway", version="1",
                  description="Verified sensor samples from a fleet's signed logs.")
    app.add_middleware(Guard, auth=auth, max_body_bytes=max_body_bytes,  # every route
                       body_timeout=body_timeout)
    conn = store.conn

    def stream_exists(stream: int) -> None:
        if conn.execute("SELECT 1 FROM streams WHERE id = ?", (stream,)).fetchone() is None:
            raise HTTPException(404, f"no stream {stream}")

    async def fill(stream: int, start: float, end: float) -> None:
        """An on-demand stream: download the window from the edge before answering."""
        if on_demand is not None and demand(stream):
            await on_demand(stream, start, end)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        n = conn.execute("SELECT count(*) FROM streams").fetchone()[0]
        return {"ok": True, "streams": n}

    @app.get("/api/devices")
    async def devices() -> list[dict[str, Any]]:
        """Each device; its edge's reachability (``reachable`` null: not tried yet),
        ``backoff`` (seconds, the current wait) and ``retry_in`` (seconds to the next try)."""
        status = edges()
        out = []
        for i, k, n, f, s in conn.execute(
                "SELECT id, record_key, name, first_seen, last_seen FROM devices ORDER BY id"):
            e = status.get(k)
            out.append({"id": i, "record_key": k.hex(), "name": n, "first_seen": f,
                        "last_seen": s, "reachable": None if e is None else e.reachable,
                        "failures": 0 if e is None else e.failures,
                        "backoff": 0.0 if e is None else e.backoff,
                        "retry_in": 0.0 if e is None else e.retry_in,
                        "error": None if e is None else e.error})
        return out

    @app.get("/api/streams")
    async def streams(device: int | None = None) -> list[dict[str, Any]]:
        sql = ("SELECT s.id, s.device_id, d.name, s.name, s.unit, s.log_key, s.stored_blocks, "
               "s.status FROM streams s JOIN devices d ON d.id = s.device_id")
        args: tuple[Any, ...] = ()
        if device is not None:
            sql += " WHERE s.device_id = ?"
            args = (device,)
        return [{"id": i, "device_id": di, "device": dn, "name": n, "unit": u,
                 "log_key": k.hex(), "stored_blocks": b, "status": st}
                for i, di, dn, n, u, k, b, st in conn.execute(sql + " ORDER BY s.id", args)]

    @app.get("/api/samples")
    async def samples(stream: int, from_: float = Query(alias="from"),
                      to: float = Query()) -> list[dict[str, Any]]:
        _window(from_, to)
        stream_exists(stream)
        await fill(stream, from_, to)
        n = conn.execute("SELECT count(*) FROM samples WHERE stream_id = ? AND t >= ? AND t < ?",
                         (stream, from_, to)).fetchone()[0]
        if n > MAX_POINTS:
            raise HTTPException(400, f"{n} samples in the window (at most {MAX_POINTS}): "
                                     "ask for rollups with a step instead")
        return [{"time": t, "value": v, "block": b, "fork": f}
                for t, v, b, f in store.samples(stream, from_, to)]

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
        s = store.series(stream, from_, to, step)
        return [{"time": b, "n": n, "mean": m, "min": lo, "max": hi}
                for b, n, m, lo, hi in zip(s.bucket, s.n, s.mean, s.lo, s.hi, strict=True)]

    @app.get("/api/latest")
    async def latest() -> list[dict[str, Any]]:
        return [{"stream": i, "device": dn, "name": n, "unit": u, "time": t, "value": v}
                for i, dn, n, u, t, v in _latest(conn)]

    @app.get("/api/integrity")
    async def integrity() -> list[dict[str, Any]]:
        return [{"stream": i, "name": n, "status": st, "stored_blocks": b,
                 "alert": st != "ok"}
                for i, n, st, b in conn.execute(
                    "SELECT id, name, status, stored_blocks FROM streams ORDER BY id")]

    @app.get("/metrics", response_class=PlainTextResponse)
    async def metrics() -> str:
        lines = ["# HELP cairn_gateway_latest latest stored value of each stream",
                 "# TYPE cairn_gateway_latest gauge"]
        for _i, dn, n, u, _t, v in _latest(conn):
            if isinstance(v, float):
                lines.append(f'cairn_gateway_latest{{device="{_label(dn or "")}",'
                             f'stream="{_label(n)}",unit="{_label(u or "")}"}} {v!r}')
        total = conn.execute("SELECT count(*) FROM samples").fetchone()[0]
        stopped = conn.execute("SELECT count(*) FROM streams WHERE status != 'ok'").fetchone()[0]
        lines += ["# HELP cairn_gateway_samples samples stored",
                  "# TYPE cairn_gateway_samples gauge",
                  f"cairn_gateway_samples {total}",
                  "# HELP cairn_gateway_stopped_streams streams stopped by a fork",
                  "# TYPE cairn_gateway_stopped_streams gauge",
                  f"cairn_gateway_stopped_streams {stopped}"]
        status = edges()
        if status:
            names = dict(conn.execute("SELECT record_key, name FROM devices"))
            reach = ["# HELP cairn_gateway_edge_reachable 1 if the edge answered the last try",
                     "# TYPE cairn_gateway_edge_reachable gauge"]
            wait = ["# HELP cairn_gateway_edge_backoff_seconds the wait before an unreachable "
                    "edge is tried again (0: reachable)",
                    "# TYPE cairn_gateway_edge_backoff_seconds gauge"]
            for k in sorted(status):
                e = status[k]
                labels = f'device="{_label(names.get(k) or "")}",record_key="{k.hex()}"'
                reach.append(f"cairn_gateway_edge_reachable{{{labels}}} {int(e.reachable)}")
                wait.append(f"cairn_gateway_edge_backoff_seconds{{{labels}}} {e.backoff!r}")
            lines += reach + wait
        return "\n".join(lines) + "\n"

    return app


def _latest(conn: Any) -> list[tuple[int, str | None, str, str | None, float, Any]]:
    rows = conn.execute(
        "SELECT s.id, d.name, s.name, s.unit, x.t, x.value, x.text FROM streams s "
        "JOIN devices d ON d.id = s.device_id "
        "JOIN samples x ON x.stream_id = s.id AND x.t = "
        "(SELECT max(t) FROM samples WHERE stream_id = s.id) ORDER BY s.id")
    return [(i, dn, n, u, t, v if v is not None else x) for i, dn, n, u, t, v, x in rows]

"""A store built by the real ingest path, and everything the queries and the API answer of it:
what the migration tests compare between the SQLite store and its PostgreSQL copy."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx

from cairn.frames import Frame, Sample
from cairn_gateway import queries
from cairn_gateway.api import make_app
from cairn_gateway.roster import Roster, note_reach
from cairn_gateway.store import IngestItem, SQLiteStore, Store

__all__ = ["T0", "answers", "build"]

T0 = 1_764_000_000.0  # 2025-11-24: the samples run into December and January (3 partitions)
KEYS = [bytes([i]) * 32 for i in (1, 2, 3)]
KINDS: dict[str, tuple[str | None, Any]] = {  # stream -> unit, value of sample j
    "temperature": ("Cel", lambda j: 20.0 + (j % 97) / 8),
    "door": (None, lambda j: j % 3 == 0),
    "state": (None, lambda j: ("idle", "run", "fault")[j % 3]),
    "blob": (None, lambda j: bytes([j % 256, 7])),
}


def _frame(name: str, unit: str | None, t: float, values: list[Any]) -> Frame:
    return Frame(tuple(Sample(name, unit, t + k, v) for k, v in enumerate(values)))


def build(path: Path, blocks: int = 60, per_block: int = 3) -> int:
    """Three enrolled boards (the third removed afterwards), each with a stream of every kind
    of value, ``blocks`` blocks of ``per_block`` samples each spread over about 60 days; holes,
    a stopped stream, a stream that switched kind, values too large to roll up, samples refused
    for their time, two pending devices, reach notes. Returns the samples stored."""
    store = SQLiteStore(path)
    roster = Roster(store.conn)
    step = 60 * 86400 / blocks
    stored = 0
    try:
        for i, key in enumerate(KEYS):
            roster.enroll(key, f"board-{i + 1}", T0)
            dev = store.device(key, None, T0 + i)
            items = []
            for name, (unit, value) in KINDS.items():
                full = f"board-{i + 1}/{name}"
                sid = store.stream(dev, full, full.encode().ljust(32, b"."), unit)
                frames = [(b, 0, _frame(full, unit, T0 + b * step,
                                        [value(b * per_block + k) for k in range(per_block)]))
                          for b in range(blocks) if not 10 <= b < 15]  # a hole
                if i == 1:  # board-2 by the live path (ingest_many), with a unit
                    items.append(IngestItem(sid, frames, None, unit))
                elif i == 2 and name == "temperature":  # a time window refusing the last
                    stored += store.ingest(sid, frames, (0.0, T0 + (blocks - 5) * step))
                else:
                    stored += store.ingest(sid, frames)
                store.set_missing(sid, [(10, 15, "damaged" if i else "not served")], T0 + 5)
            if items:
                store.ingest_many(items)
                stored += sum(len(f.samples) for it in items for _, _, f in it.blocks)
            note_reach(store.conn, key, f"connected since {T0 + i:.0f}", T0 + i)
        mixed = store.stream(store.device(KEYS[0], None, T0), "board-1/mixed", b"m" * 32, None)
        stored += store.ingest(mixed, [(0, 0, _frame("board-1/mixed", None, T0, [1.5, 1e300])),
                                       (1, 0, _frame("board-1/mixed", None, T0 + 9, ["x", 2.0]))])
        stopped = store.stream(store.device(KEYS[1], None, T0), "board-2/co2", b"s" * 32, "ppm")
        stored += store.ingest(stopped, [(0, 0, _frame("board-2/co2", "ppm", T0, [400.0]))])
        store.stop(stopped, "fork: two signed trees of length 2")
        store.set_problem(mixed, "time budget used up")
        roster.split([b"p" * 32, b"q" * 32], T0 + 3)
        roster.note_record(b"p" * 32, None, T0 + 4, "no record on the DHT")
        roster.remove("board-3", T0 + 100)
    finally:
        store.close()
    return stored


def answers(store: Store) -> dict[str, Any]:
    """Every query of :mod:`cairn_gateway.queries`, the store's own reads and the API's GETs,
    for every stream and device."""
    c = store.conn
    out: dict[str, Any] = {
        "stream_count": queries.stream_count(c), "total_samples": queries.total_samples(c),
        "stopped_streams": queries.stopped_streams(c), "stopped_ids": queries.stopped_ids(c),
        "devices": queries.devices(c), "device_names": queries.device_names(c),
        "streams": queries.streams(c), "latest": queries.latest(c),
        "health": queries.health(c), "health_by_name": queries.health(c, order_by_name=True),
        "stream_labels": queries.stream_labels(c), "missing": store.missing(),
        "collected": store.collected_log_keys(), "oldest": store.oldest_sample(),
        "pending": Roster(c).pending(), "members": Roster(c).members(),
    }
    lo, hi = T0 - 86400, T0 + 70 * 86400
    for s in queries.streams(c):
        sid = s.id
        out[f"stream {sid}"] = (
            queries.stream_exists(c, sid), queries.stream_id(c, s.name),
            queries.export_stream(c, s.name), queries.sample_count(c, sid, lo, hi),
            queries.samples(c, sid, lo, hi), queries.rollup_reach(c, sid),
            queries.sample_page(c, sid, lo, hi, 50), queries.sample_page(
                c, sid, lo, hi, 50, newest_first=True),
            queries.states(c, sid, lo, hi, 86400), store.samples(sid, lo, hi),
            store.series(sid, lo, hi, 60), store.series(sid, lo, hi, 3600),
            store.series(sid, lo, hi, 7 * 86400), store.refused(sid), store.status(sid),
            store.kind(sid), store.other_kind(sid), store.unrolled(sid),
            store.stored_prefix(sid), store.missing_blocks(sid, list(range(20))))
    for d in queries.devices(c):
        out[f"device {d.id}"] = (queries.device_ids(c, str(d.name)), queries.streams(c, d.id))
    out["api"] = asyncio.run(_api(store, [s.id for s in queries.streams(c)]))
    return out


async def _api(store: Store, ids: list[int]) -> dict[str, Any]:
    got: dict[str, Any] = {}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(store)),
                                 base_url="http://gateway") as client:
        paths = ["/healthz", "/api/devices", "/api/devices/pending", "/api/streams",
                 "/api/latest", "/api/integrity"]
        for sid in ids:
            window = f"stream={sid}&from={T0 - 86400}&to={T0 + 70 * 86400}"
            paths += [f"/api/samples?{window}", f"/api/rollups?{window}&step=3600",
                      f"/api/rollups?{window}&step=86400", f"/api/states?{window}&step=86400"]
        for path in paths:
            r = await client.get(path)
            got[path] = (r.status_code, r.json())
        metrics = (await client.get("/metrics")).text.splitlines()
        # (the bytes each database takes differ by engine; counters' creation times by run)
        got["/metrics"] = [x for x in metrics if "disk_bytes" not in x and "_created" not in x]
    return got

"""The store's read side for the API and the CLI: every SELECT they need, with typed rows.

:mod:`cairn_gateway.store` writes (ingest, rollups, retention) and answers the collector;
this module answers the questions a person or Grafana asks (which devices, which streams,
each stream's latest value, its health). Each function takes the store's connection (either
engine: the SQL keeps to :data:`cairn_gateway.store.base.PORTABLE`)
and returns frozen rows of the columns as stored: record keys as bytes, a device's name as
enrolled (None before enrollment existed), times in epoch seconds. Shaping them (display
names, hex keys, JSON) is the caller's: :mod:`cairn_gateway.api`, :mod:`cairn_gateway.cli`.

A stream is *verified* when its collection was not stopped (``status = 'ok'``: every block
verified to its device's key) and its device is enrolled and not removed.

Values come back in their kind (:func:`cairn_gateway.store.typed_value`): a float, a bool, a
string (data as hex); each row says its kind (``number``, ``boolean``, ``string``, ``data``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cairn_gateway.store import KINDS, Conn, bucket_sql, typed_value

__all__ = ["DeviceRow", "LatestRow", "SampleRow", "StateBucket", "StreamHealth", "StreamLabel",
           "StreamRow", "device_ids", "device_names", "devices", "export_stream", "health",
           "latest", "rollup_reach", "sample_count", "sample_page", "samples", "states",
           "stopped_ids", "stopped_streams", "stream_count", "stream_exists", "stream_id",
           "stream_labels", "streams", "total_samples"]

@dataclass(frozen=True, slots=True)
class DeviceRow:
    id: int
    record_key: bytes
    name: str | None
    first_seen: float
    last_seen: float
    enrolled: float | None  # when it was enrolled (kept after removal)
    removed: float | None  # when it was removed


@dataclass(frozen=True, slots=True)
class StreamRow:
    id: int
    device_id: int
    device_name: str | None
    record_key: bytes
    verified: bool
    removed: bool  # its device was removed
    name: str
    unit: str | None
    stored_blocks: int
    status: str
    kind: str | None  # its kind of value (None before its first sample)
    other_kind: int  # samples stored of another kind (not rolled up)


@dataclass(frozen=True, slots=True)
class LatestRow:
    """A stream's latest stored sample, with its device."""

    stream: int
    device_name: str | None
    record_key: bytes
    name: str  # the stream's
    unit: str | None
    time: float
    value: Any  # in its kind: a float, a bool, a string (data: hex)
    verified: bool
    removed: bool
    kind: str  # the sample's kind of value
    stream_kind: str | None  # the stream's


@dataclass(frozen=True, slots=True)
class SampleRow:
    time: float
    value: Any  # in its kind
    kind: str
    block: int
    fork: int
    k: int = 0  # its position in the block


@dataclass(frozen=True, slots=True)
class StateBucket:
    """A bucket of a string (or data) stream: how many samples, and the last one's value."""

    time: int
    n: int
    last: Any


@dataclass(frozen=True, slots=True)
class StreamHealth:
    id: int
    name: str
    status: str  # "ok", or why its collection stopped
    stored_blocks: int
    refused: int  # samples refused for their time
    problem: str | None  # the last round's trouble that does not stop the stream


@dataclass(frozen=True, slots=True)
class StreamLabel:
    """What a stream's metric lines are labelled with."""

    id: int
    device_name: str | None
    record_key: bytes
    name: str
    refused: int


def stream_exists(conn: Conn, stream_id: int) -> bool:
    return conn.execute("SELECT 1 FROM streams WHERE id = ?", (stream_id,)).fetchone() is not None


def stream_count(conn: Conn) -> int:
    return int(conn.execute("SELECT count(*) FROM streams").fetchone()[0])


def total_samples(conn: Conn) -> int:
    return int(conn.execute("SELECT count(*) FROM samples").fetchone()[0])


def stopped_streams(conn: Conn) -> int:
    return int(conn.execute("SELECT count(*) FROM streams WHERE status != 'ok'").fetchone()[0])


def stopped_ids(conn: Conn) -> set[int]:
    """The ids of the streams whose collection stopped."""
    return {int(i) for (i,) in conn.execute("SELECT id FROM streams WHERE status != 'ok'")}


def sample_count(conn: Conn, stream_id: int, start: float, end: float) -> int:
    """Samples of a stream with ``start <= time < end``."""
    return int(conn.execute(
        "SELECT count(*) FROM samples WHERE stream_id = ? AND t >= ? AND t < ?",
        (stream_id, start, end)).fetchone()[0])


def devices(conn: Conn) -> list[DeviceRow]:
    """Every device the store knows, enrolled, removed or stored before enrollment, by id."""
    return [DeviceRow(*row) for row in conn.execute(
        "SELECT id, record_key, name, first_seen, last_seen, enrolled, removed "
        "FROM devices ORDER BY id")]


def device_names(conn: Conn) -> dict[bytes, str | None]:
    """Each known device's name by record key."""
    return dict(conn.execute("SELECT record_key, name FROM devices"))


def stream_id(conn: Conn, ref: str) -> int | None:
    """The stream ``ref`` names: a stream name (``board-1/temperature``; of a name stored twice,
    a re-keyed board's, the enrolled device's, then the newest), else digits naming a stream
    id; None if neither is stored."""
    found = export_stream(conn, ref)
    if found is not None:
        return found[0]
    if ref.isdigit() and len(ref) <= 18 and stream_exists(conn, int(ref)):
        return int(ref)
    return None


def device_ids(conn: Conn, ref: str) -> list[int]:
    """The devices ``ref`` names: a name as shown (a re-keyed board's removed and enrolled keys
    share it: both), else a record key (64 hex digits), else digits naming a device id."""
    named = [int(i) for i, n, k in conn.execute("SELECT id, name, record_key FROM devices")
             if (n or f"unenrolled-{bytes(k).hex()[:12]}") == ref]
    if named:
        return sorted(named)
    if len(ref) == 64:
        try:
            key = bytes.fromhex(ref)
        except ValueError:
            key = b""
        row = conn.execute("SELECT id FROM devices WHERE record_key = ?", (key,)).fetchone()
        if row is not None:
            return [int(row[0])]
    if ref.isdigit() and len(ref) <= 18:
        row = conn.execute("SELECT id FROM devices WHERE id = ?", (int(ref),)).fetchone()
        if row is not None:
            return [int(row[0])]
    return []


def streams(conn: Conn, device_id: int | list[int] | None = None,
            kinds: frozenset[str] | None = None) -> list[StreamRow]:
    """Every stream (or one device's, or these devices'; or those of these kinds of value),
    by id."""
    sql = ("SELECT s.id, s.device_id, d.name, d.record_key, "
           "(s.status = 'ok' AND d.enrolled IS NOT NULL AND d.removed IS NULL), "
           "d.removed IS NOT NULL, s.name, s.unit, s.stored_blocks, s.status, s.kind, "
           "s.other_kind FROM streams s JOIN devices d ON d.id = s.device_id WHERE TRUE")
    args: list[Any] = []
    if device_id is not None:
        ids = [device_id] if isinstance(device_id, int) else device_id
        sql += f" AND s.device_id IN ({', '.join('?' * len(ids))})"
        args += ids
    if kinds is not None:
        sql += f" AND s.kind IN ({', '.join('?' * len(kinds))})"
        args += sorted(kinds)
    return [StreamRow(i, di, dn, k, bool(ok), bool(rm), n, u, b, st, kd, ok2)
            for i, di, dn, k, ok, rm, n, u, b, st, kd, ok2
            in conn.execute(sql + " ORDER BY s.id", args)]


def latest(conn: Conn) -> list[LatestRow]:
    """Each stream's latest stored sample (streams with none are left out), by stream id. Of
    two samples at the latest time, the one stored last in the log (block, then position)."""
    rows = conn.execute(
        "SELECT s.id, d.name, d.record_key, s.name, s.unit, x.t, x.value, x.text, x.kind, "
        "(s.status = 'ok' AND d.enrolled IS NOT NULL AND d.removed IS NULL), "
        "d.removed IS NOT NULL, s.kind FROM streams s "
        "JOIN devices d ON d.id = s.device_id "
        "JOIN samples x ON x.stream_id = s.id AND (x.t, x.block, x.k) = "
        "(SELECT t, block, k FROM samples WHERE stream_id = s.id "
        "ORDER BY t DESC, block DESC, k DESC LIMIT 1) ORDER BY s.id")
    return [LatestRow(i, dn, k, n, u, t, typed_value(v, x, kd), bool(ok), bool(rm), KINDS[kd],
                      sk)
            for i, dn, k, n, u, t, v, x, kd, ok, rm, sk in rows]


def samples(conn: Conn, stream_id: int, start: float, end: float
            ) -> list[SampleRow]:
    """A stream's samples with ``start <= time < end``, by time (then block and position),
    each value in its kind."""
    return [SampleRow(t, typed_value(v, x, kd), KINDS[kd], b, f)
            for t, v, x, kd, b, f in conn.execute(
                "SELECT t, value, text, kind, block, fork FROM samples WHERE stream_id = ? "
                "AND t >= ? AND t < ? ORDER BY t, block, k", (stream_id, start, end))]


def sample_page(conn: Conn, stream_id: int, start: float, end: float, limit: int,
                *, after: tuple[float, int, int] | None = None, newest_first: bool = False
                ) -> list[SampleRow]:
    """At most ``limit`` of a stream's samples with ``start <= time < end`` in its order (time,
    block, position; reversed when ``newest_first``), those past ``after`` (a sample's time,
    block and position, as the previous page ended) only."""
    sql = ("SELECT t, value, text, kind, block, fork, k FROM samples WHERE stream_id = ? "
           "AND t >= ? AND t < ?")
    args: list[Any] = [stream_id, start, end]
    if after is not None:
        sql += f" AND (t, block, k) {'<' if newest_first else '>'} (?, ?, ?)"
        args += list(after)
    order = "t DESC, block DESC, k DESC" if newest_first else "t, block, k"
    return [SampleRow(t, typed_value(v, x, kd), KINDS[kd], b, f, k)
            for t, v, x, kd, b, f, k in conn.execute(f"{sql} ORDER BY {order} LIMIT ?",
                                                     [*args, limit])]


def rollup_reach(conn: Conn, stream_id: int) -> tuple[int | None, int | None]:
    """The first bucket of a stream's minute rollups and of its hour rollups (None: none).
    Retention deletes minute rollups with the samples and keeps the hour ones."""
    minute = conn.execute("SELECT min(bucket) FROM rollup_minute WHERE stream_id = ?",
                          (stream_id,)).fetchone()[0]
    hour = conn.execute("SELECT min(bucket) FROM rollup_hour WHERE stream_id = ?",
                        (stream_id,)).fetchone()[0]
    return minute, hour


def states(conn: Conn, stream_id: int, start: float, end: float, step: int
           ) -> list[StateBucket]:
    """Buckets of ``step`` seconds of a stream in [start, end) read from its samples (string
    and data streams have no rollups): how many samples, and the last one's value (its
    kind's, as :func:`samples` gives it)."""
    bucket = bucket_sql(conn, "t")
    return [StateBucket(int(b), int(n), typed_value(v, x, kd)) for b, n, v, x, kd in conn.execute(
        f"SELECT b, n, value, text, kind FROM (SELECT {bucket} AS b, value, "  # noqa: S608
        "text, kind, count(*) OVER w AS n, row_number() OVER (w ORDER BY t DESC, block DESC, "
        "k DESC) AS r FROM samples WHERE stream_id = ? AND t >= ? AND t < ? "
        f"WINDOW w AS (PARTITION BY {bucket})) AS x WHERE r = 1 ORDER BY b",
        (step, step, stream_id, start, end, step, step))]


def health(conn: Conn, *, order_by_name: bool = False) -> list[StreamHealth]:
    """Each stream's status, blocks stored, refused samples and problem, by id (or name)."""
    sql = (_HEALTH_BY_NAME if order_by_name else _HEALTH_BY_ID)
    return [StreamHealth(*row) for row in conn.execute(sql)]


_HEALTH = "SELECT id, name, status, stored_blocks, refused, problem FROM streams"
_HEALTH_BY_ID = _HEALTH + " ORDER BY id"
_HEALTH_BY_NAME = _HEALTH + " ORDER BY name"


def stream_labels(conn: Conn) -> list[StreamLabel]:
    """Each stream with its device's name and record key, by stream id."""
    return [StreamLabel(*row) for row in conn.execute(
        "SELECT s.id, d.name, d.record_key, s.name, s.refused FROM streams s "
        "JOIN devices d ON d.id = s.device_id ORDER BY s.id")]


def export_stream(conn: Conn, name: str) -> tuple[int, str | None] | None:
    """The stream named ``name`` to export (its id and unit), None if there is none. A
    re-keyed board's stream name may be stored twice (the removed key's, the new key's): the
    enrolled device's first, then the newest."""
    row = conn.execute(
        "SELECT s.id, s.unit FROM streams s JOIN devices d ON d.id = s.device_id "
        "WHERE s.name = ? ORDER BY (d.enrolled IS NOT NULL AND d.removed IS NULL) DESC, "
        "s.id DESC", (name,)).fetchone()
    return None if row is None else (int(row[0]), row[1])

"""The fleet roster: which devices this gateway collects, under which names (deny by default).

A device is **enrolled** by its record key (the public key its DHT record is signed with) under
a name; the name is unique among enrolled devices and bound to that one key. Only enrolled
devices are looked up, downloaded and stored. A **removed** device is no longer collected; its
row, its name and its stored data stay, flagged ``removed`` (with the time), and its name is
free to be bound to another key (a replaced board). A record key seen on the fleet topic (or
listed in ``[collect].devices``) that is not enrolled is kept as **pending**: first and last
seen, and what its record says (stream names, time), so an operator can see and enrol it;
nothing of a pending device is ever downloaded.

Stream names: an enrolled device owns the stream names it registered first; another enrolled
device whose record claims one of them is refused (:func:`stream_owners`, checked by the
collector before anything is stored).

The rows live in the gateway store (``devices`` and ``pending``, migration
``m003_fleet_roster``); :class:`Roster` is a small class over the store's connection
(either engine).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from cairn.errors import UsageError
from cairn.fleet.enrollment import check_device_name
from cairn.fleet.record import DeviceRecord
from cairn_gateway.store import Conn

__all__ = ["MAX_PENDING", "Member", "Roster", "RosterError", "discover", "display_name",
           "note_reach", "reach", "stream_owners"]

log = logging.getLogger(__name__)

MAX_PENDING = 1000  # pending rows kept (the least recently seen go first): a flood of keys
                     # on the fleet topic cannot grow the store without bound
RECHECK = 300.0  # seconds before a pending device's record is read again


class RosterError(UsageError, ValueError):
    """An enrollment the roster refuses (a name taken, a key enrolled under another name, no
    such device): says what and why."""


@dataclass(frozen=True, slots=True)
class Member:
    """A device of the roster: ``status`` is ``enrolled``, ``removed`` or ``pending``."""

    record_key: bytes
    name: str | None
    status: str
    enrolled: float | None = None  # when (epoch seconds)
    removed: float | None = None
    first_seen: float | None = None
    last_seen: float | None = None
    streams: tuple[str, ...] = ()  # a pending device's: what its record says
    record_time: float | None = None
    error: str | None = None  # a pending device's record could not be read: why

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "record_key": self.record_key.hex(), "status": self.status,
                "enrolled": self.enrolled, "removed": self.removed,
                "first_seen": self.first_seen, "last_seen": self.last_seen,
                "streams": list(self.streams), "record_time": self.record_time,
                "error": self.error}


def display_name(name: str | None, record_key: bytes) -> str:
    """A device's name as shown (never null): its enrolled name, else ``unenrolled-`` and the
    start of its record key (a device stored before enrollment existed)."""
    return name if name else f"unenrolled-{record_key.hex()[:12]}"


_MEMBER = ("SELECT record_key, name, enrolled, removed, first_seen, last_seen FROM devices "
           "WHERE enrolled IS NOT NULL")


def _member(row: tuple[Any, ...]) -> Member:
    key, name, enrolled, removed, first, last = row
    return Member(bytes(key), name, "removed" if removed is not None else "enrolled",
                  enrolled, removed, first, last)


class Roster:
    """Enrolment, removal and the pending list, over the gateway store's connection."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn

    # -- the operator's verbs ---------------------------------------------------------------

    def enroll(self, record_key: bytes, name: str, now: float) -> Member:
        """Enrol a device under ``name`` (or enrol again a removed one). Refused: a name bound
        to another enrolled key, a key enrolled under another name. Enrolling a key already
        enrolled under that very name changes nothing."""
        check_device_name(name)
        if len(record_key) != 32:
            raise RosterError("a record key is 32 bytes")
        current = self.get(record_key)
        if current is not None and current.status == "enrolled":
            if current.name == name:
                return current
            raise RosterError(f"device {record_key.hex()} is already enrolled as "
                              f"{current.name!r}: remove it first to rename it")
        holder = self.by_name(name)
        if holder is not None and holder.status == "enrolled":
            raise RosterError(f"the name {name!r} is bound to device {holder.record_key.hex()}:"
                              f" choose another name, or remove {name!r} first")
        c = self.conn
        try:
            with c.transaction():
                c.execute("INSERT INTO devices (record_key, name, first_seen, last_seen, "
                          "enrolled) VALUES (?, ?, ?, ?, ?) ON CONFLICT (record_key) DO UPDATE "
                          "SET name = excluded.name, enrolled = excluded.enrolled, removed = NULL",
                          (record_key, name, now, now, now))
                c.execute("DELETE FROM pending WHERE record_key = ?", (record_key,))
        except c.IntegrityError:  # another process bound the name in between
            raise RosterError(f"the name {name!r} is bound to another device") from None
        got = self.get(record_key)
        assert got is not None
        return got

    def remove(self, name: str, now: float) -> Member:
        """Stop collecting the enrolled device ``name``; its row and data stay, flagged."""
        m = self.by_name(name)
        if m is None or m.status != "enrolled":
            raise RosterError(f"no enrolled device is named {name!r} "
                              "(`cairn gateway devices list` shows them)")
        self.conn.execute("UPDATE devices SET removed = ? WHERE record_key = ?",
                          (now, m.record_key))
        got = self.get(m.record_key)
        assert got is not None
        return got

    # -- reading ------------------------------------------------------------------------------

    def get(self, record_key: bytes) -> Member | None:
        """The enrolled or removed device with this record key."""
        row = self.conn.execute(_MEMBER + " AND record_key = ?", (record_key,)).fetchone()
        return _member(row) if row else None

    def by_name(self, name: str) -> Member | None:
        """The device enrolled under ``name``, else the one most recently removed under it."""
        row = self.conn.execute(_MEMBER + " AND name = ? ORDER BY removed IS NOT NULL, "
                                "removed DESC LIMIT 1", (name,)).fetchone()
        return _member(row) if row else None

    def find(self, text: str) -> Member | None:
        """A device by its name or its record key (hex)."""
        with_name = self.by_name(text)
        if with_name is not None:
            return with_name
        try:
            key = bytes.fromhex(text)
        except ValueError:
            return None
        return self.get(key) if len(key) == 32 else None

    def members(self) -> list[Member]:
        """Enrolled devices by name, then removed ones."""
        rows = self.conn.execute(_MEMBER + " ORDER BY removed IS NOT NULL, name, removed")
        return [_member(r) for r in rows]

    def enrolled_keys(self) -> set[bytes]:
        return {bytes(r[0]) for r in self.conn.execute(
            "SELECT record_key FROM devices WHERE enrolled IS NOT NULL AND removed IS NULL")}

    def pending(self) -> list[Member]:
        """Devices seen but not enrolled, the most recently seen first."""
        out = []
        for key, first, last, rtime, streams, error in self.conn.execute(
                "SELECT record_key, first_seen, last_seen, record_time, streams, error "
                "FROM pending ORDER BY last_seen DESC, record_key"):
            out.append(Member(bytes(key), None, "pending", first_seen=first, last_seen=last,
                              streams=tuple(json.loads(streams)) if streams else (),
                              record_time=rtime, error=error))
        return out

    # -- what the collector does each round ----------------------------------------------------

    def split(self, seen: Iterable[bytes], now: float) -> tuple[list[bytes], list[bytes]]:
        """The record keys of a round: (enrolled ones to collect, sorted; the others, noted as
        pending, sorted). Enrolled devices are collected whether they were seen or not."""
        enrolled = self.enrolled_keys()
        others = sorted({k for k in seen if len(k) == 32} - enrolled - self.removed_keys())
        if others:
            self.conn.executemany(
                "INSERT INTO pending (record_key, first_seen, last_seen) VALUES (?, ?, ?) "
                "ON CONFLICT (record_key) DO UPDATE SET last_seen = excluded.last_seen",
                [(k, now, now) for k in others])
            self.conn.execute(
                "DELETE FROM pending WHERE record_key NOT IN (SELECT record_key FROM pending "
                "ORDER BY last_seen DESC, record_key LIMIT ?)", (MAX_PENDING,))
        return sorted(enrolled), others

    def removed_keys(self) -> set[bytes]:
        return {bytes(r[0]) for r in self.conn.execute(
            "SELECT record_key FROM devices WHERE removed IS NOT NULL")}

    def to_check(self, keys: Iterable[bytes], now: float, limit: int = 8) -> list[bytes]:
        """Which pending devices' records to read this round: not read in ``RECHECK``
        seconds, at most ``limit`` (a flood of keys costs a bounded number of DHT reads)."""
        wanted = set(keys)
        rows = self.conn.execute(
            "SELECT record_key FROM pending WHERE checked IS NULL OR checked < ? "
            "ORDER BY checked IS NOT NULL, checked, record_key", (now - RECHECK,))
        return [bytes(r[0]) for r in rows if bytes(r[0]) in wanted][:limit]

    def note_record(self, record_key: bytes, record: DeviceRecord | None, now: float,
                    error: str | None = None) -> None:
        """What a pending device's record says (stream names, time), or why it is unusable."""
        streams = (json.dumps([_printable(name, 100) for name, _key in record.streams][:64])
                   if record else None)
        self.conn.execute(
            "UPDATE pending SET checked = ?, record_time = ?, streams = ?, error = ? "
            "WHERE record_key = ?", (now, float(record.time) if record else None, streams,
                                     None if record else _printable(error or "no record", 200),
                                     record_key))


def _printable(text: str, limit: int) -> str:
    """What a stranger's record says, safe to print on an operator's terminal: control
    characters (escape sequences) replaced, length capped."""
    return "".join(c if c.isprintable() else "\ufffd" for c in text[:limit])


def stream_owners(conn: Conn, device_id: int,
                  names: Iterable[str]) -> dict[str, str]:
    """Of these stream names, the ones another enrolled device already owns: name -> that
    device's name. (A record that claims them is refused.)"""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    out: dict[str, str] = {}
    for k in range(0, len(wanted), 500):
        part = wanted[k:k + 500]
        marks = ",".join("?" * len(part))
        for stream, device, key in conn.execute(
                f"SELECT s.name, d.name, d.record_key FROM streams s JOIN devices d "  # noqa: S608
                f"ON d.id = s.device_id WHERE s.name IN ({marks}) AND s.device_id != ? "
                "AND d.enrolled IS NOT NULL AND d.removed IS NULL", (*part, device_id)):
            out[stream] = display_name(device, bytes(key))
    return out


def note_reach(conn: Conn, record_key: bytes, state: str, now: float) -> None:
    """Why a device is or is not collected (issue 19): ``connected since T``, ``unreachable
    since T: error``, ``no address and not connected``... kept for ``devices list`` (a table
    the daemon writes and the CLI reads)."""
    conn.execute("INSERT INTO reach (record_key, state, at) VALUES (?, ?, ?) ON CONFLICT "
                 "(record_key) DO UPDATE SET state = excluded.state, at = excluded.at",
                 (record_key, _printable(state, 300), now))


def reach(conn: Conn) -> dict[bytes, str]:
    """Each device's reach as last noted by the daemon (nothing noted yet: empty)."""
    return {bytes(k): str(s) for k, s in conn.execute("SELECT record_key, state FROM reach")}


class _Finder(Protocol):
    async def devices_on(self, dht: Any, fleet: str) -> set[bytes]: ...

    async def device(self, dht: Any, record_key: bytes, min_seq: int = 0) -> Any: ...


async def discover(roster: Roster, collector: _Finder, dht: Any, fleet: str,
                   extra: Iterable[bytes] = (), now: float | None = None) -> list[bytes]:
    """A round's discovery: the keys on the fleet topic (and ``extra``, the config's
    ``[collect].devices``) split into the enrolled devices to collect, returned, and the
    others, kept pending with what their record says (a few records read per round). A failed
    lookup is logged: the enrolled devices are collected all the same."""
    t = time.time() if now is None else now
    seen = set(extra)
    try:
        seen |= await collector.devices_on(dht, fleet)
    except Exception as exc:  # the DHT failing must not stop the round
        log.warning("fleet lookup failed: %s", exc)
    enrolled, others = roster.split(seen, t)
    for key in roster.to_check(others, t):
        try:
            dev = await collector.device(dht, key)
        except Exception as exc:
            roster.note_record(key, None, t, f"{type(exc).__name__}: {exc}")
            continue
        roster.note_record(key, dev.record if dev is not None else None, t,
                           None if dev is not None else "no usable record on the DHT")
    if others:
        log.info("%d device(s) on the fleet topic are not enrolled (pending): "
                 "`cairn gateway devices list`", len(others))
    return enrolled

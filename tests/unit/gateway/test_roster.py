"""The fleet roster (cairn_gateway.roster) over a real SQLite store: enrol, remove, re-bind a
name, pending devices, the stream-name rule the collector applies, the migration of a store
made before the roster."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cairn.fleet.enrollment import EnrollmentError
from cairn.fleet.record import DeviceRecord
from cairn_gateway.roster import (
    MAX_PENDING,
    RECHECK,
    Roster,
    RosterError,
    display_name,
    stream_owners,
)
from cairn_gateway.schedule import Backoff, Schedule
from cairn_gateway.store import Store
from tests.scorecard import record
from tests.unit.gateway.test_gateway_schedule import FakeEdges, device

A, B, C = b"\xaa" * 32, b"\xbb" * 32, b"\xcc" * 32


@pytest.fixture
def store(store_target: Callable[[str], str]) -> Iterator[Store]:
    s = Store(store_target("gw"))
    yield s
    s.close()


def test_enrol_list_and_remove(store: Store) -> None:
    r = Roster(store.conn)
    m = r.enroll(A, "board-1", 10.0)
    assert (m.name, m.status, m.enrolled, m.removed) == ("board-1", "enrolled", 10.0, None)
    assert r.enroll(A, "board-1", 11.0).enrolled == 10.0  # the same again: no change
    r.enroll(B, "board-2", 12.0)
    assert [x.name for x in r.members()] == ["board-1", "board-2"]
    assert r.enrolled_keys() == {A, B}
    gone = r.remove("board-1", 20.0)
    assert (gone.status, gone.removed) == ("removed", 20.0)
    assert r.enrolled_keys() == {B}
    assert [(x.name, x.status) for x in r.members()] == [("board-2", "enrolled"),
                                                         ("board-1", "removed")]
    assert r.find("board-2") == r.get(B) and r.find(B.hex()) == r.get(B)
    assert r.find("nobody") is None and r.find("zz") is None


def test_a_name_is_bound_to_one_key_and_a_key_to_one_name(store: Store) -> None:
    r = Roster(store.conn)
    r.enroll(A, "board-1", 1.0)
    with pytest.raises(RosterError, match=f"'board-1' is bound to device {A.hex()}"):
        r.enroll(B, "board-1", 2.0)
    with pytest.raises(RosterError, match="already enrolled as 'board-1'"):
        r.enroll(A, "other", 2.0)
    with pytest.raises(RosterError, match="no enrolled device is named 'nobody'"):
        r.remove("nobody", 2.0)
    with pytest.raises(EnrollmentError, match="not valid"):
        r.enroll(C, "bad name", 2.0)
    with pytest.raises(RosterError, match="32 bytes"):
        r.enroll(b"short", "x", 2.0)
    assert r.enrolled_keys() == {A}  # nothing of the refused ones stored
    # the unique index holds even if the checks were bypassed
    with pytest.raises(store.conn.IntegrityError):
        store.conn.execute("INSERT INTO devices (record_key, name, first_seen, last_seen, "
                           "enrolled) VALUES (?, 'board-1', 0, 0, 0)", (B,))


def test_key_rotation_rebinds_the_name_and_keeps_the_old_data_flagged(store: Store) -> None:
    r = Roster(store.conn)
    r.enroll(A, "board-1", 1.0)
    old = store.device(A, None, 5.0)
    store.stream(old, "board-1/temperature", b"k" * 32)
    r.remove("board-1", 10.0)
    r.enroll(B, "board-1", 11.0)  # the replaced board's new key, under the same name
    assert r.by_name("board-1") == r.get(B)
    assert [(x.record_key, x.status) for x in r.members()] == [(B, "enrolled"),
                                                               (A, "removed")]
    # the old key's stream name is free for the new key (its owner was removed)
    new = store.device(B, None, 12.0)
    assert stream_owners(store.conn, new, ["board-1/temperature"]) == {}
    assert store.conn.execute("SELECT count(*) FROM streams").fetchone()[0] == 1  # kept
    with pytest.raises(RosterError, match="bound to device"):
        r.enroll(A, "board-1", 13.0)  # the old key cannot take the name back
    assert r.enroll(A, "board-1-old", 13.0).status == "enrolled"  # re-enrolled, renamed


def test_unenrolled_keys_are_pending_with_what_their_record_says(store: Store) -> None:
    r = Roster(store.conn)
    r.enroll(A, "board-1", 1.0)
    r.enroll(C, "board-3", 1.0)
    r.remove("board-3", 2.0)
    collect, pending = r.split([A, B, C, b"short"], 5.0)
    assert collect == [A] and pending == [B]  # removed: neither collected nor pending
    assert r.to_check(pending, 5.0) == [B]
    r.note_record(B, DeviceRecord(time=1234, streams=[("board-1/temperature", None)]), 5.0)
    assert r.to_check(pending, 6.0) == []  # read again only after RECHECK seconds
    assert r.to_check(pending, 5.0 + RECHECK + 1) == [B]
    r.split([B], 9.0)
    [p] = r.pending()
    assert (p.record_key, p.first_seen, p.last_seen, p.streams, p.record_time) == (
        B, 5.0, 9.0, ("board-1/temperature",), 1234.0)
    r.note_record(B, DeviceRecord(time=1, streams=[("\x1b]0;pwned\x07" + "x" * 200, None)]),
                  9.5)  # a stranger's escape sequences never reach the operator's terminal
    [shown] = r.pending()[0].streams
    assert shown == "\ufffd]0;pwned\ufffd" + "x" * 90 and len(shown) == 100
    r.note_record(B, None, 10.0, "no usable record on the DHT")
    assert r.pending()[0].error == "no usable record on the DHT"
    r.enroll(B, "board-2", 11.0)
    assert r.pending() == []  # enrolled: no longer pending


def test_a_flood_of_keys_keeps_the_pending_list_bounded(store: Store) -> None:
    r = Roster(store.conn)
    keys = [i.to_bytes(32, "big") for i in range(MAX_PENDING + 500)]
    r.split(keys[:MAX_PENDING], 1.0)
    r.split(keys[MAX_PENDING:], 2.0)
    pending = r.pending()
    assert len(pending) == MAX_PENDING
    assert {p.record_key for p in pending} >= set(keys[MAX_PENDING:])  # the newest are kept
    assert len(r.to_check(keys, 3.0)) == 8  # a bounded number of record reads per round
    record("fleet", "flood of unenrolled keys on the fleet topic", len(keys),
           len(pending) - MAX_PENDING, "rows past the bound",
           detail=f"pending kept to {MAX_PENDING} rows, 8 record reads a round")


async def test_a_record_claiming_another_devices_streams_is_refused(
        tmp_path: Path, store: Store) -> None:
    """Both enrolled: the second's record lists the first's stream names. The collector
    refuses it (naming the owner), stores nothing of it, and syncs the first."""
    clock = [0.0]
    c = FakeEdges(tmp_path, store, Schedule(2, Backoff(1.0, 300.0, jitter=0.0)), clock)
    r = Roster(store.conn)
    honest, copycat = device(1, "board-1/temp", "board-1/co2"), device(2, "board-1/temp")
    r.enroll(honest.record_key, "board-1", 0.0)
    r.enroll(copycat.record_key, "board-2", 0.0)
    try:
        first = await c.sync_devices([honest], None)
        assert [x.stream for x in first] == ["board-1/co2", "board-1/temp"]
        both = await c.sync_devices([honest, copycat], None)
        refused = [x for x in both if x.error]
        assert [(x.stream, x.error) for x in refused] == [
            ("board-1/temp", "refused: stream 'board-1/temp' belongs to device 'board-1'")]
        assert [x.stream for x in both if not x.error] == ["board-1/co2", "board-1/temp"]
        assert c.started.count("board-1/temp") == 2  # the honest one's, twice; never the other
        owners = dict(store.conn.execute(
            "SELECT s.name, d.record_key FROM streams s JOIN devices d ON d.id = s.device_id"))
        assert owners == {"board-1/temp": honest.record_key, "board-1/co2": honest.record_key}
        stolen = sum(1 for k in owners.values() if k == copycat.record_key)
    finally:
        c.close()
    record("fleet", "enrolled device claiming another's stream names", 1, stolen,
           "streams taken", detail="refused, naming the owner; nothing of it stored")


def test_a_store_made_before_the_roster_is_migrated(tmp_path: Path) -> None:
    """A gw.db of the previous version: its device (no name) keeps its row and data, is shown
    as unenrolled-KEY, and is not collected until enrolled."""
    import sqlite_utils

    from cairn_gateway.store import MIGRATIONS

    path = tmp_path / "gw.db"
    old = sqlite_utils.Database(path)
    MIGRATIONS.apply(old, stop_before="m003_fleet_roster")
    old.execute("INSERT INTO devices (id, record_key, name, first_seen, last_seen) "
                "VALUES (1, ?, NULL, 1, 1)", [A])
    old.execute("INSERT INTO streams (device_id, name, log_key) VALUES (1, 'b/t', ?)", [B])
    old.conn.commit()
    old.close()
    s = Store(path)
    try:
        r = Roster(s.conn)
        assert r.enrolled_keys() == set() and r.members() == []
        assert display_name(None, A) == "unenrolled-" + A.hex()[:12]
        m = r.enroll(A, "board-1", 5.0)  # the row is kept, with its stream
        assert (m.first_seen, m.name) == (1.0, "board-1")
        assert s.conn.execute("SELECT count(*) FROM streams WHERE device_id = 1"
                              ).fetchone()[0] == 1
    finally:
        s.close()


class FakeFleet:
    """What discover() asks of a collector: the keys on the topic and a device's record;
    ``broken``: the lookup fails; records of keys in ``bad`` raise, of others are None."""

    def __init__(self, on_topic: set[bytes], records: dict[bytes, DeviceRecord]) -> None:
        self.on_topic, self.records = on_topic, records
        self.broken = False
        self.bad: set[bytes] = set()
        self.read: list[bytes] = []

    async def devices_on(self, dht: object, fleet: str) -> set[bytes]:
        if self.broken:
            raise TimeoutError("the DHT did not answer")
        return set(self.on_topic)

    async def device(self, dht: object, record_key: bytes, min_seq: int = 0) -> object:
        self.read.append(record_key)
        if record_key in self.bad:
            raise ConnectionError("a node sent garbage")
        rec = self.records.get(record_key)
        return None if rec is None else type("Dev", (), {"record": rec})()


async def test_discover_collects_enrolled_devices_only_and_notes_the_rest(
        store: Store) -> None:
    from cairn_gateway.roster import discover

    r = Roster(store.conn)
    r.enroll(A, "board-1", 0.0)
    fleet = FakeFleet({A, B, C}, {B: DeviceRecord(time=7, streams=[("board-1/t", None)])})
    fleet.bad.add(C)
    assert await discover(r, fleet, None, "default", [b"\xdd" * 32], now=10.0) == [A]
    assert sorted(fleet.read) == sorted([B, C, b"\xdd" * 32])  # never A's: it is collected
    pending = {p.record_key: p for p in r.pending()}
    assert pending[B].streams == ("board-1/t",) and pending[B].record_time == 7.0
    assert pending[C].error == "ConnectionError: a node sent garbage"
    assert pending[b"\xdd" * 32].error == "no usable record on the DHT"
    fleet.broken = True  # the lookup fails: the enrolled devices are collected all the same
    assert await discover(r, fleet, None, "default", now=11.0) == [A]
    again = FakeFleet({A, B, C}, {})
    await discover(r, again, None, "default", now=12.0)
    assert again.read == []  # records read again only after RECHECK seconds...
    await discover(r, again, None, "default", now=10.0 + RECHECK + 1)
    assert sorted(again.read) == [B, C]  # ...then again (the extra key was not seen since)

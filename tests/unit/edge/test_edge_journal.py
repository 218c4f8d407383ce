"""The edge's tick journal: commits between checkpoints survive a crash, come back byte for byte,
and a damaged or foreign journal is reported, never silently trusted."""

from __future__ import annotations

import logging
import shutil
import sqlite3
from pathlib import Path

import pytest

from cairn.frames import Frame, Sample
from cairn_edge.journal import (
    HEADER,
    LEGACY_MAGIC,
    MAGIC,
    Journal,
    encode_state,
    encode_stream,
    encode_tick,
    frame,
    read_journal,
    seed,
)
from cairn_edge.streams import JOURNAL_NAME, StreamsError, StreamStore, peek, stream_log_key

SEED = bytes(range(32))
T0 = 1_764_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def tick(k: int, streams: int = 3) -> dict[str, list[Sample]]:
    return {f"b/s{j}": [Sample(f"b/s{j}", "Cel", T0 + k, float(k * 10 + j))]
            for j in range(streams)}


def state_of(s: StreamStore) -> dict[str, tuple[int, bytes, bytes | None, list[bytes]]]:
    return {n: (lg.length, lg.tree_hash(), lg.signature, [lg.get(i) for i in range(lg.length)])
            for n, lg in s.logs.items()}


def crash(s: StreamStore) -> None:
    """What kill -9 leaves: the open transaction is lost, the journal file stays."""
    assert s.journal is not None
    s.journal.close()
    s.shared.raw.close()


def test_commits_since_the_checkpoint_come_back_byte_for_byte(tmp_path: Path) -> None:
    direct = StreamStore(tmp_path / "direct", SEED, checkpoint_interval=0)
    held = StreamStore(tmp_path / "held", SEED, checkpoint_interval=300, clock=Clock())
    for k in range(20):
        direct.commit(tick(k))
        held.commit(tick(k))
    want = state_of(direct)
    assert state_of(held) == want  # the same logs, signatures included
    assert held.checkpoints == 0 and held.journal is not None and held.journal.size > HEADER
    crash(held)
    again = StreamStore(tmp_path / "held", SEED)
    try:
        assert state_of(again) == want
        assert again.journal is not None and again.journal.size == HEADER  # checkpointed
        assert all(lg.verify_all().blocks == 20 for lg in again.logs.values())
        assert again.last_time("b/s0") == T0 + 19  # redeliveries are still recognised
        r = again.commit({"b/s0": [Sample("b/s0", "Cel", T0 + 19, 190.0)]})
        assert r.duplicates == 1 and r.samples == 0
    finally:
        again.close()
        direct.close()


def test_a_crash_after_the_checkpoint_commit_appends_nothing_twice(tmp_path: Path) -> None:
    s = StreamStore(tmp_path, SEED, clock=Clock())
    for k in range(5):
        s.commit(tick(k))
    kept = (tmp_path / JOURNAL_NAME).read_bytes()  # the journal as it was before the clear
    want = state_of(s)
    s.close()  # checkpoint: the database holds it all, the journal is emptied
    (tmp_path / JOURNAL_NAME).write_bytes(kept)  # ... as if the crash came before the clear
    again = StreamStore(tmp_path, SEED)
    try:
        assert state_of(again) == want
    finally:
        again.close()


def test_state_written_between_checkpoints_is_durable(tmp_path: Path) -> None:
    s = StreamStore(tmp_path, SEED, clock=Clock())
    s.commit(tick(0))  # a transaction is held from here on
    s.set_state("dht_seq", 41)
    s.set_state("dht_seq", 42)
    crash(s)
    again = StreamStore(tmp_path, SEED)
    try:
        assert again.get_state("dht_seq") == 42
    finally:
        again.close()


def test_checkpoints_come_by_time_or_by_journal_size(tmp_path: Path) -> None:
    clock = Clock()
    s = StreamStore(tmp_path / "t", SEED, checkpoint_interval=10, clock=clock)
    for k in range(12):
        s.commit(tick(k))
        clock.now += 1
    assert s.checkpoints == 1  # at the commit 10 s after the first
    s.close()
    b = StreamStore(tmp_path / "b", SEED, checkpoint_interval=1e6, checkpoint_bytes=2000,
                    clock=clock)
    for k in range(60):  # about 100 bytes a tick
        b.commit(tick(k))
    assert b.checkpoints >= 2
    assert b.journal is not None and b.journal.size < 2000 + 1000
    b.close()


def test_a_torn_last_record_ends_the_journal_and_is_kept_aside(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = StreamStore(tmp_path, SEED, clock=Clock())
    for k in range(4):
        s.commit(tick(k))
    crash(s)
    with open(tmp_path / JOURNAL_NAME, "ab") as f:
        f.write(frame(encode_tick([(0, 4, [b"never acknowledged"])]), seed(0))[:-3])  # cut
    with caplog.at_level(logging.WARNING, "cairn.edge"):
        again = StreamStore(tmp_path, SEED)
    try:
        assert {n: lg.length for n, lg in again.logs.items()} == {f"b/s{j}": 4 for j in range(3)}
        aside = list(tmp_path.glob(f"{JOURNAL_NAME}.damaged-*"))
        assert len(aside) == 1 and aside[0].read_bytes().endswith(b"never acknowled")
        assert "damaged record" in caplog.text
    finally:
        again.close()


def test_a_journal_that_contradicts_the_log_stops_the_open(tmp_path: Path) -> None:
    s = StreamStore(tmp_path, SEED, clock=Clock())
    s.commit(tick(0))
    s.close()
    before = (tmp_path / "streams.db").read_bytes()
    other = Frame((Sample("b/s0", "Cel", T0, -1.0),)).encode()
    j = Journal(tmp_path / JOURNAL_NAME)
    j.write(encode_stream(0, "b/s0", "Cel"), encode_tick([(0, 0, [other])]))
    j.close()
    with pytest.raises(StreamsError, match="block 0 in the journal differs"):
        StreamStore(tmp_path, SEED)
    assert (tmp_path / "streams.db").read_bytes() == before  # nothing changed
    # and a journal that skips blocks
    (tmp_path / JOURNAL_NAME).write_bytes(MAGIC + (1).to_bytes(8, "little"))  # the db's
    j = Journal(tmp_path / JOURNAL_NAME)
    j.write(encode_stream(0, "b/s0", "Cel"), encode_tick([(0, 5, [other])]))
    j.close()
    with pytest.raises(StreamsError, match="continues at block 5, but its log holds 1"):
        StreamStore(tmp_path, SEED)
    # a file that is not a journal at all
    (tmp_path / JOURNAL_NAME).write_bytes(b"SQLite format 3\x00" + bytes(100))
    with pytest.raises(StreamsError, match="not a Cairn journal"):
        StreamStore(tmp_path, SEED)


def test_a_tick_naming_an_unknown_stream_is_refused(tmp_path: Path) -> None:
    j = Journal(tmp_path / JOURNAL_NAME)
    j.write(encode_tick([(7, 0, [b"x"])]))
    j.close()
    with pytest.raises(StreamsError, match="stream number 7, which the journal never"):
        StreamStore(tmp_path, SEED)


def test_a_failed_journal_write_stops_the_store_and_a_restart_recovers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Disk full: the commit that could not be journaled is not acknowledged (it raises), the
    store takes no more commits (it says why), and opening it again (the agent's restart)
    gives exactly what was acknowledged; then it works again."""
    s = StreamStore(tmp_path, SEED, clock=Clock())
    s.commit(tick(0))
    s.checkpoint()
    s.commit(tick(1))  # acknowledged: in the journal, not yet in the database
    s.commit({"b/new": [Sample("b/new", "Cel", T0, 1.0)]})
    want = state_of(s)
    assert s.journal is not None

    def full(*bodies: bytes) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(s.journal, "write", full)
    with pytest.raises(OSError, match="No space"):
        s.commit({**tick(2), "b/other": [Sample("b/other", "Cel", T0, 1.0)]})
    monkeypatch.undo()
    assert s.broken is not None and "No space" in s.broken
    with pytest.raises(StreamsError, match="stopped after a failed write"):
        s.commit(tick(2))
    with pytest.raises(StreamsError, match="stopped after a failed write"):
        s.set_state("dht_seq", 9)
    s.close()  # no checkpoint of a broken store
    again = StreamStore(tmp_path, SEED)
    try:
        assert state_of(again) == want  # every acknowledged commit, nothing of the failed one
        again.commit(tick(2))
        assert again.logs["b/s0"].length == 3 and "b/other" not in again.logs
        assert all(lg.verify_all().blocks == lg.length for lg in again.logs.values())
    finally:
        again.close()


def test_a_failed_checkpoint_stops_the_store(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    s = StreamStore(tmp_path, SEED, clock=Clock())
    for k in range(3):
        s.commit(tick(k))
    want = state_of(s)
    assert s.journal is not None

    def eio() -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(s.journal, "clear", eio)  # the database committed, the journal stuck
    with pytest.raises(StreamsError, match="a checkpoint failed"):
        s.checkpoint()
    monkeypatch.undo()
    with pytest.raises(StreamsError, match="stopped after a failed write"):
        s.commit(tick(3))
    s.close()
    again = StreamStore(tmp_path, SEED)  # the journal's commits are in the database: compared
    try:
        assert state_of(again) == want
    finally:
        again.close()


def test_peek_reads_lengths_while_the_agent_holds_its_transaction(tmp_path: Path) -> None:
    s = StreamStore(tmp_path, SEED, clock=Clock())
    s.commit(tick(0))
    s.checkpoint()
    for k in range(1, 4):
        s.commit(tick(k))  # in the held transaction and the journal only
    try:
        assert peek(tmp_path) == {f"b/s{j}": 4 for j in range(3)}
        assert stream_log_key(SEED, "b/s0") == s.logs["b/s0"].key
        assert len(read_journal(tmp_path / JOURNAL_NAME)) == 3 + 3  # 3 streams, 3 ticks
    finally:
        s.close()


def test_the_journal_is_copied_not_lost_when_the_database_is_missing(tmp_path: Path) -> None:
    """A journal without its database (restored from a backup of only one file) builds the
    logs it describes from nothing: every commit since the last checkpoint, no more."""
    s = StreamStore(tmp_path / "a", SEED, clock=Clock())
    for k in range(3):
        s.commit(tick(k))
    shutil.copy(tmp_path / "a" / JOURNAL_NAME, tmp_path / "journal")
    s.close()
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "journal", tmp_path / "b" / JOURNAL_NAME)
    b = StreamStore(tmp_path / "b", SEED)
    try:
        assert {n: lg.length for n, lg in b.logs.items()} == {f"b/s{j}": 3 for j in range(3)}
    finally:
        b.close()


def test_a_snapshot_of_a_running_store_holds_every_durable_commit(tmp_path: Path) -> None:
    s = StreamStore(tmp_path / "live", SEED, clock=Clock())
    for k in range(3):
        s.commit(tick(k))
    s.checkpoint()
    for k in range(3, 7):
        s.commit(tick(k))  # held and journaled, not in the file yet
    try:
        copy = StreamStore.snapshot(tmp_path / "live", SEED, tmp_path / "copy")
        try:
            assert state_of(copy) == state_of(s)
        finally:
            copy.close()
        assert s.journal is not None and s.journal.generation == 1
    finally:
        s.close()


def test_an_older_generation_left_after_the_new_records_is_not_read_as_this_one(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A power cut that keeps the new generation's records but drops the truncate before them
    leaves the older generation's records after them, whole. Their stream numbers are the
    older generation's (0 was b/s1 then, b/s2 now): read as this generation's, b/s1's frame
    was appended to b/s2 and signed with b/s2's key."""
    s = StreamStore(tmp_path, SEED, clock=Clock())
    s.commit({"b/s1": [Sample("b/s1", "Cel", T0, 1.0)]})
    s.commit({"b/s1": [Sample("b/s1", "Cel", T0 + 1, 2.0)]})
    old = (tmp_path / JOURNAL_NAME).read_bytes()
    s.checkpoint()
    s.commit({"b/s2": [Sample("b/s2", "Cel", T0, 5.0)]})
    new = (tmp_path / JOURNAL_NAME).read_bytes()
    want = state_of(s)
    crash(s)
    assert len(old) > len(new) and old[len(new):]  # the older records after the new ones
    (tmp_path / JOURNAL_NAME).write_bytes(new + old[len(new):])
    with caplog.at_level(logging.WARNING, "cairn.edge"):
        again = StreamStore(tmp_path, SEED)
    try:
        assert state_of(again) == want
        assert [f.samples[0].value for f in map(Frame.decode, want["b/s2"][3])] == [5.0]
        assert "records of generation 0, from before the last checkpoint" in caplog.text
        assert not list(tmp_path.glob(f"{JOURNAL_NAME}.damaged-*"))  # in the db: not kept
    finally:
        again.close()


def test_records_are_read_as_the_databases_generation_when_the_header_update_was_lost(
        tmp_path: Path) -> None:
    s = StreamStore(tmp_path, SEED, clock=Clock())
    s.commit(tick(0))
    s.checkpoint()
    s.checkpoint()  # (nothing held: no new generation)
    s.commit(tick(1))
    s.checkpoint()
    for k in range(2, 5):
        s.commit(tick(k))
    want = state_of(s)
    assert s.journal is not None and s.journal.generation == 2
    crash(s)
    data = bytearray((tmp_path / JOURNAL_NAME).read_bytes())
    data[len(MAGIC):HEADER] = (1).to_bytes(8, "little")  # the header's last update dropped
    (tmp_path / JOURNAL_NAME).write_bytes(bytes(data))
    assert peek(tmp_path) == {f"b/s{j}": 5 for j in range(3)}  # read as the db's too
    again = StreamStore(tmp_path, SEED)
    try:
        assert state_of(again) == want
    finally:
        again.close()


def test_a_legacy_journal_is_read_unseeded_and_upgraded_at_its_checkpoint(
        tmp_path: Path) -> None:
    """A journal an older Cairn wrote (CAIRNJ1: checksums without the generation) after a
    crash: its commits come back, and the checkpoint makes the file a CAIRNJ2 one."""
    s = StreamStore(tmp_path, SEED, clock=Clock())
    for k in range(3):
        s.commit(tick(k))
        s.set_state("dht_seq", k)
    want = state_of(s)
    crash(s)
    data = (tmp_path / JOURNAL_NAME).read_bytes()
    legacy, off = bytearray(LEGACY_MAGIC + data[len(MAGIC):HEADER]), HEADER
    while off < len(data):  # the same records, framed as CAIRNJ1 framed them
        length = int.from_bytes(data[off:off + 4], "little")
        legacy += frame(data[off + 8:off + 8 + length])
        off += 8 + length
    (tmp_path / JOURNAL_NAME).write_bytes(bytes(legacy))
    assert peek(tmp_path) == {f"b/s{j}": 3 for j in range(3)}
    again = StreamStore(tmp_path, SEED, clock=Clock())
    try:
        assert state_of(again) == want and again.get_state("dht_seq") == 2
        assert (tmp_path / JOURNAL_NAME).read_bytes()[:HEADER] == MAGIC + (1).to_bytes(8, "little")
        again.commit(tick(3))
    finally:
        crash(again)
    last = StreamStore(tmp_path, SEED)
    try:
        assert {n: lg.length for n, lg in last.logs.items()} == {f"b/s{j}": 4 for j in range(3)}
    finally:
        last.close()


def test_a_damaged_generation_in_the_database_is_named(tmp_path: Path) -> None:
    s = StreamStore(tmp_path, SEED, clock=Clock())
    s.commit(tick(0))
    s.close()
    for bad in ("two", -1, 1.5, 1 << 70):
        db = sqlite3.connect(tmp_path / "streams.db")
        db.execute("UPDATE state SET value = ? WHERE key = 'journal_generation'",
                   (str(bad) if bad == 1 << 70 else bad,))
        db.commit()
        db.close()
        with pytest.raises(StreamsError, match=r"state journal_generation is .*not a generation"):
            StreamStore(tmp_path, SEED)
        with pytest.raises(StreamsError, match="state journal_generation is"):
            peek(tmp_path)


def test_encoded_records_are_bodies_that_the_journal_frames(tmp_path: Path) -> None:
    j = Journal(tmp_path / JOURNAL_NAME)
    j.write(encode_state("k", [1, 2]))
    j.close()
    data = (tmp_path / JOURNAL_NAME).read_bytes()
    assert data[HEADER:] == frame(encode_state("k", [1, 2]), seed(0))
    assert frame(b"x", seed(0)) != frame(b"x", seed(1))

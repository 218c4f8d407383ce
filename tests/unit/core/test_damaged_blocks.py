"""A block whose data went bad on disk (a bad sector: its bytes no longer match its leaf hash)
is found, named and counted, never served as if it were good, and never silent: the log says
it once at warning level, a replication peer is told the block is damaged (a Cairn peer) or
has no data for it (a JS peer), and the requester keeps the list of what it was refused.
Real SQLite log files with bytes flipped behind the log's back."""

from __future__ import annotations

import logging
import random
import sqlite3
from array import array
from pathlib import Path

import pytest

from cairn import crypto
from cairn.encoding import write_uint
from cairn.errors import DamagedBlockError, DecodeError, StorageError
from cairn.log import Log
from cairn.messages import Extension, MessageType, encode_extension
from cairn.replication.session import EXT_DAMAGED
from tests.unit.core.test_replication_session import (
    Recorder,
    connect,
    drop_extensions,
    shuttle,
)

SEED = bytes(range(32))
N = 300


def make_blocks() -> list[bytes]:
    rng = random.Random(11)
    return [rng.randbytes(rng.randrange(8, 120)) for _ in range(N)]


def flip_block(path: Path, index: int, *, table: str = "segments") -> None:
    """Flip one byte of block ``index``'s data where it is stored (its size and leaf hash
    stay): what a bad sector does to it."""
    db = sqlite3.connect(path)
    try:
        start, sizes_raw, blob = db.execute(
            f"SELECT start, sizes, data FROM {table} WHERE start <= ? "
            "ORDER BY start DESC LIMIT 1", (index,)).fetchone()
        sizes = array("I")
        sizes.frombytes(sizes_raw)
        off = sum(sizes[: index - start]) + sizes[index - start] // 2
        blob = blob[:off] + bytes([blob[off] ^ 0x40]) + blob[off + 1:]
        db.execute(f"UPDATE {table} SET data = ? WHERE start = ?", (blob, start))
        db.commit()
    finally:
        db.close()


@pytest.fixture
def damaged(tmp_path: Path) -> Path:
    """A log of N blocks (in batches of 50) with blocks 5, 77 and 150 flipped."""
    path = tmp_path / "edge.db"
    blocks = make_blocks()
    with Log.create(path, crypto.key_pair(SEED)) as lg:
        for i in range(0, N, 50):
            lg.append(blocks[i:i + 50])
    for i in (5, 77, 150):
        flip_block(path, i)
    return path


def test_a_damaged_block_is_named_said_once_and_told(
        damaged: Path, caplog: pytest.LogCaptureFixture) -> None:
    told: list[int] = []
    with Log.open(damaged) as lg:
        lg.on_damage = lambda _lg, i: told.append(i)
        assert lg.get(76) == make_blocks()[76]
        with caplog.at_level(logging.WARNING, logger="cairn.log"):
            for _ in range(3):  # asked again and again (each gateway round): said once
                with pytest.raises(DamagedBlockError, match="block 77 is damaged") as err:
                    lg.get(77)
                assert err.value.index == 77
        assert lg.damaged == {77} and told == [77]
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "block 77 is damaged" in warnings[0].getMessage()
        # a damaged block is a StorageError as before (what callers already catch)
        with pytest.raises(StorageError):
            list(lg.iter_blocks(0, 10))
        assert lg.damaged == {5, 77} and told == [77, 5]


def test_every_damaged_block_is_listed_and_the_rest_of_the_tree_verifies(damaged: Path) -> None:
    with Log.open(damaged) as lg:
        found = lg.damaged_blocks()
        assert found == [5, 77, 150]
        with pytest.raises(StorageError, match="block 5 is damaged"):
            lg.verify_all()
        report = lg.verify_all(found)  # the tree and signature, with the stored leaf hashes
        assert report.blocks == N and report.length == N


def test_cleared_damaged_block_is_no_longer_counted(damaged: Path) -> None:
    with Log.open(damaged) as lg:
        with pytest.raises(DamagedBlockError):
            lg.get(77)
        lg.clear(0, 100)
        assert lg.damaged == set()
        assert lg.damaged_blocks() == [150]


def test_a_cairn_peer_is_told_which_blocks_are_damaged(
        damaged: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with Log.open(damaged) as writer, \
            Log.replica(tmp_path / "replica.db", writer.key) as replica:
        w, r = connect(writer, replica)
        r.want(0, N)
        with caplog.at_level(logging.WARNING, logger="cairn.log"):
            shuttle(w, r)
            r.want(0, N)  # asked for again (the next round): no new warning
            shuttle(w, r)
        assert [i for i in range(N) if not replica.has(i)] == [5, 77, 150]
        assert r.refused == {5, 77, 150} and r.remote_damaged == {5, 77, 150}
        assert w.stats.damaged_refused == 6
        assert writer.damaged == {5, 77, 150}
        said = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(said) == 3 and all("is damaged" in m for m in said)
        # everything else arrived, verified
        blocks = make_blocks()
        assert all(replica.get(i) == blocks[i] for i in range(N) if i not in (5, 77, 150))


def test_a_cleared_block_is_refused_but_not_called_damaged(damaged: Path, tmp_path: Path) -> None:
    """What the protocol lets a requester tell apart: cleared (no data, no reason) and
    damaged (no data, and ``cairn/damaged`` first)."""
    with Log.open(damaged) as writer, \
            Log.replica(tmp_path / "replica.db", writer.key) as replica:
        writer.clear(100, 110)  # the disk quota, say
        w, r = connect(writer, replica)
        r.want(0, N)
        shuttle(w, r)
        assert r.refused == {5, 77, 150, *range(100, 110)}
        assert r.remote_damaged == {5, 77, 150}


def test_a_js_peer_refuses_without_a_reason(damaged: Path, tmp_path: Path) -> None:
    """A peer that does not speak Cairn's extensions gets plain no-data (hypercore's own
    answer); the requester still lists the refused blocks."""
    with Log.open(damaged) as writer, \
            Log.replica(tmp_path / "replica.db", writer.key) as replica:
        w, r = connect(writer, replica)
        r.want(0, N)
        seen = Recorder(drop_extensions)
        shuttle(w, r, a_to_b=seen, b_to_a=drop_extensions)
        assert r.refused == {5, 77, 150} and r.remote_damaged == set()
        assert w.stats.damaged_refused == 3
        assert seen.kinds()[MessageType.NO_DATA] == 3


def test_a_damaged_claim_for_a_block_not_asked_is_ignored(tmp_path: Path) -> None:
    """A peer cannot make a requester list blocks it never asked for (nor fill its memory)."""
    blocks = make_blocks()
    with Log.create(tmp_path / "w.db", crypto.key_pair(SEED)) as writer, \
            Log.replica(tmp_path / "r.db", writer.key) as replica:
        writer.append(blocks[:20])
        w, r = connect(writer, replica)
        for i in (3, 10**9):
            body = bytearray()
            write_uint(body, i)
            r.receive_data(int(MessageType.EXTENSION),
                      encode_extension(Extension(EXT_DAMAGED, bytes(body))))
        r.want(0, 20)
        shuttle(w, r)
        assert r.remote_damaged == set() and r.refused == set()
        assert all(replica.has(i) for i in range(20))


@pytest.mark.parametrize("message", [b"", b"\xff", b"\xfd\x01"])
def test_a_malformed_damaged_claim_is_a_remote_error(tmp_path: Path, message: bytes) -> None:
    """Bytes from a peer: a claim that does not decode ends the channel as any bad message does
    (DecodeError, a RemoteError), never another exception."""
    with Log.create(tmp_path / "w.db", crypto.key_pair(SEED)) as writer, \
            Log.replica(tmp_path / "r.db", writer.key) as replica:
        writer.append(make_blocks()[:3])
        _, r = connect(writer, replica)
        with pytest.raises(DecodeError):
            r.receive_data(int(MessageType.EXTENSION),
                      encode_extension(Extension(EXT_DAMAGED, message)))
        assert r.remote_damaged == set()

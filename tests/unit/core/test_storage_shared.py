"""The seam between a shared database and its logs: SharedDB drives every log in its file
through the public :class:`~cairn.storage.Participant` protocol and nothing else, so a
stand-in that only has those four methods takes part in commits, held transactions and
rollbacks exactly as a log's storage does."""

from __future__ import annotations

from pathlib import Path

import pytest

from cairn import crypto
from cairn.log import Log
from cairn.messages import Request, RequestBlock, RequestUpgrade
from cairn.storage import LogStorage, Participant, SharedDB


class _Recorder:
    """A participant that only says what it was asked to do."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def write_pending(self) -> None:
        self.calls.append("write pending")

    def committed(self) -> None:
        self.calls.append("committed")

    def rolled_back(self) -> None:
        self.calls.append("rolled back")

    def close(self) -> None:
        self.calls.append("close")


def test_a_commit_writes_what_was_kept_back_then_says_it_committed(tmp_path: Path) -> None:
    db = SharedDB(tmp_path / "s.db")
    rec = _Recorder()
    db.members.append(rec)
    with db.transaction():
        assert rec.calls == []
    assert rec.calls == ["write pending", "committed"]
    db.close()
    assert rec.calls[-1] == "close"


def test_a_rollback_says_so_and_nothing_is_written(tmp_path: Path) -> None:
    db = SharedDB(tmp_path / "s.db")
    rec = _Recorder()
    db.members.append(rec)
    with pytest.raises(KeyError), db.transaction():
        raise KeyError("the caller failed")
    assert rec.calls == ["rolled back"]
    db.hold()
    db.rollback()
    assert rec.calls == ["rolled back", "rolled back"]
    db.close()


def test_a_held_transaction_settles_each_commit_and_commits_at_release(tmp_path: Path) -> None:
    db = SharedDB(tmp_path / "s.db")
    rec = _Recorder()
    db.members.append(rec)
    db.hold()
    db.settle()
    assert rec.calls == ["write pending", "committed"]
    db.release()
    assert rec.calls == ["write pending", "committed"] * 2
    db.close()


def test_a_logs_storage_is_a_participant_and_keeps_its_blocks_through_the_protocol(
    tmp_path: Path,
) -> None:
    db = SharedDB(tmp_path / "s.db")
    writer = Log.create_in(db, "w", crypto.key_pair(b"\x01" * 32))
    member: Participant = writer._storage
    assert isinstance(member, LogStorage) and db.members == [member]
    with db.transaction():
        writer.append([b"a", b"b"])
    replica = Log.replica_in(db, "r", writer.key)
    with db.transaction():  # one-block proofs are kept back and written at the commit
        for i in range(2):
            replica.verify_and_apply(writer.proof(_request(i, upgrade=i == 0)))
    db.close()
    again = SharedDB(tmp_path / "s.db")
    lg = Log.open_in(again, "r")
    assert [lg.get(0), lg.get(1)] == [b"a", b"b"]
    again.close()



def _request(index: int, *, upgrade: bool) -> Request:
    return Request(block=RequestBlock(index, 0), manifest=upgrade,
                   upgrade=RequestUpgrade(0, 2) if upgrade else None)

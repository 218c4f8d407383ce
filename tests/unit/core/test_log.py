"""The log's API: append, get, sparse replicas, clear, truncate, forks, derived stream keys."""

from __future__ import annotations

import dataclasses
import shutil
import sqlite3
from pathlib import Path

import pytest

from cairn import crypto
from cairn.errors import ForkError, NotAvailableError, ReadOnlyError, VerificationError
from cairn.log import Log
from cairn.merkle import InvalidRequestError
from cairn.messages import (
    Request,
    RequestBlock,
    RequestSeek,
    RequestUpgrade,
    decode_data,
    encode_data,
)

SEED = bytes(range(32))


def make_writer(path: Path, n: int, compat: bool = False) -> Log:
    lg = Log.create(path, crypto.key_pair(SEED), compat=compat)
    if n:
        lg.append([f"block-{i}".encode() for i in range(n)])
    return lg


def sync_block(writer: Log, replica: Log, i: int) -> None:
    """Fetch block i into the replica the way a hypercore peer asks for it."""
    upgrade = None
    if replica.length < writer.length:
        upgrade = RequestUpgrade(replica.length, writer.length - replica.length)
    nodes = replica.missing_nodes(2 * i) if replica.length else 0
    req = Request(block=RequestBlock(i, nodes), upgrade=upgrade, manifest=replica.manifest is None)
    replica.verify_and_apply(decode_data(encode_data(writer.proof(req))))


def test_append_get_and_reopen(tmp_path: Path) -> None:
    with make_writer(tmp_path / "w.db", 0) as lg:
        assert lg.length == 0 and lg.signature is None and lg.writable
        assert lg.append([b"a", b"bb"]) == 2
        assert lg.append([b"ccc"]) == 3
        assert lg.append([]) == 3
        assert [lg.get(i) for i in range(3)] == [b"a", b"bb", b"ccc"]
        assert lg.byte_length == 6 and lg.contiguous_length == 3
        assert lg.has(2) and not lg.has(3)
        with pytest.raises(NotAvailableError, match="block 3"):
            lg.get(3)
        with pytest.raises(TypeError, match="sequence of blocks"):
            lg.append(b"raw")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="not bytes"):
            lg.append(["text"])  # type: ignore[list-item]
        key, th, sig = lg.key, lg.tree_hash(), lg.signature
    with Log.open(tmp_path / "w.db") as lg:
        assert (lg.key, lg.tree_hash(), lg.signature, lg.length) == (key, th, sig, 3)
        assert list(lg.iter_blocks()) == [(0, b"a"), (1, b"bb"), (2, b"ccc")]
        assert lg.seek(0) == (0, 0) and lg.seek(2) == (1, 1) and lg.seek(3) == (2, 0)


def test_create_refuses_existing_file(tmp_path: Path) -> None:
    make_writer(tmp_path / "w.db", 1).close()
    with pytest.raises(FileExistsError):
        make_writer(tmp_path / "w.db", 1)
    with pytest.raises(FileNotFoundError):
        Log.open(tmp_path / "missing.db")


@pytest.mark.parametrize("compat", [False, True])
def test_sparse_replica_gets_only_what_it_asks_for(tmp_path: Path, compat: bool) -> None:
    with (
        make_writer(tmp_path / "w.db", 100, compat) as w,
        Log.replica(tmp_path / "r.db", w.key) as r,
    ):
        assert not r.writable and r.length == 0
        sync_block(w, r, 57)
        assert r.length == 100 and r.get(57) == b"block-57" and r.compat == compat
        assert r.contiguous_length == 0 and not r.has(56)
        for i in (3, 99, 0, 1, 2):
            sync_block(w, r, i)
        assert r.contiguous_length == 4
        assert r.tree_hash() == w.tree_hash() and r.signature == w.signature
        assert r.public_key == w.public_key
        with pytest.raises(ReadOnlyError):
            r.append([b"x"])
        # the writer grows; the replica follows with an upgrade from its length
        w.append([b"more"] * 10)
        sync_block(w, r, 105)
        assert r.length == 110 and r.get(105) == b"more"
        assert r.verify_all().blocks == 7
        # a replica can serve what it holds, and another replica verifies it
        with Log.replica(tmp_path / "r2.db", w.key) as r2:
            sync_block(r, r2, 57)
            assert r2.get(57) == b"block-57"


def test_hash_and_seek_proofs_apply(tmp_path: Path) -> None:
    with make_writer(tmp_path / "w.db", 20) as w, Log.replica(tmp_path / "r.db", w.key) as r:
        offset = w.byte_length // 2
        # a seek travels with an upgrade (as hypercore asks for it): the proof narrows the tree
        # down to the block holding the byte
        r.verify_and_apply(
            w.proof(Request(seek=RequestSeek(offset), upgrade=RequestUpgrade(0, 20), manifest=True))
        )
        assert r.length == 20 and not r.has(0)
        assert r.seek(offset) == w.seek(offset)
        r.verify_and_apply(w.proof(Request(hash=RequestBlock(9, r.missing_nodes(9)))))
        assert r.get_node(9) == w.get_node(9)


def test_clear_keeps_the_tree(tmp_path: Path) -> None:
    with make_writer(tmp_path / "w.db", 50) as w:
        assert w.clear(10, 20) == 10
        assert not w.has(15) and w.has(20) and w.contiguous_length == 10
        with pytest.raises(NotAvailableError):
            w.get(15)
        assert w.verify_all().blocks == 40
        with pytest.raises(InvalidRequestError):
            w.proof(Request(block=RequestBlock(15, 0)))
        # proofs for what remains still work, including ones whose path crosses the hole
        with Log.replica(tmp_path / "r.db", w.key) as r:
            for i in (21, 9, 49):
                sync_block(w, r, i)
            assert r.get(21) == b"block-21"
        w.append([b"after"])
        assert w.length == 51 and w.verify_all().blocks == 41


def test_truncate_signs_a_new_fork(tmp_path: Path) -> None:
    with make_writer(tmp_path / "w.db", 10) as w:
        old_sig = w.signature
        w.truncate(6)
        assert (w.length, w.fork) == (6, 1) and w.signature != old_sig
        assert not w.has(6) and w.get(5) == b"block-5"
        w.append([b"new-6", b"new-7"])
        assert w.get(7) == b"new-7" and w.verify_all().blocks == 8
    with Log.open(tmp_path / "w.db") as w:
        assert (w.length, w.fork) == (8, 1)
        with pytest.raises(ValueError, match="truncate"):
            w.truncate(9)


def test_replica_follows_a_fork_that_keeps_its_history(tmp_path: Path) -> None:
    with make_writer(tmp_path / "w.db", 10) as w, Log.replica(tmp_path / "r.db", w.key) as r:
        sync_block(w, r, 2)  # replica trusts length 10 but holds only block 2
        old_fork_proof = w.proof(Request(block=RequestBlock(3, r.missing_nodes(6))))
        w.truncate(8)
        w.append([b"x"] * 5)
        # an upgrade from its own length is refused for a new fork ...
        with pytest.raises(VerificationError, match="new fork"):
            r.verify_and_apply(w.proof(Request(fork=1, block=RequestBlock(3, 0))))
        with pytest.raises(InvalidRequestError, match="fork 0, log is at fork 1"):
            w.proof(Request(fork=0, block=RequestBlock(12, 0), upgrade=RequestUpgrade(0, 13)))
        proof = w.proof(Request(fork=1, block=RequestBlock(12, 0), upgrade=RequestUpgrade(0, 13)))
        r.verify_and_apply(proof)
        assert (r.fork, r.length) == (1, 13) and r.get(12) == b"x"
        assert not r.frozen and r.verify_all().length == 13
        # and a proof from the old fork is stale now
        with pytest.raises(VerificationError, match="fork 0, log is at fork 1"):
            r.verify_and_apply(old_fork_proof)


def test_rewriting_held_history_is_a_fork(tmp_path: Path) -> None:
    with make_writer(tmp_path / "w.db", 8) as w, Log.replica(tmp_path / "r.db", w.key) as r:
        sync_block(w, r, 6)
        w.truncate(4)
        w.append([b"rewritten"] * 6)
        proof = w.proof(Request(fork=1, block=RequestBlock(9, 0), upgrade=RequestUpgrade(0, 10)))
        with pytest.raises(ForkError, match="differs"):
            r.verify_and_apply(proof)
        assert r.frozen and r.length == 8 and r.get(6) == b"block-6"
        [(kind, detail, local, remote)] = r.evidence()
        assert "node" in detail
        assert kind == "fork" and local and remote and decode_data(remote) == proof


def test_two_signatures_for_one_length_freeze_the_replica(tmp_path: Path) -> None:
    with make_writer(tmp_path / "a.db", 5) as a:
        pass
    shutil.copy(tmp_path / "a.db", tmp_path / "b.db")
    with (
        Log.open(tmp_path / "a.db") as a,
        Log.open(tmp_path / "b.db") as b,
        Log.replica(tmp_path / "r.db", a.key) as r,
    ):
        a.append([b"honest"])
        b.append([b"equivocation"])
        assert (a.length, a.fork) == (b.length, b.fork) and a.tree_hash() != b.tree_hash()
        sync_block(a, r, 5)
        proof = b.proof(Request(block=RequestBlock(5, 0), upgrade=RequestUpgrade(0, 6)))
        with pytest.raises(ForkError):
            r.verify_and_apply(proof)
        assert r.frozen and r.get(5) == b"honest"
        with pytest.raises(ForkError, match="frozen"):
            r.verify_and_apply(a.proof(Request(block=RequestBlock(1, r.missing_nodes(2)))))
    with Log.open(tmp_path / "r.db") as r:
        assert r.frozen and len(r.evidence()) == 1


def test_stream_keys_are_derived_from_one_seed() -> None:
    a = crypto.derive_stream_key_pair(SEED, "temperature")
    assert a == crypto.derive_stream_key_pair(SEED, "temperature")
    assert a.public_key != crypto.derive_stream_key_pair(SEED, "humidity").public_key
    assert a.public_key != crypto.derive_stream_key_pair(bytes(32), "temperature").public_key
    with pytest.raises(ValueError, match="32 bytes"):
        crypto.derive_stream_key_pair(b"short", "x")
    with pytest.raises(ValueError, match="empty"):
        crypto.derive_stream_key_pair(SEED, "")


def db_content(lg: Log) -> tuple[object, ...]:
    db = sqlite3.connect(lg.path)
    try:
        return tuple(
            tuple(db.execute(sql).fetchall())
            for sql in ("SELECT * FROM head", "SELECT start, count, hashes FROM segments",
                        "SELECT * FROM nodes ORDER BY idx", "SELECT * FROM meta")
        )
    finally:
        db.close()


def test_many_proofs_in_one_transaction(tmp_path: Path) -> None:
    with make_writer(tmp_path / "w.db", 300) as w, Log.replica(tmp_path / "r.db", w.key) as r:
        sync_block(w, r, 100)
        dry = Log.replica(tmp_path / "dry.db", w.key)
        sync_block(w, dry, 100)
        proofs = []
        for i in range(101, 180):  # each proof made for the state the ones before it leave
            proofs.append(w.proof(Request(block=RequestBlock(i, dry.missing_nodes(2 * i)))))
            dry.verify_and_apply(proofs[-1])
        dry.close()
        block40 = proofs[40].block
        assert block40 is not None
        bad = dataclasses.replace(proofs[40], block=dataclasses.replace(block40, value=b"forged"))
        before = db_content(r)
        with pytest.raises(VerificationError, match="proof 40 of 79"):
            r.verify_and_apply_many([*proofs[:40], bad, *proofs[41:]])
        assert db_content(r) == before  # rolled back whole
        assert not r.has(101) and r.has(100) and r.length == 300
        applied = r.verify_and_apply_many(proofs)
        assert [a.block for a in applied] == list(range(101, 180))
        assert all(r.get(i) == f"block-{i}".encode() for i in range(100, 180))
        assert r.verify_all().blocks == 80
    with Log.open(tmp_path / "r.db") as r:
        assert r.has(179) and not r.has(180)


def test_fork_inside_a_run_keeps_the_evidence(tmp_path: Path) -> None:
    with make_writer(tmp_path / "a.db", 5):
        pass
    shutil.copy(tmp_path / "a.db", tmp_path / "b.db")
    with Log.open(tmp_path / "a.db") as a, Log.open(tmp_path / "b.db") as b, \
            Log.replica(tmp_path / "r.db", a.key) as r:
        a.append([b"honest"])
        b.append([b"equivocation"])
        sync_block(a, r, 5)
        good = a.proof(Request(block=RequestBlock(1, r.missing_nodes(2))))
        forked = b.proof(Request(block=RequestBlock(5, 0), upgrade=RequestUpgrade(0, 6)))
        with pytest.raises(ForkError):
            r.verify_and_apply_many([good, forked])
        assert r.frozen and len(r.evidence()) == 1 and r.get(1) == b"block-1"


def test_missing_manifest_is_explained(tmp_path: Path) -> None:
    with make_writer(tmp_path / "w.db", 3) as w, Log.replica(tmp_path / "r.db", w.key) as r:
        with pytest.raises(VerificationError, match="manifest=True"):
            r.verify_and_apply(w.proof(Request(block=RequestBlock(0, 0),
                                               upgrade=RequestUpgrade(0, 3))))
        assert r.length == 0
        sync_block(w, r, 0)
        again = r.verify_and_apply(w.proof(Request(block=RequestBlock(0, r.missing_nodes(0)))))
        assert again.block == 0 and r.get(0) == b"block-0"  # a block sent twice: verified, kept


def test_segment_cache_budget_is_shared_and_reads_stay_true(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Random reads and proofs over two logs with a cache far smaller than them: every answer
    equals the one from a log opened fresh, and the cache stays inside its budget."""
    from cairn.storage import segments as storage

    monkeypatch.setattr(storage, "_SEGMENT_CACHE", 40_000)  # about 3 of the 40 segments
    rng = __import__("random").Random(5)
    logs = []
    for name in ("a", "b"):
        lg = Log.create(tmp_path / f"{name}.db", crypto.key_pair(bytes([ord(name)]) * 32))
        for start in range(0, 2000, 100):
            lg.append([f"{name}-{i}".encode() * 3 for i in range(start, start + 100)])
        logs.append(lg)
    try:
        fresh = [Log.open(tmp_path / "a.db"), Log.open(tmp_path / "b.db")]
        for _ in range(3000):
            k, i = rng.randrange(2), rng.randrange(2000)
            lg = logs[k]
            name = "ab"[k]
            assert lg.get(i) == f"{name}-{i}".encode() * 3
            req = Request(block=RequestBlock(i, rng.randrange(0, 6)))
            try:
                expected: object = fresh[k].proof(req)
            except InvalidRequestError as exc:  # a hint past the root: both must say so
                expected = str(exc)
            try:
                got: object = lg.proof(req)
            except InvalidRequestError as exc:
                got = str(exc)
            assert got == expected
            assert storage.POOL.cost <= 40_000
            assert len(storage.POOL.lru) < 10
        for f in fresh:
            f.close()
    finally:
        for lg in logs:
            lg.close()
    closed = {id(lg._storage) for lg in logs}
    assert all(id(owner) not in closed for owner, _ in storage.POOL.lru.values())  # let go


def test_many_logs_in_one_shared_database(tmp_path: Path) -> None:
    """One file, one transaction for appends to several logs; the same logs, byte for byte,
    as logs in files of their own."""
    from cairn.storage import SharedDB

    shared = SharedDB(tmp_path / "streams.db")
    kps = [crypto.key_pair(bytes([k + 1]) * 32) for k in range(3)]
    logs = [Log.create_in(shared, f"board-1/s{k}", kp) for k, kp in enumerate(kps)]
    alone = [Log.create(tmp_path / f"alone{k}.db", kp) for k, kp in enumerate(kps)]
    for tick in range(20):
        with shared.transaction():
            for k, lg in enumerate(logs):
                lg.append([f"tick {tick} stream {k}".encode()])
        for k, lg in enumerate(alone):
            lg.append([f"tick {tick} stream {k}".encode()])
    for lg, other in zip(logs, alone, strict=True):
        assert lg.key == other.key and lg.tree_hash() == other.tree_hash()
        req = Request(block=RequestBlock(7, 0), upgrade=RequestUpgrade(0, 20))
        assert lg.proof(req) == other.proof(req)
    assert shared.names() == ["board-1/s0", "board-1/s1", "board-1/s2"]
    shared.close()
    for lg in alone:
        lg.close()
    again = SharedDB(tmp_path / "streams.db")
    try:
        reopened = [Log.open_in(again, n) for n in again.names()]
        assert [lg.length for lg in reopened] == [20, 20, 20]
        assert all(lg.verify_all().blocks == 20 for lg in reopened)
        with pytest.raises(FileNotFoundError):
            Log.open_in(again, "nope")
        with pytest.raises(FileExistsError):
            Log.create_in(again, "board-1/s0", kps[0])
    finally:
        again.close()


def test_a_failed_shared_commit_changes_nothing(tmp_path: Path) -> None:
    from cairn.storage import SharedDB

    shared = SharedDB(tmp_path / "streams.db")
    a = Log.create_in(shared, "a", crypto.key_pair(b"\x01" * 32))
    b = Log.create_in(shared, "b", crypto.key_pair(b"\x02" * 32))
    with shared.transaction():
        a.append([b"a0"])
        b.append([b"b0"])
    def commit_then_fail() -> None:
        with shared.transaction():
            a.append([b"a1", b"a2"])
            Log.create_in(shared, "c", crypto.key_pair(b"\x03" * 32)).append([b"c0"])
            b.append([b"b1"])
            raise RuntimeError("power cut")

    with pytest.raises(RuntimeError, match="power cut"):
        commit_then_fail()
    assert (a.length, b.length) == (1, 1) and a.get(0) == b"a0"
    assert shared.names() == ["a", "b"]  # the log made in the failed commit is gone
    with shared.transaction():
        a.append([b"a1"])
    assert a.get(1) == b"a1" and a.verify_all().blocks == 2
    shared.close()
    again = SharedDB(tmp_path / "streams.db")
    try:
        assert [Log.open_in(again, n).length for n in again.names()] == [2, 1]
    finally:
        again.close()


def test_a_replica_in_a_shared_database(tmp_path: Path) -> None:
    from cairn.storage import SharedDB

    with make_writer(tmp_path / "w.db", 30) as w:
        shared = SharedDB(tmp_path / "gw.db")
        r = Log.replica_in(shared, "copy", w.key)
        try:
            for i in (3, 17, 29):
                sync_block(w, r, i)
            assert all(r.get(i) == w.get(i) for i in (3, 17, 29))
        finally:
            shared.close()


def test_plain_block_proofs_take_a_short_path_with_the_general_paths_answer(
        tmp_path: Path) -> None:
    """``generate_proof`` answers a request with only a block (what a downloader sends after
    its first request) by ``block_proof``; it must be the general path's answer, errors
    included, for every block, every ``nodes`` and lengths that are and are not powers of 2."""
    from cairn import proofs

    seen: set[str] = set()
    for n in (1, 2, 7, 16, 45):
        lg = make_writer(tmp_path / f"w{n}.db", n)
        st, head = lg._storage, lg._head
        for i in range(n + 2):
            for nodes in range(8):
                got: object
                want: object
                try:
                    got = proofs.block_proof(st, head.fork, head.length, RequestBlock(i, nodes),
                                              9, b"v", None)
                except InvalidRequestError as exc:
                    got = str(exc)
                try:
                    want = proofs._general_proof(
                        st, fork=head.fork, length=head.length, byte_length=head.byte_length,
                        roots=lg._roots, signature=head.signature, block=RequestBlock(i, nodes),
                        hash=None, seek=None, upgrade=None, request_id=9, value=b"v",
                        manifest=None)
                except InvalidRequestError as exc:
                    want = str(exc)
                assert got == want, (n, i, nodes)
                seen.add("error" if isinstance(got, str) else f"{len(got.block.nodes)} nodes"
                         if got.block else "?")
        lg.close()
    assert {"error", "0 nodes", "1 nodes", "3 nodes", "5 nodes"} <= seen, seen

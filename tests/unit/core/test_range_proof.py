"""Cairn's range proofs: one proof for a run of blocks.

``range_proof_nodes`` makes it, ``verify_range`` checks it against trusted roots, and
``Log.verify_and_apply_range`` stores the run on a replica in one transaction, all or nothing.
"""

from __future__ import annotations

import math
import random
import sqlite3
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from cairn import crypto, flat_tree
from cairn.crypto import leaf_hash
from cairn.errors import VerificationError
from cairn.log import Log, range_proof_nodes, verify_range
from cairn.messages import Node, Request, RequestBlock, RequestUpgrade

SEED = bytes(range(32))
MAX_LENGTH = 3000

#: Few examples each (the suite stays fast); derandomized by tests/conftest.py.
FEW = settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow])


def make_blocks(n: int) -> list[bytes]:
    rng = random.Random(11)
    return [rng.randbytes(rng.randrange(1, 48)) for _ in range(n)]


class Tree:
    """A writer of MAX_LENGTH blocks, and writers signed at shorter lengths made on demand.

    Not a dataclass: hypothesis prints a failing example's arguments, fixtures included, and
    would print every block.
    """

    def __init__(self, dir: Path, blocks: list[bytes], log: Log) -> None:
        self.dir = dir
        self.blocks = blocks
        self.log = log
        self.signed: dict[int, Log] = {}

    def __repr__(self) -> str:
        return f"Tree({len(self.blocks)} blocks)"

    def roots(self, length: int) -> list[Node]:
        """The roots of the tree of the first ``length`` blocks (the same nodes at any length)."""
        nodes = [self.log.get_node(i) for i in flat_tree.full_roots(2 * length)]
        assert all(n is not None for n in nodes)
        return [n for n in nodes if n is not None]

    def writer(self, length: int) -> Log:
        """A writer (same key) whose signed length is ``length``."""
        if length == MAX_LENGTH:
            return self.log
        if length not in self.signed:
            lg = Log.create(self.dir / f"w{length}.db", crypto.key_pair(SEED))
            lg.append(self.blocks[:length])
            self.signed[length] = lg
        return self.signed[length]


@pytest.fixture(scope="module")
def tree() -> Iterator[Tree]:
    with tempfile.TemporaryDirectory() as d:
        blocks = make_blocks(MAX_LENGTH)
        lg = Log.create(Path(d) / "writer.db", crypto.key_pair(SEED))
        for i in range(0, MAX_LENGTH, 700):
            lg.append(blocks[i : i + 700])
        t = Tree(Path(d), blocks, lg)
        yield t
        for w in [lg, *t.signed.values()]:
            w.close()


@st.composite
def spans(draw: st.DrawFn, max_length: int = MAX_LENGTH) -> tuple[int, int, int]:
    """(length, start, end): a run [start, end) inside a log of ``length`` blocks."""
    length = draw(st.integers(1, max_length))
    start = draw(st.integers(0, length - 1))
    end = draw(st.integers(start + 1, length))
    return length, start, end


def verify(tree: Tree, length: int, start: int, values: list[bytes], proof: list[Node]) -> None:
    verify_range(tree.roots(length), length, start, values, proof)


# -- an honest proof ------------------------------------------------------------------------


@FEW
@given(span=spans())
def test_honest_proof_verifies_and_is_small(tree: Tree, span: tuple[int, int, int]) -> None:
    length, start, end = span
    values, proof = tree.log.range_proof(start, end, length)
    assert values == tree.blocks[start:end]
    assert proof == range_proof_nodes(tree.log.get_node, length, start, end)
    assert len(proof) <= 2 * math.log2(length) + 2
    assert len({n.index for n in proof}) == len(proof)
    leaves, made = verify_range(tree.roots(length), length, start, values, proof)
    assert leaves == [leaf_hash(v) for v in values]
    for n in made:  # every node computed on the way is the writer's
        assert tree.log.get_node(n.index) == n
        assert flat_tree.right_span(n.index) < 2 * length


def test_proof_size_bound_for_every_run_of_small_logs() -> None:
    def any_node(i: int) -> Node:
        return Node(i, 0, bytes(32))

    for length in range(1, 49):
        bound = 2 * math.log2(length) + 2
        for start in range(length):
            for end in range(start + 1, length + 1):
                n = len(range_proof_nodes(any_node, length, start, end))
                assert n <= bound, (length, start, end, n)


@pytest.mark.parametrize(
    ("length", "start", "end"),
    [(1, 0, 1), (2, 0, 1), (2, 1, 2), (3, 2, 3), (8, 0, 8), (2048, 0, 2048), (3000, 2999, 3000),
     (3000, 0, 3000), (2049, 1, 2048)],
)
def test_edges(tree: Tree, length: int, start: int, end: int) -> None:
    values, proof = tree.log.range_proof(start, end, length)
    assert len(proof) <= 2 * math.log2(length) + 2
    verify(tree, length, start, values, proof)


# -- every corruption is rejected -------------------------------------------------------------


def flip(b: bytes, at: int, mask: int) -> bytes:
    return b[:at] + bytes([b[at] ^ mask]) + b[at + 1 :]


def test_every_single_byte_of_every_value_matters(tree: Tree) -> None:
    length, start, end = 37, 5, 19
    values, proof = tree.log.range_proof(start, end, length)
    tried = 0
    for j, v in enumerate(values):
        for at in range(len(v)):
            for mask in (0x01, 0x80, 0xFF):
                bad = [*values[:j], flip(v, at, mask), *values[j + 1 :]]
                with pytest.raises(VerificationError):
                    verify(tree, length, start, bad, proof)
                tried += 1
    assert tried == 3 * sum(len(v) for v in values)


@FEW
@given(span=spans(), data=st.data())
def test_changed_value_is_rejected(
    tree: Tree, span: tuple[int, int, int], data: st.DataObject
) -> None:
    length, start, end = span
    values, proof = tree.log.range_proof(start, end, length)
    j = data.draw(st.integers(0, len(values) - 1), label="value")
    kind = data.draw(st.sampled_from(["flip", "grow", "shrink", "swap"]), label="kind")
    bad = list(values)
    if kind == "flip":
        at = data.draw(st.integers(0, len(bad[j]) - 1), label="at")
        bad[j] = flip(bad[j], at, data.draw(st.integers(1, 255), label="mask"))
    elif kind == "grow":
        bad[j] += b"\x00"
    elif kind == "shrink":
        bad[j] = bad[j][:-1]
    else:
        k = data.draw(st.integers(0, len(values) - 1), label="other")
        assume(values[k] != values[j])
        bad[j], bad[k] = bad[k], bad[j]
    with pytest.raises(VerificationError):
        verify(tree, length, start, bad, proof)


@FEW
@given(span=spans(), data=st.data())
def test_proof_verifies_no_other_run(
    tree: Tree, span: tuple[int, int, int], data: st.DataObject
) -> None:
    """One value more or fewer at either end is another run: rejected, unless the proof is that
    run's honest proof too (a lone block at the end of the log is a root of its own: blocks
    before it need no node of it)."""
    length, start, end = span
    values, proof = tree.log.range_proof(start, end, length)
    kind = data.draw(st.sampled_from(["drop-first", "drop-last", "extra-last", "extra-first"]))
    if kind == "drop-first":
        assume(len(values) > 1)
        start, values = start + 1, values[1:]
    elif kind == "drop-last":
        assume(len(values) > 1)
        values = values[:-1]
    elif kind == "extra-last":
        values = [*values, tree.blocks[end] if end < MAX_LENGTH else b"x"]
    else:
        assume(start > 0)
        start, values = start - 1, [tree.blocks[start - 1], *values]
    end = start + len(values)
    if end <= length and proof == range_proof_nodes(tree.log.get_node, length, start, end):
        verify(tree, length, start, values, proof)
        assert kind == "drop-last" and flat_tree.full_roots(2 * length)[-1] == 2 * end
    else:
        with pytest.raises(VerificationError):
            verify(tree, length, start, values, proof)


@FEW
@given(span=spans(), data=st.data())
def test_wrong_start_is_rejected(
    tree: Tree, span: tuple[int, int, int], data: st.DataObject
) -> None:
    length, start, end = span
    values, proof = tree.log.range_proof(start, end, length)
    other = data.draw(st.integers(0, length).filter(lambda s: s != start), label="start")
    with pytest.raises(VerificationError):
        verify(tree, length, other, values, proof)


ProofChange = Callable[[list[Node], st.DataObject, Tree, int], list[Node]]


def remove_node(proof: list[Node], data: st.DataObject, tree: Tree, length: int) -> list[Node]:
    assume(proof)
    k = data.draw(st.integers(0, len(proof) - 1), label="node")
    return proof[:k] + proof[k + 1 :]


def duplicate_node(proof: list[Node], data: st.DataObject, tree: Tree, length: int) -> list[Node]:
    assume(proof)
    k = data.draw(st.integers(0, len(proof) - 1), label="node")
    at = data.draw(st.integers(0, len(proof)), label="at")
    return [*proof[:at], proof[k], *proof[at:]]


def extra_node(proof: list[Node], data: st.DataObject, tree: Tree, length: int) -> list[Node]:
    """Any other node of the tree (inside the run, outside it, a root, past the length)."""
    used = {n.index for n in proof}
    i = data.draw(st.integers(0, 2 * MAX_LENGTH - 2).filter(lambda i: i not in used), label="i")
    n = tree.log.get_node(i) or Node(i, 1, bytes(32))
    at = data.draw(st.integers(0, len(proof)), label="at")
    return [*proof[:at], n, *proof[at:]]


def change_node(proof: list[Node], data: st.DataObject, tree: Tree, length: int) -> list[Node]:
    assume(proof)
    k = data.draw(st.integers(0, len(proof) - 1), label="node")
    n = proof[k]
    what = data.draw(st.sampled_from(["hash", "size", "index"]), label="what")
    if what == "hash":
        at = data.draw(st.integers(0, 31), label="at")
        bad = n._replace(hash=flip(n.hash, at, data.draw(st.integers(1, 255), label="mask")))
    elif what == "size":
        bad = n._replace(size=n.size + data.draw(st.sampled_from([-1, 1, 1 << 20]), label="by"))
    else:
        used = {m.index for m in proof}
        i = data.draw(st.integers(0, 2 * MAX_LENGTH).filter(lambda i: i not in used), label="i")
        bad = n._replace(index=i)
    return [*proof[:k], bad, *proof[k + 1 :]]


def reorder_nodes(proof: list[Node], data: st.DataObject, tree: Tree, length: int) -> list[Node]:
    assume(len(proof) >= 2)
    k = data.draw(st.integers(0, len(proof) - 2), label="node")
    return [*proof[:k], proof[k + 1], proof[k], *proof[k + 2 :]]


@pytest.mark.parametrize(
    "change",
    [
        remove_node,
        duplicate_node,
        extra_node,
        change_node,
        reorder_nodes,
    ],
)
@FEW
@given(span=spans(), data=st.data())
def test_changed_proof_is_rejected(
    tree: Tree, change: ProofChange, span: tuple[int, int, int], data: st.DataObject
) -> None:
    length, start, end = span
    values, proof = tree.log.range_proof(start, end, length)
    bad = change(list(proof), data, tree, length)
    assert bad != proof
    try:
        verify(tree, length, start, values, bad)
    except VerificationError:
        return
    raise AssertionError(f"a changed proof verified: {proof} -> {bad}")


# -- storing a run on a replica -------------------------------------------------------------


def db_content(lg: Log) -> tuple[object, ...]:
    db = sqlite3.connect(lg.path)
    try:
        return tuple(
            tuple(db.execute(sql).fetchall())
            for sql in ("SELECT * FROM head", "SELECT * FROM segments ORDER BY start",
                        "SELECT * FROM nodes ORDER BY idx")
        )
    finally:
        db.close()


def held(lg: Log) -> set[int]:
    return {i for i in range(lg.length) if lg.has(i)}


@st.composite
def replica_cases(draw: st.DrawFn) -> tuple[int, int, int, list[int], tuple[int, int] | None]:
    """A span, blocks the replica holds before (one by one), and a run it got before by range."""
    length, start, end = draw(spans())
    lo, hi = max(0, start - 3), min(length, end + 3)
    singles = draw(st.lists(st.integers(lo, hi - 1), max_size=12, unique=True))
    run = None
    if draw(st.booleans()):
        a = draw(st.integers(lo, hi - 1))
        run = (a, draw(st.integers(a + 1, hi)))
    return length, start, end, singles, run


def make_replica(tree: Tree, path: Path, length: int, singles: list[int],
                 run: tuple[int, int] | None) -> Log:
    w = tree.writer(length)
    r = Log.replica(path, w.key)
    r.verify_and_apply(w.proof(Request(upgrade=RequestUpgrade(0, length), manifest=True)))
    assert r.length == length and not held(r)
    for i in singles:
        r.verify_and_apply(w.proof(Request(block=RequestBlock(i, r.missing_nodes(2 * i)))))
    if run is not None:
        r.verify_and_apply_range(run[0], *tree.log.range_proof(run[0], run[1], length))
    return r


def check_copy(tree: Tree, lg: Log) -> None:
    for i, v in lg.iter_blocks():
        assert v == tree.blocks[i]
    assert lg.verify_all().blocks == len(held(lg))


@FEW
@given(case=replica_cases())
def test_replica_stores_a_run_once(
    tree: Tree, case: tuple[int, int, int, list[int], tuple[int, int] | None]
) -> None:
    length, start, end, singles, run = case
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "replica.db"
        with make_replica(tree, path, length, singles, run) as r:
            before = held(r)
            values, proof = tree.log.range_proof(start, end, length)
            stored = r.verify_and_apply_range(start, values, proof)
            assert stored == len(set(range(start, end)) - before)  # held ones not stored again
            assert held(r) == before | set(range(start, end))
            check_copy(tree, r)
            content = db_content(r)
            assert r.verify_and_apply_range(start, values, proof) == 0
            assert db_content(r) == content
            # all held now, but a wrong value is still a wrong proof
            j = (start + end) // 2 - start
            bad = [*values[:j], flip(values[j], 0, 1), *values[j + 1 :]]
            with pytest.raises(VerificationError):
                r.verify_and_apply_range(start, bad, proof)
            assert db_content(r) == content
        with Log.open(path) as again:  # what is on disk is what was held in memory
            assert held(again) == before | set(range(start, end))
            assert again.contiguous_length == min(
                i for i in range(length + 1) if i == length or not again.has(i)
            )
            check_copy(tree, again)


CORRUPTIONS = ["value", "drop-node", "extra-node", "node-hash", "start", "short"]


@FEW
@given(case=replica_cases(), kind=st.sampled_from(CORRUPTIONS), data=st.data())
def test_replica_is_unchanged_by_a_bad_run(
    tree: Tree,
    case: tuple[int, int, int, list[int], tuple[int, int] | None],
    kind: str,
    data: st.DataObject,
) -> None:
    length, start, end, singles, run = case
    values, proof = tree.log.range_proof(start, end, length)
    if kind == "value":
        j = data.draw(st.integers(0, len(values) - 1), label="value")
        values = [*values[:j], flip(values[j], 0, 0x20), *values[j + 1 :]]
    elif kind == "drop-node":
        assume(proof)
        proof = remove_node(proof, data, tree, length)
    elif kind == "extra-node":
        proof = extra_node(proof, data, tree, length)
    elif kind == "node-hash":
        assume(proof)
        proof = [proof[0]._replace(hash=flip(proof[0].hash, 0, 1)), *proof[1:]]
    elif kind == "start":
        start = data.draw(st.integers(0, length).filter(lambda s: s != start), label="start")
    else:  # one value short, with the longer run's proof (unless that is the shorter's too)
        assume(len(values) > 1)
        values = values[:-1]
        assume(proof != range_proof_nodes(tree.log.get_node, length, start, end - 1))
    with (
        tempfile.TemporaryDirectory() as d,
        make_replica(tree, Path(d) / "replica.db", length, singles, run) as r,
    ):
        before, content = held(r), db_content(r)
        contiguous = r.contiguous_length
        with pytest.raises(VerificationError):
            r.verify_and_apply_range(start, values, proof)
        assert held(r) == before and db_content(r) == content
        assert r.contiguous_length == contiguous
        check_copy(tree, r)
        # and the honest run still goes in afterwards
        honest_values, honest_proof = tree.log.range_proof(case[1], case[2], length)
        r.verify_and_apply_range(case[1], honest_values, honest_proof)
        assert held(r) == before | set(range(case[1], case[2]))


def test_replica_without_a_signed_length_refuses(tree: Tree, tmp_path: Path) -> None:
    with Log.replica(tmp_path / "r.db", tree.log.key) as r:
        values, proof = tree.log.range_proof(0, 4)
        with pytest.raises(VerificationError, match="no signed length"):
            r.verify_and_apply_range(0, values, proof)
        assert r.length == 0 and not r.has(0)


def test_proof_for_another_length_is_rejected(tree: Tree, tmp_path: Path) -> None:
    with make_replica(tree, tmp_path / "r.db", 1000, [], None) as r:
        before = db_content(r)
        values, proof = tree.log.range_proof(10, 20, 1500)  # the writer's later tree
        with pytest.raises(VerificationError):
            r.verify_and_apply_range(10, values, proof)
        assert db_content(r) == before and not held(r)


def test_node_size_past_64_bits_is_a_verification_error(tree: Tree, tmp_path: Path) -> None:
    with make_replica(tree, tmp_path / "r.db", 100, [], None) as r:
        values, proof = tree.log.range_proof(10, 20, 100)
        bad = [proof[0]._replace(size=(1 << 64) - 1), *proof[1:]]  # a uint the wire can carry
        before = db_content(r)
        with pytest.raises(VerificationError):
            r.verify_and_apply_range(10, values, bad)
        assert db_content(r) == before

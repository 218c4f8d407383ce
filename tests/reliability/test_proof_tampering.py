"""A catalogue of tampered proofs, in the style of transparency-dev/merkle's proof tests.

Valid proofs are made from a writer's log: single-block proofs with an upgrade from 0 for
several indices and tree lengths, seek proofs, hash proofs, upgrade proofs from a shorter signed
length to a longer one (with and without a block), block proofs without an upgrade against a
replica's held tree, and Cairn's multi-block range proofs. From each, every tampered variant is
derived systematically, element by element:

* the block's data, each node's hash (flipped, cut, extended), size and index (off by one, zero,
  huge), each node list (a node dropped, duplicated, swapped with its neighbour, one added, all
  dropped), the upgrade's start and length (the wrong tree length), the signature (every byte
  flipped, cut, extended, dropped, another key's), the fork id, the block / hash index, the
  seek offset moved outside the subtree the proof proves, the manifest (flipped, cut, dropped);
* for range proofs: the start, each value (flipped, cut, extended, dropped, duplicated,
  swapped), and the proof nodes as above.

Each variant is given to a replica in a known state (``Log.verify_and_apply`` or
``Log.verify_and_apply_range``; ``verify_range`` directly too): it must be refused with a
documented error (:class:`~cairn.errors.RemoteError`: ``VerificationError`` or ``DecodeError``)
and leave the replica exactly as it was. A variant equal to the valid proof is not a variant.
After its variants, each valid proof is applied to show the catalogue tested something real.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest

from cairn import crypto, flat_tree
from cairn.errors import CairnError, RemoteError, VerificationError
from cairn.log import Log, verify_range
from cairn.messages import (
    Data,
    Node,
    Request,
    RequestBlock,
    RequestSeek,
    RequestUpgrade,
)
from tests.scorecard import record, scale

SEED = bytes([41]) * 32
OTHER = crypto.key_pair(bytes([42]) * 32)
HUGE = 1 << 62


def blocks(n: int) -> list[bytes]:
    rng = random.Random(40)
    return [rng.randbytes(rng.randint(1, 60)) for _ in range(n)]


class Writers:
    """The same log (one key, the same blocks) signed at any length, made on demand."""

    def __init__(self, dir: Path, n: int) -> None:
        self.dir = dir
        self.blocks = blocks(n)
        self.at: dict[int, Log] = {}

    def __call__(self, length: int) -> Log:
        if length not in self.at:
            lg = Log.create(self.dir / f"w{length}.db", crypto.key_pair(SEED))
            for i in range(0, length, 7):  # several batches: a tree of several segments
                lg.append(self.blocks[i : min(i + 7, length)])
            self.at[length] = lg
        return self.at[length]

    def close(self) -> None:
        for lg in self.at.values():
            lg.close()


# -- the valid proofs ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Base:
    """A valid proof and the replica state it applies to (``synced``: the signed length held)."""

    name: str
    synced: int
    proof: Data


@dataclass(frozen=True)
class RangeBase:
    name: str
    length: int
    start: int
    values: list[bytes]
    nodes: list[Node]


def replica(path: Path, writers: Writers, synced: int) -> Log:
    rep = Log.replica(path, writers(max(synced, 1)).key)
    if synced:
        rep.verify_and_apply(
            writers(synced).proof(Request(upgrade=RequestUpgrade(0, synced), manifest=True))
        )
    return rep


def hint(writers: Writers, synced: int, i: int) -> int:
    """The ``nodes`` a replica holding the signed length ``synced`` asks block ``i`` with."""
    with replica(writers.dir / "hint.db", writers, synced) as rep:
        nodes = rep.missing_nodes(2 * i)
    (writers.dir / "hint.db").unlink()
    return nodes


def bases(writers: Writers, count: int, rng: random.Random, n: int) -> Iterator[Base]:
    for k in range(count):
        length = rng.randint(2, n)
        w = writers(length)
        i = rng.randrange(length)
        kind = k % 6
        if kind == 0:
            req = Request(block=RequestBlock(i, 0), upgrade=RequestUpgrade(0, length),
                          manifest=True)
            yield Base(f"block {i} + upgrade 0..{length}", 0, w.proof(req))
        elif kind == 1:
            at = rng.randrange(w.byte_length)
            req = Request(seek=RequestSeek(at), upgrade=RequestUpgrade(0, length), manifest=True)
            yield Base(f"seek byte {at} + upgrade 0..{length}", 0, w.proof(req))
        elif kind == 2:
            req = Request(hash=RequestBlock(2 * i, 0), upgrade=RequestUpgrade(0, length),
                          manifest=True)
            yield Base(f"hash {2 * i} + upgrade 0..{length}", 0, w.proof(req))
        elif kind in (3, 4):
            held = rng.randint(1, length - 1)
            block = RequestBlock(i, hint(writers, held, i)) if kind == 4 else None
            req = Request(block=block, upgrade=RequestUpgrade(held, length - held))
            what = f"block {i} + " if block else ""
            yield Base(f"{what}upgrade {held}..{length}", held, w.proof(req))
        else:
            # a block without an upgrade, against the tree a replica already holds
            nodes = hint(writers, length, i)
            req = Request(block=RequestBlock(i, nodes))
            yield Base(f"block {i} (nodes {nodes}) at length {length}", length, w.proof(req))


def range_bases(writers: Writers, count: int, rng: random.Random, n: int) -> Iterator[RangeBase]:
    for _ in range(count):
        length = rng.randint(2, n)
        start = rng.randrange(length)
        end = rng.randint(start + 1, min(length, start + 20))
        values, nodes = writers(n).range_proof(start, end, length)
        yield RangeBase(f"range {start}..{end} at length {length}", length, start, values, nodes)


# -- tampering ------------------------------------------------------------------------------------


def node_variants(node: Node) -> Iterator[tuple[str, Node]]:
    h = node.hash
    for pos, mask in ((0, 0x01), (31, 0x80), (15, 0xFF)):
        flipped = bytearray(h)
        flipped[pos] ^= mask
        yield f"hash byte {pos} ^ {mask:#x}", node._replace(hash=bytes(flipped))
    yield "hash cut", node._replace(hash=h[:31])
    yield "hash extended", node._replace(hash=h + b"\x00")
    yield "hash zero", node._replace(hash=bytes(32))
    for size in (node.size + 1, node.size - 1, 0, HUGE):
        yield f"size {size}", node._replace(size=size)
    for index in (node.index + 1, node.index - 1, node.index ^ 2, node.index + 2, HUGE):
        if index >= 0:
            yield f"index {index}", node._replace(index=index)


def list_variants(nodes: Sequence[Node], extra: Node) -> Iterator[tuple[str, tuple[Node, ...]]]:
    """Every node tampered with, and the list dropped, duplicated, swapped, extended, emptied."""
    ns = tuple(nodes)
    for k, node in enumerate(ns):
        for what, bad in node_variants(node):
            yield f"node {k} {what}", (*ns[:k], bad, *ns[k + 1 :])
        yield f"node {k} dropped", ns[:k] + ns[k + 1 :]
        yield f"node {k} duplicated", ns[: k + 1] + ns[k:]
        if k + 1 < len(ns):
            yield f"nodes {k},{k + 1} swapped", (*ns[:k], ns[k + 1], ns[k], *ns[k + 2 :])
    yield "a node added", (*ns, extra)
    yield "a node added first", (extra, *ns)
    if ns:
        yield "no nodes", ()


def bytes_variants(value: bytes) -> Iterator[tuple[str, bytes]]:
    if value:
        for pos in sorted({0, len(value) // 2, len(value) - 1}):
            b = bytearray(value)
            b[pos] ^= 0x01
            yield f"byte {pos} flipped", bytes(b)
        yield "cut by one", value[:-1]
        yield "empty", b""
    yield "extended", value + b"\x00"


def in_subtree(w: Log, at: int, node: Node) -> bool:
    """Whether byte ``at`` is within (ends included) the bytes of ``node``'s subtree."""
    lo = sum(len(w.get(i)) for i in range(flat_tree.left_span(node.index) // 2))
    return lo <= at <= lo + node.size


def tampered(p: Data, w: Log, extra: Node, fresh: bool) -> Iterator[tuple[str, Data]]:
    """Every tampered variant of a valid proof ``p`` made by writer ``w``.

    A whole part (the block, the upgrade) is dropped only for a ``fresh`` replica: against a
    replica that holds a signed tree, what is left can be a valid proof of less.
    """
    rep = dataclasses.replace
    for fork in (p.fork + 1, p.fork + 2, HUGE):
        yield f"fork {fork}", rep(p, fork=fork)
    if p.block is not None:
        b = p.block
        for what, value in bytes_variants(b.value or b""):
            yield f"block value {what}", rep(p, block=rep(b, value=value))
        yield "block value dropped", rep(p, block=rep(b, value=None))
        for index in (b.index + 1, b.index - 1, b.index ^ 1, w.length, HUGE):
            if index >= 0:
                yield f"block index {index}", rep(p, block=rep(b, index=index))
        for what, ns in list_variants(b.nodes, extra):
            yield f"block {what}", rep(p, block=rep(b, nodes=ns))
        if fresh:
            yield "block dropped", rep(p, block=None)
    if p.hash is not None:
        h = p.hash
        for index in (h.index + 1, h.index - 1, h.index + 2, HUGE):
            if index >= 0:
                yield f"hash index {index}", rep(p, hash=rep(h, index=index))
        for what, ns in list_variants(h.nodes, extra):
            yield f"hash {what}", rep(p, hash=rep(h, nodes=ns))
    if p.seek is not None:
        s = p.seek
        if s.nodes:
            top = s.nodes[0]
            first = flat_tree.left_span(top.index) // 2
            lo = sum(len(w.get(i)) for i in range(first))
            for at in (lo - 1, lo + top.size + 1, w.byte_length + 1, HUGE):
                if at >= 0 and not lo <= at <= lo + top.size:
                    yield f"seek byte {at} (outside the subtree)", rep(p, seek=rep(s, bytes=at))
        for what, ns in list_variants(s.nodes, extra):
            if what == "nodes 0,1 swapped" and in_subtree(w, s.bytes, ns[0]):
                # the same nodes, the other one first: a seek byte on the boundary of the two
                # subtrees is in both, and the replica stores exactly what the proof stores
                continue
            yield f"seek {what}", rep(p, seek=rep(s, nodes=ns))
    if p.upgrade is not None:
        u = p.upgrade
        for start in (u.start + 1, u.start - 1, HUGE):
            if start >= 0:
                yield f"upgrade start {start}", rep(p, upgrade=rep(u, start=start))
        for length in (u.length + 1, u.length - 1, 0, HUGE):
            if length >= 0:
                yield f"upgrade length {length}", rep(p, upgrade=rep(u, length=length))
        for what, ns in list_variants(u.nodes, extra):
            yield f"upgrade {what}", rep(p, upgrade=rep(u, nodes=ns))
        for what, ns in list_variants(u.additional_nodes, extra):
            yield f"upgrade additional {what}", rep(p, upgrade=rep(u, additional_nodes=ns))
        sig = u.signature or b""
        for pos in range(len(sig)):
            bad = bytearray(sig)
            bad[pos] ^= 0x01 if pos % 2 else 0x80
            yield f"signature byte {pos} flipped", rep(p, upgrade=rep(u, signature=bytes(bad)))
        yield "signature cut", rep(p, upgrade=rep(u, signature=sig[:-1]))
        yield "signature extended", rep(p, upgrade=rep(u, signature=sig + b"\x00"))
        yield "signature dropped", rep(p, upgrade=rep(u, signature=None))
        raw = crypto.sign(
            crypto.tree_signable(w.key, w.tree_hash(), u.start + u.length, p.fork),
            OTHER.secret_key or b"",
        )
        yield "signature by another key", rep(
            p, upgrade=rep(u, signature=crypto.encode_signature(raw)))
        if fresh:
            yield "upgrade dropped", rep(p, upgrade=None)
    if p.manifest is not None:
        for what, m in bytes_variants(p.manifest):
            yield f"manifest {what}", rep(p, manifest=m)
        yield "manifest dropped", rep(p, manifest=None)


def range_tampered(r: RangeBase, extra: Node) -> Iterator[tuple[str, int, list[bytes], list[Node]]]:
    vs, ns = r.values, r.nodes
    for start in (r.start + 1, r.start - 1, HUGE):
        if start >= 0:
            yield f"start {start}", start, vs, ns
    for k, value in enumerate(vs):
        for what, bad in bytes_variants(value):
            yield f"value {k} {what}", r.start, [*vs[:k], bad, *vs[k + 1 :]], ns
        if len(vs) > 1:
            yield f"value {k} dropped", r.start, vs[:k] + vs[k + 1 :], ns
        yield f"value {k} duplicated", r.start, vs[: k + 1] + vs[k:], ns
        if k + 1 < len(vs):
            yield f"values {k},{k + 1} swapped", r.start, [*vs[:k], vs[k + 1], vs[k],
                                                           *vs[k + 2 :]], ns
    yield "a value added", r.start, [*vs, b"x"], ns
    yield "no values", r.start, [], ns
    for what, bad_nodes in list_variants(ns, extra):
        yield f"proof {what}", r.start, vs, list(bad_nodes)


def honest(writers: Writers, length: int, start: int, values: list[bytes],
           nodes: list[Node]) -> bool:
    """Whether a range proof is the true proof of blocks [start, start + len(values))."""
    end = start + len(values)
    if not values or end > length or values != writers.blocks[start:end]:
        return False
    return nodes == writers(len(writers.blocks)).range_proof(start, end, length)[1]


# -- running the catalogue ------------------------------------------------------------------------


def state(lg: Log) -> tuple[object, ...]:
    """What a refused proof must not change (every committed write bumps total_changes)."""
    return (lg.length, lg.fork, lg.tree_hash(), lg.signature, lg.contiguous_length, lg.roots,
            lg.held_ranges(), lg.frozen, lg.manifest, lg._storage.db.total_changes)


@dataclass
class Tally:
    variants: int = 0
    accepted: list[str] = field(default_factory=list)  # accepted, crashed or changed the replica

    def attempt(self, what: str, rep: Log, apply: Callable[[], object]) -> bool:
        """Give the replica one variant; False when it got through (the replica is spoilt)."""
        before = state(rep)
        self.variants += 1
        try:
            apply()
        except RemoteError:
            pass
        except CairnError as exc:
            self.accepted.append(f"{what}: refused with {type(exc).__name__}, not a RemoteError")
        except Exception as exc:  # a crash is what the catalogue looks for
            self.accepted.append(f"{what}: crashed with {type(exc).__name__}: {exc}")
            return False
        else:
            self.accepted.append(f"{what}: ACCEPTED")
            return False
        if state(rep) != before:
            self.accepted.append(f"{what}: refused, but the replica changed")
            return False
        return True


@pytest.fixture
def writers(tmp_path: Path) -> Iterator[Writers]:
    w = Writers(tmp_path, scale(48, 300))
    yield w
    w.close()


def test_every_tampered_proof_is_refused(writers: Writers, tmp_path: Path) -> None:
    n = len(writers.blocks)
    rng = random.Random(43)
    extra = Node(2, 7, bytes(range(32)))
    tally = Tally()
    for k, base in enumerate(bases(writers, scale(60, 600), rng, n)):
        w = writers(base.proof.upgrade.start + base.proof.upgrade.length
                     if base.proof.upgrade else base.synced)
        rep = replica(tmp_path / f"r{k}.db", writers, base.synced)
        for what, variant in tampered(base.proof, w, extra, base.synced == 0):
            if variant != base.proof and not tally.attempt(
                    f"{base.name}: {what}", rep, partial(rep.verify_and_apply, variant)):
                rep.close()  # spoilt: the next variants get a new replica
                (tmp_path / f"r{k}.db").unlink()
                rep = replica(tmp_path / f"r{k}.db", writers, base.synced)
        rep.verify_and_apply(base.proof)  # the valid proof: the catalogue tested something real
        assert rep.length == w.length
        rep.close()

    for k, r in enumerate(range_bases(writers, scale(30, 300), rng, n)):
        rep = replica(tmp_path / f"g{k}.db", writers, r.length)
        roots = rep.roots
        for what, start, values, nodes in range_tampered(r, extra):
            if honest(writers, r.length, start, values, nodes):
                continue  # the valid proof itself, or the valid proof of fewer blocks
            if not tally.attempt(f"{r.name}: {what}", rep,
                                 partial(rep.verify_and_apply_range, start, values, nodes)):
                rep.close()
                (tmp_path / f"g{k}.db").unlink()
                rep = replica(tmp_path / f"g{k}.db", writers, r.length)
            tally.attempt(f"{r.name}: {what} (verify_range)", rep,
                          partial(verify_range, roots, r.length, start, values, nodes))
        assert rep.verify_and_apply_range(r.start, r.values, r.nodes) == len(r.values)
        assert [rep.get(i) for i in range(r.start, r.start + len(r.values))] == r.values
        rep.close()

    print(f"{tally.variants:,} tampered proofs, {len(tally.accepted)} accepted")
    record("proofs", "tampered proofs (flip, cut, extend, swap, wrong size/index)",
           tally.variants, len(tally.accepted), "accepted")
    assert not tally.accepted, "\n".join(tally.accepted[:40])
    assert tally.variants > scale(10000, 100000)


def test_variants_really_differ() -> None:
    """The catalogue's building blocks yield only changed things."""
    node = Node(5, 10, bytes(range(32)))
    assert all(bad != node for _, bad in node_variants(node))
    assert all(bad != b"abc" for _, bad in bytes_variants(b"abc"))
    assert all(bad != (node,) for _, bad in list_variants((node,), Node(2, 1, bytes(32))))
    with pytest.raises(VerificationError):
        verify_range([], 0, 0, [b"x"], [])

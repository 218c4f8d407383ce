"""A catalogue of tampered proofs: every one is rejected and nothing is applied."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from cairn import crypto, flat_tree
from cairn.errors import DecodeError, VerificationError
from cairn.log import Log
from cairn.messages import (
    Data,
    Node,
    Request,
    RequestBlock,
    RequestSeek,
    RequestUpgrade,
    decode_data,
    encode_data,
)

N = 37


BLOCKS = [bytes([i]) * (i + 1) for i in range(N)]


@pytest.fixture(scope="module")
def writer(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Log]:
    path = tmp_path_factory.mktemp("tamper") / "w.db"
    with Log.create(path, crypto.key_pair(bytes([9]) * 32)) as lg:
        lg.append(BLOCKS)
        yield lg


@pytest.fixture(scope="module")
def writer20(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Log]:
    """The same log as `writer` when it had 20 blocks."""
    path = tmp_path_factory.mktemp("tamper20") / "w.db"
    with Log.create(path, crypto.key_pair(bytes([9]) * 32)) as lg:
        lg.append(BLOCKS[:20])
        yield lg


def fresh_cases(w: Log) -> dict[str, Request]:
    """Requests a replica that holds nothing yet would send."""
    return {
        "block+upgrade+manifest": Request(
            id=3, block=RequestBlock(21, 0), upgrade=RequestUpgrade(0, N), manifest=True
        ),
        "upgrade-only": Request(id=4, upgrade=RequestUpgrade(0, N), manifest=True),
        "seek+upgrade": Request(
            id=5, seek=RequestSeek(w.byte_length // 3), upgrade=RequestUpgrade(0, N), manifest=True
        ),
        "partial-upgrade": Request(
            id=6, block=RequestBlock(2, 0), upgrade=RequestUpgrade(0, 9), manifest=True
        ),
    }


class Replica:
    """A replica in a known state, to check that a rejected proof changes nothing."""

    def __init__(self, path: Path, w: Log, synced: Log | None) -> None:
        self.log = Log.replica(path, w.key)
        if synced is not None:
            self.log.verify_and_apply(
                synced.proof(
                    Request(block=RequestBlock(5, 0), upgrade=RequestUpgrade(0, 20), manifest=True)
                )
            )

    def state(self) -> tuple[object, ...]:
        lg = self.log
        return (
            lg.length,
            lg.fork,
            lg.tree_hash(),
            lg.signature,
            lg.contiguous_length,
            tuple(i for i in range(N) if lg.has(i)),
            lg.frozen,
            lg._storage.db.total_changes,
        )  # every committed write bumps this


def synced_cases(w: Log, r: Log) -> dict[str, Request]:
    """Requests a replica at length 20 holding block 5 would send."""
    return {
        "block-with-nodes-hint": Request(id=7, block=RequestBlock(14, r.missing_nodes(28))),
        "upgrade-from-length": Request(
            id=8, block=RequestBlock(30, 0), upgrade=RequestUpgrade(20, N - 20)
        ),
        "hash": Request(id=9, hash=RequestBlock(9, r.missing_nodes(9))),
    }


def mutations(wire: bytes) -> Iterator[tuple[str, bytes]]:
    """Every byte flipped (three ways), every truncation, garbage appended."""
    for pos in range(len(wire)):
        for mask in (0x01, 0x80, 0xFF):
            b = bytearray(wire)
            b[pos] ^= mask
            yield f"flip byte {pos} ^{mask:#x}", bytes(b)
    for cut in range(len(wire)):
        yield f"truncated to {cut}", wire[:cut]
    yield "garbage appended", wire + b"\x00"
    yield "garbage appended 2", wire + b"\xde\xad\xbe\xef"


def structural(p: Data, other: crypto.KeyPair, w: Log) -> Iterator[tuple[str, Data]]:
    """Nodes removed or reordered, wrong length or fork, a signature from another key."""
    parts: list[tuple[str, tuple[Node, ...], object]] = []
    if p.block:
        parts.append(
            (
                "block.nodes",
                p.block.nodes,
                lambda ns, b=p.block: dataclasses.replace(
                    p, block=dataclasses.replace(b, nodes=ns)
                ),
            )
        )
    if p.hash:
        parts.append(
            (
                "hash.nodes",
                p.hash.nodes,
                lambda ns, h=p.hash: dataclasses.replace(p, hash=dataclasses.replace(h, nodes=ns)),
            )
        )
    if p.seek:
        parts.append(
            (
                "seek.nodes",
                p.seek.nodes,
                lambda ns, s=p.seek: dataclasses.replace(p, seek=dataclasses.replace(s, nodes=ns)),
            )
        )
    if p.upgrade:
        u = p.upgrade
        parts.append(
            (
                "upgrade.nodes",
                u.nodes,
                lambda ns: dataclasses.replace(p, upgrade=dataclasses.replace(u, nodes=ns)),
            )
        )
        parts.append(
            (
                "upgrade.additional",
                u.additional_nodes,
                lambda ns: dataclasses.replace(
                    p, upgrade=dataclasses.replace(u, additional_nodes=ns)
                ),
            )
        )
        for dl in (-1, 1):
            if u.length + dl > 0:
                yield (
                    f"upgrade length {dl:+d}",
                    dataclasses.replace(p, upgrade=dataclasses.replace(u, length=u.length + dl)),
                )
        assert u.signature is not None
        raw = crypto.sign(
            crypto.tree_signable(w.key, w.tree_hash(), u.start + u.length, p.fork),
            other.secret_key or b"",
        )
        yield (
            "signature from another key",
            dataclasses.replace(
                p, upgrade=dataclasses.replace(u, signature=crypto.encode_signature(raw))
            ),
        )
        yield "no signature", dataclasses.replace(p, upgrade=dataclasses.replace(u, signature=None))
    for dfork in (1, 2):
        yield f"fork +{dfork}", dataclasses.replace(p, fork=p.fork + dfork)
    if p.block:
        yield (
            "other block value",
            dataclasses.replace(
                p, block=dataclasses.replace(p.block, value=(p.block.value or b"") + b"x")
            ),
        )
        yield (
            "other block index",
            dataclasses.replace(p, block=dataclasses.replace(p.block, index=p.block.index + 1)),
        )
    for name, nodes, rebuild in parts:
        assert callable(rebuild)
        for k in range(len(nodes)):
            yield f"{name} without node {k}", rebuild(nodes[:k] + nodes[k + 1 :])
        for k in range(len(nodes) - 1):
            swapped = list(nodes)
            swapped[k], swapped[k + 1] = swapped[k + 1], swapped[k]
            yield f"{name} nodes {k},{k + 1} swapped", rebuild(tuple(swapped))
        if nodes:
            n0 = nodes[0]
            yield f"{name} node 0 size+1", rebuild((n0._replace(size=n0.size + 1), *nodes[1:]))


def harmless(wire: bytes, original: bytes, w: Log) -> bool:
    """Mutations that leave what the proof proves unchanged.

    The request id is not part of a proof; a seek's byte offset is only a label, accepted while
    it still falls inside the subtree the proof proves (the replica checks that).
    """
    try:
        d = decode_data(wire)
    except DecodeError:
        return False
    o = decode_data(original)
    d = dataclasses.replace(d, request=0)
    o = dataclasses.replace(o, request=0)
    if d == o:
        return True
    if (
        d.seek is not None
        and o.seek is not None
        and d.seek.nodes == o.seek.nodes
        and dataclasses.replace(d, seek=o.seek) == o
        and d.seek.bytes <= w.byte_length
    ):
        block, _ = w.seek(d.seek.bytes)
        top = d.seek.nodes[0].index
        return flat_tree.left_span(top) // 2 <= block <= flat_tree.right_span(top) // 2 + 1
    return False


@pytest.mark.parametrize("synced", [False, True], ids=["fresh-replica", "synced-replica"])
def test_every_tampered_proof_is_rejected(
    writer: Log, writer20: Log, tmp_path: Path, synced: bool
) -> None:
    other = crypto.key_pair(bytes([10]) * 32)
    rep = Replica(tmp_path / "r.db", writer, writer20 if synced else None)
    assert rep.log.length == (20 if synced else 0)
    cases = synced_cases(writer, rep.log) if synced else fresh_cases(writer)
    tried = 0
    for case, req in cases.items():
        proof = writer.proof(req)
        wire = encode_data(proof)
        before = rep.state()
        candidates: list[tuple[str, bytes | Data]] = list(mutations(wire))
        candidates += list(structural(proof, other, writer))
        for name, cand in candidates:
            if isinstance(cand, bytes):
                if harmless(cand, wire, writer):
                    continue
                try:
                    cand = decode_data(cand)
                except DecodeError:
                    tried += 1
                    continue
            try:
                rep.log.verify_and_apply(cand)
            except (VerificationError, DecodeError):
                pass
            else:
                pytest.fail(f"{case}: {name} was accepted")
            assert rep.state() == before, f"{case}: {name} changed the replica"
            tried += 1
        # the untampered proof still applies afterwards
        rep.log.verify_and_apply(decode_data(wire))
    assert tried > 1500  # the catalogue really ran
    rep.log.close()

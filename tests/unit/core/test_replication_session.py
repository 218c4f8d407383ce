"""Two replication sessions connected in memory, no sockets: sparse, full, resumed and tailing
downloads over Cairn's range extension; the JS path (request/data) when the peer does not say
``cairn/hello``; capabilities; a hostile peer tampering with answers in flight; cleared blocks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from cairn import crypto
from cairn.encoding import Reader, write_buffer, write_uint
from cairn.errors import DecodeError, RemoteError, VerificationError
from cairn.log import Log
from cairn.messages import (
    Data,
    Extension,
    MessageType,
    NoData,
    Node,
    decode_data,
    decode_extension,
    encode_data,
    encode_extension,
    encode_no_data,
)
from cairn.replication.events import SessionEvent, Stored, Synced
from cairn.replication.session import (
    EXT_RANGE,
    EXT_RANGE_DATA,
    EXT_RANGE_NONE,
    RUN_BLOCKS,
    CapabilityError,
    Session,
)

SEED = bytes(range(32))
HANDSHAKE_HASH = bytes(range(32, 64))
BLOCKS = 5000
BATCH = 500

Message = tuple[int, bytes]
#: What a message turns into on its way: itself, nothing, something else, or several messages.
Tamper = Callable[[int, bytes], list[Message]]


def make_blocks(n: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    return [rng.randbytes(rng.randrange(0, 200)) for _ in range(n)]


@pytest.fixture
def blocks() -> list[bytes]:
    return make_blocks(BLOCKS)


@pytest.fixture
def writer(tmp_path: Path, blocks: list[bytes]) -> Iterator[Log]:
    with Log.create(tmp_path / "writer.db", crypto.key_pair(SEED)) as lg:
        for i in range(0, len(blocks), BATCH):
            lg.append(blocks[i : i + BATCH])
        yield lg


@pytest.fixture
def replica(tmp_path: Path, writer: Log) -> Iterator[Log]:
    with Log.replica(tmp_path / "replica.db", writer.key) as lg:
        yield lg


def pass_through(kind: int, payload: bytes) -> list[Message]:
    return [(kind, payload)]


def drop_extensions(kind: int, payload: bytes) -> list[Message]:
    """A JS hypercore peer: it never says ``cairn/hello`` (nor anything else of Cairn's)."""
    return [] if kind == MessageType.EXTENSION else [(kind, payload)]


@dataclasses.dataclass
class RangeData:
    """A ``cairn/range-data`` answer, taken apart so a test can change it."""

    rid: int
    start: int
    values: list[bytes]
    proof: list[Node]

    @classmethod
    def decode(cls, message: bytes) -> RangeData:
        r = Reader(message)
        rid, start, count = r.uint(), r.uint(), r.uint()
        values = [r.bytes_() for _ in range(count)]
        proof = [Node(r.uint(), r.uint(), r.fixed(32)) for _ in range(r.uint())]
        r.done()
        return cls(rid, start, values, proof)

    def encode(self) -> bytes:
        out = bytearray()
        for x in (self.rid, self.start, len(self.values)):
            write_uint(out, x)
        for v in self.values:
            write_buffer(out, v)
        write_uint(out, len(self.proof))
        for n in self.proof:
            write_uint(out, n.index)
            write_uint(out, n.size)
            out += n.hash
        return bytes(out)


class Recorder:
    """A tamper that lets everything through and remembers what went by."""

    def __init__(self, then: Tamper = pass_through) -> None:
        self.seen: list[Message] = []
        self.then = then

    def __call__(self, kind: int, payload: bytes) -> list[Message]:
        self.seen.append((kind, payload))
        return self.then(kind, payload)

    def kinds(self) -> Counter[int]:
        return Counter(kind for kind, _ in self.seen)

    def extensions(self, name: str) -> list[bytes]:
        return [
            ext.message
            for kind, payload in self.seen
            if kind == MessageType.EXTENSION
            and (ext := decode_extension(payload)).name == name
        ]

    def data_blocks(self) -> list[int]:
        """The block of every ``data`` message that carried one."""
        return [
            d.block.index
            for kind, payload in self.seen
            if kind == MessageType.DATA and (d := decode_data(payload)).block is not None
        ]

    def range_answers(self) -> list[tuple[int, int]]:
        """(start, count) of every ``cairn/range-data`` answer that went by."""
        return [(a.start, len(a.values)) for a in map(RangeData.decode,
                                                       self.extensions(EXT_RANGE_DATA))]


def connect(
    writer: Log, replica: Log, *, replica_handshake_hash: bytes = HANDSHAKE_HASH
) -> tuple[Session, Session]:
    """Open the channel both ways: the writer's session initiates, the replica's responds."""
    w = Session(writer, is_initiator=True, handshake_hash=HANDSHAKE_HASH)
    r = Session(replica, is_initiator=False, handshake_hash=replica_handshake_hash)
    w.on_open(r.handshake())
    r.on_open(w.handshake())
    return w, r


def shuttle(
    a: Session,
    b: Session,
    *,
    a_to_b: Tamper = pass_through,
    b_to_a: Tamper = pass_through,
    max_rounds: int = 1000,
) -> int:
    """Carry messages both ways until neither side has anything to say; returns the rounds."""
    for rounds in range(max_rounds):
        from_a, from_b = a.data_to_send(), b.data_to_send()
        if not from_a and not from_b:
            return rounds
        for kind, payload in from_a:
            for k, p in a_to_b(kind, payload):
                b.receive_data(k, p)
        for kind, payload in from_b:
            for k, p in b_to_a(kind, payload):
                a.receive_data(k, p)
    raise AssertionError(f"the sessions still talk after {max_rounds} rounds")


def held(lg: Log) -> set[int]:
    return {i for i in range(lg.length) if lg.has(i)}


def assert_true_copy(replica: Log, blocks: list[bytes]) -> None:
    """Every block the replica holds is the writer's, and its storage verifies."""
    for i, value in replica.iter_blocks():
        assert value == blocks[i], f"block {i} differs from the writer's"
    assert replica.verify_all().blocks == len(held(replica))


def drain(session: Session) -> list[SessionEvent]:
    out: list[SessionEvent] = []
    while (event := session.next_event()) is not None:
        out.append(event)
    return out


def test_events_say_the_peer_synced_and_what_was_stored(writer: Log, replica: Log) -> None:
    w, r = connect(writer, replica)
    shuttle(w, r)
    assert Synced(replica.discovery_key, writer.fork, BLOCKS) in drain(r)
    assert Synced(writer.discovery_key, 0, 0) in drain(w)  # the empty replica's first word
    r.want(100, 300)
    shuttle(w, r)
    stored = drain(r)
    assert stored and all(isinstance(e, Stored) for e in stored)
    assert sum(e.blocks for e in stored if isinstance(e, Stored)) == 200
    assert r.next_event() is None


# -- Cairn <-> Cairn: the range extension --------------------------------------------------------


def test_sparse_window_is_one_range_answer(writer: Log, replica: Log, blocks: list[bytes]) -> None:
    w, r = connect(writer, replica)
    to_r = Recorder()
    shuttle(w, r, a_to_b=to_r)
    assert w.remote_cairn and r.remote_cairn and r.synced
    assert replica.length == BLOCKS and not held(replica)  # the upgrade alone, no block
    r.want(2000, 3000)
    assert r.pending == 1000
    shuttle(w, r, a_to_b=to_r)
    assert held(replica) == set(range(2000, 3000))
    assert_true_copy(replica, blocks)
    assert r.pending == 0 and r.stats.blocks_downloaded == 1000 and r.stats.invalid == 0
    assert to_r.range_answers() == [(2000, 1000)]  # one proof for the whole run
    assert to_r.kinds()[MessageType.DATA] == 1  # the upgrade; no block went as request/data


def test_full_download_in_runs(writer: Log, replica: Log, blocks: list[bytes]) -> None:
    w, r = connect(writer, replica)
    to_r = Recorder()
    r.want(0, BLOCKS)  # before the length is known: the blocks wait for the upgrade
    shuttle(w, r, a_to_b=to_r)
    assert held(replica) == set(range(BLOCKS)) and replica.contiguous_length == BLOCKS
    assert_true_copy(replica, blocks)
    assert r.pending == 0 and r.stats.blocks_downloaded == BLOCKS
    answers = to_r.range_answers()
    assert sum(count for _, count in answers) == BLOCKS
    assert len(answers) == -(-BLOCKS // RUN_BLOCKS)
    assert to_r.kinds()[MessageType.DATA] == 1


def test_resume_downloads_nothing_twice(
    tmp_path: Path, writer: Log, replica: Log, blocks: list[bytes]
) -> None:
    w, r = connect(writer, replica)
    r.want(1000, 2500)
    shuttle(w, r)
    for i in range(0, BLOCKS, 7):
        r.want(i, i + 1)  # scattered blocks too: the rest comes in many short runs
    shuttle(w, r)
    first = held(replica)
    assert first == set(range(1000, 2500)) | set(range(0, BLOCKS, 7))
    assert r.stats.blocks_downloaded == len(first)
    replica.close()

    with Log.open(tmp_path / "replica.db") as again:
        assert held(again) == first
        w2, r2 = connect(writer, again)
        to_r = Recorder()
        r2.want(0, BLOCKS)
        assert r2.pending == BLOCKS - len(first)
        shuttle(w2, r2, a_to_b=to_r)
        assert held(again) == set(range(BLOCKS))
        assert_true_copy(again, blocks)
        assert r2.stats.blocks_downloaded == BLOCKS - len(first)
        # each missing block came once: in a range answer, or (asked before the peer's hello
        # arrived) as request/data
        answered = [i for start, count in to_r.range_answers() for i in range(start, start + count)]
        answered += to_r.data_blocks()
        assert sorted(answered) == sorted(set(range(BLOCKS)) - first)


def test_tail_after_the_writer_appends(writer: Log, replica: Log) -> None:
    w, r = connect(writer, replica)
    r.want(0, BLOCKS)
    shuttle(w, r)
    assert replica.contiguous_length == BLOCKS
    more = make_blocks(300, seed=8)
    writer.append(more[:100])
    writer.append(more[100:])
    w.update()
    shuttle(w, r)
    assert r.remote_length == replica.length == BLOCKS + 300  # the replica followed the upgrade
    r.want(BLOCKS, BLOCKS + 300)
    shuttle(w, r)
    assert held(replica) == set(range(BLOCKS + 300)) and r.pending == 0
    assert r.stats.blocks_downloaded == BLOCKS + 300
    assert_true_copy(replica, make_blocks(BLOCKS) + more)


@pytest.mark.parametrize("js_writer", [False, True], ids=["cairn", "js-writer"])
def test_a_follower_gets_each_new_block_with_its_upgrade(
    writer: Log, replica: Log, js_writer: bool
) -> None:
    """Live push: a follower asks for the first new block inside the upgrade request, so a log
    that grew by one block costs one request, one data answer and one signature check."""
    w, r = connect(writer, replica)
    r.follow = True
    to_r = Recorder(drop_extensions if js_writer else pass_through)
    r.want(0, BLOCKS)
    shuttle(w, r, a_to_b=to_r)
    more = make_blocks(3, seed=9)
    for k, value in enumerate(more):
        to_w, to_r.seen = Recorder(), []
        writer.append([value])
        w.update()
        shuttle(w, r, a_to_b=to_r, b_to_a=to_w)
        n = BLOCKS + k
        assert r.remote_length == replica.length == n + 1
        assert to_w.kinds()[MessageType.REQUEST] == 1 and not to_w.extensions(EXT_RANGE)
        assert to_r.data_blocks() == [n]  # the block came with its upgrade
        r.want(n, n + 1)  # (what follow_on asks for: already held, nothing goes out)
        assert not r.data_to_send() and r.pending == 0
    r.follow = False  # several blocks at once: the first with the upgrade, the rest asked after
    writer.append(make_blocks(5, seed=10))
    w.update()
    shuttle(w, r)
    r.want(BLOCKS + 3, BLOCKS + 8)
    shuttle(w, r)
    assert held(replica) == set(range(BLOCKS + 8)) and r.pending == 0
    assert_true_copy(replica, make_blocks(BLOCKS) + more + make_blocks(5, seed=10))


def test_a_follower_with_several_new_blocks_asks_for_the_rest(writer: Log, replica: Log) -> None:
    w, r = connect(writer, replica)
    r.follow = True
    r.want(0, BLOCKS)
    shuttle(w, r)
    more = make_blocks(7, seed=11)
    writer.append(more)
    w.update()
    to_r = Recorder()
    shuttle(w, r, a_to_b=to_r)
    assert to_r.data_blocks() == [BLOCKS] and r.remote_length == BLOCKS + 7
    r.want(BLOCKS, BLOCKS + 7)
    shuttle(w, r)
    assert held(replica) == set(range(BLOCKS + 7)) and r.pending == 0
    assert_true_copy(replica, make_blocks(BLOCKS) + more)


# -- the JS path: no cairn/hello, blocks go as request/data --------------------------------------


@pytest.mark.parametrize("both_ways", [False, True], ids=["js-writer", "js-both"])
def test_js_peer_gets_request_and_data(
    writer: Log, replica: Log, blocks: list[bytes], both_ways: bool
) -> None:
    w, r = connect(writer, replica)
    to_r, to_w = Recorder(drop_extensions), Recorder(drop_extensions if both_ways else pass_through)
    r.want(2000, 3000)
    shuttle(w, r, a_to_b=to_r, b_to_a=to_w)
    assert not r.remote_cairn
    assert held(replica) == set(range(2000, 3000)) and r.pending == 0
    assert_true_copy(replica, blocks)
    assert to_w.kinds()[MessageType.REQUEST] == 1000 + 1  # one per block, and the upgrade
    assert to_r.kinds()[MessageType.DATA] == 1000 + 1
    assert not to_w.extensions(EXT_RANGE)
    r.want(0, BLOCKS)
    shuttle(w, r, a_to_b=to_r, b_to_a=to_w)
    assert held(replica) == set(range(BLOCKS)) and r.stats.blocks_downloaded == BLOCKS
    assert_true_copy(replica, blocks)


def proof_nodes(rec: Recorder) -> int:
    """Tree nodes carried by the ``data`` messages that went by."""
    return sum(
        len(d.block.nodes)
        for kind, payload in rec.seen
        if kind == MessageType.DATA and (d := decode_data(payload)).block is not None
    )


def test_js_path_hints_count_on_requests_in_flight(
    writer: Log, replica: Log, blocks: list[bytes]
) -> None:
    """A window of requests for neighbouring blocks: each upper node comes once, not once per
    request (hints that only looked at storage made every proof reach up ~log2(window) levels)."""
    w, r = connect(writer, replica)
    to_r = Recorder(drop_extensions)
    r.want(1000, 3048)
    shuttle(w, r, a_to_b=to_r, b_to_a=drop_extensions)
    assert held(replica) == set(range(1000, 3048)) and r.stats.invalid == 0
    assert_true_copy(replica, blocks)
    # one sibling per block, plus the path from the window up to the root, per window edge
    assert proof_nodes(to_r) <= 2048 + 64
    # and the replica stored consecutive blocks as runs, not a row per block
    rows = replica._storage.block_ranges()
    assert sum(c for _, c in rows) == 2048 and len(rows) <= 2048 // 64 + 2


def reverse_data_per_round() -> tuple[Tamper, Callable[[], list[Message]]]:
    """Hold back ``data`` messages and let them go in reverse order at the end of a round."""
    held_back: list[Message] = []

    def tamper(kind: int, payload: bytes) -> list[Message]:
        if kind == MessageType.DATA and decode_data(payload).block is not None:
            held_back.append((kind, payload))
            return []
        return drop_extensions(kind, payload)

    def release() -> list[Message]:
        out = held_back[::-1]
        held_back.clear()
        return out

    return tamper, release


def test_answers_out_of_order_wait_for_the_node_they_end_at(
    writer: Log, replica: Log, blocks: list[bytes]
) -> None:
    w, r = connect(writer, replica)
    tamper, release = reverse_data_per_round()
    r.want(0, 1500)
    requests = 0
    for _ in range(200):
        from_w, from_r = w.data_to_send(), r.data_to_send()
        if not from_w and not from_r:
            break
        for kind, payload in from_w:
            for k, p in tamper(kind, payload):
                r.receive_data(k, p)
        for k, p in release():
            r.receive_data(k, p)
        for kind, payload in from_r:
            if kind != MessageType.EXTENSION:
                requests += kind == MessageType.REQUEST
                w.receive_data(kind, payload)
    assert held(replica) == set(range(1500)) and r.pending == 0
    assert requests == 1500 + 1  # each block asked for once (and the upgrade): answers waited
    assert r.stats.invalid == 0
    assert_true_copy(replica, blocks)


def test_answer_counting_on_a_refused_request_is_asked_again(
    writer: Log, replica: Log, blocks: list[bytes]
) -> None:
    """The peer answers one request with noData: the requests whose hints counted on the nodes
    it would have brought are asked again with hints for what the replica holds."""
    w, r = connect(writer, replica)
    refused = {1024, 2}

    def refuse(kind: int, payload: bytes) -> list[Message]:
        if kind == MessageType.DATA:
            d = decode_data(payload)
            if d.block is not None and d.block.index in refused:
                return [(MessageType.NO_DATA, encode_no_data(NoData(d.request)))]
        return drop_extensions(kind, payload)

    r.want(0, 2048)
    shuttle(w, r, a_to_b=refuse, b_to_a=drop_extensions)
    assert held(replica) == set(range(2048)) - refused
    assert r.stats.invalid == 0 and r.pending == 0
    assert_true_copy(replica, blocks)


# -- capability --------------------------------------------------------------------------------


def test_another_handshake_hash_is_refused(writer: Log, replica: Log) -> None:
    with pytest.raises(CapabilityError):
        connect(writer, replica, replica_handshake_hash=bytes(32))
    w = Session(writer, is_initiator=True, handshake_hash=HANDSHAKE_HASH)
    r = Session(replica, is_initiator=False, handshake_hash=bytes(32))
    with pytest.raises(CapabilityError):
        w.on_open(r.handshake())
    with pytest.raises(CapabilityError):
        r.on_open(w.handshake())
    r.want(0, 10)
    assert r.data_to_send() == [] and w.data_to_send() == []  # not open: nothing said
    assert replica.length == 0 and not held(replica)


@pytest.mark.parametrize(
    "handshake",
    [b"", b"\x00" + bytes(31), b"\x00" + bytes(32)],
    ids=["empty", "short", "zero-capability"],
)
def test_bad_handshakes_are_capability_errors(writer: Log, handshake: bytes) -> None:
    w = Session(writer, is_initiator=True, handshake_hash=HANDSHAKE_HASH)
    with pytest.raises(CapabilityError):
        w.on_open(handshake)
    assert not w.remote_opened and w.data_to_send() == []


def test_capability_binds_roles_and_key(tmp_path: Path, writer: Log, replica: Log) -> None:
    w = Session(writer, is_initiator=True, handshake_hash=HANDSHAKE_HASH)
    also_initiator = Session(replica, is_initiator=True, handshake_hash=HANDSHAKE_HASH)
    with pytest.raises(CapabilityError):
        w.on_open(also_initiator.handshake())
    with Log.create(tmp_path / "other.db", crypto.key_pair(bytes(32))) as other:
        stranger = Session(other, is_initiator=False, handshake_hash=HANDSHAKE_HASH)
        with pytest.raises(CapabilityError):
            w.on_open(stranger.handshake())
    assert replica.length == 0 and not held(replica)


# -- a hostile peer ------------------------------------------------------------------------------


def flip(b: bytes, at: int) -> bytes:
    return b[:at] + bytes([b[at] ^ 0x40]) + b[at + 1 :]


def flip_value(a: RangeData) -> list[RangeData]:
    a.values[len(a.values) // 2] = flip(a.values[len(a.values) // 2] or b"\x00", 0)
    return [a]


def swap_values(a: RangeData) -> list[RangeData]:
    a.values[3], a.values[4] = a.values[4], a.values[3]
    return [a]


def drop_node(a: RangeData) -> list[RangeData]:
    del a.proof[len(a.proof) // 2]
    return [a]


def flip_node_hash(a: RangeData) -> list[RangeData]:
    n = a.proof[0]
    a.proof[0] = n._replace(hash=flip(n.hash, 31))
    return [a]


def huge_node_size(a: RangeData) -> list[RangeData]:
    a.proof[0] = a.proof[0]._replace(size=(1 << 64) - 1)
    return [a]


def drop_value(a: RangeData) -> list[RangeData]:
    a.values.pop()  # a shorter answer, with the proof of the longer one
    return [a]


def wrong_start(a: RangeData) -> list[RangeData]:
    a.start += 1
    return [a]


def unsolicited(a: RangeData) -> list[RangeData]:
    return [dataclasses.replace(a, rid=a.rid + 1000), a]


RangeChange = Callable[[RangeData], list[RangeData]]
RANGE_TAMPERS = [
    pytest.param(flip_value, VerificationError, id="flip-value"),
    pytest.param(swap_values, VerificationError, id="swap-values"),
    pytest.param(drop_node, VerificationError, id="drop-node"),
    pytest.param(flip_node_hash, VerificationError, id="flip-node-hash"),
    pytest.param(huge_node_size, VerificationError, id="huge-node-size"),
    pytest.param(drop_value, VerificationError, id="drop-value"),
    pytest.param(wrong_start, VerificationError, id="wrong-start"),  # not the run asked for
    pytest.param(unsolicited, None, id="unsolicited"),
]


class TamperRangeData:
    """Changes the first ``cairn/range-data`` answer; lets everything else through."""

    def __init__(self, change: Callable[[RangeData], list[RangeData]]) -> None:
        self.change = change
        self.done = False

    def __call__(self, kind: int, payload: bytes) -> list[Message]:
        if self.done or kind != MessageType.EXTENSION:
            return [(kind, payload)]
        ext = decode_extension(payload)
        if ext.name != EXT_RANGE_DATA:
            return [(kind, payload)]
        self.done = True
        return [
            (kind, encode_extension(Extension(EXT_RANGE_DATA, a.encode())))
            for a in self.change(RangeData.decode(ext.message))
        ]


def run_hostile(w: Session, r: Session, tamper: Tamper) -> RemoteError | None:
    try:
        shuttle(w, r, a_to_b=tamper)
    except RemoteError as exc:
        return exc
    return None


@pytest.mark.parametrize(("change", "raises"), RANGE_TAMPERS)
def test_tampered_range_answer_stores_nothing_wrong(
    writer: Log,
    replica: Log,
    blocks: list[bytes],
    change: RangeChange,
    raises: type[RemoteError] | None,
) -> None:
    w, r = connect(writer, replica)
    shuttle(w, r)
    r.want(2000, 2100)
    tamper = TamperRangeData(change)
    caught = run_hostile(w, r, tamper)
    assert tamper.done
    if raises is None:
        assert caught is None  # an answer to nothing asked: ignored
    else:
        assert isinstance(caught, raises), caught
        assert r.stats.invalid == 1
    assert held(replica) <= set(range(2000, 2100))
    assert_true_copy(replica, blocks)


def test_truncated_range_answer_is_a_decode_error(writer: Log, replica: Log) -> None:
    w, r = connect(writer, replica)
    shuttle(w, r)
    r.want(10, 20)

    def cut(kind: int, payload: bytes) -> list[Message]:
        return [(kind, payload[:-5] if kind == MessageType.EXTENSION else payload)]

    with pytest.raises(DecodeError):
        shuttle(w, r, a_to_b=cut)
    assert not held(replica) and r.stats.invalid == 1


def test_unsolicited_range_none_is_ignored(writer: Log, replica: Log, blocks: list[bytes]) -> None:
    w, r = connect(writer, replica)
    shuttle(w, r)
    none = bytearray()
    write_uint(none, 4242)
    r.receive_data(MessageType.EXTENSION, encode_extension(Extension(EXT_RANGE_NONE, bytes(none))))
    r.want(0, 50)
    shuttle(w, r)
    assert held(replica) == set(range(50))
    assert_true_copy(replica, blocks)


class TamperData:
    """Changes the first ``data`` message that carries a block."""

    def __init__(self, change: Callable[[Data], list[Data]]) -> None:
        self.change = change
        self.done = False

    def __call__(self, kind: int, payload: bytes) -> list[Message]:
        if kind == MessageType.EXTENSION:
            return []  # a JS peer
        if self.done or kind != MessageType.DATA:
            return [(kind, payload)]
        proof = decode_data(payload)
        if proof.block is None:
            return [(kind, payload)]
        self.done = True
        return [(kind, encode_data(d)) for d in self.change(proof)]


def _block(d: Data, **changes: object) -> Data:
    assert d.block is not None
    return dataclasses.replace(d, block=dataclasses.replace(d.block, **changes))  # type: ignore[arg-type]


def data_flip_value(d: Data) -> list[Data]:
    assert d.block is not None and d.block.value is not None
    return [_block(d, value=flip(d.block.value or b"\x00", 0))]


def data_other_value(d: Data) -> list[Data]:
    return [_block(d, value=b"forged")]


def data_drop_node(d: Data) -> list[Data]:
    assert d.block is not None
    return [_block(d, nodes=d.block.nodes[1:])]


def data_flip_node(d: Data) -> list[Data]:
    assert d.block is not None
    n = d.block.nodes[-1]
    return [_block(d, nodes=(*d.block.nodes[:-1], n._replace(hash=flip(n.hash, 0))))]


def data_unsolicited(d: Data) -> list[Data]:
    return [dataclasses.replace(d, request=d.request + 1000), d]


def data_huge_node_size(d: Data) -> list[Data]:
    assert d.block is not None
    n = d.block.nodes[0]
    return [_block(d, nodes=(n._replace(size=(1 << 64) - 1), *d.block.nodes[1:]))]


DataChange = Callable[[Data], list[Data]]
DATA_TAMPERS = [
    pytest.param(data_flip_value, VerificationError, id="flip-value"),
    pytest.param(data_other_value, VerificationError, id="other-value"),
    pytest.param(data_drop_node, VerificationError, id="drop-node"),
    pytest.param(data_flip_node, VerificationError, id="flip-node"),
    pytest.param(data_huge_node_size, VerificationError, id="huge-node-size",
                 ),
    pytest.param(data_unsolicited, None, id="unsolicited"),
]


@pytest.mark.parametrize(("change", "raises"), DATA_TAMPERS)
def test_tampered_data_stores_nothing_wrong(
    writer: Log,
    replica: Log,
    blocks: list[bytes],
    change: DataChange,
    raises: type[RemoteError] | None,
) -> None:
    w, r = connect(writer, replica)
    shuttle(w, r, a_to_b=drop_extensions)
    r.want(2000, 2010)
    tamper = TamperData(change)
    caught = run_hostile(w, r, tamper)
    assert tamper.done and not r.remote_cairn
    if raises is None:
        assert caught is None
        assert held(replica) == set(range(2000, 2010))
    else:
        assert isinstance(caught, raises), caught
    assert held(replica) <= set(range(2000, 2010))
    assert_true_copy(replica, blocks)


def test_bad_data_counts_as_invalid(writer: Log, replica: Log) -> None:
    w, r = connect(writer, replica)
    shuttle(w, r, a_to_b=drop_extensions)
    r.want(2000, 2010)
    for kind, payload in r.data_to_send():
        w.receive_data(kind, payload)
    tamper = TamperData(data_flip_value)
    answers = [m for kind, payload in w.data_to_send() for m in tamper(kind, payload)]
    assert tamper.done
    caught: RemoteError | None = None
    try:  # verified as it arrives (receive) or in a batch (flush): either way the peer's fault
        for kind, payload in answers:
            r.receive_data(kind, payload)
        r.flush()
    except RemoteError as exc:
        caught = exc
    assert isinstance(caught, VerificationError)
    assert r.stats.invalid == 1


def test_ignored_answer_does_not_lose_the_request(writer: Log, replica: Log) -> None:
    w, r = connect(writer, replica)
    shuttle(w, r)
    r.want(2000, 2100)
    with pytest.raises(VerificationError, match="not the run"):
        shuttle(w, r, a_to_b=TamperRangeData(wrong_start))
    r.update()
    shuttle(w, r)  # an honest peer from here on
    assert r.pending == 0 and held(replica) == set(range(2000, 2100))


def test_flipped_bytes_anywhere_in_data_never_store_a_wrong_block(
    tmp_path: Path, writer: Log, blocks: list[bytes]
) -> None:
    """Raw byte flips over a whole ``data`` message: a RemoteError or ignored, never stored."""
    rng = random.Random(3)
    for trial in range(16):
        flipped = False

        def flip_somewhere(kind: int, payload: bytes) -> list[Message]:
            nonlocal flipped
            if kind == MessageType.EXTENSION:
                return []
            if flipped or kind != MessageType.DATA or decode_data(payload).block is None:
                return [(kind, payload)]
            flipped = True
            return [(kind, flip(payload, rng.randrange(len(payload))))]

        with Log.replica(tmp_path / f"r{trial}.db", writer.key) as replica:
            w, r = connect(writer, replica)
            r.want(1234, 1236)
            with contextlib.suppress(RemoteError):
                shuttle(w, r, a_to_b=flip_somewhere)
            assert flipped
            assert held(replica) <= {1234, 1235}
            assert_true_copy(replica, blocks)


# -- noData: blocks the writer no longer holds ----------------------------------------------------


@pytest.mark.parametrize(
    "js",
    [
        pytest.param(False, id="cairn"),
        pytest.param(True, id="js"),
    ],
)
def test_cleared_blocks_are_given_up(
    writer: Log, replica: Log, blocks: list[bytes], js: bool
) -> None:
    assert writer.clear(2500, 2600) == 100
    w, r = connect(writer, replica)
    tamper = drop_extensions if js else pass_through
    r.want(2000, 3000)
    shuttle(w, r, a_to_b=tamper)
    assert r.pending == 0
    assert held(replica) == set(range(2000, 3000)) - set(range(2500, 2600))
    assert w.stats.no_data_sent >= 1
    assert_true_copy(replica, blocks)


# -- answers cut short by size ---------------------------------------------------------------------


def test_big_blocks_come_in_shortened_answers(tmp_path: Path) -> None:
    """A run whose blocks exceed the answer's byte budget is answered in part; the rest is
    asked again until every block is held."""
    big = [bytes([i]) * 70_000 for i in range(100)]  # 7 MB: more than one answer holds
    with (
        Log.create(tmp_path / "big.db", crypto.key_pair(SEED)) as writer,
        Log.replica(tmp_path / "big-replica.db", writer.key) as replica,
    ):
        writer.append(big)
        w, r = connect(writer, replica)
        to_r = Recorder()
        r.want(0, 100)
        shuttle(w, r, a_to_b=to_r)
        answers = to_r.range_answers()
        assert len(answers) > 1 and all(count < 100 for _, count in answers)
        assert [start for start, _ in answers] == sorted(start for start, _ in answers)
        assert sum(count for _, count in answers) == 100  # nothing twice
        assert held(replica) == set(range(100)) and r.pending == 0
        assert_true_copy(replica, big)

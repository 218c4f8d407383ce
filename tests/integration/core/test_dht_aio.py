"""The DHT on real UDP sockets: 15 Cairn nodes on 127.0.0.1 in one event loop.

Every wait is on an operation's own result (a future the adapter completes when the core says
the query is done); nothing sleeps. Each test is bounded by ``asyncio.timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import socket
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from cairn.crypto import KeyPair, key_pair
from cairn.dht import MAX_VALUE_SIZE, node_id
from cairn.dht.aio import RECEIVE_BUFFER, NodeClosedError
from cairn.dht.api import (
    DHT,
    NotStoredError,
    PutReceipt,
    SeqReusedError,
    SeqTooLowError,
    UnreachableError,
)
from cairn.dht.hyper import start_lookup
from cairn.dht.records import MutableRecord, encode_mutable_record, hash32, sign_mutable

NODES = 15
RMEM_MAX = Path("/proc/sys/net/core/rmem_max")
BOUND = 20.0  # seconds any one test may take


@contextlib.asynccontextmanager
async def running_network(n: int) -> AsyncIterator[list[DHT]]:
    """``n`` persistent nodes: the first bootstraps from nobody, the rest from it, in turn."""
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(DHT.start(persistent=True, bootstrap=[]))
        await first.ready()
        nodes = [first]
        for _ in range(n - 1):
            node = await stack.enter_async_context(
                DHT.start(persistent=True, bootstrap=[first.address]))
            await node.ready()
            nodes.append(node)
        yield nodes


@pytest.fixture
async def network() -> AsyncIterator[list[DHT]]:
    # every start and operation is bounded by the DHT's own timeout (10 s)
    async with running_network(NODES) as nodes:
        yield nodes


@contextlib.asynccontextmanager
async def client(nodes: list[DHT]) -> AsyncIterator[DHT]:
    """An ephemeral node (it never enters a routing table) joined through the first node."""
    async with DHT.start(bootstrap=[nodes[0].address], persistent=False) as c:
        await c.ready()
        yield c


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A UDP port that is bound (no ICMP unreachable comes back) and never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


KP = key_pair(bytes(range(32)))
OTHER = key_pair(bytes(range(1, 33)))


# -- the network itself --------------------------------------------------------------------------


async def test_nodes_know_each_other_and_ids_follow_addresses(network: list[DHT]) -> None:
    for node in network:
        assert node.persistent
        assert node.id == node_id(node.address)
        assert len(node.node.core.table) >= NODES // 2


async def test_find_node_returns_the_target_first(network: list[DHT]) -> None:
    async with client(network) as c:
        target = network[7]
        found = await c.find_node(target.id)
    assert found[0] == (target.address, target.id)
    assert len(found) >= 10
    ids = [int.from_bytes(i, "big") ^ int.from_bytes(target.id, "big") for _, i in found]
    assert ids == sorted(ids)


async def test_an_adaptive_node_becomes_persistent_when_reachable(network: list[DHT]) -> None:
    async with DHT.start(bootstrap=[network[0].address]) as node:  # persistent=None
        await node.ready()
        assert node.persistent
        assert node.id == node_id(node.address)


async def test_a_node_on_every_interface_uses_the_address_it_is_given(
        network: list[DHT]) -> None:
    with pytest.raises(ValueError, match="needs address"):
        async with DHT.start(host="0.0.0.0", persistent=True, bootstrap=[]):
            pass
    async with DHT.start(host="0.0.0.0", persistent=True, address=("127.0.0.1", 0),
                         bootstrap=[network[0].address]) as node:
        await node.ready()
        assert node.node.server_address[0] == "0.0.0.0"
        assert node.address == ("127.0.0.1", node.node.server_address[1])
        found = await network[3].find_node(node.id)
        assert found[0] == (node.address, node.id)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's rmem_max")
async def test_sockets_get_large_receive_buffers(network: list[DHT]) -> None:
    cap = int(RMEM_MAX.read_text())  # noqa: ASYNC240 - a procfs file, read at once
    transport = network[0].node.server_udx_socket._transport
    assert transport is not None
    sock = transport.get_extra_info("socket")
    got = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    assert got >= min(RECEIVE_BUFFER, cap)  # Linux reports twice what it keeps for data


# -- mutable records ----------------------------------------------------------------------------


async def test_mutable_put_then_get_from_other_nodes(network: list[DHT]) -> None:
    async with client(network) as c:
        receipt = await c.mutable_put_receipt(KP, b"21.5 C", 1)
    assert isinstance(receipt, PutReceipt)
    assert receipt.nodes >= 10 and receipt.target == hash32(KP.public_key)
    for reader in (network[1], network[8], network[-1]):
        rec = await reader.mutable_get(KP.public_key)
        assert rec == receipt.record
        assert rec is not None and rec.value == b"21.5 C" and rec.seq == 1


async def test_min_seq_and_latest(network: list[DHT]) -> None:
    async with client(network) as c:
        await c.mutable_put(KP, b"one", 1)
        await c.mutable_put(KP, b"five", 5)
        rec = await c.mutable_get(KP.public_key, min_seq=5)
        assert rec is not None and (rec.seq, rec.value) == (5, b"five")
        assert await c.mutable_get(KP.public_key, min_seq=6) is None
        # Replay a stale record (seq 1) to every node but one: a get that stops at the first
        # answer may take it; a latest get asks them all and takes seq 5.
        stale = MutableRecord(1, b"one", sign_mutable(1, b"one", KP.secret_key or b""))
        target = hash32(KP.public_key)
        keeper = network[4]
        for node in network:
            if node is not keeper:
                node.node.handler.mutables.put(target, encode_mutable_record(stale), "10.9.9.9",
                                               time.monotonic())
        latest = await c.mutable_get(KP.public_key, latest=True)
        assert latest is not None and (latest.seq, latest.value) == (5, b"five")
        assert await c.mutable_get(KP.public_key) == latest  # the default is latest
        first = await c.mutable_get(KP.public_key, latest=False)
        assert first is not None and first.seq in (1, 5)


async def test_a_lower_seq_is_refused_with_a_clear_error(network: list[DHT]) -> None:
    async with client(network) as c:
        await c.mutable_put(KP, b"v3", 3)
        with pytest.raises(SeqTooLowError, match=r"seq 2 is too low.*holds seq 3") as low:
            await c.mutable_put(KP, b"v2", 2)
        assert (low.value.seq, low.value.stored_seq) == (2, 3)
        assert isinstance(low.value, NotStoredError)
        with pytest.raises(SeqReusedError, match="seq 3 is already used"):
            await c.mutable_put(KP, b"not v3", 3)
        await c.mutable_put(KP, b"v3", 3)  # the same record again is fine
        rec = await c.mutable_get(KP.public_key, latest=True)
    assert rec is not None and rec.value == b"v3"


async def test_a_value_of_the_largest_size_goes_through_real_sockets(network: list[DHT]) -> None:
    value = bytes(range(256)) * 3 + bytes(MAX_VALUE_SIZE - 768)
    async with client(network) as writer, client(network) as reader:
        await writer.mutable_put(OTHER, value, 1)
        rec = await reader.mutable_get(OTHER.public_key, min_seq=1)
    assert rec is not None and rec.value == value


async def test_bad_arguments_are_refused_before_anything_is_sent(network: list[DHT]) -> None:
    node = network[2]
    with pytest.raises(ValueError, match="most a DHT record holds"):
        await node.mutable_put(KP, bytes(MAX_VALUE_SIZE + 1), 1)
    with pytest.raises(ValueError, match="most a DHT record holds"):
        await node.immutable_put(bytes(MAX_VALUE_SIZE + 1))
    with pytest.raises(ValueError, match="public key must be 32 bytes"):
        await node.mutable_get(bytes(31))
    with pytest.raises(ValueError, match="seq must be"):
        await node.mutable_put(KP, b"x", -1)
    with pytest.raises(ValueError, match="secret key"):
        await node.mutable_put(KeyPair(KP.public_key), b"x", 1)
    with pytest.raises(ValueError, match="topic must be 32 bytes"):
        node.lookup(b"short")


# -- immutable records --------------------------------------------------------------------------


async def test_immutable_put_then_get(network: list[DHT]) -> None:
    async with client(network) as c:
        h = await c.immutable_put(b"calibration table v2")
    assert h == hash32(b"calibration table v2")
    assert await network[9].immutable_get(h) == b"calibration table v2"
    assert await network[9].immutable_get(hash32(b"never stored")) is None


# -- announce and lookup ------------------------------------------------------------------------


async def test_announce_lookup_unannounce(network: list[DHT]) -> None:
    topic = hash32(b"fleet/site-7")
    async with client(network) as a, client(network) as b:
        assert await a.announce(topic, KP, [("10.0.0.7", 5000)]) >= 10
        assert await b.announce(topic, OTHER) >= 10
        assert await a.announce(topic, KP, [("10.0.0.7", 5000)]) >= 10  # again: still one
        peers = [p async for p in network[5].lookup(topic)]
        assert sorted(p.public_key for p in peers) == sorted([KP.public_key, OTHER.public_key])
        by_key = {p.public_key: p for p in peers}
        assert by_key[KP.public_key].relay_addresses == (("10.0.0.7", 5000),)
        assert await a.unannounce(topic, KP) >= 10
        after = [p.public_key async for p in network[11].lookup(topic)]
        assert after == [OTHER.public_key]
    assert [p async for p in network[3].lookup(hash32(b"nobody here"))] == []


async def test_leaving_a_lookup_early_stops_it(network: list[DHT]) -> None:
    topic = hash32(b"early")
    await network[1].announce(topic, KP)
    async with network[6].lookup(topic) as peers:
        async for peer in peers:
            assert peer.public_key == KP.public_key
            break
    assert network[6].node._streams == {}


# -- failures -----------------------------------------------------------------------------------


async def test_no_answer_from_the_bootstrap_node_is_unreachable(silent_port: int) -> None:
    async with asyncio.timeout(BOUND), DHT.start(
            bootstrap=[("127.0.0.1", silent_port)], persistent=False) as c:
        with pytest.raises(UnreachableError, match=f"127.0.0.1:{silent_port}"):
            await c.ready()


async def test_a_lone_node_says_it_knows_no_other_node() -> None:
    async with asyncio.timeout(BOUND), DHT.start(persistent=True, bootstrap=[]) as lone:
        await lone.ready()
        with pytest.raises(UnreachableError, match="knows no other node"):
            await lone.mutable_get(KP.public_key)
        with pytest.raises(UnreachableError):
            await lone.mutable_put(KP, b"x", 1)


async def test_an_operation_times_out_with_a_clear_error(silent_port: int) -> None:
    async with asyncio.timeout(BOUND), DHT.start(
            bootstrap=[("127.0.0.1", silent_port)], persistent=False, timeout=0.2) as c:
        with pytest.raises(TimeoutError, match=r"did not finish in 0\.2 s"):
            await c.mutable_get(KP.public_key)
        with pytest.raises(TimeoutError, match="lookup did not finish"):
            _ = [p async for p in c.lookup(hash32(b"t"))]
        assert c.node._queries == {} and c.node._streams == {}


async def test_closing_fails_what_still_waits_and_what_comes_after(silent_port: int) -> None:
    async with asyncio.timeout(BOUND), contextlib.AsyncExitStack() as stack:
        c = await stack.enter_async_context(
            DHT.start(bootstrap=[("127.0.0.1", silent_port)], persistent=False))
        qid, _ = start_lookup(c.node.core, hash32(b"t"), c.node.now())
        stream = c.node.stream_query(qid)
        await stack.aclose()
        with pytest.raises(NodeClosedError):
            await anext(stream)
        with pytest.raises(NodeClosedError):
            await c.mutable_get(KP.public_key)


async def test_nothing_stored_when_every_node_refuses(network: list[DHT]) -> None:
    for node in network:
        node.node.handler.immutables.per_source = 0  # every put is over quota
    async with client(network) as c:
        with pytest.raises(NotStoredError, match=r"none of the \d+ closest nodes stored"):
            await c.immutable_put(b"refused")


# -- any loop -----------------------------------------------------------------------------------


def test_the_library_runs_on_uvloop_when_given_it() -> None:
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        pytest.skip("uvloop is not installed (optional): pip install uvloop")

    async def scenario() -> bytes | None:
        async with asyncio.timeout(BOUND), running_network(8) as nodes, client(nodes) as c:
            assert "uvloop" in type(asyncio.get_running_loop()).__module__
            await c.mutable_put(KP, b"on uvloop", 1)
            rec = await nodes[5].mutable_get(KP.public_key)
            return rec.value if rec else None

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        assert runner.run(scenario()) == b"on uvloop"

"""The agent's stop: prompt whatever the broker still has queued for it (a SIGTERM during a
flood used to be lost: on Python 3.11 ``asyncio.wait_for`` drops a cancellation that arrives
with a result, and a queue that never emptied held the event loop)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Hashable
from pathlib import Path

import pytest

from cairn.fleet.identity import new_seed
from cairn_edge.agent import Agent, Delivery
from cairn_edge.config import parse_config


class _Ingest:
    """Stands in for the MQTT connection: records what is acknowledged."""

    def __init__(self) -> None:
        self.acked: list[Hashable] = []

    def ack(self, tokens: list[Hashable]) -> None:
        self.acked.extend(tokens)


def _agent(tmp_path: Path) -> Agent:
    new_seed(tmp_path / "device.seed")
    cfg = parse_config('data_dir = "data"\nseed_file = "device.seed"\n'
                       "[logs]\ncommit_interval = 0.05\n", tmp_path)
    return Agent(cfg)


T0 = time.time() - 60


def _message(k: int) -> Delivery:
    body = json.dumps([{"bn": "flood/noise", "bt": T0 + k * 0.001, "u": "Cel",
                        "v": k % 100}]).encode()
    return Delivery("senml/flood/noise", body, None, (1, k % 65535 + 1, 1))


async def _flood(queue: asyncio.Queue[Delivery | None], stop: asyncio.Event) -> None:
    k = 0
    while not stop.is_set():
        for _ in range(50):
            queue.put_nowait(_message(k))
            k += 1
        await asyncio.sleep(0)


async def test_stop_during_a_flood_commits_what_is_held_and_returns(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    queue: asyncio.Queue[Delivery | None] = asyncio.Queue()
    agent._queue = queue
    for k in range(50_000):  # a backlog the consumer cannot drain before the stop
        queue.put_nowait(_message(k))
    done = asyncio.Event()
    ingest = _Ingest()
    flood = asyncio.create_task(_flood(queue, done))
    consumer = asyncio.create_task(agent._consume(queue, ingest))  # type: ignore[arg-type]
    committed = asyncio.Event()
    agent.on_status = lambda a: committed.set() if a.pipeline.stats.commits >= 2 else None
    try:
        await committed.wait()  # two commits (one every 0.05 s) into the backlog
        agent.stop()
        async with asyncio.timeout(10):
            await consumer  # returns: a stop is not lost to the backlog
        assert agent.stopping
        assert not queue.empty()  # it stopped with messages left (the broker sends them again)
        agent._commit(ingest)  # type: ignore[arg-type]  # what run() does on the way out
        assert agent.pipeline.stats.accepted > 0
        assert len(ingest.acked) >= agent.pipeline.stats.accepted - 1
    finally:
        done.set()
        await flood
        consumer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await consumer
        agent.store.close()


async def test_a_cancellation_during_a_flood_is_never_dropped(tmp_path: Path) -> None:
    agent = _agent(tmp_path)
    queue: asyncio.Queue[Delivery | None] = asyncio.Queue()
    done = asyncio.Event()
    flood = asyncio.create_task(_flood(queue, done))
    for attempt in range(20):  # the race wait_for lost: a result and the cancel together
        consumer = asyncio.create_task(agent._consume(queue, _Ingest()))  # type: ignore[arg-type]
        for _ in range(attempt % 5 + 1):
            await asyncio.sleep(0)
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            async with asyncio.timeout(10):
                await consumer
    done.set()
    await flood
    agent.store.close()

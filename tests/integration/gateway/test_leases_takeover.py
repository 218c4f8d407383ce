"""A gateway that takes over a device collected in rounds (several gateways on one store):
it downloads, and verifies, only what the store does not hold yet, not the device's whole
history. Real TCP on 127.0.0.1 (the edge's log server), two gateways' own replica files over
one store."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cairn.crypto import random_key_pair
from cairn.log import Log
from cairn_gateway.collect import Collector
from cairn_gateway.store import Store
from tests.integration.gateway.test_gateway_holes import (
    NAMES,
    collect,
    frame,
    make_edge,
    stored_blocks,
)


def test_the_new_holder_downloads_only_what_the_store_lacks(tmp_path: Path) -> None:
    paths = make_edge(tmp_path, 100)
    writers = {n: Log.open(p) for n, p in paths.items()}
    store = Store(tmp_path / "fleet.db")
    a = Collector(tmp_path / "gw-a", random_key_pair(), store)
    b = Collector(tmp_path / "gw-b", random_key_pair(), store)
    try:
        got = asyncio.run(collect(writers, a))  # gateway A held the device: 0..99 stored
        assert [r.samples for r in got] == [100, 100]
        for n, lg in writers.items():
            lg.append([frame(n, i) for i in range(100, 150)])
        got = asyncio.run(collect(writers, b))  # A died; B holds the lease now
        assert [(r.error, r.samples) for r in got] == [(None, 50), (None, 50)]
        for n in NAMES:
            replica = b.replica(writers[n].key)
            assert [i for i in range(replica.length) if replica.has(i)] == list(range(100, 150))
            sid = dict(store.conn.execute("SELECT name, id FROM streams"))[n]
            assert stored_blocks(store, sid) == list(range(150))
        row = store.conn.execute("SELECT count(*), count(DISTINCT t) FROM samples").fetchone()
        assert tuple(row) == (300, 150)
        # and B's next round starts from its own replica (one index lookup, nothing again)
        got = asyncio.run(collect(writers, b))
        assert [(r.blocks, r.samples) for r in got] == [(0, 0), (0, 0)]
    finally:
        for lg in writers.values():
            lg.close()
        a.close()
        b.close()
        store.close()

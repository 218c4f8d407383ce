"""An edge dialled in to a gateway that does not hold its lease (several gateways, one fleet):
the link is admitted and kept as a standby, nothing of it is read; when the gateway takes the
lease the same link starts reading, from where the store stands; when it loses the lease the
link ends and the edge dials again, into a standby. Real TCP on 127.0.0.1, the listener and the
dialer as the daemons run them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cairn_gateway.roster import reach
from tests.integration.gateway.test_dialout import (
    Edge,
    Gateway,
    dialer_for,
    dialling,
    frame,
    running,
    until,
)


def test_a_standby_link_reads_only_while_its_gateway_holds_the_lease(tmp_path: Path) -> None:
    name = "board-1/temperature"

    async def main() -> None:
        edge = Edge(tmp_path, "board-1", (name,))
        gw = Gateway(tmp_path)
        held: set[bytes] = set()
        gw.collector.holds = held.__contains__
        try:
            edge.logs[name].append([frame(name, k) for k in range(5)])
            gw.enroll(edge, "board-1")
            async with running(gw), dialling(dialer_for(edge, gw.key.public_key, gw.address)) \
                    as dialer:
                link = dialer.links[gw.key.public_key]
                # admitted, followed as a standby: nothing read, nothing stored, no reach noted
                await until(lambda: edge.record_key in gw.collector.live and link.connected)
                assert gw.samples(name) == 0
                assert gw.collector.replica(edge.logs[name].key).length == 0
                assert edge.record_key not in reach(gw.store.conn)
                # the lease taken: the same connection reads, within a poll
                held.add(edge.record_key)
                await until(lambda: gw.samples(name) == 5)
                edge.logs[name].append([frame(name, 5)])
                await until(lambda: gw.samples(name) == 6)
                assert link.connections == 1
                assert reach(gw.store.conn)[edge.record_key].startswith("connected since")
                # the lease lost: the link ends at the next append or poll, the edge dials
                # again and waits as a standby; what it appends now is not read here
                held.discard(edge.record_key)
                edge.logs[name].append([frame(name, 6)])
                await until(lambda: link.connections >= 2 and link.connected
                            and edge.record_key in gw.collector.live)
                edge.logs[name].append([frame(name, 7)])
                assert gw.samples(name) == 6  # (not read while the lease is elsewhere)
                # taken again: the rest arrives, each sample once
                held.add(edge.record_key)
                await until(lambda: gw.samples(name) == 8)
                rows = gw.store.conn.execute(
                    "SELECT count(*), count(DISTINCT block) FROM samples").fetchone()
                assert tuple(rows) == (8, 8)
        finally:
            edge.close()
            gw.close()

    asyncio.run(main())

"""Live push's batches under a hostile edge: an enrolled edge whose live connection answers
with forged blocks loses its connection each time (its read rolled back: nothing of it
stored), while an honest edge connected beside it keeps being stored, exactly once."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

import pytest

from cairn.messages import MessageType, decode_data, encode_data
from cairn.replication.session import Session
from tests.integration.gateway.test_dialout import (
    T0,
    Edge,
    Gateway,
    dialer_for,
    dialling,
    frame,
    running,
    until,
)
from tests.scorecard import record


def test_forged_live_blocks_are_refused_and_the_honest_edge_keeps_arriving(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    honest = Edge(tmp_path, "board-21", ("board-21/t",))
    forger = Edge(tmp_path, "board-22", ("board-22/t",))
    forged_logs = set(map(id, forger.logs.values()))
    forged = {"sent": 0}
    serve = Session._on_request

    def forge(self: Session, req: object) -> None:
        serve(self, req)  # type: ignore[arg-type]
        if id(self.log) in forged_logs and self._out and self._out[-1][0] == MessageType.DATA:
            d = decode_data(self._out[-1][1])
            if d.block is not None and d.block.value:  # its bytes changed, its proof kept
                block = dataclasses.replace(d.block, value=b"\xff" + d.block.value[1:])
                self._out[-1] = (int(MessageType.DATA),
                                 encode_data(dataclasses.replace(d, block=block)))
                forged["sent"] += 1

    monkeypatch.setattr(Session, "_on_request", forge)

    async def main() -> tuple[int, int, int]:
        gw = Gateway(tmp_path)
        try:
            gw.enroll(honest, "board-21")
            gw.enroll(forger, "board-22")
            async with running(gw), \
                    dialling(dialer_for(honest, gw.key.public_key, gw.address)), \
                    dialling(dialer_for(forger, gw.key.public_key, gw.address)):
                forger.logs["board-22/t"].append([frame("board-22/t", 0)])
                for k in range(20):
                    honest.logs["board-21/t"].append([frame("board-21/t", k)])
                    forger.logs["board-22/t"].append([frame("board-22/t", k + 1)])
                    await until(lambda n=k + 1: gw.samples("board-21/t") == n)  # type: ignore[misc]
                await until(lambda: forged["sent"] >= 3)
                mine = forger.logs["board-22/t"]
                replica = gw.collector.replica(mine.key)
                differ = sum(1 for i in range(replica.length)
                             if replica.has(i) and replica.get(i) != mine.get(i))
                sid = gw.store.conn.execute("SELECT id FROM streams WHERE name = ?",
                                            ("board-22/t",)).fetchone()[0]
                wrong = sum(1 for t, v, _b, _f in gw.store.samples(sid, 0, 2e10)
                            if v != pytest.approx(20.0 + (t - T0)))
                return gw.samples("board-21/t"), wrong, differ
        finally:
            honest.close()
            forger.close()
            gw.close()

    got, stolen, kept = asyncio.run(main())
    record("replication", "an enrolled edge answers its live pulls with forged blocks", 1,
           (20 - got) + stolen + kept, "honest samples lost + forged stored",
           detail=f"{forged['sent']} forged answers, each refused with its connection; "
                  "the honest edge beside it stored 20 of 20")
    assert got == 20 and stolen == 0 and kept == 0

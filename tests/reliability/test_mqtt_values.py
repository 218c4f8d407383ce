"""Hostile readings on a board's own topic (issue 17 part 5), through the real edge pipeline, its
stream logs, and the gateway's store (no sockets: the agent's consumer feeds the same
:class:`Pipeline`; the gateway stores the frames the edge signed).

- a reading stamped 290 s ahead, and others a few seconds ahead, among honest readings: no
  honest reading goes to ``/late``, nothing more than ``max_future`` ahead is stored;
- readings of 1.7e308 among honest ones: the gateway's minute and hour rollups stay finite and
  the honest mean is right.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from cairn.frames import Frame
from cairn_edge.adapters import DEFAULT_ROUTES
from cairn_edge.config import parse_config
from cairn_edge.pipeline import Pipeline, Validator
from cairn_edge.streams import StreamStore
from cairn_gateway.store import Store
from tests.scorecard import record, scale

T0 = 1_764_000_000.0  # on a whole hour
SEED = bytes(range(32))
TOPIC = "senml/board-1/temperature"


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def senml(t: float | None, v: float) -> bytes:
    rec: dict[str, object] = {"bn": "board-1/temperature", "bu": "Cel", "v": v}
    if t is not None:
        rec["bt"] = t
    return json.dumps([rec]).encode()


def edge(tmp_path: Path, clock: Clock) -> tuple[StreamStore, Pipeline]:
    cfg = parse_config("", tmp_path)  # the defaults: max_future as shipped
    store = StreamStore(tmp_path / "edge", SEED, checkpoint_interval=0)
    p = Pipeline(store, Validator(floor=T0 - 86_400, max_future=cfg.max_future),
                 DEFAULT_ROUTES, commit_interval=cfg.commit_interval, clock=clock)
    return store, p


def run(p: Pipeline, clock: Clock, until: float) -> None:
    """The agent's consumer between messages: commit whenever one is due."""
    while p.due() <= until:
        clock.now = max(clock.now, p.due())
        p.commit()
    clock.now = until


def samples(store: StreamStore, name: str) -> list[tuple[float, object]]:
    lg = store.logs.get(name)
    if lg is None:
        return []
    return [(s.time, s.value) for i in range(lg.length) for s in Frame.decode(lg.get(i)).samples]


def test_a_future_stamped_reading_does_not_make_honest_ones_late(tmp_path: Path) -> None:
    rng = random.Random(17)
    seconds = scale(300, 3600)
    clock = Clock()
    store, p = edge(tmp_path, clock)
    try:
        attacks = 0
        far: list[float] = []
        for k in range(seconds):
            run(p, clock, T0 + k + rng.random() * 0.5)
            if k % 10 == 0:  # a reading stamped ahead: far ahead, or just within the tolerance
                ahead = 290.0 if k % 20 == 0 else 4.9
                if ahead > 5:
                    far.append(clock.now + ahead)
                p.submit(TOPIC, senml(clock.now + ahead, -1.0), None, f"attack-{k}")
                attacks += 1
            p.submit(TOPIC, senml(None, float(k)), None, f"honest-{k}")  # stamped at receipt
        run(p, clock, clock.now + 10)
        main = samples(store, "board-1/temperature")
        late = samples(store, "board-1/temperature/late")
        honest_late = [v for _, v in late if v != -1.0]
        honest = [v for _, v in main if v != -1.0]
        record("mqtt", "readings stamped 290 s and 4.9 s ahead among honest ones", attacks,
               len(honest_late), "honest readings made late", detail=(
                   f"{seconds} honest readings at 1 Hz; far-ahead ones rejected: "
                   f"{p.stats.rejected.get('future', 0)}"))
        assert honest_late == [] and late == []
        assert honest == [float(k) for k in range(seconds)]  # every honest one, current
        assert not any(t in far for t, _ in main)  # nothing far ahead stored
        assert p.stats.rejected == {"future": len(far)}
        assert [t for t, _ in main] == sorted(t for t, _ in main)
        assert all(t <= T0 + seconds + 10 for t, _ in main)
    finally:
        store.close()


def test_huge_values_do_not_poison_the_gateways_rollups(tmp_path: Path) -> None:
    clock = Clock()
    store, p = edge(tmp_path, clock)
    gw = Store(tmp_path / "gw.db")
    try:
        huge = [1.7e308, 1.7e308, -1.7e308, 1e300]
        for k in range(120):
            run(p, clock, T0 + k + 0.25)
            p.submit(TOPIC, senml(clock.now, 20.0 + (k % 2)), None, f"honest-{k}")
            if k % 30 == 0:
                p.submit(TOPIC, senml(clock.now + 0.1, huge[k // 30]), None, f"huge-{k}")
        run(p, clock, clock.now + 5)
        lg = store.logs["board-1/temperature"]
        sid = gw.stream(gw.device(b"r" * 32, "board-1", T0), "board-1/temperature", lg.key)
        gw.ingest(sid, [(i, 0, Frame.decode(lg.get(i))) for i in range(lg.length)])
        rows = [*gw.rollup(sid, T0, T0 + 3600, 60), *gw.rollup(sid, T0, T0 + 3600, 3600),
                *gw.rollup(sid, T0 - 86_400, T0 + 86_400, 86_400)]
        bad = [r for r in rows if not all(math.isfinite(x) for x in (r.mean, r.lo, r.hi))]
        record("mqtt", "readings of 1.7e308 and 1e300 among honest ones (gateway rollups)",
               len(huge), len(bad), "rollup rows not finite",
               detail=f"{gw.unrolled(sid)} values kept out of rollups, stored as signed")
        assert bad == []
        assert [(r.n, r.mean) for r in gw.rollup(sid, T0, T0 + 120, 60)] == [(60, 20.5),
                                                                            (60, 20.5)]
        assert gw.unrolled(sid) == len(huge)
        assert len(gw.samples(sid, T0, T0 + 200)) == 120 + len(huge)  # nothing lost
    finally:
        gw.close()
        store.close()

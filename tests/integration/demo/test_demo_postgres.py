"""``cairn demo --store postgresql://...``: the demo's gateway keeps its store in a PostgreSQL
database (a real server, ``tests/pg.py``), and the demo's summary, read through the store's
interface, adds up: every sample the edges signed is stored, every stream verified, and the
database holds what the summary says."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from cairn_demo import Demo
from cairn_gateway import queries
from cairn_gateway.store import Store
from tests.integration.entry import run_entry

WAIT = 90.0


def until(what: str, done: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        pause.wait(0.2)


def test_the_demo_runs_on_postgresql_and_its_summary_adds_up(tmp_path: Path,
                                                              pg_url: str) -> None:
    demo = Demo(tmp_path / "demo", api_port=0, broker="auto", store=pg_url)
    demo.start()
    try:
        until("15 streams at the API, every one verified", lambda: (
            len(demo.get("/api/latest")) == 15
            and all(s["status"] == "ok" for s in demo.get("/api/integrity"))))
        until("some samples stored", lambda: demo.summary(quick=True).stored > 100)
        demo.stop_sim()
        demo.settle(20.0)

        def collected() -> bool:
            s = demo.summary(quick=True)
            return s.stored >= s.accepted > 100

        until("every sample the edges signed stored at the gateway", collected)
        demo.stop_edges()
        summary = demo.summary()
    finally:
        demo.stop()
    assert not (tmp_path / "demo" / "gateway" / "data" / "gw.db").exists()
    assert summary.stored == summary.accepted > 100, summary
    assert summary.streams_ok == summary.streams >= 15, summary
    assert summary.reconcile()[0].startswith("adds up"), summary.reconcile()
    store = Store(pg_url)
    try:
        assert queries.total_samples(store.conn) == summary.stored
        assert {m.name for m in queries.devices(store.conn)} == {"board-1", "board-2",
                                                                "board-3"}
    finally:
        store.close()


def test_a_store_that_is_not_a_postgresql_url_is_a_usage_error(tmp_path: Path) -> None:
    for url, needle in (("mysql://h/db", "is not a postgresql://"),
                        ("postgresql://u:pw@h/db", "--store holds a password")):
        ran = run_entry("cairn", "demo", "--data", str(tmp_path / "d"), "--api-port", "0",
                        "--duration", "1", "--store", url, cwd=tmp_path)
        ran.fails(2, needle)
        assert "pw@" not in ran.stderr
    assert not (tmp_path / "d").exists()

"""The whole system, end to end: real Mosquitto, a real DHT of 5 nodes, 3 edge agents and a
gateway as their own processes on 127.0.0.1, real SQLite, the simulator's ledger as the truth.

Everything valid that the simulator sent (and the broker acknowledged) must be in the gateway's
store exactly once, verified, values equal; the latest values reach the API; an edge killed
with SIGKILL and restarted loses and duplicates nothing; a gateway cut off from an edge for 30 s
catches up. (The latency figure, "within 2 s of being sent", is measured by bench/e2e.py.)
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cairn_demo import Demo
from cairn_sim.mqtt import Ledger

WAIT = 90.0


def until(what: str, done: Callable[[], bool], timeout: float = WAIT, every: float = 0.2
          ) -> None:
    """Poll ``done`` until it holds; fail saying ``what`` never happened."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        pause.wait(every)


def stored(demo: Demo) -> dict[str, list[tuple[float, Any]]]:
    """The gateway's samples by stream (late companions folded into their stream)."""
    db = demo.data / "gateway" / "data" / "gw.db"
    out: dict[str, list[tuple[float, Any]]] = {}
    if not db.exists():
        return out
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c:
        c.execute("PRAGMA busy_timeout=5000")
        for name, t, value, text in c.execute(
                "SELECT s.name, x.t, x.value, x.text FROM samples x "
                "JOIN streams s ON s.id = x.stream_id"):
            out.setdefault(name.removesuffix("/late"), []).append(
                (t, value if value is not None else text))
    return out


def wanted(ledger: Path) -> dict[str, set[tuple[float, Any]]]:
    """What the simulator sent in valid messages that the broker acknowledged."""
    messages, acks = Ledger.read(ledger)
    want: dict[str, set[tuple[float, Any]]] = {}
    for m in messages:
        if m["valid"] and m["seq"] in acks:
            for name, _unit, t, v in m["samples"]:
                want.setdefault(name, set()).add((t, v))
    return want


def latest(demo: Demo) -> dict[str, tuple[float, Any]]:
    return {r["name"]: (r["time"], r["value"]) for r in demo.get("/api/latest")}


def test_the_whole_system(mosquitto_path: Path, tmp_path: Path) -> None:
    demo = Demo(tmp_path / "demo", api_port=0, broker="mosquitto", proxies=True, rate=2.0)
    demo.start()
    try:
        # every stream of every board shows up at the API, verified
        until("15 streams at the API, every one verified", lambda: (
            len(latest(demo)) == 15
            and all(s["status"] == "ok" for s in demo.get("/api/integrity"))))
        # the demo enrolled its boards: every value carries its board's name, verified, and
        # the live view shows the names
        rows = demo.get("/api/latest")
        assert {r["device"] for r in rows} == {"board-1", "board-2", "board-3"}
        assert all(r["verified"] and r["name"].startswith(r["device"] + "/") for r in rows)
        assert {r["device"] for r in demo.view()["rows"]} == {"board-1", "board-2", "board-3"}

        # the latest values keep reaching the API: a value sent after now arrives
        now = time.time()
        until("values sent after the start reach the API",
              lambda: all(t > now for t, _ in latest(demo).values()), timeout=30)

        # power cuts: edge-1 and edge-2 killed with SIGKILL mid-stream, restarted
        for k in (0, 1, 0):
            edge = demo.edges[k]
            before = int(edge.last.get("commits", 0))
            until(f"edge-{k + 1} commits", lambda e=edge, b=before:  # type: ignore[misc]
                  int(e.last.get("commits", 0)) >= b + 2, timeout=30)
            edge.kill()
            demo.start_edge(k)

        # the network path from the gateway to edge-3 goes down for 30 s
        proxy = demo.proxies[2]
        until("edge-3's blocks flow through its proxy", lambda: proxy.relayed > 0)
        proxy.cut()
        cut_at = time.time()
        t3 = next(n for n in latest(demo) if n.startswith("board-3/temperature"))  # Tasmota's
        threading.Event().wait(30.0)  # the outage itself (not a synchronisation)
        # name: temperature-<sensor group>. Readings taken before the cut may still arrive (a
        # block in flight); one taken after it can only have come through the cut path
        through = [t for t, _ in stored(demo).get(t3, []) if t > cut_at + 0.5]
        assert not through, "the gateway still got edge-3's data through a cut path"
        proxy.restore()
        until("the gateway catches up with edge-3 after the cut", lambda: (
            latest(demo).get(t3, (0.0, None))[0] > cut_at + 30))

        # the end: the simulator stops; everything acknowledged must arrive at the gateway
        demo.stop_sim()
        want = wanted(demo.data / "ledger.jsonl")
        assert len(want) == 15 and sum(map(len, want.values())) > 500

        def complete() -> bool:
            got = stored(demo)
            return all(len(got.get(n, [])) >= len(v) for n, v in want.items())

        until("every acknowledged sample stored at the gateway", complete)
        summary = demo.summary()
    finally:
        demo.stop()

    got = stored(demo)
    assert set(got) == set(want)
    for name, values in want.items():
        samples = got[name]
        # (two samples may share a time: Tasmota stamps whole seconds; the edge keeps both)
        assert len(samples) == len(set(samples)), f"{name}: a sample stored twice"
        got_sorted, want_sorted = sorted(samples), sorted(values)
        assert [t for t, _ in got_sorted] == [t for t, _ in want_sorted], name
        assert [v for _, v in got_sorted] == pytest.approx([v for _, v in want_sorted],
                                                          rel=1e-12), name
    # the edges said why they refused what they refused (the scenario sends malformed ones)
    assert sum(summary.rejected.values()) > 0
    # 15 streams, and a `<stream>/late` companion for any that had late samples: all verified
    assert summary.streams_ok == summary.streams >= 15

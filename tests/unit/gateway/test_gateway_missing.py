"""The store's list of holes (migration m005_missing_blocks): replaced by each full answer,
first seen kept, one line for people; /api/integrity and /metrics show it (httpx over ASGI)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cairn_gateway.api import make_app
from cairn_gateway.store import Store, describe_missing


def test_holes_are_replaced_by_each_answer_and_keep_when_first_seen(
        store_target: Callable[[str], str]) -> None:
    store = Store(store_target("gw"))
    try:
        dev = store.device(b"d" * 32, "board-1", 1.0)
        a = store.stream(dev, "board-1/t", b"a" * 32)
        b = store.stream(dev, "board-1/h", b"b" * 32)
        new = store.set_missing(a, [(5, 6, "damaged"), (100, 110, "not served")], now=10.0)
        assert new == [(5, 6, "damaged"), (100, 110, "not served")]
        # the next round: block 5 still damaged, 100..109 stored meanwhile, 7 newly damaged
        new = store.set_missing(a, [(5, 6, "damaged"), (7, 8, "damaged")], now=20.0)
        assert new == [(7, 8, "damaged")]
        assert store.missing() == {a: [(5, 6, "damaged", 10.0), (7, 8, "damaged", 20.0)]}
        assert store.missing(b) == {}
        assert store.set_missing(a, [], now=30.0) == [] and store.missing() == {}
    finally:
        store.close()
    again = Store(store_target("gw"))  # the migration ran once; reopening keeps the table
    again.close()


def test_describe_missing() -> None:
    assert describe_missing([]) == ""
    assert describe_missing([(5, 6, "damaged"), (7, 10, "damaged"), (100, 110, "not served")]) \
        == "blocks 5, 7..9 (damaged); blocks 100..109 (not served)"


def test_integrity_and_metrics_show_holes(tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.db")
    dev = store.device(b"d" * 32, "board-1", 1.0)
    a = store.stream(dev, "board-1/t", b"a" * 32)
    store.stream(dev, "board-1/h", b"b" * 32)
    store.set_missing(a, [(5, 6, "damaged"), (100, 110, "not served")], now=10.0)

    async def get(path: str) -> httpx.Response:
        transport = httpx.ASGITransport(app=make_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
            return await c.get(path)

    try:
        t, h = asyncio.run(get("/api/integrity")).json()
        assert t["status"] == "ok" and t["alert"] is True and t["missing_blocks"] == 11
        assert t["missing"] == "blocks 5 (damaged); blocks 100..109 (not served)"
        assert t["missing_ranges"] == [
            {"start": 5, "stop": 6, "reason": "damaged", "since": 10.0},
            {"start": 100, "stop": 110, "reason": "not served", "since": 10.0}]
        assert h["alert"] is False and h["missing"] is None and h["missing_ranges"] == []
        text = asyncio.run(get("/metrics")).text
        [fam] = [f for f in text_string_to_metric_families(text)
                 if f.name == "cairn_gateway_missing_blocks"]
        got = {(s.labels["stream"], s.labels["reason"]): s.value for s in fam.samples}
        assert got == {("board-1/t", "damaged"): 1, ("board-1/t", "not served"): 10,
                       ("board-1/h", "damaged"): 0, ("board-1/h", "not served"): 0}
    finally:
        store.close()

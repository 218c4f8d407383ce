"""Prometheus from Debian scrapes the gateway's /metrics: edges serve signed logs on 127.0.0.1,
the gateway collects them into its store and serves the API; a real `prometheus` process (its
own config and data directory, a 1 s scrape interval, the API's read token from a credentials
file as in deploy/compose/prometheus.yml) scrapes it, and its query API answers
with the values the store holds."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import subprocess
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx

from cairn.brokers import free_port
from cairn.crypto import random_key_pair
from cairn_gateway.api import make_app
from cairn_gateway.auth import ApiAuth, new_token
from cairn_gateway.collect import Collector
from cairn_gateway.store import Store
from tests.integration.gateway.test_gateway_schedule import device, edge_log, serving

DEADLINE = 60.0  # seconds for Prometheus to start and scrape what we look for


@contextlib.contextmanager
def prometheus(executable: Path, directory: Path, target: str,
               token_file: Path | None = None) -> Iterator[str]:
    """A Prometheus server scraping ``target`` (host:port) every second, with the bearer
    token in ``token_file`` (as deploy/compose/prometheus.yml does); its base URL."""
    directory.mkdir()
    config = directory / "prometheus.yml"
    auth = "" if token_file is None else (
        f"    authorization:\n      type: Bearer\n      credentials_file: {token_file}\n")
    config.write_text("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                      "scrape_configs:\n  - job_name: cairn-gateway\n" + auth +
                      f"    static_configs:\n      - targets: ['{target}']\n")
    port = free_port()
    with (directory / "prometheus.log").open("w") as out, subprocess.Popen(
            [str(executable), f"--config.file={config}",
             f"--web.listen-address=127.0.0.1:{port}",
             f"--storage.tsdb.path={directory / 'data'}"],
            stdout=out, stderr=subprocess.STDOUT) as proc:
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)


async def until(what: str, check: Callable[[], Awaitable[Any]], log: Path) -> Any:
    """Poll ``check`` until it returns something truthy, up to DEADLINE seconds."""
    end = time.monotonic() + DEADLINE
    while True:
        with contextlib.suppress(httpx.TransportError):
            got = await check()
            if got:
                return got
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {DEADLINE:g} s; Prometheus said:\n"
                                 + _tail(log))
        await asyncio.sleep(0.2)  # the poll's pace, not a wait for something to happen


def test_prometheus_scrapes_the_gateway(prometheus_path: Path, tmp_path: Path) -> None:
    import uvicorn

    names = {n: f"board-{n}/temperature" for n in (1, 2)}
    logs = {n: edge_log(tmp_path / f"edge{n}.db", n, names[n]) for n in (1, 2)}
    store = Store(tmp_path / "gw.db")
    collector = Collector(tmp_path / "gw", random_key_pair(), store)

    async def scenario() -> tuple[dict[str, float], dict[str, Any],
                                  dict[tuple[str, str | None], float]]:
        async with serving(logs[1]) as p1, serving(logs[2]) as p2:
            results = await collector.sync_devices([device(1, names[1], p1, logs[1].key),
                                                    device(2, names[2], p2, logs[2].key)])
            assert [r.error for r in results] == [None, None]
        for n in (1, 2):  # the devices' names, as an edge's record gives them
            store.conn.execute("UPDATE devices SET name = ? WHERE record_key = ?",
                               (f"board-{n}", bytes([n]) * 32))
        token = new_token(tmp_path / "api-read.token")  # the API needs it for /metrics
        app = make_app(store, edges=lambda: collector.schedule.status(collector.clock()),
                       auth=ApiAuth(token.encode()))
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0,
                                               log_level="warning", lifespan="off"))
        api = asyncio.create_task(server.serve())
        try:
            end = time.monotonic() + DEADLINE
            while not server.started:  # uvicorn says it is up only through this flag
                assert not api.done() and time.monotonic() < end, "the API did not start"
                await asyncio.sleep(0.01)
            host, port = server.servers[0].sockets[0].getsockname()[:2]
            with prometheus(prometheus_path, tmp_path / "prometheus", f"{host}:{port}",
                            tmp_path / "api-read.token") as url:
                async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                    async def query(q: str) -> list[dict[str, Any]]:
                        r = await client.get("/api/v1/query", params={"query": q})
                        if r.status_code == 503:  # still starting (its TSDB): not yet
                            return []
                        r.raise_for_status()
                        body = r.json()
                        assert body["status"] == "success", body
                        return list(body["data"]["result"])

                    log = tmp_path / "prometheus" / "prometheus.log"
                    up = await until("up == 1 for the gateway", lambda: _up(query), log)
                    latest = await until(
                        "two cairn_gateway_latest_celsius series",
                        lambda: _series(query, "cairn_gateway_latest_celsius", 2), log)
                    others = {}
                    for name, n in (("cairn_gateway_samples", 1),
                                    ("cairn_gateway_stopped_streams", 1),
                                    ("cairn_gateway_edge_reachable", 2),
                                    ("cairn_gateway_edge_backoff_seconds", 2)):
                        for x in await until(name, functools.partial(_series, query, name, n),
                                             log):
                            others[(name, x["metric"].get("device"))] = float(x["value"][1])
                    return ({x["metric"]["stream"]: float(x["value"][1]) for x in latest}, up,
                            others)
        finally:
            server.should_exit = True
            await api

    try:
        latest, up, others = asyncio.run(scenario())
        held = {}
        for sid, name in store.conn.execute("SELECT id, name FROM streams"):
            *_, (_t, value, _b, _f) = store.samples(sid, 0, 2e9)
            held[name] = value
        assert held == {names[1]: 102.9, names[2]: 202.9}  # the newest of each edge's log
        assert latest == held
        assert up["metric"]["job"] == "cairn-gateway" and up["value"][1] == "1"
        total = store.conn.execute("SELECT count(*) FROM samples").fetchone()[0]
        assert total == 60
        assert others == {("cairn_gateway_samples", None): total,
                          ("cairn_gateway_stopped_streams", None): 0,
                          ("cairn_gateway_edge_reachable", "board-1"): 1,
                          ("cairn_gateway_edge_reachable", "board-2"): 1,
                          ("cairn_gateway_edge_backoff_seconds", "board-1"): 0,
                          ("cairn_gateway_edge_backoff_seconds", "board-2"): 0}
    finally:
        collector.close()
        store.close()
        for lg in logs.values():
            lg.close()


def _tail(log: Path) -> str:
    return log.read_text()[-3000:]


async def _up(query: Callable[[str], Awaitable[list[dict[str, Any]]]]) -> dict[str, Any] | None:
    got = await query('up{job="cairn-gateway"} == 1')
    return got[0] if got else None


async def _series(query: Callable[[str], Awaitable[list[dict[str, Any]]]], name: str,
                  n: int) -> list[dict[str, Any]] | None:
    got = await query(name)
    return got if len(got) >= n else None

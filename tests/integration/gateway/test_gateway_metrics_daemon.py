"""The running daemon's /metrics (`run_gateway`): rounds counted and timed, the interval and
the disk budget, both database files' sizes, the connections by transport, build info; and a
Prometheus-valid exposition over real HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cairn.fleet.identity import new_seed
from cairn_gateway import daemon
from cairn_gateway.config import parse_config

DEADLINE = 30.0


async def test_the_daemons_metrics_count_its_rounds(tmp_path: Path) -> None:
    new_seed(tmp_path / "gateway.seed")
    cfg = parse_config('[api]\nlisten = "127.0.0.1:0"\n[collect]\ninterval = 0.1\n'
                       'ingest_worker = false\n[replication]\nlisten = "127.0.0.1:0"\n'
                       '[store]\nretention_days = 30\nmax_disk_mb = 500\n', tmp_path)
    listening: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()
    gateway = asyncio.create_task(daemon.run_gateway(cfg, ready=listening.set_result))
    try:
        host, port = await listening
        async with httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=10) as c:
            end = time.monotonic() + DEADLINE
            while True:
                r = await c.get("/metrics")
                assert r.status_code == 200 and r.headers["content-type"].startswith(
                    "text/plain; version=0.0.4")
                got = {(s.name, tuple(sorted(s.labels.items()))): s.value
                       for f in text_string_to_metric_families(r.text) for s in f.samples}
                if got.get(("cairn_gateway_rounds_total", ()), 0) >= 3:
                    break
                assert time.monotonic() < end, "three rounds not counted in time"
                await asyncio.sleep(0.05)  # the poll's pace
    finally:
        gateway.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await gateway
    assert got[("cairn_gateway_round_duration_seconds_count", ())] >= 3
    assert got[("cairn_gateway_last_round_timestamp_seconds", ())] > 0
    assert got[("cairn_gateway_collect_interval_seconds", ())] == 0.1
    assert got[("cairn_gateway_disk_budget_bytes", ())] == 500_000_000
    assert got[("cairn_gateway_disk_bytes", (("file", "store"),))] > 0
    assert got[("cairn_gateway_disk_bytes", (("file", "replicas"),))] > 0
    assert got[("cairn_gateway_connections", (("transport", "tcp"),))] == 0
    assert got[("cairn_gateway_errors_total", (("kind", "round"),))] == 0
    assert any(name == "cairn_build_info" for name, _ in got)

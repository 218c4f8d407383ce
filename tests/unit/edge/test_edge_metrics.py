"""The edge's Prometheus metrics (cairn_edge.metrics): the conventions (``_total`` counters,
``_bytes``, ``_timestamp_seconds``), build info, the quota the alert reads, and a cap on
per-stream series."""

from __future__ import annotations

import platform
from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cairn import __version__
from cairn_edge.metrics import MAX_LABEL, MAX_STREAMS, registry_for


def status(streams: int = 2, name: str = "board-1/s") -> dict[str, Any]:
    names = [f"{name}{k}" for k in range(streams)]
    return {"messages": 9, "samples": 7, "rejected": {"bad-json": 1}, "late": 0,
            "duplicates": 0, "commits": 3, "dht_publishes": 0, "dht_announces": 0,
            "cleared_blocks": 4, "streams": dict.fromkeys(names, 40),
            "last_sample": {n: 1_764_000_000.0 + k for k, n in enumerate(names)},
            "disk_bytes": 5000, "log_bytes": 4000, "disk_quota_bytes": 10_000,
            "broker_connected": True, "damaged_blocks": {},
            "gateways": [{"gateway": "ab" * 32, "connected": True}]}


def read(st: dict[str, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(registry_for(lambda: st)).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text) for s in f.samples}


def test_edge_metrics_by_the_conventions() -> None:
    got = read(status())
    assert got[("cairn_edge_messages_total", ())] == 9
    assert got[("cairn_edge_cleared_blocks_total", ())] == 4
    assert got[("cairn_edge_rejected_total", (("reason", "bad-json"),))] == 1
    assert got[("cairn_edge_log_bytes", ())] == 4000
    assert got[("cairn_edge_disk_quota_bytes", ())] == 10_000
    assert got[("cairn_edge_last_sample_timestamp_seconds",
                (("stream", "board-1/s1"),))] == 1_764_000_001.0
    assert got[("cairn_edge_gateway_connected", (("gateway", "ab" * 8),))] == 1
    assert got[("cairn_build_info", (("python", platform.python_version()),
                                     ("version", __version__)))] == 1


def test_per_stream_series_are_capped_and_labels_cut() -> None:
    got = read(status(MAX_STREAMS + 50, "x" * 250))
    lengths = [dict(k) for n, k in got if n == "cairn_edge_log_length"]
    assert len(lengths) == MAX_STREAMS
    assert all(len(x["stream"]) <= MAX_LABEL for x in lengths)
    assert got[("cairn_edge_metrics_omitted_streams", ())] == 50

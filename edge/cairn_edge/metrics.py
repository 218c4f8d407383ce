"""The edge agent's Prometheus endpoint: what `cairn edge status` shows, for a scraper.

A collector reads the agent's counters at scrape time (in the HTTP server's thread), so the
numbers are never older than the scrape. Counters are read from plain ints and copied dicts,
which the asyncio thread only ever replaces or increments.

Named by the Prometheus conventions, as the gateway's are (docs/edge.md lists them): counters
end in ``_total`` (``prometheus-client`` adds it), sizes in ``_bytes``, times in
``_timestamp_seconds``; ``cairn_build_info{version,python}``. Per-stream series are capped at
:data:`MAX_STREAMS` (the rest counted in ``cairn_edge_metrics_omitted_streams``) and label
values cut to :data:`MAX_LABEL` characters, so a misbehaving board cannot flood a scraper.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

from cairn import __version__
from cairn.labels import MAX_LABEL, cut_label

__all__ = ["MAX_LABEL", "MAX_STREAMS", "EdgeCollector", "registry_for"]

MAX_STREAMS = 1000  # per-stream series at most


class EdgeCollector(Collector):
    def __init__(self, status: Callable[[], dict[str, Any]]) -> None:
        self.status = status

    def collect(self) -> Iterator[Any]:
        for _ in range(3):  # a dict that changed while being copied: read again
            try:
                st = self.status()
                break
            except RuntimeError:
                continue
        else:  # pragma: no cover - three changes in a row
            return
        yield InfoMetricFamily("cairn_build", "the running Cairn's version and Python",
                               value={"version": __version__,
                                      "python": platform.python_version()})
        yield CounterMetricFamily("cairn_edge_messages", "MQTT messages received",
                                  value=st["messages"])
        yield CounterMetricFamily("cairn_edge_samples", "samples committed to stream logs",
                                  value=st["samples"])
        rejected = CounterMetricFamily("cairn_edge_rejected", "messages rejected, by reason",
                                       labels=["reason"])
        for reason, n in sorted(st["rejected"].items()):
            rejected.add_metric([reason], n)
        yield rejected
        refused = CounterMetricFamily("cairn_edge_refused_samples", "readings refused alone "
                                      "(the rest of their message stored), by reason",
                                      labels=["reason"])
        for reason, n in sorted(st.get("refused_samples", {}).items()):
            refused.add_metric([reason], n)
        yield refused
        yield CounterMetricFamily("cairn_edge_late", "samples older than their stream's last "
                                  "commit, kept in the late log", value=st["late"])
        yield CounterMetricFamily("cairn_edge_duplicates", "redelivered samples not stored "
                                  "again", value=st["duplicates"])
        yield CounterMetricFamily("cairn_edge_commits", "group commits", value=st["commits"])
        yield CounterMetricFamily("cairn_edge_dht_publishes", "DHT record updates",
                                  value=st["dht_publishes"])
        yield CounterMetricFamily("cairn_edge_dht_announces", "announces on the fleet topic "
                                  "that a DHT node stored", value=st["dht_announces"])
        yield CounterMetricFamily("cairn_edge_cleared_blocks", "blocks whose data the disk "
                                  "quota cleared (oldest first)", value=st["cleared_blocks"])
        streams = sorted(st["streams"].items())
        shown = {name for name, _n in streams[:MAX_STREAMS]}
        damaged = GaugeMetricFamily("cairn_edge_damaged_blocks", "held blocks of each stream "
                                    "whose data no longer matches its hash (found while "
                                    "serving; they cannot be served)", labels=["stream"])
        for stream, blocks in sorted(st.get("damaged_blocks", {}).items()):
            if stream in shown:
                damaged.add_metric([cut_label(stream)], len(blocks))
        yield damaged
        length = GaugeMetricFamily("cairn_edge_log_length", "blocks in each stream's log",
                                   labels=["stream"])
        last = GaugeMetricFamily("cairn_edge_last_sample_timestamp_seconds", "time of each "
                                 "stream's last committed sample (epoch seconds)",
                                 labels=["stream"])
        times = st.get("last_sample", {})
        for stream, n in streams[:MAX_STREAMS]:
            length.add_metric([cut_label(stream)], n)
            if times.get(stream) is not None:
                last.add_metric([cut_label(stream)], times[stream])
        yield length
        yield last
        yield GaugeMetricFamily("cairn_edge_metrics_omitted_streams", "streams left out of "
                                "the per-stream metrics (a cap on series)",
                                value=max(0, len(streams) - MAX_STREAMS))
        yield GaugeMetricFamily("cairn_edge_disk_bytes", "bytes of the data directory",
                                value=st["disk_bytes"])
        yield GaugeMetricFamily("cairn_edge_log_bytes", "bytes the stream logs use (free "
                                "pages not counted; measured every few commits): what the "
                                "quota limits", value=st.get("log_bytes", 0))
        yield GaugeMetricFamily("cairn_edge_disk_quota_bytes", "[logs] max_disk_mb in bytes "
                                "(0: no quota)", value=st.get("disk_quota_bytes", 0))
        gateways = GaugeMetricFamily("cairn_edge_gateway_connected", "1 while the connection "
                                     "this edge dialled to a pinned gateway is up",
                                     labels=["gateway"])
        for link in st.get("gateways", [])[:MAX_STREAMS]:
            gateways.add_metric([str(link["gateway"])[:16]], 1 if link["connected"] else 0)
        yield gateways
        yield GaugeMetricFamily("cairn_edge_broker_connected", "1 when connected to the broker",
                                value=1 if st["broker_connected"] else 0)


def registry_for(status: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(EdgeCollector(status))
    return reg

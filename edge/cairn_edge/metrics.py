"""The edge agent's Prometheus endpoint: what `cairn edge status` shows, for a scraper.

A collector reads the agent's counters at scrape time (in the HTTP server's thread), so the
numbers are never older than the scrape. Counters are read from plain ints and copied dicts,
which the asyncio thread only ever replaces or increments.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

__all__ = ["EdgeCollector", "registry_for"]


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
        damaged = GaugeMetricFamily("cairn_edge_damaged_blocks", "held blocks of each stream "
                                    "whose data no longer matches its hash (found while "
                                    "serving; they cannot be served)", labels=["stream"])
        for stream, blocks in sorted(st.get("damaged_blocks", {}).items()):
            damaged.add_metric([stream], len(blocks))
        yield damaged
        length = GaugeMetricFamily("cairn_edge_log_length", "blocks in each stream's log",
                                   labels=["stream"])
        for stream, n in sorted(st["streams"].items()):
            length.add_metric([stream], n)
        yield length
        yield GaugeMetricFamily("cairn_edge_disk_bytes", "bytes of the data directory",
                                value=st["disk_bytes"])
        yield GaugeMetricFamily("cairn_edge_broker_connected", "1 when connected to the broker",
                                value=1 if st["broker_connected"] else 0)


def registry_for(status: Callable[[], dict[str, Any]]) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(EdgeCollector(status))
    return reg

"""The gateway's Prometheus metrics (``/metrics``), written by ``prometheus-client``.

Named by the Prometheus conventions: one unit per metric, in the name's suffix (``_seconds``,
``_bytes``, ``_celsius``...), counters end in ``_total``, timestamps are
``..._timestamp_seconds`` (epoch seconds). Two sources:

- :class:`GatewayMetrics` holds what the daemon counts as it runs (rounds and their duration,
  errors by kind, live pushes, retention), as ``prometheus-client`` instruments in a registry
  of its own (never the process-wide default: two gateways in one test process stay apart);
- :class:`StoreCollector` reads the store at scrape time (each stream's latest value and
  last-sample time, samples stored, holes, refusals) and the edges' reachability.

Units: a stream's latest value goes to the metric of its unit, converted to the Prometheus
base unit where one exists (``hPa`` -> ``cairn_gateway_latest_pascals``, ``%RH`` ->
``..._ratio``; :data:`UNITS`); a stream without a unit (or ``count``, ``1``) to
``cairn_gateway_latest``; a unit outside the table to ``cairn_gateway_latest_other_unit`` with
the unit as a label (its series are not comparable with one another: filter by ``unit``).

Cardinality: per-stream series exist only for streams the store holds (streams of enrolled
devices' records), at most :data:`MAX_STREAMS_PER_DEVICE` per device and
:data:`MAX_STREAMS` in all; the rest are left out and counted in
``cairn_gateway_metrics_omitted_streams``. Label values are cut to :data:`MAX_LABEL` characters;
``prometheus-client`` escapes them. Error kinds are a fixed set (:data:`ERROR_KINDS`).
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector

from cairn import __version__
from cairn.labels import MAX_LABEL, cut_label
from cairn_gateway import queries
from cairn_gateway.roster import display_name
from cairn_gateway.schedule import EdgeStatus
from cairn_gateway.store import Store

__all__ = ["CONTENT_TYPE", "ERROR_KINDS", "MAX_LABEL", "MAX_STREAMS", "MAX_STREAMS_PER_DEVICE",
           "UNITS", "GatewayMetrics", "StoreCollector", "metric_for_unit"]

T = TypeVar("T")

MAX_STREAMS_PER_DEVICE = 256  # per-stream series of one device at most
MAX_STREAMS = 10_000  # per-stream series in all
#: The text format ``generate_latest`` writes for these (classic) names: version 0.0.4, which
#: every Prometheus 2 reads (prometheus-client 0.26 would label it 1.0.0).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: What ``cairn_gateway_errors_total{kind}`` counts.
ERROR_KINDS = {
    "round": "a collection round that failed as a whole",
    "unreachable": "a device whose edge could not be reached (or timed out)",
    "stream": "a stream whose download or store failed this round (not stopped)",
    "stopped": "a stream stopped by a fork or by data its signature did not cover",
    "watermark": "a watermark record that could not be published",
    "retention": "a retention or disk-budget pass that failed",
    "lease": "a lease heartbeat that failed (several gateways on one PostgreSQL store)",
}

#: SenML unit -> (metric name suffix, factor to that unit).
UNITS: dict[str, tuple[str, float]] = {
    "Cel": ("celsius", 1.0), "K": ("kelvin", 1.0),
    "Pa": ("pascals", 1.0), "hPa": ("pascals", 100.0), "kPa": ("pascals", 1000.0),
    "%": ("ratio", 0.01), "%RH": ("ratio", 0.01), "%EL": ("ratio", 0.01), "/": ("ratio", 1.0),
    "ppm": ("ppm", 1.0), "ppb": ("ppb", 1.0),
    "V": ("volts", 1.0), "mV": ("volts", 1e-3), "A": ("amperes", 1.0), "mA": ("amperes", 1e-3),
    "W": ("watts", 1.0), "kW": ("watts", 1e3), "mW": ("watts", 1e-3),
    "J": ("joules", 1.0), "Wh": ("joules", 3600.0), "kWh": ("joules", 3.6e6),
    "s": ("seconds", 1.0), "ms": ("seconds", 1e-3), "min": ("seconds", 60.0),
    "h": ("seconds", 3600.0),
    "m": ("meters", 1.0), "mm": ("meters", 1e-3), "cm": ("meters", 1e-2), "km": ("meters", 1e3),
    "m/s": ("meters_per_second", 1.0), "km/h": ("meters_per_second", 1 / 3.6),
    "g": ("grams", 1.0), "kg": ("grams", 1e3), "ug/m3": ("micrograms_per_cubic_meter", 1.0),
    "B": ("bytes", 1.0), "Hz": ("hertz", 1.0), "lx": ("lux", 1.0), "dB": ("decibels", 1.0),
    "dBm": ("decibel_milliwatts", 1.0), "lat": ("degrees", 1.0), "lon": ("degrees", 1.0),
    "deg": ("degrees", 1.0), "l": ("liters", 1.0), "m3": ("cubic_meters", 1.0),
}
UNITLESS = {"", "1", "count"}

LATEST = "cairn_gateway_latest"
OTHER_UNIT = "cairn_gateway_latest_other_unit"


def metric_for_unit(unit: str | None) -> tuple[str, float]:
    """The metric a stream's latest value goes to, and the factor its values take there."""
    u = unit or ""
    if u in UNITLESS:
        return LATEST, 1.0
    if u in UNITS:
        suffix, factor = UNITS[u]
        return f"{LATEST}_{suffix}", factor
    return OTHER_UNIT, 1.0


class GatewayMetrics:
    """What the running gateway counts, and ``/metrics``'s text (:meth:`exposition`)."""

    def __init__(self, store: Store | None = None, *,
                 edges: Callable[[], Mapping[bytes, EdgeStatus]] = dict,
                 connections: Callable[[], Mapping[str, int]] = dict,
                 disk: Callable[[], Mapping[str, int]] = dict,
                 interval: float | None = None, budget: int = 0,
                 clock: Callable[[], float] = time.time) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.clock = clock
        reg = self.registry
        Info("cairn_build", "the running Cairn's version and Python", registry=reg).info(
            {"version": __version__, "python": platform.python_version()})
        self.rounds = Counter("cairn_gateway_rounds", "collection rounds run", registry=reg)
        self.round_duration = Histogram(
            "cairn_gateway_round_duration_seconds", "how long each collection round took",
            buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300), registry=reg)
        self.last_round = Gauge("cairn_gateway_last_round_timestamp_seconds",
                                "when the last collection round ended (0: none yet)",
                                registry=reg)
        self.interval = Gauge("cairn_gateway_collect_interval_seconds",
                              "[collect].interval: seconds between rounds", registry=reg)
        if interval is not None:
            self.interval.set(interval)
        self.errors = Counter("cairn_gateway_errors", "errors by kind (see docs/gateway.md)",
                              ["kind"], registry=reg)
        for kind in ERROR_KINDS:
            self.errors.labels(kind)
        self.live_pushes = Counter("cairn_gateway_live_pushes",
                                   "appends stored from edges that dialled in", registry=reg)
        self.live_samples = Counter("cairn_gateway_live_samples",
                                    "samples stored from edges that dialled in", registry=reg)
        self.pruned_blocks = Counter("cairn_gateway_pruned_blocks", "replica blocks whose "
                                     "data was dropped, by reason (retention, budget)",
                                     ["reason"], registry=reg)
        self.pruned_samples = Counter("cairn_gateway_pruned_samples", "samples deleted, by "
                                      "reason (retention, budget)", ["reason"], registry=reg)
        for reason in ("retention", "budget"):
            self.pruned_blocks.labels(reason)
            self.pruned_samples.labels(reason)
        self.leases_held = Gauge("cairn_gateway_leases", "devices whose lease this gateway "
                                 "holds (a PostgreSQL store; 0 on SQLite, where the one "
                                 "gateway collects every enrolled device without leases)",
                                 registry=reg)
        self.takeovers = Counter("cairn_gateway_lease_takeovers", "devices taken over from "
                                 "a gateway that stopped renewing its leases", registry=reg)
        Gauge("cairn_gateway_disk_budget_bytes", "[store] max_disk_mb in bytes (0: no "
              "budget)", registry=reg).set(budget)
        if store is not None:
            reg.register(StoreCollector(store, edges, connections, disk))

    def error(self, kind: str, n: int = 1) -> None:
        """Count ``n`` errors of a kind of :data:`ERROR_KINDS`."""
        if kind not in ERROR_KINDS:
            raise ValueError(f"unknown error kind {kind!r}")
        if n:
            self.errors.labels(kind).inc(n)

    def round_done(self, seconds: float) -> None:
        self.rounds.inc()
        self.round_duration.observe(seconds)
        self.last_round.set(self.clock())

    def live_stored(self, samples: int) -> None:
        self.live_pushes.inc()
        self.live_samples.inc(samples)

    def leases(self, held: int, taken_over: int = 0) -> None:
        """A lease heartbeat's outcome: leases held now, takeovers it made."""
        self.leases_held.set(held)
        if taken_over:
            self.takeovers.inc(taken_over)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


class StoreCollector(Collector):
    """The store's and the edges' state, read at each scrape (on the event loop's thread,
    where every other use of the store's connection runs)."""

    def __init__(self, store: Store, edges: Callable[[], Mapping[bytes, EdgeStatus]],
                 connections: Callable[[], Mapping[str, int]],
                 disk: Callable[[], Mapping[str, int]] = dict) -> None:
        self.store = store
        self.edges = edges
        self.connections = connections
        self.disk = disk

    def collect(self) -> Iterator[Any]:
        conn = self.store.conn
        yield from self._latest(conn)
        yield GaugeMetricFamily("cairn_gateway_samples", "samples stored",
                                value=queries.total_samples(conn))
        yield GaugeMetricFamily("cairn_gateway_stopped_streams", "streams stopped by a fork "
                                "or by data its signature did not cover",
                                value=queries.stopped_streams(conn))
        named = _capped(queries.stream_labels(conn), lambda s: s.record_key)[0]
        refused = CounterMetricFamily(
            "cairn_gateway_refused_samples", "samples refused for their time (outside the "
            "plausible window), never stored", labels=["device", "record_key", "stream"])
        for s in named:
            refused.add_metric(_stream_labels(s.device_name, s.record_key, s.name), s.refused)
        yield refused
        yield self._missing(named)
        yield self._stopped(conn, named)
        yield from self._edges()
        live = GaugeMetricFamily("cairn_gateway_connections", "edges connected now (dialled "
                                 "in), by transport", labels=["transport"])
        for transport, n in sorted(self.connections().items()):
            live.add_metric([transport], n)
        yield live
        disk = GaugeMetricFamily("cairn_gateway_disk_bytes", "bytes in use of each database "
                                 "file (free pages not counted)", labels=["file"])
        for file, n in sorted(self.disk().items()):
            disk.add_metric([file], n)
        yield disk

    def _latest(self, conn: Any) -> Iterator[Any]:
        # a re-keyed board's streams may be there twice: the enrolled key's series wins
        rows, omitted = _capped(sorted(queries.latest(conn), key=lambda x: x.removed),
                                lambda x: x.record_key)
        families: dict[str, GaugeMetricFamily] = {}
        stamp = GaugeMetricFamily("cairn_gateway_last_sample_timestamp_seconds",
                                  "time of each stream's latest stored sample (epoch seconds)",
                                  labels=["device", "stream"])
        seen: set[tuple[str, str]] = set()
        for x in rows:
            device = cut_label(display_name(x.device_name, x.record_key))
            if (device, cut_label(x.name)) in seen:  # two streams would share a series
                omitted += 1
                continue
            seen.add((device, cut_label(x.name)))
            stamp.add_metric([device, cut_label(x.name)], x.time)
            if not isinstance(x.value, float | bool):  # strings never appear here
                continue
            name, factor = metric_for_unit(x.unit)
            fam = families.get(name)
            if fam is None:
                labels = ["device", "stream", "verified"] + (["unit"] if name == OTHER_UNIT
                                                             else [])
                fam = families[name] = GaugeMetricFamily(
                    name, "latest stored value of each stream" + (
                        "" if name == LATEST else " in this unit" if name != OTHER_UNIT
                        else " whose unit has no metric of its own (label unit)"),
                    labels=labels)
            values = [device, cut_label(x.name), str(x.verified).lower()]
            if name == OTHER_UNIT:
                values.append(cut_label(x.unit or ""))
            fam.add_metric(values, float(x.value) * factor)  # (a boolean as 1 or 0)
        yield from families.values()
        yield stamp
        yield GaugeMetricFamily("cairn_gateway_metrics_omitted_streams", "streams left out of "
                                "the per-stream metrics (caps on series)", value=omitted)

    def _missing(self, named: list[queries.StreamLabel]) -> GaugeMetricFamily:
        """Each stream's holes by reason (0 when it has none)."""
        holes = self.store.missing()
        fam = GaugeMetricFamily("cairn_gateway_missing_blocks", "blocks a stream's edge signed "
                                "but would not serve (reason: damaged on the edge, or not "
                                "served)", labels=["device", "record_key", "stream", "reason"])
        for x in named:
            count: dict[str, int] = {"damaged": 0, "not served": 0}
            for a, z, r, _ in holes.get(x.id, []):
                count[r] = count.get(r, 0) + z - a
            for reason, k in sorted(count.items()):
                fam.add_metric([*_stream_labels(x.device_name, x.record_key, x.name), reason],
                               k)
        return fam

    def _stopped(self, conn: Any, named: list[queries.StreamLabel]) -> GaugeMetricFamily:
        """Each stream: 1 when its collection stopped (a fork, unverifiable data)."""
        stopped = queries.stopped_ids(conn)
        fam = GaugeMetricFamily("cairn_gateway_stream_stopped", "1 when a stream's collection "
                                "stopped (a fork, or data its signature did not cover)",
                                labels=["device", "stream"])
        seen: set[tuple[str, str]] = set()
        for x in named:
            labels = (cut_label(display_name(x.device_name, x.record_key)), cut_label(x.name))
            if labels not in seen:
                seen.add(labels)
                fam.add_metric(list(labels), 1 if x.id in stopped else 0)
        return fam

    def _edges(self) -> Iterator[Any]:
        status = self.edges()
        if not status:
            return
        names = queries.device_names(self.store.conn)
        reach = GaugeMetricFamily("cairn_gateway_edge_reachable", "1 if the edge answered the "
                                  "last try", labels=["device", "record_key"])
        wait = GaugeMetricFamily("cairn_gateway_edge_backoff_seconds", "the wait before an "
                                 "unreachable edge is tried again (0: reachable)",
                                 labels=["device", "record_key"])
        for k in sorted(status)[:MAX_STREAMS]:
            e = status[k]
            labels = [cut_label(display_name(names.get(k), k)), k.hex()]
            reach.add_metric(labels, int(e.reachable))
            wait.add_metric(labels, e.backoff)
        yield reach
        yield wait


def _stream_labels(device_name: str | None, record_key: bytes, name: str) -> list[str]:
    return [cut_label(display_name(device_name, record_key)), record_key.hex(), cut_label(name)]


def _capped(rows: list[T], device: Callable[[T], bytes]) -> tuple[list[T], int]:
    """At most MAX_STREAMS_PER_DEVICE rows of each device and MAX_STREAMS in all (in the
    store's order: the oldest streams first); and how many were left out."""
    per: dict[bytes, int] = {}
    out: list[T] = []
    for r in rows:
        k = device(r)
        if per.get(k, 0) >= MAX_STREAMS_PER_DEVICE or len(out) >= MAX_STREAMS:
            continue
        per[k] = per.get(k, 0) + 1
        out.append(r)
    return out, len(rows) - len(out)

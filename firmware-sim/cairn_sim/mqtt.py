"""Driving a fleet over MQTT: one paho-mqtt 2.x client per device, all in one thread.

Every device has its own MQTT connection (client id ``cairn-sim-<device>``, persistent session,
QoS 1, a retained will), as real boards do. The clients are not each given a thread: one
selector loop reads and writes all their sockets (paho's ``loop_read`` / ``loop_write`` /
``loop_misc`` with its socket callbacks), and between socket events it publishes what the
:class:`~cairn_sim.fleet.Fleet` says is due. The schedule lag (how late a message left, against
when it was due) is measured for every message.

Connections try MQTT 5 first and fall back to 3.1.1 when the broker refuses version 5 (a
3.1.1-only broker answers with "unacceptable protocol version" or closes the connection). A lost
connection is retried with exponential backoff and seeded jitter; QoS 1 messages published
while it is down are kept by paho and sent when it is back.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import json
import logging
import math
import selectors
import socket
import ssl
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cairn.brokers import Broker
from cairn_sim.fleet import Control, Fleet, Outgoing
from cairn_sim.payloads import will
from cairn_sim.scenario import chance

__all__ = ["Ledger", "RunStats", "Runner"]

log = logging.getLogger(__name__)

#: MQTT 5 CONNACK reason "Unsupported Protocol Version", and 3.1.1's return code 1.
_UNSUPPORTED_VERSION = {132, 1}
SESSION_EXPIRY = 3600  # seconds the broker keeps a device's session (and its QoS 1 queue)
CONNACK_TIMEOUT = 3.0  # seconds to wait for the broker's answer to CONNECT


class Ledger:
    """Every message sent, one JSON object per line, and a line for each broker acknowledgement.

    ``{"seq", "sent" (wall time), "device", "topic", "payload" (base64), "retain", "kind",
    "faults", "valid", "samples": [[name, unit, time, value], ...], "scheduled"}`` for a message,
    ``{"ack": seq, "at": wall time}`` when the broker acknowledged it (QoS 1 PUBACK).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._f: IO[str] = open(self.path, "w", encoding="utf-8")  # noqa: SIM115

    def sent(self, m: Outgoing, seq: int) -> None:
        self._f.write(json.dumps({
            "seq": seq,
            "sent": time.time(),
            "device": m.device,
            "topic": m.publish.topic,
            "payload": base64.b64encode(m.publish.payload).decode(),
            "retain": m.publish.retain,
            "kind": m.kind,
            "faults": list(m.faults),
            "valid": m.valid,
            "samples": [[s.name, s.unit, s.time, s.value] for s in m.samples],
            "scheduled": m.scheduled,
        }, allow_nan=True) + "\n")

    def acked(self, seq: int) -> None:
        self._f.write(f'{{"ack": {seq}, "at": {time.time()!r}}}\n')

    def flush(self) -> None:
        self._f.flush()

    def close(self) -> None:
        self._f.close()

    @staticmethod
    def read(path: str | Path) -> tuple[list[dict[str, Any]], set[int]]:
        """(messages, acknowledged seqs) from a ledger file."""
        messages, acks = [], set()
        with open(path, encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                if "ack" in rec:
                    acks.add(int(rec["ack"]))
                else:
                    messages.append(rec)
        return messages, acks


@dataclass(slots=True)
class RunStats:
    """What a run did, for the live summary, the CLI's last lines and the benchmark."""

    sent: int = 0
    acked: int = 0
    connects: int = 0
    reconnects: int = 0
    fallbacks: int = 0  # connections that fell back to MQTT 3.1.1
    faults: Counter[str] = field(default_factory=Counter)
    #: schedule lag of every data message, in half-millisecond bins (bounded memory however
    #: long the run)
    lag_bins: Counter[int] = field(default_factory=Counter)
    lag_max: float = 0.0
    online: int = 0
    devices: int = 0
    elapsed: float = 0.0

    def add_lag(self, seconds: float) -> None:
        self.lag_bins[int(seconds * 2000.0)] += 1
        if seconds > self.lag_max:
            self.lag_max = seconds

    def lag(self, q: float) -> float:
        """The q-quantile of schedule lag in seconds, to 0.5 ms (0 if nothing was sent)."""
        total = sum(self.lag_bins.values())
        if not total:
            return 0.0
        rank = max(1, math.ceil(q * total))
        seen = 0
        for b in sorted(self.lag_bins):
            seen += self.lag_bins[b]
            if seen >= rank:
                return min((b + 1) / 2000.0, self.lag_max)
        return self.lag_max


@functools.cache
def _publish_properties(content_type: str) -> Properties:
    """MQTT 5 PUBLISH properties with a content type: made once (paho's Properties objects
    cost ~40 us to build, more than the rest of a publish), only read afterwards."""
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ContentType = content_type
    return props


class _Link:
    """One device's connection."""

    def __init__(self, runner: Runner, device: str, protocol: MQTTProtocolVersion) -> None:
        self.runner = runner
        self.device = device
        self.protocol = protocol
        self.v5_refused = False
        self.connected = False
        self.ever_connected = False
        self.held_offline = False  # a fault keeps the board offline: do not reconnect
        self.attempts = 0
        self.started = False  # connect() was called on this client (later: reconnect())
        self.connecting_since: float | None = None  # run time of a CONNECT not answered yet
        self.retry_at: float | None = 0.0  # run time of the next connection attempt
        self.pending: dict[int, tuple[int, Outgoing]] = {}  # mid -> (ledger seq, message)
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        r = self.runner
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{r.client_prefix}{self.device}",
            protocol=self.protocol,
            clean_session=None if self.protocol == MQTTProtocolVersion.MQTTv5 else False,
        )
        client.max_inflight_messages_set(r.max_inflight)
        client.max_queued_messages_set(0)
        if r.broker.username is not None:
            client.username_pw_set(r.broker.username, r.broker.password)
        if r.broker.tls:
            client.tls_set_context(r.tls_context or ssl.create_default_context())
        w = will(r.fleet.devices[self.device].fmt, self.device)
        client.will_set(w.topic, w.payload, qos=1, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        return client

    # -- paho callbacks ----------------------------------------------------------------------

    def _on_socket_open(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.runner._register(sock, self, selectors.EVENT_READ)

    def _on_socket_close(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.runner._unregister(sock)

    def _on_register_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.runner._modify(sock, self, selectors.EVENT_READ | selectors.EVENT_WRITE)

    def _on_unregister_write(self, client: mqtt.Client, userdata: Any, sock: Any) -> None:
        self.runner._modify(sock, self, selectors.EVENT_READ)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        self.connecting_since = None
        if reason.is_failure:
            if self.protocol == MQTTProtocolVersion.MQTTv5 and reason.value in _UNSUPPORTED_VERSION:
                self.v5_refused = True
            log.warning("%s: broker refused the connection: %s", self.device, reason)
            if not self.held_offline and not self.runner.stopping:
                self._schedule_retry()  # paho may not report the disconnect that follows
            return
        self.connecting_since = None
        stats = self.runner.stats
        stats.connects += 1
        if self.ever_connected:
            stats.reconnects += 1
        self.ever_connected = True
        self.connected = True
        self.attempts = 0
        for m in self.runner.fleet.births(self.device):
            self.publish(m)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        was = self.connected
        self.connected = False
        if not was and self.protocol == MQTTProtocolVersion.MQTTv5 and not self.ever_connected:
            self.v5_refused = True  # closed before CONNACK: a broker that cannot read v5
        if not self.held_offline and not self.runner.stopping:
            self._schedule_retry()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: Any,
                    properties: Any) -> None:
        entry = self.pending.pop(mid, None)
        if entry is None:
            return
        seq, _ = entry
        self.runner.stats.acked += 1
        if self.runner.ledger is not None:
            self.runner.ledger.acked(seq)

    # -- actions -----------------------------------------------------------------------------

    def _schedule_retry(self) -> None:
        r = self.runner
        base = min(r.backoff_max, r.backoff_min * 2 ** min(self.attempts, 30))
        jitter = 0.5 + chance(r.fleet.seed, "backoff", self.device, self.attempts)
        self.attempts += 1
        self.retry_at = r.now() + base * jitter
        r.next_retry = min(r.next_retry, self.retry_at)

    def try_connect(self) -> None:
        self.retry_at = None
        if self.v5_refused and self.protocol == MQTTProtocolVersion.MQTTv5:
            self._fall_back()
        r = self.runner
        self.connecting_since = r.now()
        try:
            if self.started:
                self.client.reconnect()
            else:
                self.started = True
                props = None
                if self.protocol == MQTTProtocolVersion.MQTTv5:
                    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
                    props.SessionExpiryInterval = SESSION_EXPIRY
                clean: Any = False if props else mqtt.MQTT_CLEAN_START_FIRST_ONLY
                self.client.connect(r.broker.host, r.broker.port, keepalive=r.keepalive,
                                    clean_start=clean, properties=props)
        except (OSError, ssl.SSLError) as exc:
            log.debug("%s: cannot connect: %s", self.device, exc)
            self._schedule_retry()

    def _fall_back(self) -> None:
        """Rebuild the client for MQTT 3.1.1, keeping the messages not yet acknowledged."""
        log.info("%s: broker refused MQTT 5, falling back to 3.1.1", self.device)
        self.runner.stats.fallbacks += 1
        old = self.pending
        self.pending = {}
        self.protocol = MQTTProtocolVersion.MQTTv311
        self.started = False
        self.client = self._make_client()
        for seq, m in sorted(old.values(), key=lambda e: e[0]):
            self._publish(m, seq)

    def publish(self, m: Outgoing) -> None:
        r = self.runner
        seq = r.next_seq()
        r.stats.sent += 1
        if r.ledger is not None:
            r.ledger.sent(m, seq)
        self._publish(m, seq)

    def _publish(self, m: Outgoing, seq: int) -> None:
        props = None
        if self.protocol == MQTTProtocolVersion.MQTTv5 and m.publish.content_type:
            props = _publish_properties(m.publish.content_type)
        info = self.client.publish(m.publish.topic, m.publish.payload, qos=1,
                                   retain=m.publish.retain, properties=props)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            log.warning("%s: publish to %s failed: %s", self.device, m.publish.topic, info.rc)
            return
        self.pending[info.mid] = (seq, m)

    def check_connack(self, now: float) -> None:
        """No CONNACK in time: an MQTT 3.1.1 broker may choke on a version 5 CONNECT (amqtt waits
        for bytes that never come) rather than refuse it; try again, falling back to 3.1.1
        if this connection never worked with 5."""
        since = self.connecting_since
        if since is None or self.connected or now - since < CONNACK_TIMEOUT:
            return
        self.connecting_since = None
        if self.protocol == MQTTProtocolVersion.MQTTv5 and not self.ever_connected:
            self.v5_refused = True
        self.cut()
        self._schedule_retry()

    def cut(self) -> None:
        """Lose the connection without a DISCONNECT (power or network gone): the will fires."""
        sock = self.client.socket()
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class Runner:
    """Runs a :class:`Fleet` against a broker for a while."""

    def __init__(
        self,
        fleet: Fleet,
        broker: Broker,
        *,
        ledger: Ledger | None = None,
        protocol: str = "auto",
        keepalive: int = 30,
        max_inflight: int = 100,
        backoff_min: float = 0.2,
        backoff_max: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        client_prefix: str = "cairn-sim-",
        tls_context: ssl.SSLContext | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        if protocol not in ("auto", "5", "3.1.1"):
            raise ValueError("protocol must be auto, 5 or 3.1.1")
        self.fleet = fleet
        self.broker = broker
        self.ledger = ledger
        self.keepalive = keepalive
        self.max_inflight = max_inflight
        self.backoff_min = backoff_min
        self.backoff_max = backoff_max
        self.client_prefix = client_prefix
        self.tls_context = tls_context
        self.stats = RunStats(devices=len(fleet.devices))
        self.connect_timeout = connect_timeout
        self.gave_up = False  # no device connected within connect_timeout: run stopped early
        self.stopping = False
        self._stop_requested = False
        self.next_retry = 0.0  # run time of the earliest connection attempt due
        self._clock = clock
        self._start = clock()
        self._seq = 0
        self._sel = selectors.DefaultSelector()
        first = MQTTProtocolVersion.MQTTv311 if protocol == "3.1.1" else MQTTProtocolVersion.MQTTv5
        self.links = {d: _Link(self, d, first) for d in fleet.devices}
        if protocol == "5":
            for link in self.links.values():
                link.v5_refused = False

    def stop(self) -> None:
        """Ask :meth:`run` (in another thread) to finish now, as if its duration was up."""
        self._stop_requested = True

    def now(self) -> float:
        """Run time: seconds since the runner was made."""
        return self._clock() - self._start

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    # -- selector bookkeeping (called from paho's socket callbacks) --------------------------

    def _register(self, sock: Any, link: _Link, events: int) -> None:
        try:
            self._sel.register(sock, events, link)
        except KeyError:
            self._sel.modify(sock, events, link)

    def _unregister(self, sock: Any) -> None:
        with contextlib.suppress(KeyError, ValueError):
            self._sel.unregister(sock)

    def _modify(self, sock: Any, link: _Link, events: int) -> None:
        try:
            self._sel.modify(sock, events, link)
        except (KeyError, ValueError):
            self._register(sock, link, events)

    # -- the loop ----------------------------------------------------------------------------

    def run(self, duration: float, *, on_tick: Callable[[RunStats], None] | None = None,
            drain: float = 5.0) -> RunStats:
        """Publish for ``duration`` seconds of run time, then wait up to ``drain`` seconds for
        the broker to acknowledge what is still in flight, then disconnect."""
        fleet = self.fleet
        next_misc = 0.0
        next_tick = 1.0
        try:
            while True:
                now = self.now()
                if self._stop_requested:
                    break
                if (self.connect_timeout is not None and now >= self.connect_timeout
                        and self.stats.connects == 0):
                    self.gave_up = True
                    break
                if now >= duration:
                    for item in fleet.pop_due(duration):  # the last ones due, on the dot
                        self._dispatch(item, now)
                    break
                if now >= self.next_retry:
                    self.next_retry = math.inf
                    for link in self.links.values():
                        if link.retry_at is not None and link.retry_at <= now:
                            link.try_connect()
                        if link.retry_at is not None:
                            self.next_retry = min(self.next_retry, link.retry_at)
                for item in fleet.pop_due(min(now, duration)):
                    self._dispatch(item, now)
                if now >= next_misc:
                    for link in self.links.values():
                        link.client.loop_misc()
                        link.check_connack(now)
                    next_misc = now + 1.0
                if now >= next_tick:  # once a second: the live view, the ledger on disk
                    if on_tick is not None:
                        self._update_online()
                        on_tick(self.stats)
                    if self.ledger is not None:
                        self.ledger.flush()
                    next_tick = now + 1.0
                wake = min(fleet.next_due(), next_misc, duration, next_tick, self.next_retry,
                           self.connect_timeout if self.connect_timeout is not None
                           and not self.stats.connects else math.inf)
                self._poll(max(0.0, wake - self.now()))
            self._drain(drain)
        finally:
            self._update_online()
            self.stopping = True
            for link in self.links.values():
                if link.connected:
                    link.client.disconnect()
                    self._poll(0.0)
            self._sel.close()
            self.stats.elapsed = self.now()
            if self.ledger is not None:
                self.ledger.flush()
        return self.stats

    def _poll(self, timeout: float) -> None:
        for key, mask in self._sel.select(timeout):
            link = key.data
            client = link.client
            if mask & selectors.EVENT_READ:
                client.loop_read()
            if mask & selectors.EVENT_WRITE and client.socket() is not None:
                client.loop_write()

    def _drain(self, limit: float) -> None:
        end = self.now() + limit
        while self.now() < end and any(x.pending and x.connected for x in self.links.values()):
            self._poll(0.05)

    def _dispatch(self, item: Outgoing | Control, now: float) -> None:
        stats = self.stats
        if isinstance(item, Control):
            link = self.links[item.device]
            stats.faults[item.reason.partition("#")[0]] += 1
            if item.action == "drop":
                link.cut()
            elif item.action == "disconnect":
                link.held_offline = True
                link.retry_at = None
                link.cut()
            else:
                link.held_offline = False
                link.attempts = 0
                link.retry_at = now
                self.next_retry = now
            return
        for tag in item.faults:
            stats.faults[tag] += 1
        stats.add_lag(max(0.0, now - item.scheduled))
        self.links[item.device].publish(item)

    def _update_online(self) -> None:
        self.stats.online = sum(1 for x in self.links.values() if x.connected)

"""The edge agent: MQTT in, signed stream logs, replication out.

The MQTT client (paho-mqtt 2.x, callback API v2, manual acknowledgements) runs its network loop
in paho's thread and hands every message to the asyncio loop, which owns the logs: it decodes,
validates and buffers, commits on the group-commit schedule, and only then acknowledges the
messages (in the order they arrived). A message the agent did not acknowledge before it stopped
is delivered again by the broker (persistent session, fixed client id); the stream store knows a
redelivered sample from a new one. The replication server serves every stream log to the
gateways in the config (by Noise static key), and logs made later as new streams appear.

Stopping (:meth:`Agent.stop`, what SIGTERM calls) commits and acknowledges what is buffered and
returns, however much the broker still has queued for us: the consumer lets the event loop run
every few hundred messages, so a flood cannot hold a signal back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from cairn.brokers import parse_broker
from cairn.crypto import discovery_key
from cairn.dht.api import DHT, DHTError
from cairn.dht.records import MutableRecord, sign_mutable
from cairn.fleet.identity import load_seed, noise_key_pair, record_key_pair
from cairn.fleet.inband import encode_in_band
from cairn.fleet.record import DeviceRecord, LatestReading, encode_record, fleet_topic
from cairn.fleet.watermark import WatermarkError, decode_watermarks
from cairn.log import Log
from cairn.logs import add_secret, quiet_tracebacks
from cairn.replication.net import serve
from cairn.storage import limit_segment_cache
from cairn_edge.adapters import DEFAULT_ROUTES, Route
from cairn_edge.boards import EdgeLogin
from cairn_edge.config import EdgeConfig
from cairn_edge.damage import DamageBook
from cairn_edge.dialer import Dialer, find_on_dht, open_by_key
from cairn_edge.health import EdgeHealth, serve_health
from cairn_edge.pipeline import Pipeline, Validator
from cairn_edge.streams import StreamStore

__all__ = ["FLOOR_MARGIN", "Agent", "MqttIngest"]

log = logging.getLogger(__name__)

FLOOR_MARGIN = 86_400.0  # the persisted time floor trails the last start by a day
SESSION_EXPIRY = 7 * 86_400  # the broker keeps our session (and queues QoS 1) for a week
CONNACK_TIMEOUT = 5.0  # seconds to wait for the broker's answer to a version 5 CONNECT
ANNOUNCE_EVERY = 300.0  # seconds between announces on the fleet topic (records live ~20 min)
QUOTA_EVERY = 10  # commits between disk quota checks
EDGE_SEGMENT_CACHE = 2 << 20  # bytes of decoded log segments kept (see cairn.storage)
YIELD_EVERY = 256  # messages handled before the consumer lets the event loop run



_UNSUPPORTED_VERSION = {132, 1}


@dataclass(frozen=True, slots=True)
class Delivery:
    topic: str
    payload: bytes
    content_type: str | None
    token: tuple[int, int, int]  # (connection generation, mid, qos)


async def start_embedded_broker(host: str, port: int, *, boards: Mapping[str, str] | None = None,
                                routes: Sequence[Route] = DEFAULT_ROUTES,
                                edge: EdgeLogin | None = None) -> Any:
    """An MQTT 3.1.1 broker (amqtt, pure Python) in this process, for the demo and for boards
    without Mosquitto. It keeps no messages across restarts: Mosquitto is the production
    broker. With ``boards`` (name -> mosquitto_passwd hash) every client logs in and each board
    may use its own topics only (:mod:`cairn_edge.embedded`); without, it listens on loopback
    only (ConfigError otherwise). amqtt's own records (a client slow to acknowledge, one that
    went away: "Timeout waiting for PUBACK") are logged at most at info level and without
    their tracebacks (:func:`cairn.logs.quiet_tracebacks`): what the agent says stays readable,
    and nothing of amqtt's internals reaches a live view."""
    for name in ("amqtt", "transitions"):  # (transitions: the state machines amqtt uses)
        quiet_tracebacks(name)
    try:
        from cairn_edge import embedded
    except ImportError:
        raise RuntimeError("broker = \"embedded\" needs amqtt: "
                           "pip install 'cairn[embedded-broker]'") from None
    return await embedded.start(host, port, boards=boards, routes=routes, edge=edge)


class MqttIngest:
    """The agent's MQTT connection: subscribes to the routes, hands messages over, acks later."""

    def __init__(self, config: EdgeConfig, deliver: Callable[[Delivery], object]) -> None:
        self.config = config
        self.broker = parse_broker(config.broker if config.broker != "embedded" else
                                   f"mqtt://{config.listen[0]}:{config.listen[1]}")
        self.deliver = deliver
        # on our own embedded broker we log in with a login made now (boards cannot know it)
        self.login = EdgeLogin.new(config.client_id) if config.broker == "embedded" else None
        if self.login is not None:
            add_secret(self.login.secret)  # never in a log line (cairn.logs)
        self.generation = 0
        self.connected = threading.Event()
        self.subscribed = threading.Event()  # every route's subscription acknowledged
        self._pending_subs: set[int] = set()
        # With the embedded broker (in this process, in memory), acknowledging after the commit
        # protects nothing: the sensor got its PUBACK from the broker already, and a crash
        # takes the broker's queue with it. amqtt also sends one QoS 1 message at a time, so
        # late acks would pace ingest to one message per commit. Acks are immediate there.
        self.manual_ack = config.broker != "embedded"
        # the embedded broker (amqtt) speaks 3.1.1 only
        self.protocol = (MQTTProtocolVersion.MQTTv311
                         if config.protocol == "3.1.1" or config.broker == "embedded"
                         else MQTTProtocolVersion.MQTTv5)
        self.v5_refused = False
        self.client = self._make_client()

    def _make_client(self) -> mqtt.Client:
        login = self.login
        c = mqtt.Client(CallbackAPIVersion.VERSION2,
                        client_id=login.client_id if login else self.config.client_id,
                        protocol=self.protocol, manual_ack=self.manual_ack,
                        clean_session=None if self.protocol == MQTTProtocolVersion.MQTTv5
                        else False)
        c.reconnect_delay_set(1, 30)
        user = self.config.username or self.broker.username
        if login is not None:
            c.username_pw_set(login.user, login.secret)
        elif user is not None:
            c.username_pw_set(user, self.config.password or self.broker.password)
        if self.broker.tls:
            ctx = ssl.create_default_context(cafile=str(self.config.tls_ca)
                                             if self.config.tls_ca else None)
            c.tls_set_context(ctx)
        c.on_connect = self._on_connect
        c.on_subscribe = self._on_subscribe
        c.on_message = self._on_message
        c.on_disconnect = self._on_disconnect
        return c

    def start(self) -> None:
        props = None
        clean: Any = mqtt.MQTT_CLEAN_START_FIRST_ONLY
        if self.protocol == MQTTProtocolVersion.MQTTv5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            props.SessionExpiryInterval = SESSION_EXPIRY
            clean = False
        self.client.connect_async(self.broker.host, self.broker.port, keepalive=30,
                                  clean_start=clean, properties=props)
        self.client.loop_start()
        if self.protocol == MQTTProtocolVersion.MQTTv5 and self.config.protocol == "auto":
            # some 3.1.1 brokers never answer a version 5 CONNECT (amqtt waits for bytes that
            # do not come) instead of refusing it: no answer in time, try 3.1.1
            watchdog = threading.Timer(CONNACK_TIMEOUT, self._no_connack, args=(self.client,))
            watchdog.daemon = True
            watchdog.start()

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def _on_connect(self, client: mqtt.Client, u: Any, flags: Any, reason: Any,
                    properties: Any) -> None:
        if reason.is_failure:
            if self.protocol == MQTTProtocolVersion.MQTTv5 and reason.value in \
                    _UNSUPPORTED_VERSION and self.config.protocol == "auto":
                self.v5_refused = True
                threading.Thread(target=self._fall_back, daemon=True).start()
            log.warning("broker %s refused us: %s", self.broker.url(), reason)
            return
        self.generation += 1
        self._pending_subs = set()
        for route in self.config.routes:
            _, mid = client.subscribe(route.filter, qos=1)
            if mid is not None:
                self._pending_subs.add(mid)
        self.connected.set()
        log.info("connected to %s (MQTT %s)", self.broker.url(),
                 "5" if self.protocol == MQTTProtocolVersion.MQTTv5 else "3.1.1")

    def _on_subscribe(self, client: mqtt.Client, u: Any, mid: int, reasons: Any,
                      properties: Any) -> None:
        self._pending_subs.discard(mid)
        if not self._pending_subs:
            self.subscribed.set()

    def _no_connack(self, client: mqtt.Client) -> None:
        if client is self.client and not self.connected.is_set() and not self.v5_refused:
            self.v5_refused = True
            self._fall_back()

    def _fall_back(self) -> None:
        log.info("the broker refused MQTT 5: using 3.1.1")
        self.client.loop_stop()
        self.protocol = MQTTProtocolVersion.MQTTv311
        self.client = self._make_client()
        self.start()

    def _on_disconnect(self, client: mqtt.Client, u: Any, flags: Any, reason: Any,
                       properties: Any) -> None:
        self.connected.clear()
        log.info("disconnected from %s: %s", self.broker.url(), reason)

    def _on_message(self, client: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        ctype = getattr(msg.properties, "ContentType", None) if msg.properties else None
        self.deliver(Delivery(msg.topic, bytes(msg.payload), ctype,
                              (self.generation, msg.mid, msg.qos)))

    def ack(self, tokens: list[Hashable]) -> None:
        """Acknowledge messages of the current connection (older ones come again anyway)."""
        if not self.manual_ack:
            return
        for token in tokens:
            assert isinstance(token, tuple)
            gen, mid, qos = (int(x) for x in token)
            if gen == self.generation and qos > 0:
                self.client.ack(mid, qos)


class Agent:
    def __init__(self, config: EdgeConfig, *, clock: Callable[[], float] = time.time,
                 on_status: Callable[[Agent], None] | None = None) -> None:
        self.config = config
        # told after each commit, record publish and watermark clearing (status lines)
        self.on_status = on_status
        self.clock = clock
        # an edge writes at the end of its logs and serves mostly recent blocks: a small cache
        limit_segment_cache(EDGE_SEGMENT_CACHE, 1024)
        self.seed = load_seed(config.seed_file)
        self.store = StreamStore(config.data_dir, self.seed, sync=config.sync,
                                 checkpoint_interval=config.checkpoint_interval,
                                 checkpoint_bytes=config.checkpoint_kib * 1024)
        self.floor = self._floor()
        self.validator = Validator(floor=self.floor, max_future=config.max_future,
                                   units=config.units_extra, ranges=config.ranges)
        self.pipeline = Pipeline(self.store, self.validator, config.routes,
                                 commit_interval=config.commit_interval,
                                 commit_samples=config.commit_samples, clock=clock)
        self.served: list[Log] = list(self.store.logs.values())
        self.damage = DamageBook(config.data_dir)  # blocks found damaged while serving
        self.damage.watch(self.store.logs)
        self.noise = noise_key_pair(self.seed)
        self.record_keys = record_key_pair(self.seed)
        self.replication_address: tuple[str, int] | None = None
        self.dialer: Dialer | None = None  # the connections this edge dials to its gateways
        self._in_band: tuple[Hashable, bytes] | None = None  # (what it says, the message)
        self.mqtt: MqttIngest | None = None
        self.dht: DHT | None = None
        self.published: DeviceRecord | None = None
        self.publishes = 0
        self.announces = 0  # announces on the fleet topic that some node stored
        self.cleared = 0  # blocks whose data the disk quota cleared
        self.log_bytes = 0  # what the logs used when last measured (every QUOTA_EVERY commits)
        self._commits = 0
        self._dirty = asyncio.Event()
        self._stopping = False
        self._queue: asyncio.Queue[Delivery | None] | None = None
        self.health = EdgeHealth(self.status, "the broker", config.max_commit_age,
                                 config.max_disk)
        self.health_address: tuple[str, int] | None = None

    def _floor(self) -> float:
        """No sample before the config's floor, nor from long before our last start."""
        stored = self.store.get_state("clock_floor")
        floor = max(self.config.time_floor, float(stored) if isinstance(stored, int | float)
                    else 0.0)
        now = self.clock()
        if now - FLOOR_MARGIN > floor:
            self.store.set_state("clock_floor", now - FLOOR_MARGIN)
        return floor

    async def run(self, *, ready: Callable[[Agent], None] | None = None) -> None:
        """Ingest, commit and serve until cancelled."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Delivery | None] = asyncio.Queue()
        self._queue = queue
        if self._stopping:
            queue.put_nowait(None)
        self.mqtt = ingest = MqttIngest(self.config,
                                        lambda d: loop.call_soon_threadsafe(queue.put_nowait, d))
        address: asyncio.Future[tuple[str, int]] = loop.create_future()
        embedded = None
        metrics_server = None
        health: asyncio.Task[None] | None = None
        try:
            # the long-lived tasks (the replication server, the record publisher and the
            # watermark reader) in one group: one failing stops the agent with its error
            async with asyncio.TaskGroup() as tg:
                server = tg.create_task(serve(
                    self.served, self.noise, self.config.listen_host, self.config.listen_port,
                    allow=list(self.config.gateways), ready=address.set_result),
                    name="edge replication server")
                try:
                    if self.config.health is not None:
                        self.health.broker = ingest.broker.url()
                        listening: asyncio.Future[tuple[str, int]] = loop.create_future()
                        health = tg.create_task(serve_health(
                            *self.config.health, self.health, ready=listening.set_result),
                            name="edge health endpoints")
                        # (a port in use: the group cancels this wait and raises it)
                        self.health_address = await listening
                    if self.config.metrics is not None:
                        from prometheus_client import start_http_server

                        from cairn_edge.metrics import registry_for

                        metrics_server, _ = start_http_server(
                            self.config.metrics[1], self.config.metrics[0],
                            registry=registry_for(self.status))
                    if self.config.broker == "embedded":
                        embedded = await start_embedded_broker(
                            *self.config.listen, routes=self.config.routes,
                            boards=None if self.config.boards is None
                            else dict(self.config.boards),
                            edge=ingest.login)
                    async with asyncio.timeout(10):  # never wait_for: it may drop a cancel
                        self.replication_address = await asyncio.shield(address)
                    ingest.start()
                    # ready once subscribed (messages sent before that would not be kept for
                    # us the first time), or after 10 s without a broker: replication is
                    # served meanwhile
                    if not await asyncio.to_thread(ingest.subscribed.wait, 10.0):
                        log.warning("no broker at %s yet: ingest starts when it answers",
                                    ingest.broker.url())
                    if ready is not None:
                        ready(self)
                    async with contextlib.AsyncExitStack() as stack:
                        if self.config.dht_bootstrap:
                            self.dht = await stack.enter_async_context(DHT.start(
                                "0.0.0.0", 0, self.config.dht_bootstrap,  # noqa: S104
                                persistent=self.config.dht_persistent or None))
                            loops = [tg.create_task(self._publish_loop(),
                                                    name="edge record publisher")]
                            if self.config.watermarks:
                                loops.append(tg.create_task(self._watermark_loop(),
                                                            name="edge watermark reader"))
                            stack.push_async_callback(_stop_tasks, loops)  # before the DHT
                        if self.config.gateways and (self.config.dial or self.dht is not None):
                            self.dialer = self._dialer()
                            stack.push_async_callback(_stop_tasks, [tg.create_task(
                                self.dialer.run(), name="edge dialer")])
                        elif self.config.gateways:
                            log.warning("[replication] gateways are set but neither "
                                        "[replication] dial nor [dht] bootstrap: this edge "
                                        "does not dial its gateways (they must reach it)")
                        await self._consume(queue, ingest)
                finally:
                    server.cancel()
                    if health is not None:
                        health.cancel()
        except ExceptionGroup as group:
            if len(group.exceptions) == 1:  # the failing task's own error, as callers expect
                raise group.exceptions[0] from None
            raise
        finally:
            try:
                if not ingest.manual_ack:  # acknowledged already: commit what waits for its time
                    self.pipeline.release()
                if self.store.broken is None:  # (a store that stopped takes no commit)
                    self._commit(ingest)
            finally:
                ingest.stop()
                if embedded is not None:
                    await embedded.shutdown()
                if metrics_server is not None:
                    metrics_server.shutdown()
                self.store.close()

    def _commit(self, ingest: MqttIngest) -> None:
        tokens = self.pipeline.commit()
        served = {id(lg) for lg in self.served}
        for lg in self.store.logs.values():
            if id(lg) not in served:
                self.served.append(lg)  # a new stream (or one opened again): serve it too
        self.damage.watch(self.store.logs)
        ingest.ack(tokens)
        self._commits += 1
        self.health.committed()
        if self.config.max_disk and self._commits % QUOTA_EVERY == 0:
            for name, start, end in self.store.enforce_quota(self.config.max_disk):
                self.cleared += end - start
                log.warning("disk quota of %d MB reached: cleared blocks %d..%d of %s "
                            "(the oldest data goes first)", self.config.max_disk // 1_000_000,
                            start, end - 1, name)
        if self._commits % QUOTA_EVERY == 1:  # (the first commit too) for the metrics
            self.log_bytes = self.store.disk_bytes()
        if self.pipeline.latest:
            self._dirty.set()
        self._said()

    @property
    def stopping(self) -> bool:
        return self._stopping

    def stop(self) -> None:
        """Stop soon, whatever the broker still holds for us: the loop commits and acknowledges
        what it has buffered and returns; what is still queued unread was not acknowledged, so
        the broker delivers it again after a restart. Safe from a signal handler on the loop.

        (Cancelling :meth:`run` works too, but on Python 3.11 ``asyncio.wait_for`` returns a
        result that arrived with the cancellation and drops the cancellation: under a flood a
        SIGTERM handled by ``task.cancel`` was lost that way.)"""
        self._stopping = True
        if self._queue is not None:
            self._queue.put_nowait(None)  # wakes a consumer waiting on an empty queue

    async def _consume(self, queue: asyncio.Queue[Delivery | None], ingest: MqttIngest) -> None:
        pipeline = self.pipeline
        while not self._stopping:
            wait = pipeline.due() - self.clock()
            d: Delivery | None = None
            if wait > 0:
                try:
                    # asyncio.timeout, not wait_for: it never drops a cancellation
                    async with asyncio.timeout(None if wait == float("inf") else wait):
                        d = await queue.get()
                except TimeoutError:
                    d = None
            n = 0
            while d is not None and not self._stopping:
                pipeline.submit(d.topic, d.payload, d.content_type, d.token)
                if pipeline.due() <= self.clock():
                    break
                n += 1
                if n % YIELD_EVERY == 0:
                    # a queue that never empties (a flood) must not hold the loop: signals,
                    # the replication server and the metrics run between these
                    await asyncio.sleep(0)
                try:
                    d = queue.get_nowait()
                except asyncio.QueueEmpty:
                    d = None
            ingest.ack(pipeline.ready())
            if pipeline.due() <= self.clock():
                self._commit(ingest)
            await asyncio.sleep(0)

    def _dialer(self) -> Dialer:
        dht = self.dht

        async def find(key: bytes) -> list[tuple[str, int]]:
            return [] if dht is None else await find_on_dht(dht, key)

        return Dialer(self.noise, self.config.gateways, self.served, dial=self.config.dial,
                      find=find, on_change=self._said, credential=self.in_band,
                      by_key=None if dht is None else open_by_key(dht.node),
                      transport=self.config.transport)

    def in_band(self) -> bytes:
        """The signed device record to send in-band on a dialled connection
        (:mod:`cairn.fleet.inband`): re-signed, with the next seq of the DHT's, only when
        what a gateway admits and follows by changed (streams, address, Noise key), so a
        gateway admits an edge whose firewall keeps it off the DHT."""
        rec = self.record()
        what = (tuple(rec.streams), rec.address, rec.noise_key)
        if self._in_band is not None and self._in_band[0] == what:
            return self._in_band[1]
        gateways = None if self.config.public else list(self.config.gateways)
        value = encode_record(rec, gateways)
        stored = self.store.get_state("dht_seq")
        seq = (int(stored) if isinstance(stored, int) else 0) + 1
        self.store.set_state("dht_seq", seq)  # one counter with the DHT puts: seqs only grow
        assert self.record_keys.secret_key is not None
        signed = MutableRecord(seq, value, sign_mutable(seq, value, self.record_keys.secret_key))
        message = encode_in_band(self.record_keys.public_key, signed)
        self._in_band = (what, message)
        return message

    def _said(self) -> None:
        if self.on_status is not None:
            self.on_status(self)

    def record(self) -> DeviceRecord:
        """The DHT record as it is now: every stream, the latest readings newest first."""
        cfg = self.config
        address = cfg.advertise
        if address is None and self.replication_address is not None and \
                self.replication_address[0] not in ("0.0.0.0", "::"):  # noqa: S104
            address = self.replication_address
        changed = self.pipeline.changed
        names = sorted(self.store.logs, key=lambda n: -changed.get(n, 0.0))
        latest = self.pipeline.latest
        readings = [LatestReading(n, s.time, s.value) for n in names
                    if (s := latest.get(n)) is not None and not isinstance(s.value, bytes)]
        return DeviceRecord(
            time=int(self.clock()), address=address,
            streams=[(n, self.store.logs[n].key) for n in names], readings=readings,
            noise_key=self.noise.public_key)

    async def _publish_loop(self) -> None:
        """Publish the record at start and when readings changed, at most every
        ``publish_interval``; the seq is stored before each put, so it only grows, across
        restarts too."""
        assert self.dht is not None
        gateways = None if self.config.public else list(self.config.gateways)
        topic = fleet_topic(self.config.fleet)
        next_announce = 0.0
        self._dirty.set()  # at start, not only after the next reading: findable at once
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            rec = self.record()
            value = encode_record(rec, gateways)
            stored = self.store.get_state("dht_seq")
            seq = (int(stored) if isinstance(stored, int) else 0) + 1
            self.store.set_state("dht_seq", seq)
            try:
                await self.dht.mutable_put(self.record_keys, value, seq)
                self.published = rec
                self.publishes += 1
                self._said()
                if time.monotonic() >= next_announce:
                    await self.dht.announce(topic, self.record_keys)
                    next_announce = time.monotonic() + ANNOUNCE_EVERY
                    self.announces += 1
                    self._said()
            except DHTError as exc:
                log.warning("could not publish the DHT record (seq %d): %s", seq, exc)
            await asyncio.sleep(self.config.publish_interval)  # at most this often

    async def _watermark_loop(self) -> None:
        """Clear block data every required gateway has stored (its watermark record says how
        far), keeping each log's tree so it still verifies."""
        assert self.dht is not None
        while True:
            await asyncio.sleep(self.config.watermark_interval)
            lowest: dict[bytes, int] | None = None
            for key in self.config.watermarks:
                try:
                    # the newest of the storing nodes' copies (an old one is validly signed
                    # too; it would only clear less, but it would lag)
                    got = await self.dht.mutable_get(key, latest=True)
                    marks = decode_watermarks(got.value)[1] if got is not None else {}
                except (DHTError, WatermarkError) as exc:
                    log.warning("watermark record %s: %s", key.hex()[:16], exc)
                    marks = {}
                lowest = marks if lowest is None else {
                    k: min(v, marks[k]) for k, v in lowest.items() if k in marks}
            for name, lg in list(self.store.logs.items()):
                upto = (lowest or {}).get(discovery_key(lg.key)[:8], 0)
                upto = min(upto, lg.length - 1)  # keep the newest block
                ranges = lg.held_ranges()
                if ranges and ranges[0][0] < upto:
                    start = ranges[0][0]
                    n = lg.clear(start, upto)
                    self.cleared += n
                    log.info("cleared blocks %d..%d of %s: the gateways hold them",
                             start, upto - 1, name)
                    self._said()

    def disk_bytes(self) -> int:
        total = 0
        for root in (self.config.data_dir,):
            with contextlib.suppress(OSError), os.scandir(root) as entries:
                for e in entries:
                    if e.is_file(follow_symlinks=False):
                        total += e.stat().st_size
        return total

    def status(self) -> dict[str, Any]:
        st = self.pipeline.stats
        return {
            "messages": st.messages,
            "samples": st.accepted,
            "rejected": dict(st.rejected),
            "refused_samples": dict(st.refused_samples),
            "disk_bytes": self.disk_bytes(),
            "late": st.late,
            "duplicates": st.duplicates,
            "ignored": st.ignored,
            "commits": st.commits,
            "streams": {name: lg.length for name, lg in self.store.logs.items()},
            "broker_connected": bool(self.mqtt and self.mqtt.connected.is_set()),
            "replication": self.replication_address,
            "noise_key": self.noise.public_key.hex(),
            "record_key": self.record_keys.public_key.hex(),
            "dht_publishes": self.publishes,
            "dht_announces": self.announces,
            "cleared_blocks": self.cleared,
            "disk_quota_bytes": self.config.max_disk,
            "log_bytes": self.log_bytes,
            "last_sample": {name: self.store.last_time(name) for name in self.store.logs},
            "damaged_blocks": self.damage.current(),
            "gateways": [] if self.dialer is None
            else [link.as_dict() for link in self.dialer.links.values()],
        }


async def _stop_tasks(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel ``tasks`` and wait until they ended (their task group reports their errors)."""
    for task in tasks:
        task.cancel()
    await asyncio.wait(tasks)

"""The gateway daemon (``cairn gateway run``): :func:`run_gateway` serves the API and collects
a round every ``[collect].interval`` seconds until cancelled.

Its long-lived tasks run in one :class:`asyncio.TaskGroup`: the API server
(:func:`~cairn_gateway.serve.serve_api`) and the collection loop (with the DHT client it
uses). One task failing cancels the other and fails the daemon with that task's error;
cancelling the daemon stops both (the server gracefully), then closes the collector and the
store. The CLI parses arguments and calls :func:`run_gateway`; this module never prints.

A round finds the devices (the fleet's topic and ``[collect].devices``), collects them
(:meth:`Collector.collect_round`: one device's trouble is that device's status), publishes the
watermark record and applies retention. Nothing a round raises stops the loop: the failed
round is logged in one line (its traceback at debug level) and the next one runs on time.
Rounds start every ``interval`` seconds (a round that takes longer is followed at once by the
next), so a slow device costs the others at most its time budget, not a whole extra interval.

With ``[replication].listen`` (issue 19) a third task takes edges that dial in
(:class:`~cairn_gateway.listener.EdgeListener`): an admitted edge is followed live and left
out of the rounds while it is connected; and with a DHT the gateway publishes where it listens
in its signed address record (:mod:`cairn.fleet.gateway_record`) every ``ADDRESS_EVERY``
seconds, so an edge that knows only the gateway's key finds it.

With a DHT and ``[replication].by_key`` (the default) the gateway is also a hyperdht server on
its Noise key (:func:`cairn.hyperdht.serve_by_key`, decision 0013): a JS ``dht.connect(key)``
or a Cairn edge finds it and completes the Noise IK if its key is an enrolled device's
(:meth:`EdgeListener.by_key_firewall`); its UDX data stream is then admitted and followed as a
TCP dial-in (:meth:`EdgeListener.take_by_key`).

Health (:mod:`cairn_gateway.health`): each round ends in one info line, live pushes in a
summary line at most every minute; ``/readyz`` tells whether anything was stored lately. Under
systemd (:mod:`cairn.sdnotify`) the daemon says ``READY=1`` once the API listens and the DHT
client is up, pets the watchdog from its event loop, and says ``STOPPING=1`` as it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import socket
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from random import Random

from cairn.crypto import KeyPair
from cairn.dht.api import DHT
from cairn.errors import StorageError
from cairn.fleet.gateway_record import encode_gateway_record
from cairn.fleet.identity import load_seed, noise_key_pair, watermark_key_pair
from cairn.hyperdht import serve_by_key
from cairn.sdnotify import Notifier, pet_watchdog
from cairn_gateway.auth import ApiAuth, TokenError
from cairn_gateway.collect import Collector, SyncResult, one_line
from cairn_gateway.config import ConfigError, GatewayConfig
from cairn_gateway.health import GatewayHealth, RoundSummary
from cairn_gateway.leases import Leases
from cairn_gateway.listener import EdgeListener, ListenerLimits
from cairn_gateway.metrics import GatewayMetrics
from cairn_gateway.retention import apply_retention, disk_usage
from cairn_gateway.roster import Roster, discover
from cairn_gateway.schedule import Backoff, Limits, Schedule
from cairn_gateway.serve import ApiLimits, check_listen
from cairn_gateway.store import Store

__all__ = ["RoundSeen", "advertised", "api_auth", "by_key", "collect_rounds", "collection_round",
           "heartbeat", "leases_of", "limits_of", "open_store", "publish_address", "run_gateway",
           "schedule_of"]

log = logging.getLogger(__name__)

ADDRESS_EVERY = 300.0  # seconds between puts of the gateway's address record
ADDRESS_RETRY = 5.0  # seconds between tries while the host to publish is not known
RETENTION_EVERY = 300.0  # seconds between retention passes (each reads every stream's replica)


def limits_of(cfg: GatewayConfig) -> Limits:
    """The per-device, per-round limits of ``[collect]``."""
    return Limits(cfg.device_budget, cfg.max_samples_per_round, cfg.past_window,
                  cfg.future_window)


def schedule_of(cfg: GatewayConfig, public_key: bytes) -> Schedule:
    """The collector's schedule; its jitter seeded by the gateway's key (the same retries on
    every run of one gateway, different ones on two gateways)."""
    return Schedule(cfg.concurrency, Backoff(cfg.backoff_initial, cfg.backoff_max),
                    Random(public_key))  # noqa: S311 - jitter, not a secret


def open_store(cfg: GatewayConfig) -> Store:
    """The store: the PostgreSQL database of ``[store].url``, else the SQLite file in
    ``data_dir`` (made if missing); :class:`StoreError` if it cannot be opened."""
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    return Store(store_target(cfg))


def store_target(cfg: GatewayConfig) -> str | Path:
    """What :class:`Store` opens for this config: ``[store].url`` with the password of
    ``[store].password_file`` put in (:class:`ConfigError` when that file is missing or
    readable by others), else ``data_dir/gw.db``."""
    if not cfg.store_url:
        return cfg.data_dir / "gw.db"
    if cfg.store_password_file is None:
        return cfg.store_url
    from urllib.parse import quote, urlsplit, urlunsplit

    from cairn.fleet.identity import read_secret

    password = read_secret(cfg.store_password_file, ConfigError, "database password",
                           "write the PostgreSQL user's password in it (chmod 600)")
    parts = urlsplit(cfg.store_url)
    host = parts.netloc.rpartition("@")[2]
    user = quote(parts.username or "", safe="")
    netloc = f"{user}:{quote(password, safe='')}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def leases_of(cfg: GatewayConfig, store: Store, public_key: bytes) -> Leases | None:
    """The gateway's leases when its store is shared (PostgreSQL); None on SQLite, where it
    holds every device."""
    if store.engine != "postgresql":
        return None
    return Leases(store.conn, public_key.hex(), cfg.lease_seconds, name=socket.gethostname(),
                  advertises=f"api {cfg.api[0]}:{cfg.api[1]}")


def beat_once(leases: Leases, metrics: GatewayMetrics | None = None) -> float:
    """One lease heartbeat, logged; seconds to the next. A store error is logged and counted
    (the leases held stay trusted until their renewal is too old), never raised."""
    try:
        got = leases.beat()
    except Exception as exc:  # the database unreachable must not stop the gateway
        if metrics is not None:
            metrics.error("lease")
        log.warning("lease heartbeat failed: %s (tried again; %d device(s) held until their "
                    "lease can no longer be proven)", one_line(exc), len(leases.proven()))
        return max(0.5, leases.seconds / 6)
    if got.gained:
        log.info("leases: took %d device(s)%s; holding %d (fair share %d of %d gateways)",
                 len(got.gained), f", {got.taken_over} from a gateway that stopped renewing"
                 if got.taken_over else "", len(got.held), got.share, got.live)
    if got.lost:
        log.info("leases: gave %d device(s) to other gateways; holding %d (fair share %d of "
                 "%d gateways)", len(got.lost), len(got.held), got.share, got.live)
    if metrics is not None:
        metrics.leases(len(got.held), got.taken_over)
    return got.next_in


async def heartbeat(leases: Leases, metrics: GatewayMetrics | None = None,
                    collector: Collector | None = None, first_in: float = 0.0) -> None:
    """Lease heartbeats until cancelled: every third of a lease period, or just after another
    gateway's lease expires (its devices are taken over then)."""
    wait = first_in
    while True:
        await asyncio.sleep(wait)
        before = leases.held
        wait = await asyncio.to_thread(beat_once, leases, metrics)
        if collector is not None and leases.held - before:
            collector.early.set()  # collect the devices taken now, not at the next interval


def api_auth(cfg: GatewayConfig) -> ApiAuth:
    """The API's tokens from their files; refuses (ConfigError) an API open to the network
    without a read token."""
    try:
        auth = ApiAuth.from_files(cfg.api_read_token_file, cfg.api_admin_token_file)
    except TokenError as exc:
        raise ConfigError(str(exc)) from None
    check_listen(cfg.api[0], cfg.api[1], auth.read is not None)
    if auth.read is None:
        log.warning("the API on %s:%d has no read token: anything on this host may read it "
                    "([api].read_token_file)", *cfg.api)
    return auth


def _warn_unenrolled(cfg: GatewayConfig, roster: Roster) -> None:
    missing = set(cfg.devices) - roster.enrolled_keys()
    if missing:
        log.warning("[collect].devices lists %d device(s) that are not enrolled: they are not "
                    "collected (`cairn gateway devices add`)", len(missing))


async def run_gateway(cfg: GatewayConfig, *,
                      ready: Callable[[tuple[str, int]], object] | None = None,
                      rounds: int | None = None) -> None:
    """Serve the API and collect every ``interval`` seconds until cancelled (or ``rounds``
    rounds, then the API stops too). ``ready(address)`` once the API listens and the DHT
    client is up. Raises what stopped it: the failing task's own error, not a group."""
    from cairn_gateway.api import make_app
    from cairn_gateway.serve import serve_api

    seed = load_seed(cfg.key_file)
    auth = api_auth(cfg)
    key = noise_key_pair(seed)
    store = open_store(cfg)
    _warn_unenrolled(cfg, Roster(store.conn))
    collector = Collector(cfg.data_dir, key, store, schedule=schedule_of(cfg, key.public_key),
                          limits=limits_of(cfg))
    if cfg.ingest_worker:
        collector.start_worker()

    def demand(stream_id: int) -> bool:
        entry = collector.known.get(stream_id)
        return entry is not None and cfg.policy(entry[1]).mode == "on_demand"

    health = GatewayHealth(cfg.data_dir, store.path, cfg.interval, cfg.ready_rounds,
                           server=None if store.path is not None else store.writable)
    notifier = Notifier()
    listener = EdgeListener(
        collector, key, lambda: Roster(store.conn).enrolled_keys(), policy=cfg.policy,
        limits=ListenerLimits(cfg.replication_max_connections, cfg.replication_per_source,
                              cfg.replication_handshake_timeout))
    metrics = GatewayMetrics(store, edges=lambda: collector.schedule.status(collector.clock()),
                             connections=lambda: _by_transport(listener),
                             disk=lambda: disk_usage(collector, store),
                             interval=cfg.interval, budget=cfg.max_bytes)

    def live_stored(samples: int) -> None:  # each live push: readiness and the counters
        health.live_stored(samples)
        metrics.live_stored(samples)

    collector.on_live = live_stored
    leases = leases_of(cfg, store, key.public_key)
    first_beat = 0.0
    if leases is not None:  # the first, before the first round: which devices are ours
        collector.holds = leases.holds
        first_beat = beat_once(leases, metrics)
    app = make_app(store, on_demand=collector.on_demand, demand=demand,
                   edges=lambda: collector.schedule.status(collector.clock()), auth=auth,
                   max_body_bytes=cfg.api_max_body_bytes, body_timeout=cfg.api_request_timeout,
                   health=health, metrics=metrics)
    limits = ApiLimits(cfg.api_max_connections, cfg.api_request_timeout,
                       cfg.api_max_header_bytes)
    edges_at: asyncio.Future[tuple[str, int]] = asyncio.get_running_loop().create_future()

    async def collecting(address: tuple[str, int], tg: asyncio.TaskGroup) -> None:
        dht = None
        async with contextlib.AsyncExitStack() as stack:
            if cfg.dht_bootstrap:
                dht = await stack.enter_async_context(
                    DHT.start("0.0.0.0", 0, cfg.dht_bootstrap, persistent=False))  # noqa: S104
            if dht is not None and cfg.replication_by_key:
                await by_key(cfg, dht, listener, key, stack)
            notifier.ready(f"serving the API on {address[0]}:{address[1]}")
            if ready is not None:
                ready(address)
            publisher = None
            if dht is not None and cfg.replication_listen is not None:
                publisher = tg.create_task(publish_address(cfg, dht, key, await edges_at),
                                           name="gateway address record")
            try:
                await collect_rounds(cfg, collector, store, dht, watermark_key_pair(seed),
                                     rounds=rounds, health=health, metrics=metrics)
            finally:
                if publisher is not None:  # (before the DHT closes)
                    publisher.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await publisher

    try:
        async with asyncio.TaskGroup() as tg:
            listening: asyncio.Future[tuple[str, int]] = \
                asyncio.get_running_loop().create_future()
            api = tg.create_task(serve_api(app, *cfg.api, limits, ready=listening.set_result),
                                 name="gateway API")
            # the API listens before the DHT starts (a port in use is told at once); if the
            # server fails first, the group cancels this wait and raises the server's error
            address = await listening
            if cfg.replication_listen is not None:
                edges = tg.create_task(listener.run(*cfg.replication_listen,
                                                    ready=edges_at.set_result),
                                       name="gateway edge listener")
                await edges_at  # (a port in use: the group cancels this and raises it)
            rounds_task = tg.create_task(collecting(address, tg), name="gateway collection")
            watchdog = tg.create_task(pet_watchdog(notifier), name="systemd watchdog")
            beats = None
            if leases is not None:
                beats = tg.create_task(heartbeat(leases, metrics, collector, first_beat),
                                       name="lease heartbeat")
            try:
                await asyncio.wait({rounds_task})  # returns when ``rounds`` are done
            except asyncio.CancelledError:  # (SIGTERM) said as the stop begins
                notifier.stopping("stopping: the API and the collection")
                raise
            api.cancel()
            watchdog.cancel()
            if beats is not None:
                beats.cancel()
            if cfg.replication_listen is not None:
                edges.cancel()
    except ExceptionGroup as group:
        if len(group.exceptions) == 1:  # what the CLI and callers have always seen
            raise group.exceptions[0] from None
        raise
    finally:
        notifier.stopping()
        collector.close()
        if leases is not None:  # a clean stop: the others take its devices at once
            try:
                leases.release_all()
            except Exception as exc:
                log.warning("could not give the leases back (they expire within %g s): %s",
                            cfg.lease_seconds, one_line(exc))
        store.close()


async def by_key(cfg: GatewayConfig, dht: DHT, listener: EdgeListener, key: KeyPair,
                 stack: contextlib.AsyncExitStack) -> None:
    """Serve connect by key on the gateway's DHT node until ``stack`` closes (before the DHT
    does): announced on ``H(key)``, the firewall the listener's admission rule."""
    public = cfg.replication_by_key_address
    if public is not None and public[1] == 0:
        public = (public[0], dht.node.server_address[1])
    server = await stack.enter_async_context(
        serve_by_key(dht.node, key, firewall=listener.by_key_firewall, public_address=public))
    task = asyncio.create_task(listener.take_by_key(server, dht.node),
                               name="gateway connect by key")

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    stack.push_async_callback(stop)
    log.info("connect by key: serving %s on the DHT%s", key.public_key.hex()[:16],
             f" (reachable at {public[0]}:{public[1]})" if public else "")


_ANY = ("0.0.0.0", "::", "")  # noqa: S104 - hosts that mean "every address"


def advertised(cfg: GatewayConfig, bound: tuple[str, int],
               seen_as: str | None = None) -> list[tuple[str, int]]:
    """The addresses the gateway's address record names: ``[replication].advertise``, else
    the listener's own address when its host is a concrete one, else (listening on every
    address) the host the DHT's nodes see the gateway at (``seen_as``) with the listener's
    port: zero-config for a gateway with a public address."""
    if cfg.replication_advertise:
        return list(cfg.replication_advertise)
    if bound[0] not in _ANY:
        return [bound]
    return [(seen_as, bound[1])] if seen_as and seen_as not in _ANY else []


def seen_host(dht: DHT, bootstrap: Sequence[tuple[str, int]]) -> str | None:
    """The host others reach this gateway at: the one the DHT's nodes saw it at, else the
    local address the system routes toward the first bootstrap node from (no packet sent)."""
    if dht.address[0] not in _ANY:
        return dht.address[0]
    for host, port in bootstrap:
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.connect((host, port))
                local = str(s.getsockname()[0])
        except OSError:
            continue
        if local not in _ANY:
            return local
    return None


async def publish_address(cfg: GatewayConfig, dht: DHT, key: KeyPair,
                          bound: tuple[str, int]) -> None:
    """Put the gateway's address record now and every ``ADDRESS_EVERY`` seconds (for a
    wildcard listen host without ``advertise``: once the DHT has told the gateway the host it
    is seen at)."""
    addresses: list[tuple[str, int]] = []
    warned = False
    while True:
        if not addresses:
            with contextlib.suppress(Exception):  # (the DHT unreachable: tried again below)
                await dht.ready()
            addresses = advertised(cfg, bound, seen_host(dht, cfg.dht_bootstrap))
        if not addresses:
            if not warned:
                log.warning("edges that know only this gateway's key cannot find it yet: "
                            "[replication] listens on %s:%d (every address), advertise is "
                            "empty and no DHT node has told the gateway its address; give "
                            "advertise = [\"host:port\"], or [replication].dial on the edges",
                            *bound)
                warned = True
            await asyncio.sleep(ADDRESS_RETRY)
            continue
        try:
            await dht.mutable_put(key, encode_gateway_record(int(time.time()), addresses),
                                  int(time.time() * 1000))
            log.info("address record published: edges dial %s",
                     ", ".join(f"{h}:{p}" for h, p in addresses))
        except Exception as exc:  # the DHT failing must not stop the gateway
            log.warning("could not publish the address record: %s", one_line(exc))
        await asyncio.sleep(ADDRESS_EVERY)


@dataclass(slots=True)
class RoundSeen:
    """What a round found: the enrolled devices it collects (with several gateways on one
    store, those whose lease it holds), their streams' results."""

    devices: int = 0
    results: list[SyncResult] = field(default_factory=list)


def _by_transport(listener: EdgeListener) -> dict[str, int]:
    """The edges connected now, by transport (``tcp``; ``udx``: by key)."""
    counts = {"tcp": 0, "udx": 0}
    for conn in listener.links.values():
        counts[conn.transport] = counts.get(conn.transport, 0) + 1
    return counts


async def collection_round(cfg: GatewayConfig, collector: Collector, store: Store,
                           dht: DHT | None, marks: KeyPair, marks_seq: int,
                           seen: RoundSeen | None = None,
                           metrics: GatewayMetrics | None = None, *, retain: bool = True) -> int:
    """One round (and, with ``retain``, a retention pass after it); returns the watermark
    record's seq it used (``marks_seq`` if none). The devices found and their results go into
    ``seen`` (the round's line counts them)."""
    counted = metrics if metrics is not None else GatewayMetrics()
    if dht is not None:
        # the enrolled devices (deny by default); the others on the fleet topic are pending
        keys = await discover(Roster(store.conn), collector, dht, cfg.fleet, cfg.devices)
        got = await collector.collect_round(dht, keys, cfg.policy)
        if seen is not None:  # (the devices this gateway collects: it holds their lease)
            seen.devices, seen.results = len({k for k in keys if collector.holds(k)}), got
        for r in got:
            # the schedule logs the unreachable ones, a stream is stopped with a log line
            if r.error and not r.unreachable and not r.stopped:
                log.warning("stream %s: %s", r.stream, r.error)
            if r.error:
                counted.error("unreachable" if r.unreachable else
                              "stopped" if r.stopped else "stream")
        marks_seq = max(marks_seq + 1, int(time.time() * 1000))
        try:
            await collector.publish_watermarks(dht, marks, marks_seq)
        except Exception as exc:  # a bad round must not stop us
            counted.error("watermark")
            log.warning("could not publish the watermark record: %s", one_line(exc))
    try:
        if retain:
            apply_retention(cfg, collector, store, counted)
    except (StorageError, sqlite3.Error) as exc:  # a full disk must not stop collecting
        counted.error("retention")
        log.warning("retention: %s (tried again next round)", one_line(exc))
    return marks_seq


async def collect_rounds(cfg: GatewayConfig, collector: Collector, store: Store,
                         dht: DHT | None, marks: KeyPair, *, rounds: int | None = None,
                         clock: Callable[[], float] = time.monotonic,
                         health: GatewayHealth | None = None,
                         metrics: GatewayMetrics | None = None) -> int:
    """Rounds every ``cfg.interval`` seconds until cancelled (or ``rounds`` of them); a
    round that raises is logged and the next one runs; each round that ends is logged in one
    info line (and told to ``health``). Returns how many rounds failed."""
    done = failed = 0
    marks_seq = 0  # milliseconds of the clock: grows across restarts without being stored
    retained = -math.inf  # when retention last ran (after the first round, then every
    while rounds is None or done < rounds:  # RETENTION_EVERY seconds)
        start = clock()
        seen = RoundSeen()
        retain = start - retained >= RETENTION_EVERY
        try:
            marks_seq = await collection_round(cfg, collector, store, dht, marks, marks_seq,
                                               seen, metrics, retain=retain)
            if retain:
                retained = start
        except Exception as exc:
            failed += 1
            if metrics is not None:
                metrics.error("round")
            log.warning("collection round failed: %s (the next one runs as usual)",
                        one_line(exc))
            log.debug("the failed collection round", exc_info=True)
            if health is not None:
                health.round_failed()
        else:
            summary = RoundSummary.of(done + 1, seen.devices, seen.results, clock() - start)
            if health is not None:
                health.round_done(summary)
            else:
                log.info("%s", summary.line(), extra=summary.fields())
        done += 1
        if metrics is not None:
            metrics.round_done(clock() - start)
        if rounds is None or done < rounds:
            # the next round on time, or sooner when an edge dialled in with a key no record
            # read so far names (a device enrolled or restarted since: its record is read now)
            early: asyncio.Event = getattr(collector, "early", None) or asyncio.Event()
            early.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, cfg.interval - (clock() - start))):
                    await early.wait()
    return failed

"""The gateway's configuration: TOML, unknown keys refused by name (docs/gateway.md), parsed
in the one config dialect of :mod:`cairn.settings` into a frozen :class:`GatewayConfig`."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from pathlib import Path

from cairn.fleet.record import check_fleet_name
from cairn.settings import (
    ConfigError,
    Table,
    array_of_tables,
    hex_keys,
    hostport,
    load,
    parse_toml,
)
from cairn_gateway.leases import MAX_LEASE, MIN_LEASE

__all__ = ["TEMPLATE", "ConfigError", "GatewayConfig", "Policy", "load_config", "parse_config",
           "render_config"]


@dataclass(frozen=True, slots=True)
class GatewayConfig:
    data_dir: Path
    key_file: Path
    dht_bootstrap: tuple[tuple[str, int], ...] = ()
    fleet: str = "default"
    devices: tuple[bytes, ...] = ()  # record keys to look up besides the fleet's (not enrolled)
    interval: float = 10.0
    api: tuple[str, int] = ("127.0.0.1", 8080)
    retention_days: float = 0.0  # 0: keep everything
    max_bytes: int = 0  # bytes gw.db and replicas.db may use together (0: no budget)
    store_url: str = ""  # a postgresql:// URL (no password in it); "": SQLite, data_dir/gw.db
    store_password_file: Path | None = None  # the database password, mode 0600
    lease_seconds: float = 30.0  # a device's lease among gateways on one PostgreSQL store
    policies: tuple[Policy, ...] = ()  # the first whose pattern matches a stream; else tail
    concurrency: int = 4  # edges synced at once
    backoff_initial: float = 1.0  # seconds before an unreachable edge is tried again...
    backoff_max: float = 300.0  # ...doubling up to this
    ingest_worker: bool = True  # decode and store in a second process (cairn_gateway.ingest)
    device_budget: float = 10.0  # seconds one device may take of a round
    max_samples_per_round: int = 100_000  # samples stored from one device in one round
    past_window: float = 3650 * 86400.0  # samples earlier than this before first seen: refused
    future_window: float = 10.0  # samples later than this after now: refused
    ready_rounds: int = 3  # /readyz: something stored within this many intervals
    # [api]: tokens (None: not configured, cairn_gateway.auth) and limits (cairn_gateway.serve)
    api_read_token_file: Path | None = None
    api_admin_token_file: Path | None = None
    api_max_connections: int = 256
    api_request_timeout: float = 10.0  # seconds for a request's headers (and for its body)
    api_max_header_bytes: int = 16384
    api_max_body_bytes: int = 65536
    # [replication]: edges dial in (cairn_gateway.listener); None: off (the parsed default is
    # 0.0.0.0:7420)
    replication_listen: tuple[str, int] | None = None
    replication_advertise: tuple[tuple[str, int], ...] = ()  # published in the address record
    replication_max_connections: int = 2000
    replication_per_source: int = 256
    replication_handshake_timeout: float = 10.0
    # connect by key (hyperdht, decision 0013): served on the DHT when there is one
    replication_by_key: bool = True
    replication_by_key_address: tuple[str, int] | None = None  # public UDP address; port 0: bound

    def policy(self, stream: str) -> Policy:
        for p in self.policies:
            if fnmatch.fnmatchcase(stream, p.pattern):
                return p
        return Policy("*", "tail")


@dataclass(frozen=True, slots=True)
class Policy:
    """How a stream is downloaded: ``tail`` (keep up as it grows), ``backfill`` (keep up, but
    only the last ``window`` seconds), ``on_demand`` (nothing until an API query asks for a
    window the store does not hold, then just that window). ``priority``: higher first, for
    the edges of a round (an edge goes by its streams' highest) and the streams of an edge."""

    pattern: str
    mode: str
    window: float = 0.0
    priority: int = 0


_KEYS: dict[str, set[str]] = {
    "": {"data_dir", "key_file", "dht", "collect", "api", "store", "policy", "replication"},
    "policy": {"pattern", "mode", "window", "priority"},
    "dht": {"bootstrap", "fleet"},
    "collect": {"devices", "interval", "concurrency", "backoff_initial", "backoff_max",
                "ingest_worker", "device_budget", "max_samples_per_round", "past_window",
                "future_window", "ready_rounds"},
    "api": {"listen", "read_token_file", "admin_token_file", "max_connections",
            "request_timeout", "max_header_bytes", "max_body_bytes"},
    "store": {"retention_days", "max_disk_mb", "url", "password_file", "lease_seconds"},
    "replication": {"listen", "advertise", "max_connections", "per_source",
                    "handshake_timeout", "by_key", "by_key_address"},
}

LISTEN = "0.0.0.0:7420"


def _hostport(text: object, where: str) -> tuple[str, int]:
    return hostport(text, where, allow_zero=True)


def parse_config(text: str, base: Path, source: str = "config") -> GatewayConfig:
    """Parse a config's text; relative paths count from ``base`` (the file's directory)."""
    doc = parse_toml(text, source)
    top = Table(doc, source, _KEYS[""], top=True)
    dht, collect, api, store, rep = (Table.of(doc, n, _KEYS[n], source)
                                     for n in ("dht", "collect", "api", "store", "replication"))
    listen = rep.data.get("listen", LISTEN)
    if not isinstance(listen, str):
        raise ConfigError('[replication].listen: "host:port", or "" to take no edges')
    advertise = rep.array("advertise", what='a list of "host:port"')
    boot = dht.array("bootstrap", what='a list of "host:port"')
    fleet = dht.data.get("fleet", "default")
    try:
        fleet = check_fleet_name(fleet, "[dht].fleet")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    policies = []
    for where, raw in array_of_tables(doc, "policy", source):
        p = Table(raw, where, _KEYS["policy"])
        pattern, mode = p.data.get("pattern"), p.data.get("mode")
        if not isinstance(pattern, str) or not pattern:
            raise ConfigError(f"{where}: needs a pattern such as \"*/vibration\"")
        if mode not in ("tail", "backfill", "on_demand"):
            raise ConfigError(f"{where}: mode {mode!r} is not tail, backfill or on_demand")
        window = p.number("window", 0.0, 0.0, 3650 * 86400)
        if mode == "backfill" and window <= 0:
            raise ConfigError(f"{where}: backfill needs a window (seconds into the past)")
        priority = p.integer("priority", 0, -1_000_000, 1_000_000)
        policies.append(Policy(pattern, mode, window, priority))
    devices = hex_keys(collect.array("devices", what="a list of device record keys (hex)"),
                       "[collect].devices")
    backoff_initial = collect.number("backoff_initial", 1.0, 0.01, 86400)
    backoff_max = collect.number("backoff_max", max(300.0, backoff_initial), backoff_initial,
                                 7 * 86400)
    data_dir = top.path("data_dir", "data", base)
    key_file = top.path("key_file", "gateway.seed", base)
    assert data_dir is not None and key_file is not None  # they have defaults
    return GatewayConfig(
        data_dir=data_dir,
        key_file=key_file,
        dht_bootstrap=tuple(_hostport(b, "[dht].bootstrap") for b in boot),
        fleet=fleet,
        devices=devices,
        interval=collect.number("interval", 10.0, 0.1, 86400),
        api=_hostport(api.data.get("listen", "127.0.0.1:8080"), "[api].listen"),
        retention_days=store.number("retention_days", 0.0, 0.0, 36500),
        max_bytes=int(store.number("max_disk_mb", 0, 0, 100_000_000) * 1_000_000),
        store_url=_store_url(store.text("url", "")),
        store_password_file=(store.path("password_file", None, base)
                             if store.text("password_file", "") else None),
        lease_seconds=store.number("lease_seconds", 30.0, MIN_LEASE, MAX_LEASE),
        policies=tuple(policies),
        concurrency=collect.integer("concurrency", 4, 1, 1024),
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        ingest_worker=collect.flag("ingest_worker", True),
        device_budget=collect.number("device_budget", 10.0, 0.1, 86400),
        max_samples_per_round=collect.integer("max_samples_per_round", 100_000,
                                              1, 1_000_000_000),
        past_window=collect.number("past_window", 3650 * 86400.0, 0, 100 * 365 * 86400.0),
        future_window=collect.number("future_window", 10.0, 0, 365 * 86400.0),
        ready_rounds=collect.integer("ready_rounds", 3, 1, 1_000_000),
        api_read_token_file=api.path("read_token_file", None, base),
        api_admin_token_file=api.path("admin_token_file", None, base),
        api_max_connections=api.integer("max_connections", 256, 1, 1_000_000),
        api_request_timeout=api.number("request_timeout", 10.0, 0.1, 3600),
        api_max_header_bytes=api.integer("max_header_bytes", 16384, 1024, 1 << 20),
        api_max_body_bytes=api.integer("max_body_bytes", 65536, 0, 1 << 30),
        replication_listen=_hostport(listen, "[replication].listen") if listen else None,
        replication_advertise=tuple(hostport(a, "[replication].advertise") for a in advertise),
        replication_max_connections=rep.integer("max_connections", 2000, 1, 1_000_000),
        replication_per_source=rep.integer("per_source", 256, 1, 1_000_000),
        replication_handshake_timeout=rep.number("handshake_timeout", 10.0, 0.1, 600),
        replication_by_key=rep.flag("by_key", True),
        replication_by_key_address=_by_key_address(rep.data.get("by_key_address", "")),
    )


def _by_key_address(text: object) -> tuple[str, int] | None:
    if text == "":
        return None
    if not isinstance(text, str):
        raise ConfigError('[replication].by_key_address: "IP:PORT" (port 0: the DHT\'s own '
                          'port), or "" to let the DHT tell')
    return _hostport(text, "[replication].by_key_address")


def load_config(path: str | Path) -> GatewayConfig:
    return load(path, parse_config)


TEMPLATE = '''\
# Cairn gateway configuration (docs/gateway.md lists every key).

data_dir = "data"            # the sample store (gw.db) and the log replicas (replicas.db)
key_file = "gateway.seed"    # the gateway's 32-byte seed (mode 0600): its Noise key, which edges
                             # allow in [replication].gateways and seal stream keys to

[dht]
bootstrap = []               # "host:port" of DHT nodes
fleet = "default"            # find devices on this fleet's topic; only those enrolled
                             # (`cairn gateway devices add`) are collected, the rest are pending

[collect]
interval = 10.0              # seconds between collection rounds
devices = []                 # device record keys (hex) to look up besides the fleet's (they
                             # are collected only when enrolled: this does not enrol them)
concurrency = 4              # edges synced at once
ingest_worker = true         # decode and store samples in a second process (uses a 2nd core)
backoff_initial = 1.0        # seconds before an unreachable edge is tried again, doubling
backoff_max = 300.0          # up to this (jittered; reset when the edge answers)
device_budget = 10.0         # seconds one device may take of a round (its record lookup,
                             # then its downloads); the rest waits for the next round
max_samples_per_round = 100000  # samples stored from one device in one round; the rest
                             # waits (100 Hz for 10 s on 100 streams fits)
past_window = 315360000      # seconds (3650 days): a sample earlier than this before the
                             # gateway first took samples of its stream is refused, counted
future_window = 10.0         # seconds: a sample later than now + this is refused, counted
ready_rounds = 3             # /readyz answers 503 when no round and no live push stored a
                             # sample within this many intervals (an empty fleet is ready)

[api]
listen = "127.0.0.1:8080"    # the HTTP API (Grafana's Infinity data source, /metrics); on an
                             # address other than loopback the gateway starts only with a
                             # read token
read_token_file = "api-read.token"    # bearer token for GET (Grafana, Prometheus), mode 0600
admin_token_file = "api-admin.token"  # bearer token for every method (enrollment), mode 0600
max_connections = 256        # open API connections; past it the oldest one still sending its
                             # request is dropped (keep it under the unit's LimitNOFILE)
request_timeout = 10.0       # seconds a client has to send a request's headers (and its body);
                             # a client that stops reading an answer this long is cut
max_header_bytes = 16384     # a request line and headers larger than this: 431
max_body_bytes = 65536       # a request body larger than this: 413

[store]
retention_days = 0           # delete samples, and the data of replica blocks, older than
                             # this many days (0: keep everything)
max_disk_mb = 0              # a budget for gw.db and replicas.db together: past it, the
                             # oldest samples and replica blocks go first (0: no budget)
url = ""                     # "postgresql://user@host:5432/dbname": the samples in PostgreSQL,
                             # shared by several gateways ("": SQLite, data_dir/gw.db)
password_file = ""           # the database user's password, one line, mode 0600 (never in
                             # the URL; "": none, or libpq's ~/.pgpass / PGPASSWORD)
lease_seconds = 30           # with url: gateways on one database share the fleet, each device
                             # collected by one gateway at a time, renewed every third of
                             # this; a gateway that dies has its devices taken over by the
                             # others within this many seconds (3..3600)

[replication]
listen = "0.0.0.0:7420"      # TCP host:port edges dial in on (an edge behind NAT keeps a
                             # connection here and its appends arrive live); "" takes none.
                             # Only enrolled devices' keys are admitted, right after the
                             # Noise handshake
advertise = []               # "host:port" published in the gateway's DHT address record, so
                             # edges that know only its key find it (empty: the listen address
                             # if its host is not 0.0.0.0, else the host the DHT's nodes see
                             # the gateway at, with the listen port)
max_connections = 2000       # edge connections at once; past it a new one is closed at once
per_source = 256             # connections from one IP address (edges behind one NAT share it)
handshake_timeout = 10.0     # seconds a connection has to finish the Noise handshake
by_key = true                # with [dht] bootstrap: a hyperdht server on the gateway's key
                             # (edges and JS `dht.connect(key)` find it); only enrolled
                             # devices' Noise keys complete the handshake, then replicate on
                             # a UDX stream of the DHT's UDP port as over TCP
by_key_address = ""          # "IP:PORT" where the DHT's UDP socket is reachable from anywhere
                             # (port 0: its bound port): clients connect straight to it.
                             # "": the DHT tells (a client behind a NAT then needs punching)

# How streams are downloaded: the first [[policy]] whose pattern (device/quantity, * wildcards)
# matches; a stream no policy matches is tailed.
# [[policy]]
# pattern = "*/vibration"
# mode = "on_demand"         # tail | backfill (with window = seconds) | on_demand
# window = 3600             # backfill: the last this many seconds
# priority = 0               # higher first: edges (by their streams' highest), then streams
'''


def render_config(cfg: GatewayConfig, base: Path) -> str:
    """``cfg`` as a TOML file in directory ``base`` that :func:`parse_config` reads back equal
    (paths under ``base`` written relative to it)."""
    from cairn.toml_writer import dumps

    def rel(path: Path | None) -> str | None:
        if path is None:
            return None
        return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)

    return dumps({
        "data_dir": rel(cfg.data_dir),
        "key_file": rel(cfg.key_file),
        "dht": {"bootstrap": [f"{h}:{p}" for h, p in cfg.dht_bootstrap], "fleet": cfg.fleet},
        "collect": {"devices": [k.hex() for k in cfg.devices], "interval": cfg.interval,
                    "concurrency": cfg.concurrency, "backoff_initial": cfg.backoff_initial,
                    "backoff_max": cfg.backoff_max, "ingest_worker": cfg.ingest_worker,
                    "device_budget": cfg.device_budget,
                    "max_samples_per_round": cfg.max_samples_per_round,
                    "past_window": cfg.past_window, "future_window": cfg.future_window,
                    "ready_rounds": cfg.ready_rounds},
        "api": {"listen": f"{cfg.api[0]}:{cfg.api[1]}",
                "read_token_file": rel(cfg.api_read_token_file),
                "admin_token_file": rel(cfg.api_admin_token_file),
                "max_connections": cfg.api_max_connections,
                "request_timeout": cfg.api_request_timeout,
                "max_header_bytes": cfg.api_max_header_bytes,
                "max_body_bytes": cfg.api_max_body_bytes},
        "store": {"retention_days": cfg.retention_days,
                  "max_disk_mb": cfg.max_bytes / 1_000_000, "url": cfg.store_url,
                  "password_file": rel(cfg.store_password_file),
                  "lease_seconds": cfg.lease_seconds},
        "replication": {
            "listen": "" if cfg.replication_listen is None
            else f"{cfg.replication_listen[0]}:{cfg.replication_listen[1]}",
            "advertise": [f"{h}:{p}" for h, p in cfg.replication_advertise],
            "max_connections": cfg.replication_max_connections,
            "per_source": cfg.replication_per_source,
            "handshake_timeout": cfg.replication_handshake_timeout,
            "by_key": cfg.replication_by_key,
            "by_key_address": "" if cfg.replication_by_key_address is None
            else f"{cfg.replication_by_key_address[0]}:{cfg.replication_by_key_address[1]}"},
        "policy": [{"pattern": p.pattern, "mode": p.mode, "window": p.window,
                    "priority": p.priority} for p in cfg.policies] or None,
    })


def _store_url(url: str) -> str:
    """``[store].url``: empty, or a PostgreSQL URL without a password."""
    if url:
        from cairn_gateway.store.base import check_url

        check_url(url, "[store].url", ConfigError, "put it in [store].password_file (one "
                  "line, mode 0600) and take it out of the URL")
    return url


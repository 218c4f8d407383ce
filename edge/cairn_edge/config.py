"""The edge agent's configuration: a TOML file, every key documented in docs/edge.md.

Unknown keys are refused by name (a typo must not silently fall back to a default), every value
is checked for type and range, and :class:`ConfigError` says which key of which table is wrong:
the one config dialect of :mod:`cairn.settings` (:class:`~cairn.settings.Table`), shared with
the gateway's configuration.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cairn.brokers import parse_broker, redact
from cairn.fleet.record import check_fleet_name
from cairn.logs import add_secret
from cairn.settings import (
    ConfigError,
    Table,
    array_of_tables,
    hex_keys,
    hostport,
    load,
    parse_toml,
)
from cairn_edge.adapters import DEFAULT_ROUTES, FORMATS, Field, Route, parse_path, zone
from cairn_edge.boards import check_names, is_loopback, load_boards

_QUANTITY_NAME = re.compile(r"[a-z0-9][a-z0-9\-]*")

__all__ = ["ConfigError", "EdgeConfig", "RangeRule", "load_config", "parse_config",
           "render_config"]


@dataclass(frozen=True, slots=True)
class RangeRule:
    """Values of streams matching ``pattern`` (``device/quantity``, ``*`` wildcards) must lie in
    [min, max]."""

    pattern: str
    min: float = -math.inf
    max: float = math.inf


@dataclass(frozen=True, slots=True)
class EdgeConfig:
    data_dir: Path
    seed_file: Path
    # mqtt
    broker: str = field(default="mqtt://127.0.0.1:1883", repr=False)  # may hold a password
    listen: tuple[str, int] = ("127.0.0.1", 1883)  # the embedded broker's listener
    client_id: str = "cairn-edge"
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls_ca: Path | None = None
    protocol: str = "auto"
    # the embedded broker's board logins (name -> mosquitto_passwd hash), from boards_file
    boards: tuple[tuple[str, str], ...] | None = field(default=None, repr=False)
    routes: tuple[Route, ...] = DEFAULT_ROUTES
    # logs
    commit_interval: float = 1.0
    commit_samples: int = 10_000
    sync: str = "normal"
    checkpoint_interval: float = 300.0  # seconds the database may lag the tick journal
    checkpoint_kib: int = 256  # ...or until the journal holds this much
    max_disk: int = 0  # bytes the stream logs may use (0: no limit)
    # validation
    time_floor: float = 1_577_836_800.0  # 2020-01-01T00:00:00Z
    max_future: float = 5.0  # seconds ahead of our clock; samples ahead wait for their time
    units_extra: tuple[str, ...] = ()
    ranges: tuple[RangeRule, ...] = ()
    # replication
    listen_host: str = "0.0.0.0"  # noqa: S104 - an edge serves its gateways on the LAN
    listen_port: int = 7_422
    advertise: tuple[str, int] | None = None
    gateways: tuple[bytes, ...] = ()
    dial: tuple[tuple[str, int], ...] = ()  # where to dial the gateways (else: their DHT record)
    transport: str = "auto"  # to the gateways: by key then TCP ("auto"), "key" only, "tcp" only
    # dht
    dht_bootstrap: tuple[tuple[str, int], ...] = ()
    dht_persistent: bool = False
    publish_interval: float = 1.0
    fleet: str = "default"
    public: bool = False
    watermarks: tuple[bytes, ...] = ()  # gateways' watermark record keys: clear what all hold
    watermark_interval: float = 300.0
    # health
    metrics: tuple[str, int] | None = None
    health: tuple[str, int] | None = None  # /healthz and /readyz (cairn_edge.health)
    max_commit_age: float = 300.0  # /readyz: seconds since the last commit at most (0: any)


_TABLES: dict[str, set[str]] = {
    "": {"data_dir", "seed_file", "mqtt", "logs", "validation", "replication", "dht",
         "health", "topic", "range"},
    "mqtt": {"broker", "listen", "client_id", "username", "password", "tls_ca", "protocol",
             "boards_file"},
    "logs": {"commit_interval", "commit_samples", "sync", "checkpoint_interval",
             "checkpoint_kib", "max_disk_mb"},
    "validation": {"time_floor", "max_future", "units"},
    "replication": {"host", "port", "gateways", "advertise", "dial", "transport"},
    "dht": {"bootstrap", "persistent", "publish_interval", "fleet", "public", "watermarks",
            "watermark_interval"},
    "health": {"metrics", "listen", "max_commit_age"},
    "topic": {"filter", "format", "device_level", "device", "timezone", "time_path", "field"},
    "field": {"path", "quantity", "unit", "type"},
    "range": {"pattern", "min", "max"},
}


class _Table(Table):
    """The edge's tables: a number out of range "is outside [lo, hi]" (tests pin it)."""

    __slots__ = ()
    says_outside = True


def _routes(doc: dict[str, Any], source: str) -> list[Route]:
    """The ``[[topic]]`` routes: filter, format, whose device, and the shape's own keys."""
    routes = []
    for where, raw in array_of_tables(doc, "topic", source):
        t = _Table(raw, where, _TABLES["topic"])
        filt = t.text("filter")
        fmt = t.text("format")
        if not filt or fmt not in FORMATS:
            raise ConfigError(f"{where}: needs filter and format (one of {', '.join(FORMATS)})")
        level = int(t.number("device_level", 1, 1, 16))
        device = t.text("device")
        if device is not None:
            if "device_level" in t:
                raise ConfigError(f"{where}: give device or device_level, not both")
            if not device or any(c in device for c in "/+#\0"):
                raise ConfigError(f"{where}: device {device!r} is not a device name "
                                  "(no '/', '+', '#')")
        elif fmt == "zigbee2mqtt" and filt.endswith("/#") and filt.count("+") < level:
            pass  # the device is the rest of the topic: zigbee2mqtt/<friendly name>
        elif fmt != "discovery" and filt.count("+") < level:
            raise ConfigError(f"{where}: filter {filt!r} has no '+' number {level} for the device")
        tz = t.text("timezone")
        if tz is not None:
            if fmt != "tasmota":
                raise ConfigError(f"{where}: timezone is for the tasmota format (its local Time)")
            try:
                zone(tz)
            except ValueError as exc:
                raise ConfigError(f"{where}.timezone: {exc}") from None
        fields = _fields(raw, where)
        time_path = t.text("time_path")
        if fmt == "json":
            if not fields:
                raise ConfigError(f"{where}: a json route needs [[topic.field]] tables "
                                  "(path = \"a.b\", quantity = \"temperature\")")
            if time_path is not None:
                _path(time_path, f"{where}.time_path")
        elif fields or time_path is not None:
            raise ConfigError(f"{where}: field and time_path are for the json format")
        routes.append(Route(filt, fmt, level, device, tz, fields, time_path))
    return routes


def _path(path: str, where: str) -> None:
    try:
        parse_path(path)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def _fields(raw: dict[str, Any], where: str) -> tuple[Field, ...]:
    out = []
    seen: set[str] = set()
    for at, table in array_of_tables(raw, "field", where):
        at = at.replace("[[field]]", f"{where} [[field]]")
        f = _Table(table, at, _TABLES["field"])
        path, quantity, unit = f.text("path"), f.text("quantity"), f.text("unit")
        kind = f.text("type")
        if kind not in (None, "number", "boolean", "string"):
            raise ConfigError(f"{at}.type: {kind!r} is not number, boolean or string")
        if not path or not quantity:
            raise ConfigError(f"{at}: needs path and quantity")
        _path(path, f"{at}.path")
        if not _QUANTITY_NAME.fullmatch(quantity) or len(quantity) > 64:
            raise ConfigError(f"{at}.quantity: {quantity!r} is not a quantity name "
                              "(lowercase letters, digits, '-')")
        if quantity in seen:
            raise ConfigError(f"{at}.quantity: {quantity!r} is named twice")
        seen.add(quantity)
        out.append(Field(path, quantity, unit, kind))
    return tuple(out)


def parse_config(text: str, base: Path, source: str = "config") -> EdgeConfig:
    """Parse a config's text; relative paths count from ``base`` (the file's directory)."""
    doc = parse_toml(text, source)
    top = _Table(doc, source, _TABLES[""], top=True)
    mqtt, logs, val, rep, dht, health = (
        _Table.of(doc, name, _TABLES[name], source)
        for name in ("mqtt", "logs", "validation", "replication", "dht", "health"))

    def path(key: str, default: str) -> Path:
        p = Path(top.text(key, default))
        return p if p.is_absolute() else base / p

    protocol = mqtt.text("protocol", "auto")
    if protocol not in ("auto", "5", "3.1.1"):
        raise ConfigError(f"[mqtt].protocol: {protocol!r} is not auto, 5 or 3.1.1")
    broker = mqtt.text("broker", "mqtt://127.0.0.1:1883")
    if broker != "embedded" and not broker.startswith(("mqtt://", "mqtts://")):
        raise ConfigError(f"[mqtt].broker: {redact(broker)!r} is not mqtt://..., mqtts://... "
                          "or embedded")
    if broker != "embedded":
        try:
            parse_broker(broker)
        except ValueError as exc:
            raise ConfigError(f"[mqtt].broker: {exc}") from None
    sync = logs.text("sync", "normal")
    if sync not in ("normal", "full"):
        raise ConfigError(f"[logs].sync: {sync!r} is not normal or full")
    transport = rep.text("transport", "auto")
    if transport not in ("auto", "key", "tcp"):
        raise ConfigError(f"[replication].transport: {transport!r} is not auto, key or tcp")

    routes = _routes(doc, source)

    ranges = []
    for where, raw in array_of_tables(doc, "range", source):
        r = _Table(raw, where, _TABLES["range"])
        pattern = r.text("pattern")
        if not pattern:
            raise ConfigError(f"{where}: needs a pattern such as \"*/temperature\"")
        lo = r.number("min", -1e300, -1e300, 1e300)
        hi = r.number("max", 1e300, -1e300, 1e300)
        if lo > hi:
            raise ConfigError(f"{where}: min {lo:g} is above max {hi:g}")
        ranges.append(RangeRule(pattern, lo, hi))

    gateways = hex_keys(rep.array("gateways"), "[replication].gateways", "Noise public key")

    listen = hostport(mqtt.text("listen", "127.0.0.1:1883"), "[mqtt].listen")
    boot = tuple(hostport(b, "[dht].bootstrap") for b in dht.array("bootstrap"))
    if transport == "key" and not boot:
        raise ConfigError('[replication].transport: "key" connects through the DHT: give '
                          '[dht].bootstrap, or use "auto" or "tcp"')
    adv = rep.text("advertise")
    dial = tuple(hostport(d, "[replication].dial") for d in rep.array("dial"))
    metrics = health.text("metrics")
    health_listen = health.text("listen")
    fleet = dht.text("fleet", "default")
    try:
        check_fleet_name(fleet, "[dht].fleet")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    watermarks = hex_keys(dht.array("watermarks"), "[dht].watermarks")
    units = val.array("units")
    if not all(isinstance(u, str) and u for u in units):
        raise ConfigError("[validation].units: a list of unit names")
    tls = mqtt.text("tls_ca")
    boards_file = mqtt.text("boards_file")
    boards = None
    if boards_file is not None:
        if broker != "embedded":
            raise ConfigError("[mqtt].boards_file: board logins are for broker = \"embedded\" "
                              "(Mosquitto has its own password file: deploy/mosquitto)")
        logins = load_boards(base / boards_file)
        check_names(list(logins), routes or DEFAULT_ROUTES)
        boards = tuple(logins.items())
    elif broker == "embedded" and not is_loopback(listen[0]):
        raise ConfigError(f"[mqtt].listen: the embedded broker would take anonymous clients on "
                          f"{listen[0]}, beyond this machine: give [mqtt].boards_file (board "
                          "logins) or listen on 127.0.0.1")
    add_secret(mqtt.text("password"))  # never in a log line (cairn.logs)
    if broker != "embedded":
        add_secret(parse_broker(broker).password)
    return EdgeConfig(
        data_dir=path("data_dir", "data"),
        seed_file=path("seed_file", "device.seed"),
        broker=broker,
        listen=listen,
        client_id=mqtt.text("client_id", "cairn-edge"),
        username=mqtt.text("username"),
        password=mqtt.text("password"),
        tls_ca=(base / tls) if tls else None,
        protocol=protocol,
        boards=boards,
        routes=tuple(routes) or DEFAULT_ROUTES,
        commit_interval=logs.number("commit_interval", 1.0, 0.01, 3600),
        commit_samples=int(logs.number("commit_samples", 10_000, 1, 10_000_000)),
        sync=sync,
        checkpoint_interval=logs.number("checkpoint_interval", 300.0, 0, 86_400),
        checkpoint_kib=int(logs.number("checkpoint_kib", 256, 1, 1_048_576)),
        max_disk=int(logs.number("max_disk_mb", 0, 0, 10_000_000) * 1_000_000),
        time_floor=val.number("time_floor", 1_577_836_800.0, 0, 1e11),
        max_future=val.number("max_future", 5.0, 0, 3600),
        units_extra=tuple(units),
        ranges=tuple(ranges),
        listen_host=rep.text("host", "0.0.0.0"),  # noqa: S104
        listen_port=int(rep.number("port", 7_422, 0, 65535)),
        advertise=hostport(adv, "[replication].advertise") if adv else None,
        gateways=gateways,
        dial=dial,
        transport=transport,
        dht_bootstrap=boot,
        dht_persistent=dht.flag("persistent", False),
        publish_interval=dht.number("publish_interval", 1.0, 0.1, 86400),
        fleet=fleet,
        public=dht.flag("public", False),
        watermarks=watermarks,
        watermark_interval=dht.number("watermark_interval", 300.0, 0.1, 86400),
        metrics=hostport(metrics, "[health].metrics") if metrics else None,
        health=hostport(health_listen, "[health].listen", allow_zero=True) if health_listen
        else None,
        max_commit_age=health.number("max_commit_age", 300.0, 0, 365 * 86400.0),
    )


def load_config(path: str | Path) -> EdgeConfig:
    return load(path, parse_config)


TEMPLATE = '''\
# Cairn edge agent configuration (docs/edge.md lists every key).

data_dir = "data"            # stream logs and the agent's state, relative to this file
seed_file = "device.seed"    # the device's 32-byte primary seed (mode 0600): every stream key
                             # derives from it. Back it up; never share it.

[mqtt]
broker = "mqtt://127.0.0.1:1883"   # or mqtts://host:8883, or "embedded" (an MQTT 3.1.1
                                   # broker in this process: pip install 'cairn[embedded-broker]')
# listen = "127.0.0.1:1883"        # where the embedded broker listens; beyond 127.0.0.1
                                   # only with boards_file
# boards_file = "boards.passwd"    # embedded broker: board logins, a mosquitto_passwd file
                                   # (mode o-rwx); each board may publish only its own topics
client_id = "cairn-edge"           # fixed: the broker keeps our session while we restart
# username = "edge"
# password = "secret"
# tls_ca = "ca.pem"
protocol = "auto"                  # MQTT 5, falling back to 3.1.1

[logs]
commit_interval = 1.0        # seconds between group commits (one signature per stream each)
commit_samples = 10000       # ...or sooner, after this many samples
sync = "normal"              # "full": fsync every commit (survives power loss, slower)
checkpoint_interval = 300    # seconds between checkpoints of the database; commits in between
                             # are made durable by the tick journal (0: every commit to SQLite)
checkpoint_kib = 256         # ...or sooner, when the journal holds this many KiB
max_disk_mb = 0              # a quota for the logs: past it, the oldest block data is cleared
                             # (tree nodes stay, so logs still verify); 0 = no quota

[validation]
time_floor = 1577836800      # 2020-01-01: no sample before this (also: not before our last run)
max_future = 5               # seconds a sample may be ahead of our clock (at most 3600): one
                             # further ahead is rejected; one ahead by less is held until our
                             # clock reaches its time, so it never makes later samples "late"
# units = ["furlong"]        # units to accept besides SenML's

[replication]
host = "0.0.0.0"
port = 7422
gateways = []                # Noise public keys (hex) of the gateways allowed to replicate;
                             # the edge also dials each of them and keeps that connection
                             # (works behind any NAT: no advertise, no port forwarding)
dial = []                    # "host:port" where those gateways take edges (their
                             # [replication].listen); empty: found on the DHT by their key
transport = "auto"           # how to reach them: "auto" = by key over UDP first (hyperdht,
                             # needs [dht] bootstrap), TCP when that fails; "key" = by key
                             # only; "tcp" = TCP only
# advertise = "192.168.1.20:7422"  # the address gateways reach us at, put in our DHT record

[dht]
bootstrap = []               # "host:port" of DHT nodes; empty: no DHT record is published
persistent = false           # true: also serve as a DHT routing node (needs a reachable port)
publish_interval = 1.0       # seconds between record updates at most
fleet = "default"            # we announce ourselves on this fleet's topic
public = false               # true: stream keys in clear in the record (anyone who reads it
                             # can verify the logs; only [replication] gateways may download)
watermarks = []              # gateways' watermark keys (hex, `cairn gateway init` prints it):
                             # block data all of them have stored is cleared here
watermark_interval = 300     # seconds between reading their watermark records

[health]
# metrics = "127.0.0.1:9108"  # serve Prometheus metrics at http://HOST:PORT/metrics
# listen = "127.0.0.1:9110"   # serve /healthz (alive) and /readyz (broker connected, a recent
                              # commit, disk quota kept) at http://HOST:PORT
max_commit_age = 300          # /readyz: not ready when nothing was committed for this many
                              # seconds (no reading arrived); 0: no bound

# Topics: without any [[topic]], the usual ones are read (docs/edge.md lists them):
# senml/+/+, tele/+/SENSOR, homie/5/+/+/+ and Homie 3/4 homie/+/+/+, zigbee2mqtt/#,
# homeassistant/# (discovery), Shelly +/events/rpc and +/status/+, ESPHome +/+/+/state.
# [[topic]]
# filter = "factory/+/senml"
# format = "senml"            # senml (JSON or CBOR), tasmota, esphome, homie, zigbee2mqtt,
#                             # shelly, json (below), discovery (Home Assistant documents)
# device_level = 1            # which "+" is the device
# device = "board-1"         # ...or: every message on this filter is this device's
# timezone = "Europe/Berlin"  # tasmota only: the zone of its local Time (no Epoch sent)

# [[topic]]                   # any other JSON: a path -> quantity map (as Telegraf json_v2)
# filter = "plant/+/data"
# format = "json"
# time_path = "ts"            # Unix seconds or ISO 8601 at this path (else: receipt time)
# [[topic.field]]
# path = "soil.moisture"      # keys joined by ".", [n] for an array's element
# quantity = "soil-moisture"
# unit = "%RH"                # a SenML unit (optional)
# type = "number"             # optional: convert text ("5.90"): number, boolean, string

# [[range]]
# pattern = "*/temperature"   # device/quantity, * matches anything
# min = -40
# max = 85
'''


def _relative(path: Path, base: Path) -> str:
    return str(path.relative_to(base)) if path.is_relative_to(base) else str(path)


def render_config(cfg: EdgeConfig, base: Path) -> str:
    """``cfg`` as a TOML file in directory ``base`` that :func:`parse_config` reads back equal
    (paths under ``base`` written relative to it). Board logins come from a boards file that
    this cannot write: a config holding them is refused (LocalError)."""
    from cairn.errors import LocalError
    from cairn.toml_writer import dumps

    if cfg.boards is not None:
        raise LocalError("render_config: board logins live in a boards_file; give one by hand")

    def hp(address: tuple[str, int] | None) -> str | None:
        return None if address is None else f"{address[0]}:{address[1]}"

    mb = cfg.max_disk / 1_000_000
    return dumps({
        "data_dir": _relative(cfg.data_dir, base),
        "seed_file": _relative(cfg.seed_file, base),
        "mqtt": {"broker": cfg.broker, "listen": hp(cfg.listen), "client_id": cfg.client_id,
                 "username": cfg.username, "password": cfg.password,
                 "tls_ca": None if cfg.tls_ca is None else _relative(cfg.tls_ca, base),
                 "protocol": cfg.protocol},
        "logs": {"commit_interval": cfg.commit_interval, "commit_samples": cfg.commit_samples,
                 "sync": cfg.sync, "checkpoint_interval": cfg.checkpoint_interval,
                 "checkpoint_kib": cfg.checkpoint_kib,
                 "max_disk_mb": int(mb) if mb.is_integer() else mb},
        "validation": {"time_floor": cfg.time_floor, "max_future": cfg.max_future,
                       "units": list(cfg.units_extra)},
        "replication": {"host": cfg.listen_host, "port": cfg.listen_port,
                        "advertise": hp(cfg.advertise),
                        "gateways": [k.hex() for k in cfg.gateways],
                        "dial": [hp(d) for d in cfg.dial], "transport": cfg.transport},
        "dht": {"bootstrap": [hp(b) for b in cfg.dht_bootstrap],
                "persistent": cfg.dht_persistent, "publish_interval": cfg.publish_interval,
                "fleet": cfg.fleet, "public": cfg.public,
                "watermarks": [k.hex() for k in cfg.watermarks],
                "watermark_interval": cfg.watermark_interval},
        "health": {"metrics": hp(cfg.metrics), "listen": hp(cfg.health),
                   "max_commit_age": cfg.max_commit_age},
        "topic": None if cfg.routes == DEFAULT_ROUTES else [
            {"filter": r.filter, "format": r.format,
             "device_level": r.device_level if r.device is None else None, "device": r.device,
             "timezone": r.timezone, "time_path": r.time_path,
             "field": [{"path": f.path, "quantity": f.quantity, "unit": f.unit,
                        "type": f.type}
                       for f in r.fields] or None}
            for r in cfg.routes],
        "range": [{"pattern": r.pattern,
                   "min": r.min if math.isfinite(r.min) else None,
                   "max": r.max if math.isfinite(r.max) else None} for r in cfg.ranges]
                 or None,
    })

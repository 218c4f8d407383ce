"""The demo's keys and config files: one gateway, one edge per board, written through the apps'
own config modules (:func:`cairn_gateway.config.render_config`,
:func:`cairn_edge.config.render_config`), so a file the demo writes is one their loaders accept.

Seeds are kept across runs (a board keeps its streams); configs are written again each run
(ports change). The boards are enrolled in the gateway's roster before it starts.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from cairn.fleet.identity import (
    load_seed,
    new_seed,
    noise_key_pair,
    record_key_pair,
    watermark_key_pair,
)
from cairn_edge.adapters import Route
from cairn_edge.config import EdgeConfig
from cairn_edge.config import render_config as render_edge
from cairn_gateway.config import GatewayConfig
from cairn_gateway.config import render_config as render_gateway

__all__ = ["FAMILY_BOARDS", "FLEET", "FORMATS", "GatewayKeys", "board_route", "enroll_boards",
           "write_edge", "write_gateway"]

FORMATS = ("senml", "senml-cbor", "tasmota", "esphome", "homie", "zigbee2mqtt", "shelly")
#: Boards `make demo` runs: one of each payload shape (board-1 SenML ... board-7 Shelly); the
#: first three (the tests' demo) state their readings' times.
FAMILY_BOARDS = 7
FLEET = "demo"


@dataclass(frozen=True, slots=True)
class GatewayKeys:
    """What an edge must know of the gateway: who may replicate, whose watermarks to read."""

    noise: bytes
    watermark: bytes


def _seed(path: Path) -> bytes:
    if not path.exists():
        new_seed(path)
    return load_seed(path)


def write_gateway(directory: Path, *, bootstrap: tuple[str, int], api_port: int,
                  collect_interval: float, store_url: str = "") -> GatewayKeys:
    """``gateway.seed`` (made once) and ``gateway.toml`` in ``directory`` (``store_url``: a
    PostgreSQL database for the store, else SQLite in its data directory)."""
    directory.mkdir(exist_ok=True)
    seed = _seed(directory / "gateway.seed")
    cfg = GatewayConfig(data_dir=directory / "data", key_file=directory / "gateway.seed",
                        dht_bootstrap=(bootstrap,), fleet=FLEET, interval=collect_interval,
                        api=("127.0.0.1", api_port), store_url=store_url)
    (directory / "gateway.toml").write_text(render_gateway(cfg, directory))
    return GatewayKeys(noise_key_pair(seed).public_key,
                       bytes(watermark_key_pair(seed).public_key))


def board_route(board: str, fmt: str) -> Route:
    """The topics board ``board`` publishes in payload shape ``fmt`` (one of :data:`FORMATS`)."""
    if fmt == "tasmota":
        return Route(f"tele/{board}/SENSOR", "tasmota", device=board)
    if fmt == "esphome":
        return Route(f"{board}/sensor/+/state", "esphome", device=board)
    if fmt == "homie":
        return Route(f"homie/5/{board}/+/+", "homie", device=board)
    if fmt == "zigbee2mqtt":
        return Route(f"zigbee2mqtt/{board}", "zigbee2mqtt", device=board)
    if fmt == "shelly":
        return Route(f"{board}/events/rpc", "shelly", device=board)
    return Route(f"senml/{board}/+", "senml", device=board)


def write_edge(directory: Path, number: int, *, broker_url: str, protocol: str,
               commit_interval: float, port: int, advertise: tuple[str, int] | None,
               gateway: GatewayKeys, bootstrap: tuple[str, int],
               transport: str = "auto") -> None:
    """``device.seed`` (made once) and ``edge.toml`` for board ``board-<number>``
    (``transport``: how it reaches the gateway, ``[replication] transport``)."""
    directory.mkdir(exist_ok=True)
    _seed(directory / "device.seed")
    board = f"board-{number}"
    cfg = EdgeConfig(
        data_dir=directory / "data", seed_file=directory / "device.seed",
        broker=broker_url, client_id=f"cairn-edge-{number}", protocol=protocol,
        routes=(board_route(board, FORMATS[(number - 1) % len(FORMATS)]),),
        commit_interval=commit_interval,
        listen_host="127.0.0.1", listen_port=port, advertise=advertise,
        gateways=(gateway.noise,), transport=transport,
        dht_bootstrap=(bootstrap,), fleet=FLEET, publish_interval=1.0,
        watermarks=(gateway.watermark,))
    (directory / "edge.toml").write_text(render_edge(cfg, directory))


def enroll_boards(data: Path, boards: int, store_target: str | Path | None = None) -> None:
    """Enrol the demo's own boards (by their record keys, as board-1..N) in the gateway's
    roster (in ``store_target``, by default the SQLite file in its data directory), before the
    gateway starts: it collects enrolled devices only."""
    from cairn_gateway.roster import Roster
    from cairn_gateway.store import Store

    (data / "gateway" / "data").mkdir(exist_ok=True)
    store = Store(store_target or data / "gateway" / "data" / "gw.db")
    try:
        roster = Roster(store.conn)
        now = time.time()
        for i in range(1, boards + 1):
            key = bytes(record_key_pair(load_seed(data / f"edge-{i}" /
                                                  "device.seed")).public_key)
            held = roster.by_name(f"board-{i}")
            if held is not None and held.status == "enrolled" and held.record_key != key:
                roster.remove(f"board-{i}", now)  # the board got a new seed: re-bind
            roster.enroll(key, f"board-{i}", now)
    finally:
        store.close()

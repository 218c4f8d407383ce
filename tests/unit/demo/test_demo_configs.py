"""The demo's keys and configs (cairn_demo.configs): files the apps' own loaders accept, each
edge allowing the demo gateway's key and reading its one board's topics, the boards enrolled."""

from __future__ import annotations

from pathlib import Path

from cairn.fleet.identity import load_seed, noise_key_pair, record_key_pair
from cairn_demo.configs import FLEET, board_route, enroll_boards, write_edge, write_gateway
from cairn_edge.adapters import Route
from cairn_edge.config import load_config as load_edge
from cairn_gateway.config import load_config as load_gateway
from cairn_gateway.roster import Roster
from cairn_gateway.store import Store

DHT = ("127.0.0.1", 7423)


def test_the_gateway_and_edge_configs_load_and_agree(tmp_path: Path) -> None:
    keys = write_gateway(tmp_path / "gateway", bootstrap=DHT, api_port=0, collect_interval=0.5)
    gw = load_gateway(tmp_path / "gateway" / "gateway.toml")
    assert (gw.data_dir, gw.key_file) == (tmp_path / "gateway" / "data",
                                          tmp_path / "gateway" / "gateway.seed")
    assert (gw.dht_bootstrap, gw.fleet, gw.interval, gw.api) == ((DHT,), FLEET, 0.5,
                                                                 ("127.0.0.1", 0))
    assert keys.noise == noise_key_pair(load_seed(gw.key_file)).public_key
    for n, advertise in ((1, None), (3, ("127.0.0.1", 20001))):
        d = tmp_path / f"edge-{n}"
        write_edge(d, n, broker_url="mqtt://127.0.0.1:1883", protocol="3.1.1",
                   commit_interval=1.0, port=20000 + n, advertise=advertise, gateway=keys,
                   bootstrap=DHT)
        cfg = load_edge(d / "edge.toml")
        assert (cfg.data_dir, cfg.seed_file) == (d / "data", d / "device.seed")
        assert (cfg.broker, cfg.client_id, cfg.protocol) == ("mqtt://127.0.0.1:1883",
                                                             f"cairn-edge-{n}", "3.1.1")
        assert (cfg.listen_host, cfg.listen_port, cfg.advertise) == ("127.0.0.1", 20000 + n,
                                                                     advertise)
        assert (cfg.gateways, cfg.watermarks) == ((keys.noise,), (keys.watermark,))
        assert (cfg.dht_bootstrap, cfg.fleet, cfg.publish_interval) == ((DHT,), FLEET, 1.0)
    assert load_edge(tmp_path / "edge-1" / "edge.toml").routes == (
        Route("senml/board-1/+", "senml", device="board-1"),)
    assert load_edge(tmp_path / "edge-3" / "edge.toml").routes == (
        Route("tele/board-3/SENSOR", "tasmota", device="board-3"),)
    assert board_route("board-2", "senml-cbor").format == "senml"  # one decoder for both
    assert board_route("board-4", "esphome") == Route("board-4/sensor/+/state", "esphome",
                                                      device="board-4")


def test_seeds_are_kept_across_runs_and_the_boards_enrolled(tmp_path: Path) -> None:
    keys = write_gateway(tmp_path / "gateway", bootstrap=DHT, api_port=0, collect_interval=1)
    again = write_gateway(tmp_path / "gateway", bootstrap=DHT, api_port=0, collect_interval=1)
    assert again == keys
    for n in (1, 2):
        write_edge(tmp_path / f"edge-{n}", n, broker_url="mqtt://h:1", protocol="auto",
                   commit_interval=1.0, port=1, advertise=None, gateway=keys, bootstrap=DHT)
    enroll_boards(tmp_path, 2)
    enroll_boards(tmp_path, 2)  # a second run enrols the same boards again: no change
    store = Store(tmp_path / "gateway" / "data" / "gw.db")
    try:
        roster = Roster(store.conn)
        for n in (1, 2):
            member = roster.by_name(f"board-{n}")
            seed = load_seed(tmp_path / f"edge-{n}" / "device.seed")
            assert member is not None and member.status == "enrolled"
            assert member.record_key == bytes(record_key_pair(seed).public_key)
    finally:
        store.close()

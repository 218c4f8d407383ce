"""Configs written by code (the demo's) go through the config modules: render -> TOML -> load
gives back the same config, for the edge and the gateway, and the TOML writer under them
writes text `tomllib` reads back."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cairn.errors import LocalError
from cairn.toml_writer import dumps
from cairn_edge import config as edge
from cairn_gateway import config as gateway

KEY = "ab" * 32
OTHER = "cd" * 32

EDGE = f'''
data_dir = "/var/lib/cairn"
seed_file = "keys/device.seed"
[mqtt]
broker = "mqtts://edge:p%40ss\\"word@broker.lan:8883"
client_id = "edge \\u00e9 1"
username = "edge"
password = "s3cret\\"\\\\"
tls_ca = "ca.pem"
protocol = "3.1.1"
[logs]
commit_interval = 0.25
commit_samples = 500
sync = "full"
checkpoint_interval = 0
checkpoint_kib = 1024
max_disk_mb = 1.5
[validation]
time_floor = 1600000000
max_future = 30
units = ["furlong", "ppm"]
[replication]
host = "::"
port = 0
advertise = "fe80::1:49800"
gateways = ["{KEY}", "{OTHER}"]
[dht]
bootstrap = ["10.0.0.1:49737", "dht.lan:1"]
persistent = true
publish_interval = 2.5
fleet = "factory-2"
public = true
watermarks = ["{OTHER}"]
watermark_interval = 60
[health]
metrics = "127.0.0.1:9108"
[[topic]]
filter = "factory/+/line/+/senml"
format = "senml"
device_level = 2
[[topic]]
filter = "tele/board-1/SENSOR"
format = "tasmota"
device = "board-1"
[[range]]
pattern = "*/temperature"
min = -40
max = 85.5
[[range]]
pattern = "*/co2"
min = 0
'''

GATEWAY = f'''
data_dir = "store"
key_file = "/etc/cairn/gateway.seed"
[dht]
bootstrap = ["10.0.0.1:49737"]
fleet = "factory-2"
[collect]
devices = ["{KEY}"]
interval = 0.5
concurrency = 16
backoff_initial = 2
backoff_max = 600
ingest_worker = false
device_budget = 3.5
max_samples_per_round = 5000
past_window = 86400
future_window = 0
[api]
listen = "0.0.0.0:0"
read_token_file = "api-read.token"
admin_token_file = "/etc/cairn/admin.token"
max_connections = 10
request_timeout = 2.5
max_header_bytes = 2048
max_body_bytes = 0
[store]
retention_days = 30.5
[[policy]]
pattern = "*/vibration"
mode = "on_demand"
[[policy]]
pattern = "board-1/*"
mode = "backfill"
window = 3600
priority = -3
'''


@pytest.mark.parametrize("text", ["", EDGE, edge.TEMPLATE], ids=["defaults", "every-key",
                                                                  "template"])
def test_an_edge_config_survives_render_and_load(text: str, tmp_path: Path) -> None:
    cfg = edge.parse_config(text, tmp_path)
    rendered = edge.render_config(cfg, tmp_path)
    (tmp_path / "edge.toml").write_text(rendered)
    assert edge.load_config(tmp_path / "edge.toml") == cfg, rendered
    assert edge.parse_config(rendered, tmp_path).password == cfg.password


def test_an_edge_config_elsewhere_keeps_its_absolute_paths(tmp_path: Path) -> None:
    cfg = edge.parse_config(EDGE, tmp_path / "a")
    assert edge.parse_config(edge.render_config(cfg, tmp_path / "b"), tmp_path / "b") == cfg


def test_board_logins_are_not_rendered(tmp_path: Path) -> None:
    cfg = edge.EdgeConfig(data_dir=tmp_path, seed_file=tmp_path / "s", broker="embedded",
                          boards=(("board-1", "$7$..."),))
    with pytest.raises(LocalError, match="boards_file"):
        edge.render_config(cfg, tmp_path)


@pytest.mark.parametrize("text", ["", GATEWAY, gateway.TEMPLATE],
                         ids=["defaults", "every-key", "template"])
def test_a_gateway_config_survives_render_and_load(text: str, tmp_path: Path) -> None:
    cfg = gateway.parse_config(text, tmp_path)
    rendered = gateway.render_config(cfg, tmp_path)
    (tmp_path / "gateway.toml").write_text(rendered)
    assert gateway.load_config(tmp_path / "gateway.toml") == cfg, rendered


def test_the_writer_leaves_out_none_and_empty_tables() -> None:
    text = dumps({"a": 1, "b": None, "t": {"x": None}, "u": {"y": [1.5, "z"]},
                  "p": [{"k": True}, {"k": False}]})
    assert text == 'a = 1\n\n[u]\ny = [1.5, "z"]\n\n[[p]]\nk = true\n\n[[p]]\nk = false\n'


scalars = (st.text() | st.booleans() | st.integers(-(2**63), 2**63 - 1)
           | st.floats(allow_nan=False))


@given(st.dictionaries(st.text(min_size=1), scalars | st.lists(scalars), max_size=4),
       st.dictionaries(st.text(min_size=1), scalars, min_size=1, max_size=3))
def test_whatever_the_writer_writes_tomllib_reads_back(top: dict[str, object],
                                                        table: dict[str, object]) -> None:
    doc = {**top, "table": table}
    assert tomllib.loads(dumps(doc)) == doc

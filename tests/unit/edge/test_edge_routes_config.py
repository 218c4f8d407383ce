"""The [[topic]] route keys of edge.toml: the shapes' own keys, each refused by name when wrong
or misplaced, and rendered back equal."""

from __future__ import annotations

from pathlib import Path

import pytest

from cairn_edge.adapters import Field, Route
from cairn_edge.config import ConfigError, parse_config, render_config

GOOD = '''
[[topic]]
filter = "tele/+/SENSOR"
format = "tasmota"
timezone = "Europe/Berlin"
[[topic]]
filter = "airrohr/+/data"
format = "json"
time_path = "ts"
[[topic.field]]
path = "sensordatavalues[0].value"
quantity = "pm10"
unit = "ug/m3"
type = "number"
[[topic.field]]
path = "software_version"
quantity = "firmware"
[[topic]]
filter = "zigbee/#"
format = "zigbee2mqtt"
[[topic]]
filter = "homeassistant/#"
format = "discovery"
'''


def test_route_keys_parse_and_render_back(tmp_path: Path) -> None:
    cfg = parse_config(GOOD, tmp_path)
    assert cfg.routes == (
        Route("tele/+/SENSOR", "tasmota", timezone="Europe/Berlin"),
        Route("airrohr/+/data", "json", time_path="ts", fields=(
            Field("sensordatavalues[0].value", "pm10", "ug/m3", "number"),
            Field("software_version", "firmware"))),
        Route("zigbee/#", "zigbee2mqtt"),
        Route("homeassistant/#", "discovery"))
    assert parse_config(render_config(cfg, tmp_path), tmp_path) == cfg


@pytest.mark.parametrize(("text", "message"), [
    ('[[topic]]\nfilter = "a/+"\nformat = "json"\n', "needs \\[\\[topic.field\\]\\]"),
    ('[[topic]]\nfilter = "a/+"\nformat = "tasmota"\ntimezone = "Mars/Base"\n',
     "timezone: unknown time zone 'Mars/Base'"),
    ('[[topic]]\nfilter = "a/+"\nformat = "senml"\ntimezone = "UTC"\n',
     "timezone is for the tasmota format"),
    ('[[topic]]\nfilter = "a/+"\nformat = "senml"\ntime_path = "t"\n',
     "field and time_path are for the json format"),
    ('[[topic]]\nfilter = "a/+"\nformat = "json"\n[[topic.field]]\npath = "a..b"\n'
     'quantity = "x"\n', "path: path 'a..b' is not keys"),
    ('[[topic]]\nfilter = "a/+"\nformat = "json"\n[[topic.field]]\npath = "a"\n'
     'quantity = "Soil Moisture"\n', "is not a quantity name"),
    ('[[topic]]\nfilter = "a/+"\nformat = "json"\n[[topic.field]]\npath = "a"\n'
     'quantity = "x"\ntype = "float"\n', "type: 'float' is not number, boolean or string"),
    ('[[topic]]\nfilter = "a/+"\nformat = "json"\n[[topic.field]]\npath = "a"\n'
     'quantity = "x"\ncolour = 1\n', "unknown key\\(s\\) colour"),
    ('[[topic]]\nfilter = "a/+"\nformat = "json"\n[[topic.field]]\npath = "a"\nquantity = "x"\n'
     '[[topic.field]]\npath = "b"\nquantity = "x"\n', "'x' is named twice"),
    ('[[topic]]\nfilter = "a/b"\nformat = "shelly"\n', "has no '\\+' number 1"),
    ('[[topic]]\nfilter = "a/+"\nformat = "modbus"\n', "one of senml, tasmota"),
])
def test_bad_route_keys_are_refused_by_name(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config(text, tmp_path)

"""One test for each miss issue 20 lists (what real firmware sends that the edge used to drop,
misfile or refuse), from the shapes in the firmware's documentation."""

from __future__ import annotations

import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from cairn_edge.adapters import (
    DEFAULT_ROUTES,
    Decoded,
    Decoder,
    Reading,
    Rejected,
    Route,
    decode,
)

T0 = 1_764_000_000.0


def dec(topic: str, payload: object, routes: list[Route] | None = None,
        decoder: Decoder | None = None) -> Decoded:
    raw = payload if isinstance(payload, bytes) else (
        payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
    got = (decoder.decode(topic, raw, None, T0) if decoder is not None else
           decode([*(routes or []), *DEFAULT_ROUTES], topic, raw, None, T0))
    assert got is not None
    return got


def streams(got: list[Reading]) -> dict[str, float | str | bool]:
    return {r.quantity: r.value for r in got}


# -- SenML --------------------------------------------------------------------------------------


def test_a_senml_pack_with_a_data_value_keeps_its_numbers_and_strings() -> None:
    pack = [{"bn": "b/", "bt": T0, "n": "t", "u": "Cel", "v": 21.5},
            {"n": "blob", "vd": "aGkgCg"}, {"n": "label", "vs": "hall"}, {"n": "open", "vb": True}]
    got = dec("senml/b/x", pack)
    assert streams(got) == {"t": 21.5, "blob": "aGkgCg", "label": "hall", "open": True}


def test_a_broken_senml_record_is_refused_alone() -> None:
    pack = [{"bn": "b/", "bt": T0, "n": "t", "v": 1}, {"n": "bad", "v": "x"},
            {"n": "nan", "vb": 3}, {"n": "two", "v": 1, "vs": "a"}, {"n": "u", "v": 2}]
    got = dec("senml/b/x", pack)
    assert streams(got) == {"t": 1.0, "u": 2.0}
    assert got.reasons() == {"wrong-type": 2, "bad-senml": 1}


def test_senml_sums_and_base_sum_are_readings_of_their_own() -> None:
    pack = [{"bn": "b/", "bt": T0, "bs": 100, "n": "energy", "u": "Wh", "v": 5, "s": 20},
            {"n": "water", "u": "l", "s": 3}]
    got = dec("senml/b/x", pack)
    assert [(r.quantity, r.unit, r.value) for r in got] == [
        ("energy", "Wh", 5.0), ("energy-sum", "Wh", 120.0), ("water-sum", "l", 103.0)]


def test_a_broken_base_field_refuses_the_rest_of_the_pack_not_what_came_before() -> None:
    pack = [{"bn": "b/", "bt": T0, "n": "t", "v": 1}, {"bt": "soon", "n": "t", "v": 2},
            {"n": "t", "v": 3}]
    got = dec("senml/b/x", pack)
    assert [r.value for r in got] == [1.0] and got.reasons() == {"wrong-type": 2}


def test_a_must_understand_field_refuses_the_whole_pack() -> None:
    with pytest.raises(Rejected, match="must-understand"):
        dec("senml/b/x", [{"bn": "b/t", "v": 1, "new_": 2}])


# -- Tasmota ------------------------------------------------------------------------------------


def test_tasmota_keys_of_the_docs_are_read_and_filed_apart() -> None:
    doc = {"Time": "2024-05-01T10:00:00",
           "BME680": {"Temperature": 21.0, "Humidity": 40.0, "DewPoint": 7.0,
                      "Pressure": 1000.0, "Gas": 120.5},
           "SGP30": {"eCO2": 450, "TVOC": 12},
           "MHZ19B": {"CarbonDioxide": 600},
           "PMS5003": {"PM1": 3, "PM2.5": 5, "PM10": 7},
           "ENERGY": {"Total": 1.5, "Yesterday": 0.25, "Today": 0.5, "Factor": 0.9,
                      "ApparentPower": 110, "ReactivePower": 20, "Power": 100},
           "TempUnit": "C", "PressureUnit": "hPa"}
    got = {r.quantity: (r.unit, r.value) for r in dec("tele/b/SENSOR", doc)}
    assert got == {
        "temperature-bme680": ("Cel", 21.0), "humidity-bme680": ("%RH", 40.0),
        "dewpoint-bme680": ("Cel", 7.0), "pressure-bme680": ("Pa", 100_000.0),
        "gas-resistance-bme680": ("Ohm", 120_500.0),
        "eco2-sgp30": ("ppm", 450.0), "tvoc-sgp30": (None, 12.0),
        "co2-mhz19b": ("ppm", 600.0),
        "pm1-pms5003": ("ug/m3", 3.0), "pm2-5-pms5003": ("ug/m3", 5.0),
        "pm10-pms5003": ("ug/m3", 7.0),
        "energy": ("Wh", 1500.0), "energy-yesterday": ("Wh", 250.0),
        "energy-today": ("Wh", 500.0), "power-factor": ("/", 0.9),
        "apparent-power": ("VA", 110.0), "reactive-power": ("var", 20.0), "power": ("W", 100.0),
    }


def test_a_tasmota_message_of_keys_without_a_mapping_is_still_read() -> None:
    got = dec("tele/b/SENSOR", {"Time": "2024-05-01T10:00:00", "Switch1": "ON",
                                "RG-15": {"Active": 0.01, "Event": 0.13}})
    assert streams(got) == {"switch1": True, "active-rg-15": 0.01, "event-rg-15": 0.13}


def test_ble_sensors_named_by_mac_suffix_are_one_stream_each() -> None:
    doc = {"Time": "2024-05-01T10:00:00",
           "ATCa1b2c3": {"Temperature": 21.0, "Humidity": 40.0, "Battery": 90},
           "ATCd4e5f6": {"Temperature": 21.0, "Humidity": 40.0, "Battery": 90},
           "DS18B20-1": {"Id": "01144A0CB2AA", "Temperature": 21.0},
           "DS18B20-2": {"Id": "01144A0CB2AB", "Temperature": 21.0}}
    got = [r.quantity for r in dec("tele/b/SENSOR", doc)]
    assert got == ["temperature-atca1b2c3", "humidity-atca1b2c3", "battery-atca1b2c3",
                   "temperature-atcd4e5f6", "humidity-atcd4e5f6", "battery-atcd4e5f6",
                   "temperature-ds18b20-1", "temperature-ds18b20-2"]  # equal values, 4 streams


def test_tasmota_epoch_is_utc_and_local_time_takes_the_configured_zone() -> None:
    doc = {"Time": "2024-07-01T12:00:00", "Epoch": 1719828000, "SR04": {"Distance": 10}}
    assert [r.time for r in dec("tele/b/SENSOR", doc)] == [1719828000.0]
    local = {"Time": "2024-07-01T12:00:00", "SR04": {"Distance": 10}}
    berlin = Route("tele/+/SENSOR", "tasmota", timezone="Europe/Berlin")
    want = datetime(2024, 7, 1, 12, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    assert [r.time for r in dec("tele/b/SENSOR", local, [berlin])] == [want]  # 10:00 UTC
    assert [r.time for r in dec("tele/b/SENSOR", local)] == [want + 7200]  # no zone: UTC
    stated = {"Time": "2024-07-01T12:00:00+02:00", "SR04": {"Distance": 10}}
    assert [r.time for r in dec("tele/b/SENSOR", stated, [berlin])] == [want]


def test_per_phase_arrays_are_one_stream_per_phase_and_a_bad_phase_is_refused_alone() -> None:
    doc = {"ENERGY": {"Voltage": [230, None, 231], "Current": [1, 2, 3, 4] * 10}}
    got = dec("tele/b/SENSOR", doc)
    assert streams(got) == {"voltage-l1": 230.0, "voltage-l3": 231.0}
    assert got.reasons() == {"no-value": 1, "too-large": 1}


# -- ESPHome, Homie: states ---------------------------------------------------------------------


@pytest.mark.parametrize(("topic", "payload", "value"), [
    ("b/binary_sensor/door/state", "ON", True),
    ("b/binary_sensor/door/state", "OFF", False),
    ("b/switch/relay/state", "ON", True),
    ("b/text_sensor/wifi_ssid/state", "Home Net", "Home Net"),
    ("b/select/mode/state", "eco", "eco"),
    ("b/number/setpoint/state", "21.5", 21.5),
    ("homie/5/b/light/power", "true", True),
    ("homie/5/b/light/power", "false", False),
    ("homie/5/b/light/colour", "255,0,0", "255,0,0"),
])
def test_on_off_true_false_and_text_states_are_readings(topic: str, payload: str,
                                                        value: object) -> None:
    got = dec(topic, payload)
    assert [r.value for r in got] == [value] and type(got[0].value) is type(value)


def test_an_esphome_sensor_state_that_is_not_a_number_is_refused() -> None:
    with pytest.raises(Rejected, match="wrong-type"):
        dec("b/sensor/temperature/state", "ON")


def test_discovery_gives_esphome_states_their_units() -> None:
    d = Decoder(DEFAULT_ROUTES)
    assert decode(DEFAULT_ROUTES, "homeassistant/sensor/b/power/config",
                  b'{"stat_t":"b/sensor/power/state","unit_of_meas":"kW"}', None, T0) is None
    d.decode("homeassistant/sensor/b/soil/config",
             json.dumps({"~": "b/sensor/soil", "stat_t": "~/state", "unit_of_meas": "%",
                         "dev_cla": "moisture"}).encode(), None, T0)
    d.decode("homeassistant/sensor/b/pm25/config",
             json.dumps({"stat_t": "b/sensor/pm25/state", "unit_of_meas": "µg/m³"}).encode(),
             None, T0)
    assert [r.unit for r in dec("b/sensor/soil/state", "41", decoder=d)] == ["%RH"]
    assert [r.unit for r in dec("b/sensor/pm25/state", "9", decoder=d)] == ["ug/m3"]
    assert [r.unit for r in dec("b/sensor/temperature/state", "20", decoder=d)] == ["Cel"]
    assert [r.unit for r in dec("b/sensor/flow/state", "20", decoder=d)] == [None]
    d.decode("homeassistant/sensor/b/soil/config", b"", None, T0)  # removed
    assert [r.unit for r in dec("b/sensor/soil/state", "41", decoder=d)] == [None]


def test_a_discovery_document_cannot_relabel_another_devices_topic() -> None:
    d = Decoder(DEFAULT_ROUTES)
    with pytest.raises(Rejected, match="another device"):
        d.decode("homeassistant/sensor/evil/t/config",
                 b'{"stat_t":"b/sensor/temperature/state","unit_of_meas":"W"}', None, T0)
    assert [r.unit for r in dec("b/sensor/temperature/state", "20", decoder=d)] == ["Cel"]


def test_homie_keeps_the_node_reads_attributes_and_never_stores_them() -> None:
    d = Decoder([Route("homie/+/+/+/+", "homie"), *DEFAULT_ROUTES])  # Homie 3/4 attributes
    for topic, payload in [("homie/lamp/$stats/interval", "60"), ("homie/lamp/$state", "ready"),
                           ("homie/lamp/light1/power/$datatype", "boolean"),
                           ("homie/lamp/light1/level/$unit", "%"),
                           ("homie/lamp/light1/level/$datatype", "integer"),
                           ("homie/lamp/light2/level/$datatype", "string"),
                           ("homie/lamp/light1/level/set", "50")]:
        assert d.decode(topic, payload.encode(), None, T0) is None, topic
    got = [*dec("homie/lamp/light1/power", "true", decoder=d),
           *dec("homie/lamp/light1/level", "40", decoder=d),
           *dec("homie/lamp/light2/level", "40", decoder=d)]
    assert [(r.quantity, r.unit, r.value) for r in got] == [
        ("light1-power", None, True), ("light1-level", "%", 40.0), ("light2-level", None, "40")]
    with pytest.raises(Rejected, match="wrong-type"):
        dec("homie/lamp/light1/power", "maybe", decoder=d)  # a boolean property


def test_homie5_description_gives_datatype_and_unit() -> None:
    d = Decoder(DEFAULT_ROUTES)
    desc = {"homie": "5.0", "version": 1, "name": "Thermostat", "nodes": {
        "living": {"properties": {"temperature": {"datatype": "float", "unit": "°C"},
                                  "mode": {"datatype": "enum", "format": "off,heat"}}}}}
    assert d.decode("homie/5/th/$description", json.dumps(desc).encode(), None, T0) is None
    got = [*dec("homie/5/th/living/temperature", "20.5", decoder=d),
           *dec("homie/5/th/living/mode", "heat", decoder=d)]
    assert [(r.quantity, r.unit, r.value) for r in got] == [
        ("living-temperature", "Cel", 20.5), ("living-mode", None, "heat")]


# -- Zigbee2MQTT, Shelly, generic ---------------------------------------------------------------


def test_zigbee2mqtt_state_with_last_seen_and_null() -> None:
    got = dec("zigbee2mqtt/0x00158d0003030af1",
              {"temperature": 21.4, "contact": False, "battery": 97, "action": None,
               "last_seen": "2024-05-01T10:00:00Z", "update": {"state": "idle"}})
    t = datetime.fromisoformat("2024-05-01T10:00:00+00:00").timestamp()
    assert [(r.quantity, r.unit, r.time, r.value) for r in got] == [
        ("temperature", "Cel", t, 21.4), ("contact", None, t, False), ("battery", "%EL", t, 97.0)]
    assert got.reasons() == {"no-value": 1}


def test_shelly_em_phases_and_temperature_addon() -> None:
    note = {"method": "NotifyStatus", "params": {
        "ts": T0, "em:0": {"id": 0, "a_voltage": 230.1, "a_act_power": 50.5, "b_current": 1.5,
                           "total_act_power": 120.0},
        "temperature:100": {"id": 100, "tC": 19.5, "tF": 67.1},
        "humidity:100": {"id": 100, "rh": 55.0}}}
    got = dec("shellypro3em-1/events/rpc", note)
    assert [(r.quantity, r.unit) for r in got] == [
        ("voltage-a-em-0", "V"), ("act-power-a-em-0", "W"), ("current-b-em-0", "A"),
        ("power-em-0", "W"), ("temperature-100", "Cel"), ("humidity-100", "%RH")]
    assert decode(DEFAULT_ROUTES, "shellypro3em-1/events/rpc",
                  b'{"method":"NotifyEvent","params":{"ts":1,"events":[]}}', None, T0) is None

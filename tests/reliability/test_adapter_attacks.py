"""Hostile devices against the payload adapters: what one device sends never relabels, hides
or drops another's readings, nor the readable readings beside a bad item; descriptions are
bounded. One scorecard line each."""

from __future__ import annotations

import json
import random

import pytest

from cairn_edge.adapters import DEFAULT_ROUTES, Decoder, Rejected, Route
from cairn_edge.adapters.discovery import MAX_ENTITIES
from cairn_edge.adapters.homie import MAX_PROPERTIES
from tests.scorecard import record, scale

T0 = 1_764_000_000.0


def test_a_device_cannot_relabel_another_devices_units_by_discovery() -> None:
    runs = scale(500, 20_000)
    rng = random.Random(20)
    d = Decoder(DEFAULT_ROUTES)
    d.decode("homeassistant/sensor/b/t/config",
             b'{"stat_t":"b/sensor/temperature/state","unit_of_meas":"\xc2\xb0C"}', None, T0)
    relabelled = 0
    reasons: set[str] = set()
    for k in range(runs):
        node = f"evil-{rng.randrange(1000)}"
        doc = {"stat_t": "b/sensor/temperature/state", "unit_of_meas": rng.choice(["W", "%"]),
               "~": rng.choice(["b", "b/sensor", ""])}
        if k % 2:
            doc = {"~": "b/sensor/temperature", "stat_t": "~/state", "unit_of_meas": "W"}
        try:
            d.decode(f"homeassistant/sensor/{node}/t{k}/config", json.dumps(doc).encode(),
                     None, T0)
        except Rejected as exc:
            reasons.add(exc.reason)
        got = d.decode("b/sensor/temperature/state", b"21.5", None, T0)
        assert got is not None
        relabelled += got[0].unit != "Cel"
    record("mqtt", "discovery documents relabelling another device's state topic", runs,
           relabelled, "readings relabelled")
    assert relabelled == 0 and reasons == {"bad-discovery"}


def test_descriptions_are_bounded_whatever_a_device_announces() -> None:
    d = Decoder([Route("homie/+/+/+/+", "homie"), *DEFAULT_ROUTES])
    tries = MAX_ENTITIES + 500
    refused = 0
    reasons: set[str] = set()
    for k in range(tries):
        try:
            d.decode(f"homeassistant/sensor/n{k}/x/config",
                     json.dumps({"stat_t": f"n{k}/sensor/x/state", "unit_of_meas": "W"}).encode(),
                     None, T0)
        except Rejected as exc:
            reasons.add(exc.reason)
            refused += 1
    for k in range(MAX_PROPERTIES + 500):
        try:
            d.decode(f"homie/dev/node/p{k}/$unit", b"W", None, T0)
        except Rejected as exc:
            reasons.add(exc.reason)
            refused += 1
    over = max(0, len(d.discovery.entities) - MAX_ENTITIES) + max(
        0, len(d.homie.properties) - MAX_PROPERTIES)
    record("mqtt", "discovery and Homie attribute floods (10,500 entities each)", 2 * tries,
           over, "entries beyond the bound", detail=f"{refused} refused as too-large")
    assert over == 0 and refused == 1000 and reasons == {"too-large"}
    # the ones kept still work
    got = d.decode("n1/sensor/x/state", b"5", None, T0)
    assert got is not None and got[0].unit == "W"


@pytest.mark.parametrize("family", ["tasmota", "zigbee2mqtt", "senml", "shelly"])
def test_a_bad_item_never_drops_the_readable_items_beside_it(family: str) -> None:
    runs = scale(300, 10_000)
    rng = random.Random(f"partial-{family}")
    bad_values: list[object] = [None, "x", [], {"a": [1]}, float("nan"), 1e400, True]
    lost = 0
    for _ in range(runs):
        good = {f"k{j}": round(rng.uniform(-50, 50), 3) for j in range(rng.randrange(1, 8))}
        bad = {f"b{j}": rng.choice(bad_values) for j in range(rng.randrange(1, 5))}
        items: list[tuple[str, object]] = [*good.items(), *bad.items()]
        rng.shuffle(items)
        doc: object
        if family == "tasmota":
            doc = {"Time": "2024-05-01T10:00:00", "X": dict(items)}
            topic, want = "tele/b/SENSOR", {f"{k}-x": v for k, v in good.items()}
        elif family == "zigbee2mqtt":
            doc = dict(items)
            topic, want = "zigbee2mqtt/b", dict(good)
        elif family == "shelly":
            doc = {"method": "NotifyStatus", "params": {"ts": T0, "x:0": dict(items)}}
            topic, want = "b/events/rpc", {f"{k}-x-0": v for k, v in good.items()}
        else:
            doc = [{"bn": "b/", "bt": T0}] + [{"n": k, "v": v} for k, v in items]
            topic, want = "senml/b/x", dict(good)
        text = json.dumps(doc, allow_nan=True).replace("NaN", "1e400").replace(
            "Infinity", "1e400")
        got = Decoder(DEFAULT_ROUTES).decode(topic, text.encode(), None, T0)
        assert got is not None
        kept = {r.quantity: r.value for r in got if not isinstance(r.value, bool | str)}
        lost += sum(1 for k, v in want.items() if kept.get(k) != pytest.approx(v))
    record("mqtt", f"{family}: readable items beside nulls, text, arrays, NaN, 1e400", runs,
           lost, "readable readings lost")
    assert lost == 0


def test_hostile_shapes_are_refused_with_a_reason_not_a_crash() -> None:
    cases = [
        ("tele/b/SENSOR", b'{"ENERGY":{"Voltage":' + b"[1," * 5000 + b"1" + b"]" * 5000 + b"}}"),
        ("zigbee2mqtt/b", b"[" * 100_000),
        ("b/events/rpc", b'{"method":"NotifyStatus","params":[]}'),
        ("homie/5/b/$description", b'{"nodes":' + b'{"a":' * 1000 + b"1" + b"}" * 1001),
        ("homeassistant/sensor/b/x/config", b'{"stat_t":' + b'"a' * 40_000 + b'"}'),
        ("b/light/l/state", b'{"state":' * 2000 + b"1" + b"}" * 2000),
        ("senml/b/x", json.dumps([{"bn": "b/", "n": "t", "vd": "!" * 2000}]).encode()),
    ]
    crashes = 0
    for topic, payload in cases:
        try:
            Decoder(DEFAULT_ROUTES).decode(topic, payload, None, T0)
        except Rejected:
            pass
        except Exception:  # counted: anything else is a finding
            crashes += 1
    record("mqtt", "deep nesting, huge arrays, wrong shapes in every family", len(cases),
           crashes, "crashes")
    assert crashes == 0

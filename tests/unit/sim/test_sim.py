"""firmware-sim without a broker: models, payload shapes (read back with independent decoders),
scenarios and their bad input, and the fleet's schedule and faults."""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import cbor2
import pytest
import senml  # type: ignore[import-untyped]

from cairn_sim.fleet import Control, Fleet, Outgoing
from cairn_sim.models import DAY, KINDS, model, noise
from cairn_sim.payloads import FORMATS, Sensor, birth, encode
from cairn_sim.scenario import Scenario, ScenarioError

T0 = 1_764_000_000.0  # 2025-11-24T16:00:00Z

#: RFC 8428 table 4, written out here rather than imported from the code under test.
RFC8428_LABELS = {-2: "bn", -3: "bt", -4: "bu", -5: "bv", -6: "bs", -1: "bver", 0: "n", 1: "u",
                  2: "v", 3: "vs", 4: "vb", 5: "s", 6: "t", 7: "ut", 8: "vd"}  # fmt: skip


def senml_resolve(records: list[dict[str, Any]]) -> list[tuple[str, str | None, float, Any]]:
    """(name, unit, time, value) of each record, as the `senml` library resolves a pack."""
    doc = senml.SenMLDocument.from_json(records)
    out = []
    for m in doc.measurements:
        r = m.to_absolute(doc.base)
        out.append((r.name, r.unit, r.time, r.value))
    return out


def data(items: list[Outgoing | Control]) -> list[Outgoing]:
    return [m for m in items if isinstance(m, Outgoing)]


# -- models ------------------------------------------------------------------------------------


def test_models_are_pure_functions_of_seed_and_time() -> None:
    for kind, m in KINDS.items():
        a = [m.read(1, f"d/{kind}", T0 + k * 0.37) for k in range(50)]
        b = [m.read(1, f"d/{kind}", T0 + k * 0.37) for k in range(50)]
        c = [m.read(2, f"d/{kind}", T0 + k * 0.37) for k in range(50)]
        assert a == b, kind
        assert a != c, kind  # another seed: another sensor


def test_models_stay_in_their_physical_ranges_for_a_month() -> None:
    for kind, m in KINDS.items():
        for k in range(0, 30 * 24 * 60, 7):  # every 7 minutes for 30 days
            r = m.read(3, f"d/{kind}", T0 + 60.0 * k, boot=T0 - 86400.0)
            for v, (lo, hi) in zip(r.values, m.ranges, strict=True):
                assert lo <= v <= hi and math.isfinite(v), (kind, k, v)


def test_temperature_follows_the_day() -> None:
    m = model("temperature")
    midnight = T0 - T0 % DAY
    day = [m.read(4, "d/t", midnight + h * 3600.0).values[0] for h in range(24)]
    assert max(day) - min(day) > 8  # a 5 degC amplitude each way
    assert day.index(max(day)) in range(12, 19)  # warmest in the afternoon (UTC)


def test_energy_counter_is_the_integral_of_power_and_restarts_at_boot() -> None:
    m = model("power")
    boot = T0
    samples = [m.read(5, "d/p", boot + s, boot).values for s in range(0, 3600 * 6, 60)]
    energies = [e for _, e in samples]
    assert energies[0] == 0.0
    assert all(b >= a for a, b in itertools.pairwise(energies))
    # trapezoid of the 60 s power samples against the counter: within 1 %
    trapezoid = sum((a[0] + b[0]) / 2 * 60 / 3600 for a, b in itertools.pairwise(samples))
    assert energies[-1] == pytest.approx(trapezoid, rel=0.01)
    after_reboot = m.read(5, "d/p", boot + 7200, boot + 7100).values[1]
    assert after_reboot < energies[10]


def test_noise_is_bounded_and_centred() -> None:
    xs = [noise(9, "k", i) for i in range(20_000)]
    assert all(-1 <= x < 1 for x in xs)
    assert abs(sum(xs) / len(xs)) < 0.02


def test_unknown_kind_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown sensor kind 'lux'.*temperature"):
        model("lux")


# -- payload shapes, read back by independent decoders ----------------------------------------


def fleet_messages(fmt: str, kinds: list[str] | None = None, seconds: float = 3.0,
                   **kw: Any) -> list[Outgoing]:
    f = Fleet(devices=2, sensors=6, formats=[fmt], seed=11, start_time=T0, kinds=kinds, **kw)
    return data(f.pop_due(seconds))


def test_senml_json_reads_back_with_the_senml_library() -> None:
    msgs = fleet_messages("senml")
    assert msgs and all(m.publish.content_type == "application/senml+json" for m in msgs)
    for m in msgs:
        device, sensor = m.publish.topic.split("/")[1:3]
        resolved = senml_resolve(json.loads(m.publish.payload))
        assert [(n, u, t, v) for n, u, t, v in resolved] == [
            (s.name, s.unit, s.time, s.value) for s in m.samples
        ]
        assert all(n.startswith(f"{device}/") for n, *_ in resolved)
        kind = sensor.split("-")[0]
        if len(KINDS[kind].fields) == 1:  # the value is the model's at the stated time
            for _, _, t, v in resolved:
                assert v == KINDS[kind].read(11, f"{device}/{sensor}", t).values[0]
        for _, _, t, _ in resolved:
            assert T0 <= t < T0 + 3.0


def test_senml_cbor_reads_back_with_cbor2_and_the_rfc_labels() -> None:
    msgs = fleet_messages("senml-cbor")
    assert msgs and all(m.publish.content_type == "application/senml+cbor" for m in msgs)
    for m in msgs:
        raw = cbor2.loads(m.publish.payload)
        records = [{RFC8428_LABELS[k]: v for k, v in rec.items()} for rec in raw]
        resolved = senml_resolve(records)
        assert [(n, u, t, v) for n, u, t, v in resolved] == [
            (s.name, s.unit, s.time, s.value) for s in m.samples
        ]


def test_the_100_hz_sensor_sends_runs_with_relative_times() -> None:
    msgs = fleet_messages("senml", kinds=["vibration"], seconds=1.0)
    per_sensor = [m for m in msgs if m.publish.topic == "senml/board-1/vibration-1"]
    assert len(per_sensor) == 10  # batches of 10 samples, 10 messages a second
    records = json.loads(per_sensor[0].publish.payload)
    assert len(records) == 10 and "bt" in records[0] and records[1]["t"] == 0.01
    times = [t for _, _, t, _ in senml_resolve(records)]
    assert times == pytest.approx([records[0]["bt"] + k / 100 for k in range(10)])
    everything = sorted(s.time for m in per_sensor for s in m.samples)
    assert len(everything) == 100 and len(set(everything)) == 100


def test_tasmota_is_one_json_document_per_device_and_period() -> None:
    msgs = fleet_messages("tasmota")
    assert {m.publish.topic for m in msgs} == {"tele/board-1/SENSOR", "tele/board-2/SENSOR"}
    for m in msgs:
        doc = json.loads(m.publish.payload)
        assert doc["TempUnit"] == "C" and doc["PressureUnit"] == "hPa"
        assert set(doc["BME280"]) == {"Temperature", "Humidity", "Pressure"}
        assert 870 < doc["BME280"]["Pressure"] < 1085  # hPa
        assert {"Power", "Total"} <= set(doc["ENERGY"])
        assert doc["Time"].startswith("2025-11-24T16:00:0")
        by_name = {s.name.split("/", 1)[1]: s.value for s in m.samples}
        assert doc["BME280"]["Temperature"] == by_name["temperature-bme280"]
        assert doc["ENERGY"]["Total"] == pytest.approx(by_name["energy"] / 1000)


@pytest.mark.parametrize("fmt", ["esphome", "homie"])
def test_text_formats_carry_one_number_per_topic(fmt: str) -> None:
    msgs = fleet_messages(fmt)
    for m in msgs:
        value = float(m.publish.payload.decode())
        assert [value] == [s.value for s in m.samples]
        if fmt == "homie":
            assert m.publish.topic.startswith("homie/5/board-") and m.publish.retain
        else:
            assert "/sensor/" in m.publish.topic and m.publish.topic.endswith("/state")


def test_births_describe_the_device_and_home_assistant_can_discover_it() -> None:
    f = Fleet(devices=1, sensors=3, formats=["homie"], seed=1, start_time=T0,
              ha_discovery=True)
    births = {m.publish.topic: m.publish.payload for m in f.births("board-1")}
    assert births["homie/5/board-1/$state"] == b"ready"
    desc = json.loads(births["homie/5/board-1/$description"])
    assert desc["homie"] == "5.0" and set(desc["nodes"]) == {"temperature", "humidity",
                                                             "pressure"}
    configs = [json.loads(v) for k, v in births.items() if k.startswith("homeassistant/")]
    assert len(configs) == 3
    assert {c["device_class"] for c in configs} == {"temperature", "humidity", "pressure"}
    assert all(c["state_topic"].startswith("homie/5/board-1/") for c in configs)


def test_unknown_format_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown format 'xml'"):
        Fleet(formats=["xml"], start_time=T0)
    with pytest.raises(ValueError, match="unknown payload format"):
        encode("xml", [Sensor("d", "t", model("temperature"))], [[]])


# -- scenarios: bad input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[fault]]\nkind = 'meteor'", "'kind' must be one of"),
        ("[[fault]]\nkind = 'spike'\ncolour = 'red'",
         r"fault 1 \(spike\): unknown key\(s\) colour"),
        ("[[fault]]\nkind = 'spike'\nprobability = 2", r"'probability' = 2 is outside"),
        ("[[fault]]\nkind = 'spike'\nprobability = 'often'", "'probability' must be a number"),
        ("[[fault]]\nkind = 'dropout'\nstart = -1", "'start' = -1 is outside"),
        ("[[fault]]\nkind = 'dropout'\ndevices = 'board-1'", "'devices' must be a list"),
        ("[[fault]]\nkind = 'dropout'\ndevices = ['a']\nfraction = 0.5", "not both"),
        ("[[fault]]\nkind = 'clock_skew'\nepoch = '1980'", "'epoch' can only be"),
        ("[[fault]]\nkind = 'malformed'\nvariants = ['garbled']", "'variants' must be"),
        ("[[fault]]\nkind = 'reboot'\nduration = 3", "happens once"),
        ("[[fault]]\nkind = 'duplicate'\ncopies = true", "'copies' must be a number"),
        ("fault = 3", "array of tables"),
        ("faults = []", r"unknown top-level key\(s\) faults"),
        ("[[fault]\nkind = 'x'", "not valid TOML"),
        ("[[fault]]\nkind = 'drift'\nrate = nan", "'rate' = nan is outside"),
        ("[[fault]]\nkind = 'dropout'\nstart = inf", "'start' = inf is outside"),
    ],
)
def test_bad_scenarios_name_the_fault_and_the_key(text: str, message: str) -> None:
    with pytest.raises(ScenarioError, match=message):
        Scenario.parse(text, "s.toml")


def test_scenario_file_that_cannot_be_read(tmp_path: Any) -> None:
    with pytest.raises(ScenarioError, match="cannot read scenario"):
        Scenario.load(tmp_path / "missing.toml")
    (tmp_path / "bin.toml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ScenarioError, match="cannot read scenario"):
        Scenario.load(tmp_path / "bin.toml")


# -- the fleet: schedule and faults -----------------------------------------------------------


def test_same_seed_same_messages_however_the_run_is_paced() -> None:
    def run(step: float) -> list[tuple[str, bytes]]:
        f = Fleet(devices=4, sensors=5, formats=list(FORMATS), seed=42, start_time=T0,
                  scenario=Scenario.parse(FAULTS))
        out: list[tuple[str, bytes]] = []
        t = 0.0
        while t < 20.0:
            t = min(20.0, t + step)
            out.extend((m.publish.topic, m.publish.payload) for m in data(f.pop_due(t)))
        return out

    slow, fast = run(0.013), run(20.0)
    assert slow == fast and len(slow) > 300
    other = Fleet(devices=4, sensors=5, formats=list(FORMATS), seed=43, start_time=T0,
                  scenario=Scenario.parse(FAULTS))
    assert [(m.publish.topic, m.publish.payload) for m in data(other.pop_due(20.0))] != slow


FAULTS = """
[[fault]]
kind = "malformed"
probability = 0.1
[[fault]]
kind = "duplicate"
probability = 0.05
[[fault]]
kind = "out_of_order"
probability = 0.05
burst = 4
"""


def test_a_thousand_sensors_keep_their_schedule() -> None:
    f = Fleet(devices=100, sensors=10, seed=1, start_time=T0)
    assert f.units == 1000 and f.rate() == pytest.approx(1000)
    counts = [len(data(f.pop_due(float(s)))) for s in range(1, 11)]
    assert sum(counts) == 10_000  # ticks at phase + k for k = 0.. : one per second per sensor
    assert all(990 <= c <= 1010 for c in counts[1:])


def faulted(scenario: str, seconds: float = 20.0, fmt: str = "senml", **kw: Any
            ) -> list[Outgoing | Control]:
    f = Fleet(devices=2, sensors=3, formats=[fmt], seed=5, start_time=T0,
              scenario=Scenario.parse(scenario), **kw)
    return f.pop_due(seconds)


def test_dropout_silences_the_device_and_says_so() -> None:
    items = faulted("[[fault]]\nkind='dropout'\ndevices=['board-2']\nstart=5\nduration=5")
    controls = [c for c in items if isinstance(c, Control)]
    assert [(c.device, c.action, c.scheduled) for c in controls] == [
        ("board-2", "disconnect", 5.0), ("board-2", "connect", 10.0)]
    silent = [m for m in data(items) if m.device == "board-2" and 5.0 <= m.scheduled < 10.0]
    assert not silent
    assert [m for m in data(items) if m.device == "board-1" and 5.0 <= m.scheduled < 10.0]


@pytest.mark.parametrize("fmt", FORMATS)
def test_malformed_messages_do_not_decode(fmt: str) -> None:
    items = data(faulted("[[fault]]\nkind='malformed'\nprobability=0.5", fmt=fmt))
    bad = [m for m in items if not m.valid]
    good = [m for m in items if m.valid]
    assert len(bad) > 5 and len(good) > 5
    assert all(not m.samples for m in bad) and all(m.samples for m in good)
    variants = {t for m in bad for t in m.faults}
    assert len(variants) >= 3
    for m in bad:
        p = m.publish.payload
        variant = next(t for t in m.faults if t.startswith("malformed:")).split(":")[1]
        assert not _decodes_as_expected(fmt, p), (variant, p[:80])


def _decodes_as_expected(fmt: str, p: bytes) -> bool:
    """Whether a payload is a well-formed message of its format with finite numeric values and
    known units (what a strict reader accepts)."""
    try:
        if fmt == "senml-cbor":
            recs = [{RFC8428_LABELS.get(k, k): v for k, v in r.items()} for r in cbor2.loads(p)]
        elif fmt in ("senml", "tasmota"):
            obj = json.loads(p, parse_constant=lambda c: (_ for _ in ()).throw(ValueError(c)))
            if fmt == "tasmota":
                nums = [v for g in obj.values() if isinstance(g, dict) for v in g.values()]
                return (obj.get("TempUnit") == "C" and "Junk" not in obj and
                        all(isinstance(v, int | float) for v in nums))
            recs = obj
        else:
            return math.isfinite(float(p.decode())) and len(p) < 100
    except (ValueError, UnicodeDecodeError, cbor2.CBORDecodeError):
        return False
    units = {f.unit for m in KINDS.values() for f in m.fields}
    for r in recs:
        v = r.get("v")
        if not isinstance(v, int | float) or not math.isfinite(v):
            return False
        if any(r.get(k) not in units for k in ("u", "bu") if k in r):
            return False
    return True


def test_duplicates_repeat_the_payload() -> None:
    items = data(faulted("[[fault]]\nkind='duplicate'\nprobability=0.2\ncopies=2"))
    dups = [m for m in items if "duplicate" in m.faults]
    assert dups
    for m in dups:
        same = [x for x in items if x.publish.payload == m.publish.payload]
        assert len(same) == 3  # the original and two copies


def test_out_of_order_bursts_run_backwards_in_time() -> None:
    items = data(faulted("[[fault]]\nkind='out_of_order'\nprobability=0.2\nburst=4",
                         seconds=60))
    by_topic: dict[str, list[float]] = {}
    for m in items:
        by_topic.setdefault(m.publish.topic, []).append(m.samples[0].time)
    backwards = sum(1 for ts in by_topic.values() for a, b in itertools.pairwise(ts)
                    if b < a)
    assert backwards >= 5
    assert all("out_of_order" in m.faults for m in items
               if any(m.samples[0].time > x.samples[0].time and x.scheduled > m.scheduled
                      for x in items if x.publish.topic == m.publish.topic))


def test_clock_faults_stamp_1970_and_the_future() -> None:
    items = data(faulted(
        "[[fault]]\nkind='clock_skew'\ndevices=['board-1']\nepoch='1970'\nstart=2\nduration=2\n"
        "[[fault]]\nkind='clock_skew'\ndevices=['board-2']\noffset=86400\nstart=2\nduration=2"))
    early = [s.time for m in items if m.device == "board-1" and 2 <= m.scheduled < 4
             for s in m.samples]
    future = [s.time for m in items if m.device == "board-2" and 2 <= m.scheduled < 4
              for s in m.samples]
    assert early and all(t < 40 * DAY for t in early)  # seconds since boot: January 1970
    assert future and all(t > T0 + DAY for t in future)
    normal = [s.time for m in items if m.scheduled >= 4 for s in m.samples]
    assert all(T0 + 4 <= t < T0 + 21 for t in normal)


def test_reboot_restarts_counters_and_the_clock_until_ntp() -> None:
    items = faulted("[[fault]]\nkind='reboot'\ndevices=['board-1']\nstart=5\ndowntime=2\n"
                    "ntp_delay=3", seconds=15, kinds=["power"])
    msgs = [m for m in data(items) if m.device == "board-1"]
    assert not [m for m in msgs if 5 <= m.scheduled < 7]
    energy = [(m.scheduled, m.samples[1].value, m.samples[1].time) for m in msgs]
    before = [e for t, e, _ in energy if t < 5]
    after = [(e, ts) for t, e, ts in energy if t >= 7]
    assert min(before) > 1000  # up for days: thousands of Wh
    assert after[0][0] < 1.0 and after[0][1] < 10  # counter and clock restarted
    assert after[-1][1] > T0  # NTP came back


def test_value_faults() -> None:
    items = data(faulted(
        "[[fault]]\nkind='stuck'\nsensors=['temperature']\nstart=2\nduration=10\n"
        "[[fault]]\nkind='spike'\nsensors=['humidity']\nprobability=0.3\nmagnitude=500\n"
        "[[fault]]\nkind='drift'\nsensors=['pressure']\nrate=36000\nstart=10", seconds=20))

    def values(sensor: str, lo: float, hi: float) -> list[float]:
        return [m.samples[0].value for m in items if m.device == "board-1"
                and m.publish.topic.endswith("/" + sensor) and lo <= m.scheduled < hi]

    assert len(set(values("temperature", 2, 12))) == 1
    assert any(v > 100 for v in values("humidity", 0, 20))
    drifted = values("pressure", 10, 20)
    assert drifted[-1] - drifted[0] > 50  # 10 Pa per second


def test_fleet_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="rate"):
        Fleet(rate=0, start_time=T0)
    with pytest.raises(ValueError, match="at least one"):
        Fleet(devices=0, start_time=T0)
    with pytest.raises(ValueError, match="no sensor kind"):
        Fleet(formats=["tasmota"], kinds=["vibration"], start_time=T0)


def test_birth_messages_per_format() -> None:
    for fmt in FORMATS:
        topics = [p.topic for p in birth(fmt, "b", [Sensor("b", "t", model("temperature"))])]
        assert topics, fmt

"""The gateway's HTTP API, in process (httpx over ASGI, no sockets): shapes Grafana's Infinity
data source reads, bad parameters, the OpenAPI spec, /metrics for Prometheus."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from cairn.frames import Frame, Sample
from cairn_gateway.api import make_app
from cairn_gateway.roster import Roster
from cairn_gateway.store import Store

T0 = 1_764_000_000.0


@pytest.fixture
async def client(store_target: Callable[[str], str]) -> AsyncIterator[httpx.AsyncClient]:
    store = Store(store_target("gw"))
    Roster(store.conn).enroll(b"d" * 32, "board-1", T0)
    dev = store.device(b"d" * 32, None, T0)
    sid = store.stream(dev, "board-1/temperature", b"k" * 32, "Cel")
    store.ingest(sid, [(i, 0, Frame((Sample("board-1/temperature", "Cel", T0 + i * 30,
                                            20.0 + i),))) for i in range(240)])
    other = store.stream(dev, "board-1/door", b"j" * 32, None)
    store.ingest(other, [(0, 0, Frame((Sample("board-1/door", None, T0, "open"),)))])
    Roster(store.conn).split([b"r" * 32], T0)  # a device seen on the fleet topic, not enrolled
    transport = httpx.ASGITransport(app=make_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        yield c
    store.close()


async def test_devices_streams_and_latest(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).json() == {"ok": True, "streams": 2}
    [dev] = (await client.get("/api/devices")).json()
    assert dev["name"] == "board-1" and dev["record_key"] == (b"d" * 32).hex()
    assert (dev["enrolled"], dev["removed"], dev["enrolled_at"]) == (True, False, T0)
    streams = (await client.get("/api/streams", params={"device": dev["id"]})).json()
    assert [(s["name"], s["unit"], s["status"], s["device"], s["verified"]) for s in streams] \
        == [("board-1/temperature", "Cel", "ok", "board-1", True),
            ("board-1/door", None, "ok", "board-1", True)]
    latest = {x["name"]: (x["time"], x["value"], x["device"], x["record_key"], x["verified"])
              for x in (await client.get("/api/latest")).json()}
    key = (b"d" * 32).hex()
    assert latest == {"board-1/temperature": (T0 + 239 * 30, 259.0, "board-1", key, True),
                      "board-1/door": (T0, "open", "board-1", key, True)}


async def test_pending_devices_are_listed_apart_and_nothing_serves_a_log_key(
        client: httpx.AsyncClient) -> None:
    [p] = (await client.get("/api/devices/pending")).json()
    assert (p["record_key"], p["first_seen"], p["streams"]) == ((b"r" * 32).hex(), T0, [])
    assert (b"r" * 32).hex() not in (await client.get("/api/devices")).text
    for path in ("/api/devices", "/api/devices/pending", "/api/streams", "/api/latest",
                 "/api/integrity", "/metrics", "/openapi.json"):
        text = (await client.get(path)).text
        assert (b"k" * 32).hex() not in text and (b"j" * 32).hex() not in text, path
        assert "log_key" not in text, path


async def test_a_removed_devices_data_is_kept_and_flagged(
        store_target: Callable[[str], str]) -> None:
    store = Store(store_target("gw"))
    roster = Roster(store.conn)
    roster.enroll(b"d" * 32, "board-1", T0)
    sid = store.stream(store.device(b"d" * 32, None, T0), "board-1/t", b"k" * 32, "Cel")
    store.ingest(sid, [(0, 0, Frame((Sample("board-1/t", "Cel", T0, 21.5),)))])
    roster.remove("board-1", T0 + 60)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=make_app(store)),
                                     base_url="http://gateway") as client:
            [x] = (await client.get("/api/latest")).json()
            assert (x["device"], x["value"], x["verified"], x["removed"]) == (
                "board-1", 21.5, False, True)
            [d] = (await client.get("/api/devices")).json()
            assert (d["enrolled"], d["removed"], d["removed_at"]) == (False, True, T0 + 60)
            text = (await client.get("/metrics")).text
            [s] = [s for fam in text_string_to_metric_families(text) for s in fam.samples
                   if s.name == "cairn_gateway_latest_celsius"]
            assert s.labels == {"device": "board-1", "stream": "board-1/t",
                                "verified": "false"}
    finally:
        store.close()


async def test_samples_and_rollups_in_infinity_shape(client: httpx.AsyncClient) -> None:
    got = (await client.get("/api/samples",
                            params={"stream": 1, "from": T0, "to": T0 + 90})).json()
    assert got == [{"time": T0 + k * 30, "value": 20.0 + k, "kind": "number",
                    "stream_kind": "number", "block": k, "fork": 0} for k in range(3)]
    ten = (await client.get("/api/rollups", params={"stream": 1, "from": T0, "to": T0 + 7200,
                                                    "step": 600})).json()
    assert len(ten) == 12 and all(r["n"] == 20 for r in ten)
    assert ten[0] == {"time": int(T0), "n": 20, "mean": 29.5, "min": 20.0, "max": 39.0,
                      "last": None, "kind": "number", "step": 600}


@pytest.mark.parametrize(
    ("path", "params", "status", "message"),
    [
        ("/api/samples", {"stream": 1, "from": T0 + 10, "to": T0}, 400, "backwards"),
        ("/api/rollups", {"stream": 1, "from": T0, "to": T0 + 60, "step": "soon"}, 422,
         "step='soon' is not seconds or a duration"),
        ("/api/rollups", {"stream": 1, "from": T0, "to": T0 + 60, "step": -60}, 422,
         "more than 0"),
        ("/api/rollups", {"stream": 1, "from": 0, "to": 1e12, "step": 60}, 422,
         "to=1000000000000.0 looks like milliseconds"),
        ("/api/samples", {"stream": 99, "from": T0, "to": T0 + 1}, 404, "no stream '99'"),
        ("/api/samples", {"stream": "x", "from": T0, "to": T0 + 1}, 404, "no stream 'x'"),
        ("/api/samples", {"stream": 1, "to": T0}, 422, "from"),
        ("/api/samples", {"stream": 1, "from": "yesterday", "to": T0}, 422,
         "from='yesterday' is neither epoch seconds nor an ISO 8601 time"),
        ("/api/samples", {"stream": 1, "from": T0, "to": T0 + 1, "cursor": "x"}, 422,
         "cursor='x' is not one this gateway gave"),
        ("/api/streams", {"device": "board-9"}, 404, "no device 'board-9'"),
    ],
)
async def test_bad_parameters_say_what_is_wrong(client: httpx.AsyncClient, path: str,
                                                params: dict[str, float | str], status: int,
                                                message: str) -> None:
    r = await client.get(path, params=params)
    assert r.status_code == status and message in r.text


async def test_openapi_lists_every_endpoint(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    assert {"/api/devices", "/api/devices/pending", "/api/streams", "/api/samples",
            "/api/rollups", "/api/latest", "/api/integrity", "/metrics",
            "/healthz"} <= set(spec["paths"])


async def test_metrics_for_prometheus(client: httpx.AsyncClient) -> None:
    text = (await client.get("/metrics")).text
    values = {(s.name, s.labels.get("stream")): s.value
              for fam in text_string_to_metric_families(text) for s in fam.samples}
    assert values[("cairn_gateway_latest_celsius", "board-1/temperature")] == 259.0
    [labels] = [s.labels for fam in text_string_to_metric_families(text) for s in fam.samples
                if s.name == "cairn_gateway_latest_celsius"]
    assert labels == {"device": "board-1", "stream": "board-1/temperature", "verified": "true"}
    # every stream has its last sample's time (the string one too), for a silent-sensor alert
    assert values[("cairn_gateway_last_sample_timestamp_seconds", "board-1/temperature")] \
        == T0 + 239 * 30
    assert values[("cairn_gateway_last_sample_timestamp_seconds", "board-1/door")] == T0
    assert values[("cairn_gateway_samples", None)] == 241
    assert values[("cairn_gateway_stopped_streams", None)] == 0

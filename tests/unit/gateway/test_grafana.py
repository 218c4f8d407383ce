"""Grafana provisioning and dashboards (deploy/grafana): every panel's data source is
provisioned, and every panel's query, run against the real API on real data, returns the
fields the panel reads. In process (httpx over ASGI), no Grafana needed."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml  # type: ignore[import-untyped]

from cairn.frames import Frame, Sample
from cairn_gateway.api import make_app
from cairn_gateway.store import Store

ROOT = Path(__file__).resolve().parents[3] / "deploy" / "grafana"
DASHBOARDS = sorted((ROOT / "dashboards").glob("*.json"))
DASHBOARD_JSON = {p.stem: json.loads(p.read_text()) for p in DASHBOARDS}
T0 = 1_764_000_000.0


def provisioned() -> dict[str, str]:
    doc = yaml.safe_load((ROOT / "provisioning" / "datasources" / "cairn.yaml").read_text())
    return {d["uid"]: d["type"] for d in doc["datasources"]}


def targets(dash: dict[str, Any]) -> list[dict[str, Any]]:
    out = [t for p in dash["panels"] for t in p["targets"]]
    out += [v["query"]["infinityQuery"] for v in dash["templating"]["list"]]
    return out


def test_there_are_three_dashboards() -> None:
    assert [p.stem for p in DASHBOARDS] == ["data-integrity", "device-detail", "fleet-overview"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_every_data_source_is_provisioned(path: Path) -> None:
    sources = provisioned()
    dash = json.loads(path.read_text())
    used = [p["datasource"] for p in dash["panels"]]
    used += [t["datasource"] for t in targets(dash)]
    used += [v["datasource"] for v in dash["templating"]["list"]]
    for ds in used:
        assert sources.get(ds["uid"]) == ds["type"], ds


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    store = Store(tmp_path / "gw.db")
    dev = store.device(b"d" * 32, "board-1", T0)
    sid = store.stream(dev, "board-1/temperature", b"k" * 32, "Cel")
    store.ingest(sid, [(i, 0, Frame((Sample("board-1/temperature", "Cel", T0 + 30 * i,
                                            20.0 + i % 7),))) for i in range(120)])
    door = store.stream(dev, "board-1/door", b"j" * 32)
    store.ingest(door, [(i, 0, Frame((Sample("board-1/door", None, T0 + 60 * i, i % 3 == 0),)))
                        for i in range(60)])
    variables = {"$device": "board-1", "$stream": "board-1/temperature",
                 "$state": "board-1/door", "$__interval": "5s",
                 "${__from:date:seconds}": str(int(T0)),
                 "${__to:date:seconds}": str(int(T0 + 3600))}
    transport = httpx.ASGITransport(app=make_app(store))
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        yield c, variables
    store.close()


def fill(text: str, variables: dict[str, str]) -> str:
    for k, v in variables.items():
        text = text.replace(k, v)
    assert "$" not in text, f"an unknown variable in {text!r}"
    return text


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
async def test_every_query_returns_what_its_panel_reads(
        path: Path, api: tuple[httpx.AsyncClient, dict[str, str]]) -> None:
    client, variables = api
    metrics = (await client.get("/metrics")).text
    for t in targets(DASHBOARD_JSON[path.stem]):
        if t["datasource"]["type"] == "prometheus":
            name = re.match(r"[a-z_:]+", t["expr"])
            assert name and f"\n{name.group(0)} " in "\n" + metrics, t["expr"]
            continue
        params = {p["key"]: fill(p["value"], variables) for p in t["url_options"]["params"]}
        r = await client.get(t["url"], params=params)
        assert r.status_code == 200, (t["url"], params, r.text)
        rows = r.json()
        assert isinstance(rows, list) and rows, (t["url"], params)
        for col in t["columns"]:
            assert all(col["selector"] in row for row in rows), (t["url"], col)


def variable_query(dash: dict[str, Any], name: str) -> dict[str, Any]:
    [var] = [v for v in dash["templating"]["list"] if v["name"] == name]
    return dict(var["query"]["infinityQuery"])


async def test_numeric_panels_list_numeric_streams_and_the_state_timeline_the_others(
        api: tuple[httpx.AsyncClient, dict[str, str]]) -> None:
    """device-detail: the variable behind the numeric panels lists number streams only, the
    one behind the state timeline boolean and string streams; the state timeline's query
    returns each sample's time and its value in its kind (true/false here)."""
    client, variables = api
    dash = DASHBOARD_JSON["device-detail"]
    listed = {}
    for name in ("stream", "state"):
        q = variable_query(dash, name)
        params = {p["key"]: fill(p["value"], variables) for p in q["url_options"]["params"]}
        listed[name] = [r["name"] for r in (await client.get(q["url"], params=params)).json()]
    assert listed == {"stream": ["board-1/temperature"], "state": ["board-1/door"]}
    numeric = [p for p in dash["panels"] if p["type"] == "timeseries"]
    assert numeric and all("$stream" in json.dumps(p["targets"]) for p in numeric)
    [timeline] = [p for p in dash["panels"] if p["type"] == "state-timeline"]
    [t] = timeline["targets"]
    assert "$state" in json.dumps(t) and t["url"] == "/api/states"
    params = {p["key"]: fill(p["value"], variables) for p in t["url_options"]["params"]}
    rows = (await client.get(t["url"], params=params)).json()
    assert [(r["last"], r["kind"], r["step"]) for r in rows[:4]] == [
        (True, "boolean", 60), (False, "boolean", 60), (False, "boolean", 60),
        (True, "boolean", 60)]
    assert [c["selector"] for c in t["columns"]] == ["time", "last"]
    mapped = timeline["fieldConfig"]["defaults"]["mappings"][0]["options"]
    assert set(mapped) == {"true", "false"}


def test_the_latest_table_shows_values_of_every_kind() -> None:
    [panel] = [p for p in DASHBOARD_JSON["fleet-overview"]["panels"]
               if p["title"] == "Latest values"]
    cols = {c["selector"]: c["type"] for c in panel["targets"][0]["columns"]}
    assert cols["value"] == "string" and cols["kind"] == "string"


def test_every_time_range_query_asks_in_seconds_with_grafanas_interval() -> None:
    """No panel breaks at long ranges: windows in seconds (never ${__from}, milliseconds),
    buckets of $__interval (the server coarsens past its point limit), raw samples a page of
    the newest; variables carry names, as the CLI gives them."""
    for name, dash in DASHBOARD_JSON.items():
        for panel in dash["panels"]:
            for t in panel["targets"]:
                if t["datasource"]["type"] == "prometheus":
                    continue
                params = {p["key"]: p["value"] for p in t["url_options"]["params"]}
                if "from" in params:
                    assert (params["from"], params["to"]) == (
                        "${__from:date:seconds}", "${__to:date:seconds}"), (name, t["url"])
                if t["url"] in ("/api/rollups", "/api/states"):
                    assert params["step"] == "$__interval", (name, panel["title"])
                if t["url"] == "/api/samples":
                    assert params["order"] == "desc" and int(params["limit"]) <= 1000, panel
        for v in dash["templating"]["list"]:
            [value] = [c for c in v["query"]["infinityQuery"]["columns"]
                       if c["text"] == "__value"]
            assert value["selector"] == "name", (name, v["name"])

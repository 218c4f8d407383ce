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
    variables = {"$device": str(dev), "$stream": str(sid),
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

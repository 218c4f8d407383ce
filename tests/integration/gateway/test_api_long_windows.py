"""Long windows against a real store over real HTTP (uvicorn on 127.0.0.1, port 0): every
device-detail panel's query, as Grafana would send it, answers at any range; the samples of a
window larger than one answer come whole through the cursor; /docs and /redoc load nothing from
another host.

The store: 30 h of a 1 Hz stream (108,000 samples: one answer held at most 100,000, so the
samples table broke past ~28 h), 400 days of a pressure stream every 10 min (the rollup panel's
fixed 60 s step broke past ~69 days) and 400 days of a door state every 20 min.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cairn.frames import Frame, Sample
from cairn_gateway.api import MAX_POINTS, make_app
from cairn_gateway.roster import Roster
from cairn_gateway.serve import ApiLimits, serving
from cairn_gateway.store import Store
from tests.scorecard import record

DAY = 86400
END = 1_764_000_000  # 2025-11-24T16:00:00Z
DASHBOARD = json.loads((Path(__file__).resolve().parents[3] / "deploy" / "grafana" /
                        "dashboards" / "device-detail.json").read_text())
# Grafana's $__interval for a panel about 1,000 points wide (its rounded steps)
NICE = [1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1200, 1800, 3600, 7200, 10800,
        21600, 43200, DAY, 7 * DAY, 30 * DAY, 365 * DAY]


def grafana_interval(seconds: float) -> str:
    want = seconds / 1000
    step = next((n for n in NICE if n >= want), NICE[-1])
    for unit, width in (("y", 365 * DAY), ("d", DAY), ("h", 3600), ("m", 60)):
        if step % width == 0:
            return f"{step // width}{unit}"
    return f"{step}s"


def frames(name: str, unit: str | None, times: range, value: Any) -> Iterator[
        tuple[int, int, Frame]]:
    """One frame of 60 samples per block."""
    ts = list(times)
    for block, i in enumerate(range(0, len(ts), 60)):
        yield block, 0, Frame(tuple(Sample(name, unit, float(t), value(t))
                                    for t in ts[i:i + 60]))


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("long") / "gw.db"
    store = Store(path)
    Roster(store.conn).enroll(b"d" * 32, "board-1", END - 400 * DAY)
    dev = store.device(b"d" * 32, None, END - 400 * DAY)
    hz = store.stream(dev, "board-1/temperature", b"t" * 32, "Cel")
    store.ingest(hz, frames("board-1/temperature", "Cel", range(END - 30 * 3600, END),
                            lambda t: 20.0 + t % 7))
    pa = store.stream(dev, "board-1/pressure", b"p" * 32, "Pa")
    store.ingest(pa, frames("board-1/pressure", "Pa", range(END - 400 * DAY, END, 600),
                            lambda t: 101_000.0 + t % 300))
    door = store.stream(dev, "board-1/door", b"o" * 32)
    store.ingest(door, frames("board-1/door", None, range(END - 400 * DAY, END, 1200),
                              lambda t: t % 3600 == 0))
    store.close()
    return path


@pytest.fixture
async def api(store_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    store = Store(store_path)
    try:
        async with serving(make_app(store), "127.0.0.1", 0, ApiLimits()) as (host, port), \
                httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=60) as client:
            yield client
    finally:
        store.close()


def params(target: dict[str, Any], variables: dict[str, str]) -> dict[str, str]:
    out = {}
    for p in target["url_options"]["params"]:
        value = p["value"]
        for k in sorted(variables, key=len, reverse=True):
            value = value.replace(k, variables[k])
        assert "$" not in value, value
        out[p["key"]] = value
    return out


WINDOWS = {"1h": 3600, "30h": 30 * 3600, "7d": 7 * DAY, "90d": 90 * DAY, "400d": 400 * DAY}


@pytest.mark.parametrize("window", list(WINDOWS))
async def test_every_panel_answers_at_any_range(api: httpx.AsyncClient, window: str) -> None:
    span = WINDOWS[window]
    bad = 0
    for stream, state in (("board-1/temperature", "board-1/door"),
                          ("board-1/pressure", "board-1/door")):
        variables = {"$device": "board-1", "$stream": stream, "$state": state,
                     "$__interval": grafana_interval(span),
                     "${__from:date:seconds}": str(END - span),
                     "${__to:date:seconds}": str(END)}
        for panel in DASHBOARD["panels"]:
            for t in panel["targets"]:
                r = await api.get(t["url"], params=params(t, variables))
                rows = r.json() if r.status_code == 200 else []
                ok = r.status_code == 200 and 0 < len(rows) <= MAX_POINTS and all(
                    c["selector"] in row for c in t["columns"] for row in rows)
                bad += not ok
                assert ok, (panel["title"], window, r.status_code, r.text[:300])
    record("api", f"device-detail panels over {window} (1 Hz stream, 400-day streams)", 6,
           bad, "panels that failed or came back empty")


async def test_a_fixed_short_step_over_400_days_is_served_coarser(
        api: httpx.AsyncClient) -> None:
    """A client that asks 60 s buckets of 400 days (576,000) gets 360 s buckets, told why."""
    r = await api.get("/api/rollups", params={"stream": "board-1/pressure",
                                              "from": END - 400 * DAY, "to": END, "step": 60})
    assert r.status_code == 200, r.text
    rows = r.json()
    assert {x["step"] for x in rows} == {360} and len(rows) <= MAX_POINTS
    assert sum(x["n"] for x in rows) == 400 * DAY // 600
    assert "576000 buckets (at most 100000): served 360 s buckets" in r.headers["cairn-step-note"]
    r = await api.get("/api/states", params={"stream": "board-1/door", "from": "2024-10-20",
                                             "to": "2025-11-24T16:00:00Z", "step": "1s"})
    assert r.status_code == 200 and len(r.json()) <= MAX_POINTS
    assert sum(x["n"] for x in r.json()) == 400 * DAY // 1200
    assert "cairn-step-note" in r.headers


async def test_30_hours_of_1_hz_come_whole_through_the_cursor(api: httpx.AsyncClient) -> None:
    query: dict[str, str | int] = {"stream": "board-1/temperature", "from": END - 30 * 3600,
                                   "to": END, "limit": 50_000}
    times: list[float] = []
    pages = 0
    while True:
        r = await api.get("/api/samples", params=query)
        assert r.status_code == 200, r.text
        times += [x["time"] for x in r.json()]
        pages += 1
        if "cairn-next-cursor" not in r.headers:
            break
        link = re.fullmatch(r'<(/api/samples\?[^>]+)>; rel="next"', r.headers["link"])
        assert link is not None
        query = dict(httpx.URL(link.group(1)).params)  # follow the Link as a client would
    lost = 30 * 3600 - len(set(times))
    record("api", "30 h of a 1 Hz stream paged through the cursor", 1, lost + (
        len(times) - len(set(times))), "samples lost or repeated")
    assert pages == 3 and times == [float(t) for t in range(END - 30 * 3600, END)]


async def test_the_docs_pages_load_nothing_from_another_host(api: httpx.AsyncClient) -> None:
    for page in ("/docs", "/redoc"):
        r = await api.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        html = r.text
        assert "//" not in re.sub(r"(?s)<script>.*?</script>", "", html).replace(
            "<!DOCTYPE html>", ""), html  # no URL to another host, nor a scheme-relative one
        urls = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert urls and all(u.startswith("/docs/assets/") for u in urls), urls
        for u in urls:
            asset = await api.get(u)
            assert asset.status_code == 200 and len(asset.content) > 1000, u
        inline = re.findall(r"(?s)<script>(.*?)</script>", html)
        assert all("http" not in s for s in inline), inline
        assert "/openapi.json" in html
    assert (await api.get("/docs/assets/../../etc/passwd")).status_code == 404
    assert (await api.get("/docs/assets/swagger-ui.css.map")).status_code == 404
    spec = (await api.get("/openapi.json")).json()
    assert "/api/states" in spec["paths"]


async def test_past_retention_the_hour_rollups_fill_the_window(tmp_path: Path) -> None:
    """Retention deletes the minute rollups with the samples and keeps the hour ones: a window
    reaching further back than the minute rollups is served whole hours, not a gap."""
    store = Store(tmp_path / "gw.db")
    dev = store.device(b"d" * 32, "board-1", END - 60 * DAY)
    sid = store.stream(dev, "board-1/pressure", b"p" * 32, "Pa")
    store.ingest(sid, frames("board-1/pressure", "Pa", range(END - 60 * DAY, END, 600),
                             lambda t: 101_000.0))
    store.prune(END - 30 * DAY)  # [store] retention_days = 30
    try:
        async with serving(make_app(store), "127.0.0.1", 0, ApiLimits()) as (host, port), \
                httpx.AsyncClient(base_url=f"http://{host}:{port}", timeout=60) as client:
            window: dict[str, str | int] = {"stream": "board-1/pressure",
                                            "from": END - 40 * DAY, "to": END}
            r = await client.get("/api/rollups", params={**window, "step": "30m"})
            assert r.status_code == 200, r.text
            rows = r.json()
            assert {x["step"] for x in rows} == {3600}
            assert rows[0]["time"] == END - 40 * DAY and sum(x["n"] for x in rows) == 40 * 144
            assert "hour rollups" in r.headers["cairn-step-note"]
            recent = await client.get("/api/rollups", params={
                **window, "from": END - 10 * DAY, "step": "30m"})
            assert {x["step"] for x in recent.json()} == {1800}  # inside retention: as asked
            assert "cairn-step-note" not in recent.headers
    finally:
        store.close()

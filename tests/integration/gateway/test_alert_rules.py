"""The shipped Prometheus alert rules (deploy/prometheus) and both expositions, checked by
``promtool`` (Debian's ``prometheus`` package, ``make prometheus``): the rules are valid, each
alert fires on its series and not on the healthy ones (``promtool test rules``), every metric a
rule reads is one the gateway or the edge exports, and the gateway's and the edge's /metrics
pass ``promtool check metrics`` (the Prometheus naming and type lints)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]
from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from cairn.frames import Frame, Sample
from cairn_edge.metrics import registry_for
from cairn_gateway.metrics import GatewayMetrics
from cairn_gateway.roster import Roster
from cairn_gateway.schedule import EdgeStatus
from cairn_gateway.store import Store
from tests.conftest import missing
from tests.unit.edge.test_edge_metrics import status

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "deploy" / "prometheus" / "cairn-alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "cairn-alerts.test.yml"
T0 = 1_764_000_000.0


@pytest.fixture(scope="module")
def promtool() -> Path:
    found = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None)
    if found is None:
        missing("promtool", "`make prometheus` (the Debian package prometheus)")
    return Path(found)


def run(args: list[str], stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, input=stdin.decode(), capture_output=True, text=True,
                          timeout=60, check=False, cwd=RULES.parent)


def gateway_exposition(tmp_path: Path) -> bytes:
    """The gateway's /metrics with every family filled: streams of several units, a stopped
    one, an edge, rounds, errors, live pushes."""
    store = Store(tmp_path / "gw.db")
    try:
        Roster(store.conn).enroll(b"d" * 32, "board-1", T0)
        dev = store.device(b"d" * 32, None, T0)
        for k, (name, unit) in enumerate((("board-1/t", "Cel"), ("board-1/p", "hPa"),
                                          ("board-1/n", None), ("board-1/x", "furlongs"))):
            sid = store.stream(dev, name, bytes([k]) * 32, unit)
            store.ingest(sid, [(0, 0, Frame((Sample(name, unit, T0, 1.5),)))])
        store.stop(sid, "fork: test")
        m = GatewayMetrics(store, interval=10.0, budget=10**9,
                           edges=lambda: {b"d" * 32: EdgeStatus(True, 0, 0.0, 0.0, None)},
                           connections=lambda: {"tcp": 1},
                           disk=lambda: {"store": 4096, "replicas": 8192})
        m.round_done(0.4)
        m.error("unreachable")
        m.live_stored(3)
        m.pruned_samples.labels("retention").inc(5)
        return m.exposition()
    finally:
        store.close()


def test_the_alert_rules_are_valid(promtool: Path) -> None:
    r = run([str(promtool), "check", "rules", str(RULES)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def test_each_alert_fires_on_its_series_and_not_on_healthy_ones(promtool: Path) -> None:
    r = run([str(promtool), "test", "rules", str(RULE_TESTS)])
    assert r.returncode == 0, r.stdout + r.stderr
    alerts = {x["alert"] for g in yaml.safe_load(RULES.read_text())["groups"]
              for x in g["rules"]}
    tested = {t["alertname"] for case in yaml.safe_load(RULE_TESTS.read_text())["tests"]
              for t in case["alert_rule_test"]}
    assert alerts == tested  # every alert has its test
    assert {"CairnSensorSilent", "CairnStreamStopped", "CairnGatewayNotCollecting",
            "CairnEdgeNearDiskQuota", "CairnEdgeDisconnected"} <= alerts


def test_the_expositions_pass_promtool_check_metrics(promtool: Path, tmp_path: Path) -> None:
    for what, text in (("gateway", gateway_exposition(tmp_path)),
                       ("edge", generate_latest(registry_for(lambda: status())))):
        r = run([str(promtool), "check", "metrics"], text)
        assert r.returncode == 0 and not (r.stdout + r.stderr).strip(), (
            f"{what}: {r.stdout}{r.stderr}")


def test_every_metric_a_rule_reads_is_exported(tmp_path: Path) -> None:
    names = {s.name for text in (gateway_exposition(tmp_path),
                                 generate_latest(registry_for(lambda: status())))
             for f in text_string_to_metric_families(text.decode()) for s in f.samples}
    rules = [x["expr"] for g in yaml.safe_load(RULES.read_text())["groups"] for x in g["rules"]]
    read = {n for expr in rules for n in re.findall(r"\bcairn_[a-z_]+", expr)}
    assert read and read <= names, read - names


def test_compose_loads_the_rules() -> None:
    from tests.unit.gateway.test_deploy import COMPOSE_DIR, bind_mounts, compose

    prometheus = compose()["services"]["prometheus"]
    mounts = {d: (COMPOSE_DIR / s).resolve() for s, d in bind_mounts(prometheus)}
    config = yaml.safe_load(mounts["/etc/prometheus/prometheus.yml"].read_text())
    assert [mounts[f] for f in config["rule_files"]] == [RULES]

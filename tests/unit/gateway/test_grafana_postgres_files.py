"""The PostgreSQL dashboards and their provisioning (deploy/grafana/dashboards-postgres,
deploy/grafana/provisioning-postgres): every panel and variable reads the provisioned
PostgreSQL data source, the files ship in the package, and no dashboard needs a plugin.
(The queries themselves run against a real server in
tests/integration/gateway/test_grafana_postgres.py.)"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

ROOT = Path(__file__).resolve().parents[3] / "deploy" / "grafana"
DASHBOARDS = sorted((ROOT / "dashboards-postgres").glob("*.json"))
BUILT_IN = {"grafana-postgresql-datasource"}  # Grafana's own: no plugin to install


def _refs(dash: dict[str, Any]) -> list[dict[str, str]]:
    refs = [p["datasource"] for p in dash["panels"]]
    refs += [t["datasource"] for p in dash["panels"] for t in p["targets"]]
    refs += [v["datasource"] for v in dash["templating"]["list"] if "datasource" in v]
    return refs


def test_three_dashboards_on_the_provisioned_postgresql_data_source() -> None:
    assert [p.stem for p in DASHBOARDS] == ["data-integrity", "device-detail", "fleet-overview"]
    doc = yaml.safe_load((ROOT / "provisioning-postgres" / "datasources" /
                          "cairn-postgres.yaml").read_text())
    [source] = doc["datasources"]
    assert source["type"] in BUILT_IN and source["jsonData"]["database"]
    assert source["secureJsonData"]["password"].startswith("${")  # from the environment
    uids = set()
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        uids.add(dash["uid"])
        for ref in _refs(dash):
            assert ref == {"type": source["type"], "uid": source["uid"]}, (path.stem, ref)
    assert len(uids) == 3 and not uids & {"cairn-fleet", "cairn-device", "cairn-integrity"}


def test_the_dashboards_provider_points_where_compose_would_mount_them() -> None:
    doc = yaml.safe_load((ROOT / "provisioning-postgres" / "dashboards" /
                          "cairn-postgres.yaml").read_text())
    [provider] = doc["providers"]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards/cairn-postgres"


def test_the_files_ship_in_the_package() -> None:
    grafana = resources.files("cairn_gateway") / "grafana"
    for path in DASHBOARDS:
        assert (grafana / "dashboards-postgres" / path.name).is_file()
    assert (grafana / "provisioning-postgres" / "datasources" / "cairn-postgres.yaml").is_file()

"""The gateway's and the edge's units wait for READY=1 and have a watchdog (cairn.sdnotify);
the bootstrap node's unit, which does not notify, stays a simple service."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.gateway.test_deploy import read_unit

SYSTEMD = Path(__file__).resolve().parents[3] / "deploy" / "systemd"


@pytest.mark.parametrize("name", ["cairn-gateway.service", "cairn-edge.service"])
def test_the_daemons_are_notify_services_with_a_watchdog(name: str) -> None:
    service = read_unit(SYSTEMD / name)["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    watchdog = int(service["WatchdogSec"])
    assert watchdog >= 10  # pets every half: a busy loop has seconds to spare
    assert int(service["TimeoutStopSec"]) >= 15
    assert "AF_UNIX" in service["RestrictAddressFamilies"]  # the notify socket


def test_the_bootstrap_node_does_not_notify() -> None:
    service = read_unit(SYSTEMD / "cairn-dht-bootstrap.service")["Service"]
    assert service.get("Type", "simple") == "simple" and "WatchdogSec" not in service

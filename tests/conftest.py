"""Fixtures for the outside tools some tests need: node, the npm oracles, mosquitto.

Each fixture returns the tool's path. When the tool is missing, a developer's run skips the test
with a message saying how to get it; a CI run (CI=true in the environment) fails instead, because
in CI `make test` installs every one of them and a missing tool means the install step broke.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest

from tests.interop.harness import INTEROP_DIR, find_node

#: Packages that must be in tests/interop/node_modules for the interop tests to run.
ORACLE_PACKAGES = ("hypercore", "hyperdht", "dht-rpc", "@hyperswarm/secret-stream")

#: Where Debian's mosquitto package installs the broker (often not on a user's PATH).
MOSQUITTO_SBIN = Path("/usr/sbin/mosquitto")
#: Where Debian's prometheus package installs the server.
PROMETHEUS_BIN = Path("/usr/bin/prometheus")


def in_ci() -> bool:
    """True when the CI environment variable says so (CI=true, as CI services set it)."""
    return os.environ.get("CI", "").strip().lower() in {"true", "1", "yes"}


def missing(what: str, how: str) -> NoReturn:
    """Fail in CI, skip elsewhere: `what` is missing, `how` says how to get it."""
    if in_ci():
        pytest.fail(f"{what} is required in CI: {how}", pytrace=False)
    pytest.skip(f"{what} is missing: {how}")


@pytest.fixture(scope="session")
def node_path() -> Path:
    """The `node` executable (Node.js 20 or newer)."""
    node = find_node()
    if node is None:
        missing(
            "node",
            "install Node.js 20 (e.g. `apt-get install nodejs npm`), then run `make test`",
        )
    return Path(node)


@pytest.fixture(scope="session")
def interop_dir(node_path: Path) -> Path:
    """tests/interop with its npm packages installed in node_modules."""
    absent = [p for p in ORACLE_PACKAGES if not (INTEROP_DIR / "node_modules" / p).is_dir()]
    if absent:
        missing(
            f"tests/interop/node_modules with {', '.join(absent)}",
            "run `make test`, or `npm ci` in tests/interop",
        )
    return INTEROP_DIR


def _debian_tool(command: str, path: Path, package: str) -> Path:
    """A tool from a Debian package: on PATH, or where the package puts it; else missing()."""
    found = shutil.which(command)
    if found is not None:
        return Path(found)
    if os.access(path, os.X_OK):
        return path
    missing(command, f"run `make test` as root (it installs it with apt-get), or "
                     f"`apt-get install {package}`")


@pytest.fixture(scope="session")
def mosquitto_path() -> Path:
    """The `mosquitto` broker executable (not started; a test starts its own on port 0)."""
    return _debian_tool("mosquitto", MOSQUITTO_SBIN, "mosquitto")


@pytest.fixture(autouse=True)
def _no_agent_left() -> Iterator[None]:
    """Every edge agent a test started (``tests.integration.edge.test_edge_mqtt.EdgeProcess``) is
    killed after the test, pass or fail: no test leaves a process running."""
    yield
    module = sys.modules.get("tests.integration.edge.test_edge_mqtt")
    if module is None:  # no test of this run started one
        return
    while module.EdgeProcess.running:
        e = module.EdgeProcess.running.pop()
        if e.proc is not None and e.proc.poll() is None:
            e.proc.kill()
            e.proc.wait(module.WAIT)
        if e.log is not None and not e.log.closed:
            e.log.close()


@pytest.fixture(scope="session")
def prometheus_path() -> Path:
    """The `prometheus` server executable (a test starts its own)."""
    return _debian_tool("prometheus", PROMETHEUS_BIN, "prometheus")


# Property tests are deterministic: the same examples every run (no stored failure database).
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("cairn", derandomize=True, database=None, deadline=None)
_hypothesis_settings.load_profile("cairn")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the reliability scorecard (tests/scorecard.py) when any test recorded a line."""
    from tests import scorecard

    lines = scorecard.table()
    if lines:
        terminalreporter.section("scorecard")
        for line in lines:
            terminalreporter.write_line(line)
    target = os.environ.get("CAIRN_SCORECARD")
    if target and scorecard.LINES:
        scorecard.write(target)

"""The suite's one conftest: markers by folder, the order and groups for parallel workers, the
scorecard gathered from the workers, and fixtures for the outside tools some tests need.

Markers (registered in pyproject.toml) come from the folder a test lives in, never from a line in
the test file: ``unit`` (tests/unit), ``integration`` (tests/integration), ``interop``
(tests/interop), ``reliability`` (tests/reliability, and every test file named
``test_reliability_*``), and ``slow`` for the tests in :data:`SLOW` (an explicit list, chosen
from a ``--durations`` run: 15 s or more each). Interop files that open sockets add
``integration`` themselves.

Parallel workers (pytest-xdist, ``make test`` and ``make check`` run ``-n``): every worker is its
own process with its own temporary directories, ports (port 0) and edge agents, so
``_no_agent_left`` sees only the agents its worker started. The slow tests are sent first, the
ones that start many processes share one xdist group and the two CPU-bound corruption sweeps
another (:data:`GROUPS`, ``--dist loadgroup``), so that two of a kind never run at once on two
cores. Each worker hands its scorecard lines to the controller, which prints them as one table
in collection order and writes ``$CAIRN_SCORECARD``.

Tool fixtures return the tool's path. When the tool is missing, a developer's run skips the test
with a message saying how to get it; a CI run (CI=true in the environment) fails instead, because
in CI `make test` installs every one of them and a missing tool means the install step broke.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Generator, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, NoReturn

import pytest

from tests.interop.harness import INTEROP_DIR, find_node

# fixtures: pg_cluster (a PostgreSQL server per test process), pg_url (a database per test),
# pg_schema_url (a schema per test)
from tests.pg import pg_cluster, pg_schema_url, pg_url  # noqa: F401

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
    killed after the test, pass or fail: no test leaves a process running. It looks only at
    ``EdgeProcess.running``, the agents started in this process: under parallel workers each
    worker is its own process, so it never touches an agent of a test running on another."""
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


#: The folders under tests/ whose name is their marker.
FOLDER_MARKERS = ("unit", "integration", "interop", "reliability", "lab")

#: Tests marked ``slow``, longest first: node ids or their prefixes (a file, a file::test,
#: relative to tests/). An explicit list, chosen by measured duration: each took 15 s or more
#: in a ``make test`` run with 4 workers on a loaded machine (``--durations=60``). Workers
#: take them first, in this order, so that no long test starts last; ``make check`` leaves
#: them out.
SLOW: tuple[str, ...] = (
    "integration/gateway/test_reliability_leases.py::"
    "test_three_gateways_one_killed_every_acknowledged_sample_stored_once",
    "reliability/test_corruption.py::test_every_byte_flipped_and_every_cut",
    "integration/demo/test_reliability_chaos.py::test_chaos",
    "integration/core/test_log_crash.py::test_kill_writer_during_appends",
    "integration/demo/test_e2e.py::test_the_whole_system",
    "integration/gateway/test_dialout.py::"
    "test_a_flood_of_unknown_keys_is_bounded_and_the_honest_edge_is_served",
    "unit/core/test_dht_sim.py::test_reads_survive_30_percent_churn_and_20_percent_loss",
    "integration/core/test_reliability_hostile.py::test_hostile_peers_do_not_take_the_server_down",
    "integration/edge/test_reliability_mqtt_flood.py"
    "::test_a_flooding_device_does_not_starve_honest_sensors",
    "reliability/test_storage_crash.py::test_disk_full_and_failing_fsync_acknowledge_nothing_unsynced",
    "integration/gateway/test_reliability_api.py::test_clients_that_stop_reading_answers_are_cut",
    "integration/edge/test_reliability_kills.py::test_kill_9_loses_and_duplicates_nothing",
    "unit/core/test_frames.py::test_fuzz_structured_cbor",
    "reliability/test_storage_crash.py::test_gateway_store_crashes_keep_ingest_exactly_once",
    "unit/core/test_frames.py::test_the_fast_path_agrees_with_the_full_decoder",
    "reliability/test_storage_crash.py::test_edge_store_crashes_lose_no_acknowledged_commit",
    "unit/core/test_frames.py::test_seek_time_matches_a_linear_scan[150]",
    "lab/test_lab_fleet.py::test_every_edge_behind_every_nat_is_collected_and_a_stranger_is_not",
    "integration/gateway/test_gateway_by_key.py"
    "::test_a_js_hypercore_writer_connects_by_key_and_is_collected_and_a_stranger_is_refused",
    "lab/test_lab_fleet.py::test_a_30_s_outage_loses_nothing_and_the_edge_reconnects",
    "integration/gateway/test_cli_errors.py"
    "::test_a_second_process_on_a_running_gateways_data_is_refused",
    # amqtt's 5 s PUBACK timeout, then its report
    "integration/edge/test_embedded_quiet.py"
    "::test_a_subscriber_that_never_acknowledges_logs_no_traceback",
    "integration/demo/test_docs_walk.py::test_walk",
    # PostgreSQL under faults: restarts wait out the pool's reconnection, COPYs of 100k samples
    "integration/gateway/test_reliability_postgres.py"
    "::test_restarts_under_the_ingest_worker_lose_nothing",
    "integration/gateway/test_reliability_postgres.py"
    "::test_a_backend_terminated_mid_copy_stores_nothing_of_its_batch",
    "integration/gateway/test_reliability_postgres.py"
    "::test_a_tcp_path_cut_mid_copy_stores_nothing_of_its_batch",
    "integration/gateway/test_reliability_postgres.py"
    "::test_the_database_going_away_answers_503_in_one_line_and_recovers",
    "integration/gateway/test_reliability_postgres.py"
    "::test_two_stores_racing_on_the_same_blocks_store_each_once",
    "integration/gateway/test_reliability_postgres.py"
    "::test_the_pool_reconnects_as_soon_as_a_long_outage_ends",
    "integration/gateway/test_reliability_postgres.py"
    "::test_a_full_wal_disk_fails_ingest_in_words_and_ingest_resumes_after",
    # a store of 40,000 samples built, migrated twice and every query compared (about 7 s)
    "integration/gateway/test_reliability_migrate.py"
    "::test_a_migration_killed_halfway_finishes_when_run_again",
    "integration/gateway/test_reliability_migrate.py"
    "::test_a_migration_whose_connection_drops_finishes_when_run_again",
    "integration/demo/test_demo_postgres.py"
    "::test_the_demo_runs_on_postgresql_and_its_summary_adds_up",
)

#: xdist groups: under ``--dist loadgroup`` the tests of a group run one after another on one
#: worker while the other workers take the rest. ``processes``: each starts many processes (the
#: demo's whole system, attackers, a flooding fleet, an edge killed over and over) and times
#: what they do, so two of them at once on two cores starve each other. ``cpu``: the two
#: corruption sweeps, each a few minutes of pure CPU; one at a time leaves a core for the rest.
GROUPS: dict[str, tuple[str, ...]] = {
    "processes": (
        "integration/demo/test_reliability_chaos.py::test_chaos",
        "integration/demo/test_e2e.py::test_the_whole_system",
        "integration/core/test_reliability_hostile.py"
        "::test_hostile_peers_do_not_take_the_server_down",
        "integration/edge/test_reliability_mqtt_flood.py"
        "::test_a_flooding_device_does_not_starve_honest_sensors",
        "integration/edge/test_reliability_kills.py::test_kill_9_loses_and_duplicates_nothing",
        # the NAT lab's fleets: a DHT node, a gateway, four edges, brokers and boards each
        "lab/test_lab_fleet.py"
        "::test_every_edge_behind_every_nat_is_collected_and_a_stranger_is_not",
        "lab/test_lab_fleet.py::test_a_30_s_outage_loses_nothing_and_the_edge_reconnects",
        # the docs walk: the demo, then a broker, a gateway and an edge
        "integration/demo/test_docs_walk.py::test_walk",
        # the demo's whole system, its store on PostgreSQL
        "integration/demo/test_demo_postgres.py"
        "::test_the_demo_runs_on_postgresql_and_its_summary_adds_up",
    ),
    "cpu": ("reliability/test_corruption.py::test_every_byte_flipped_and_every_cut",),
}


def _tests_relative(item: pytest.Item) -> str:
    """The item's node id relative to tests/ ("unit/core/test_log.py::test_x")."""
    return item.nodeid.removeprefix("tests/")


def _position(nodeid: str, listed: tuple[str, ...]) -> int | None:
    """Where ``nodeid`` is in ``listed`` (equal, or under one of its prefixes), else None."""
    for i, x in enumerate(listed):
        if nodeid == x or nodeid.startswith((x + "::", x + "[")):
            return i
    return None


def _group_suffix(config: pytest.Config, item: pytest.Item, group: str) -> None:
    """What xdist's own hook does for ``xdist_group`` under ``--dist loadgroup``: the group's
    name as a suffix of the node id, which is how its scheduler keeps a group on one worker.
    pytest-xdist 3.8 writes it to ``item._nodeid``, which pytest 9.2 no longer reads (the id
    lives in ``item._id``), so there the groups would silently not be kept together."""
    if config.getoption("dist", None) != "loadgroup" or hasattr(item, "_nodeid") \
            or not hasattr(item, "_id"):
        return  # not loadgroup, or a pytest where xdist's own suffix works
    from _pytest.nodeid import coerce_node_id

    item._id = coerce_node_id(f"{item.nodeid}@{group}")


@pytest.hookimpl(tryfirst=True)  # before xdist's, which reads the groups' markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Markers by folder (``slow`` by :data:`SLOW`), the xdist groups of :data:`GROUPS`, and
    under workers the slow tests first."""
    xdist = config.pluginmanager.hasplugin("xdist")  # its marker is unknown without it
    for index, item in enumerate(items):
        item.stash[_COLLECTION_INDEX] = index
        rel = _tests_relative(item)
        folder = rel.split("/", 1)[0]
        if folder in FOLDER_MARKERS:
            item.add_marker(folder)
        if folder != "reliability" and item.path.name.startswith("test_reliability_"):
            item.add_marker("reliability")
        if _position(rel, SLOW) is not None:
            item.add_marker("slow")
        for group, listed in GROUPS.items():
            if xdist and _position(rel, listed) is not None:
                item.add_marker(pytest.mark.xdist_group(group))
                _group_suffix(config, item, group)
    if hasattr(config, "workerinput"):  # a worker: its order is the order tests are handed out
        def slow_first(item: pytest.Item) -> int:
            where = _position(_tests_relative(item), SLOW)
            return len(SLOW) if where is None else where

        items.sort(key=slow_first)


# -- the scorecard, gathered from the workers --------------------------------------------------

#: For each line in ``scorecard.LINES``, the index of the test that recorded it in the session's
#: collection order (the same on every worker): the table's order, however tests were spread.
_LINE_ORDER: list[int] = []
#: Each test's index in the collection order, before the workers' reordering.
_COLLECTION_INDEX = pytest.StashKey[int]()
#: The order of a line recorded outside any test (a session fixture's teardown): last.
_LAST = 1 << 30


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """Note which test recorded each scorecard line (in its setup, call or teardown)."""
    from tests import scorecard

    try:
        return (yield)
    finally:
        index = item.stash.get(_COLLECTION_INDEX, _LAST)
        _LINE_ORDER.extend([index] * (len(scorecard.LINES) - len(_LINE_ORDER)))


def pytest_sessionfinish(session: pytest.Session) -> None:
    """On a worker: hand its scorecard lines, with their order, to the controller."""
    from tests import scorecard

    workeroutput = getattr(session.config, "workeroutput", None)
    if workeroutput is not None:
        _LINE_ORDER.extend([_LAST] * (len(scorecard.LINES) - len(_LINE_ORDER)))
        workeroutput["cairn_scorecard"] = [
            [order, asdict(line)] for order, line in zip(_LINE_ORDER, scorecard.LINES, strict=True)
        ]


def pytest_configure(config: pytest.Config) -> None:
    """On the controller of a parallel run: listen for the workers' scorecard lines."""
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput"):
        config.pluginmanager.register(_ScorecardFromWorkers(), "cairn-scorecard-from-workers")


class _ScorecardFromWorkers:
    """xdist's hook on the controller: a worker finished, with its scorecard lines."""

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: object) -> None:
        from tests import scorecard

        for order, fields in getattr(node, "workeroutput", {}).get("cairn_scorecard", []):
            scorecard.LINES.append(scorecard.Line(**fields))
            _LINE_ORDER.append(order)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Print the reliability scorecard (tests/scorecard.py) when any test recorded a line: one
    table, in collection order, whether the tests ran in this process or in workers."""
    from tests import scorecard

    if hasattr(terminalreporter.config, "workerinput"):
        return
    _LINE_ORDER.extend([_LAST] * (len(scorecard.LINES) - len(_LINE_ORDER)))
    ordered = sorted(zip(_LINE_ORDER, range(len(scorecard.LINES)), scorecard.LINES, strict=True))
    scorecard.LINES[:] = [line for _, _, line in ordered]
    _LINE_ORDER[:] = [order for order, _, _ in ordered]
    lines = scorecard.table()
    if lines:
        terminalreporter.section("scorecard")
        for line in lines:
            terminalreporter.write_line(line)
    target = os.environ.get("CAIRN_SCORECARD")
    if target and scorecard.LINES:
        scorecard.write(target)

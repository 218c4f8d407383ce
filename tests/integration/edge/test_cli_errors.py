"""How `cairn-edge` (the entry point systemd runs) fails: one line, the exit code of the kind
(2: a bad flag, a bad config value, a missing file; 1: a busy port, a second agent on the same
data directory), never a traceback (unless -v), never an empty reason; and a SIGTERM ends the
process within the stated bound whatever happens."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from pathlib import Path

from cairn.brokers import Mosquitto
from cairn_edge.cli import STOP_BOUND
from tests.integration.edge.test_edge_mqtt import EdgeProcess
from tests.integration.entry import ROOT, run_entry
from tests.scorecard import record


def _edge_dir(tmp_path: Path, body: str = "") -> Path:
    run_entry("cairn-edge", "init", str(tmp_path / "e"), cwd=tmp_path)
    d = tmp_path / "e"
    if body:
        (d / "edge.toml").write_text(body)
    return d


def test_global_flags() -> None:
    ran = run_entry("cairn-edge", "--version", cwd=ROOT)
    assert ran.code == 0 and ran.stdout.startswith("cairn-edge, version "), ran
    ran = run_entry("cairn-edge", "--help", cwd=ROOT)
    assert ran.code == 0
    for flag in ("--version", "--log-format [text|json]", "-v, --verbose", "--config FILE"):
        assert flag in ran.stdout, flag


def test_a_bad_flag_is_a_usage_error(tmp_path: Path) -> None:
    ran = run_entry("cairn-edge", "--bogus", "status", cwd=tmp_path)
    ran.fails(2, "No such option '--bogus'")
    assert "Try 'cairn-edge --help' for help." in ran.stderr


def test_a_missing_config_is_a_usage_error(tmp_path: Path) -> None:
    ran = run_entry("cairn-edge", "--config", "nowhere.toml", "status", cwd=tmp_path)
    ran.fails(2, "nowhere.toml")


def test_a_bad_config_value_is_a_usage_error_naming_the_key(tmp_path: Path) -> None:
    d = _edge_dir(tmp_path)
    text = (d / "edge.toml").read_text().replace("port = 7422", "port = 99999", 1)
    (d / "edge.toml").write_text(text)
    run_entry("cairn-edge", "--config", str(d / "edge.toml"), "status", cwd=tmp_path).fails(
        2, "port")


def test_verbose_shows_the_traceback_then_the_line(tmp_path: Path) -> None:
    ran = run_entry("cairn-edge", "-v", "--config", "nowhere.toml", "status", cwd=tmp_path)
    assert ran.code == 2 and "Traceback" in ran.stderr
    assert ran.stderr.splitlines()[-1].startswith("Error: "), ran.stderr


def test_the_replication_port_in_use_says_so(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        d = _edge_dir(tmp_path)
        text = (d / "edge.toml").read_text().replace("port = 7422", f"port = {port}", 1)
        (d / "edge.toml").write_text(text.replace('host = "0.0.0.0"', 'host = "127.0.0.1"', 1))
        ran = run_entry("cairn-edge", "--config", str(d / "edge.toml"), "run", cwd=tmp_path)
    line = ran.fails(1, "stopped:", "address already in use", "another process holds that port")
    record("cli", "an edge whose replication port is taken", 1,
           0 if str(port) in line else 1, "reason missing")


def test_a_second_agent_on_the_same_data_directory_is_refused(tmp_path: Path,
                                                              mosquitto_path: Path) -> None:
    with Mosquitto(tmp_path / "broker", executable=mosquitto_path) as broker:
        edge = EdgeProcess(tmp_path / "edge", broker)
        edge.start()
        assert edge.proc is not None
        second = run_entry("cairn-edge", "--config", str(edge.config), "run", cwd=tmp_path)
        still = edge.proc.poll() is None
        edge.stop()
    line = second.fails(1, "is in use by", f"pid {edge.proc.pid}")
    record("cli", "a second edge agent started on a running agent's data directory", 1,
           0 if still and "in use" in line else 1, "first agent harmed")
    assert still, "the running agent stopped"


def test_the_stop_bound_ends_the_process_whatever_it_is_doing() -> None:
    # the last resort of a SIGTERM: a blocked process (here: asleep) is ended at the bound
    code = ("import time; from cairn_edge.cli import _exit_after; _exit_after(0.2); "
            "time.sleep(120)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 1
    assert done.stderr.startswith("Error: the agent did not stop within 0.2 s of SIGTERM")
    unit = (ROOT / "deploy" / "systemd" / "cairn-edge.service").read_text()
    found = re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M)
    assert found is not None
    assert int(found.group(1)) > STOP_BOUND + 2  # systemd never has to kill the agent

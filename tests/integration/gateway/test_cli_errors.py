"""How `cairn gateway ...` fails, run as a user runs it (the `cairn` entry point in a
subprocess): one line, exit 2 for what the user gave, 1 for what failed at run time, never a
traceback. Covers the API port in use (it printed 58 lines of asyncio traceback), the DHT down
for collect and watch (a traceback), and a second process on a running gateway's data
directory (`fetch` stopped the running gateway with an IntegrityError)."""

from __future__ import annotations

import json
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.entry import entry_point, run_entry
from tests.scorecard import record


def _dead_udp_port() -> int:
    """A UDP port nobody listens on (bound, then closed: a DHT node there does not answer)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _gateway(tmp_path: Path, *, api: str = "127.0.0.1:0", bootstrap: str = "") -> Path:
    ran = run_entry("cairn", "gateway", "init", str(tmp_path / "g"), cwd=tmp_path)
    assert ran.code == 0, ran
    config = tmp_path / "g" / "gateway.toml"
    text = config.read_text()
    text = text.replace('listen = "127.0.0.1:8080"', f'listen = "{api}"', 1)
    text = text.replace('listen = "0.0.0.0:7420"', 'listen = ""', 1)
    if bootstrap:
        text = text.replace("bootstrap = []", f'bootstrap = ["{bootstrap}"]', 1)
    config.write_text(text)
    return config


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Path, subprocess.Popen[str]]]:
    """`cairn gateway run` on a fresh directory, ready; stopped (or killed) afterwards."""
    config = _gateway(tmp_path, bootstrap=f"127.0.0.1:{_dead_udp_port()}")
    with open(tmp_path / "gateway.log", "w") as log:
        proc = subprocess.Popen([*entry_point("cairn"), "gateway", "run", "--config",
                                 str(config)], stdout=subprocess.PIPE, stderr=log, text=True,
                                cwd=tmp_path)
        try:
            assert proc.stdout is not None
            first = json.loads(proc.stdout.readline() or "{}")
            assert first.get("ready"), (tmp_path / "gateway.log").read_text()
            yield config, proc
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
            if proc.stdout is not None:
                proc.stdout.close()


def test_the_api_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = _gateway(tmp_path, api=f"127.0.0.1:{port}")
        ran = run_entry("cairn", "gateway", "run", "--config", str(config), cwd=tmp_path)
    ran.fails(1, f"the API cannot listen on 127.0.0.1:{port}", "[api].listen")
    assert len([x for x in ran.stderr.splitlines() if x.strip()]) == 1, ran.stderr


@pytest.mark.parametrize("command", [["collect"], ["watch", "--once"]])
def test_the_dht_down_is_one_line(tmp_path: Path, command: list[str]) -> None:
    config = _gateway(tmp_path, bootstrap=f"127.0.0.1:{_dead_udp_port()}")
    ran = run_entry("cairn", "gateway", *command, "--config", str(config), cwd=tmp_path)
    ran.fails(1, "no DHT node answered", "check that those nodes run")


def test_no_bootstrap_is_a_usage_error(tmp_path: Path) -> None:
    config = _gateway(tmp_path)
    run_entry("cairn", "gateway", "collect", "--config", str(config), cwd=tmp_path).fails(
        2, "[dht].bootstrap is empty")


def test_a_bad_config_value_is_a_usage_error(tmp_path: Path) -> None:
    config = _gateway(tmp_path)
    config.write_text(config.read_text().replace("interval = 10.0", "interval = -1", 1))
    run_entry("cairn", "gateway", "integrity", "--config", str(config), cwd=tmp_path).fails(
        2, "interval")


def test_a_bad_flag_is_a_usage_error(tmp_path: Path) -> None:
    config = _gateway(tmp_path)
    run_entry("cairn", "gateway", "fetch", "--config", str(config), "--device", "x",
              "--stream", "s", "--since", "yesterday", "--until", "1", cwd=tmp_path).fails(
        2, "--since")


@pytest.mark.parametrize("command", [
    ["collect"],
    ["fetch", "--device", "board-1", "--stream", "board-1/temperature", "--since", "1",
     "--until", "2"],
])
def test_a_second_process_on_a_running_gateways_data_is_refused(
        running: tuple[Path, subprocess.Popen[str]], command: list[str]) -> None:
    config, proc = running
    ran = run_entry("cairn", "gateway", *command, "--config", str(config),
                    cwd=config.parent.parent)
    alive = proc.poll() is None
    line = ran.fails(1, "is in use by", f"pid {proc.pid} (cairn gateway run)")
    record("cli", f"`cairn gateway {command[0]}` while `cairn gateway run` runs on the same "
           "data", 1, 0 if alive and "in use" in line else 1, "gateway harmed")
    assert alive, "the running gateway stopped"
    # readers need no lock: they work beside the running gateway
    listed = run_entry("cairn", "gateway", "devices", "list", "--config", str(config),
                       cwd=config.parent.parent)
    assert listed.code == 0, listed


def test_the_replication_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        config = _gateway(tmp_path)
        config.write_text(config.read_text().replace(
            '[replication]\nlisten = ""', f'[replication]\nlisten = "127.0.0.1:{port}"', 1))
        ran = run_entry("cairn", "gateway", "run", "--config", str(config), cwd=tmp_path)
    ran.fails(1, f"('127.0.0.1', {port})", "address already in use",
              "another process holds that port")

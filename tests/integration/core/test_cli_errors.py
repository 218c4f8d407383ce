"""How `cairn` itself and `cairn dht` fail, run as a user runs them (a subprocess): one line,
exit 2 for a bad flag or argument, 1 for what failed at run time, never a traceback."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.integration.entry import run_entry

KEY = "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"


def test_a_bad_global_flag_is_a_usage_error(tmp_path: Path) -> None:
    ran = run_entry("cairn", "--log-format", "xml", "keys", cwd=tmp_path)
    ran.fails(2, "--log-format")


def test_an_unknown_command_is_a_usage_error(tmp_path: Path) -> None:
    run_entry("cairn", "no-such-group", cwd=tmp_path).fails(2, "No such command")


def test_the_dht_down_is_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ran = run_entry("cairn", "dht", "get", "--bootstrap", f"127.0.0.1:{port}", "--timeout", "3",
                    KEY, cwd=tmp_path)
    ran.fails(1, "no DHT node answered", f"127.0.0.1:{port}")


def test_a_dht_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        ran = run_entry("cairn", "dht", "bootstrap", "--port", str(port), cwd=tmp_path)
    ran.fails(1, "cannot listen", "in use")


def test_a_bad_argument_is_a_usage_error(tmp_path: Path) -> None:
    run_entry("cairn", "dht", "get", "--bootstrap", "nowhere", KEY, cwd=tmp_path).fails(
        2, "is not HOST:PORT")

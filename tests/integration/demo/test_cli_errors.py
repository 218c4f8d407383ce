"""How `cairn demo` fails before it starts anything: a busy API port (exit 1), a data
directory that is not a demo's (exit 2: what the user gave)."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.integration.entry import run_entry


def test_the_api_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        ran = run_entry("cairn", "demo", "--data", str(tmp_path / "d"), "--api-port",
                        str(port), "--duration", "1", cwd=tmp_path)
    ran.fails(1, f"port {port} is in use", "--api-port")


def test_a_data_directory_not_the_demos_is_a_usage_error(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.txt").write_text("keep me")
    ran = run_entry("cairn", "demo", "--data", str(mine), "--fresh", "--api-port", "0",
                    "--duration", "1", cwd=tmp_path)
    ran.fails(2, "not a demo's data directory")
    assert (mine / "thesis.txt").read_text() == "keep me"

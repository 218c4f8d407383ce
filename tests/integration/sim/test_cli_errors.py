"""How `cairn sim run` fails: with no broker it gives up after --connect-timeout (it ran its
whole --duration before, then said nothing could connect), exit 1; a bad broker URL is a usage
error, exit 2."""

from __future__ import annotations

import socket
from pathlib import Path

from tests.integration.entry import run_entry


def test_no_broker_fails_within_the_connect_timeout(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connections are refused
        # --duration 600 and a subprocess timeout of 60 s: only giving up early passes
        ran = run_entry("cairn", "sim", "run", "--broker", f"mqtt://127.0.0.1:{port}",
                        "--duration", "600", "--connect-timeout", "1", "--quiet",
                        cwd=tmp_path, timeout=60)
    ran.fails(1, f"no device could connect to mqtt://127.0.0.1:{port} within 1 s",
              "start the broker")


def test_a_bad_broker_url_is_a_usage_error(tmp_path: Path) -> None:
    run_entry("cairn", "sim", "run", "--broker", "ftp://example", cwd=tmp_path).fails(
        2, "--broker")

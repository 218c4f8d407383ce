"""`cairn gateway grafana push` against a stand-in for Grafana's HTTP API on 127.0.0.1.

Grafana itself cannot be installed here (no Debian package, no network), so this is a test
double of the four endpoints the command uses, checking what a Grafana would receive: the
data sources (created, then updated by uid on a second push, URLs overridden) and the three
dashboards (overwrite on)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from cairn_gateway.auth import new_token
from tests.scorecard import record


class FakeGrafana(BaseHTTPRequestHandler):
    datasources: dict[str, dict[str, Any]] = {}  # noqa: RUF012 - reset per test
    dashboards: dict[str, dict[str, Any]] = {}  # noqa: RUF012
    calls: list[tuple[str, str, str]] = []  # noqa: RUF012
    editor = "Bearer editor-token"  # a token whose role may not touch data sources (Editor)

    def _reply(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> Any:
        return json.loads(self.rfile.read(int(self.headers["Content-Length"])))

    def log_message(self, *args: object) -> None:
        pass

    def _forbidden(self) -> bool:
        """Grafana's answer to an Editor touching data sources (they need Admin)."""
        if "datasources" in self.path and self.headers.get("Authorization") == self.editor:
            self._reply(403, {"message": "You'll need additional permissions to perform this "
                                         "action. Permissions needed: datasources:read"})
            return True
        return False

    def do_GET(self) -> None:
        self.calls.append(("GET", self.path, self.headers.get("Authorization", "")))
        if self._forbidden():
            return
        uid = self.path.removeprefix("/api/datasources/uid/")
        if uid in self.datasources:
            self._reply(200, self.datasources[uid])
        else:
            self._reply(404, {"message": "Data source not found"})

    def do_POST(self) -> None:
        body = self._body()
        self.calls.append(("POST", self.path, self.headers.get("Authorization", "")))
        if self._forbidden():
            return
        if self.path == "/api/datasources":
            self.datasources[body["uid"]] = body
            self._reply(200, {"message": "Datasource added", "id": len(self.datasources)})
        elif self.path == "/api/dashboards/db":
            assert body["overwrite"] is True
            self.dashboards[body["dashboard"]["uid"]] = body["dashboard"]
            self._reply(200, {"status": "success", "uid": body["dashboard"]["uid"]})
        else:
            self._reply(404, {"message": "not found"})

    def do_PUT(self) -> None:
        body = self._body()
        self.calls.append(("PUT", self.path, self.headers.get("Authorization", "")))
        uid = self.path.removeprefix("/api/datasources/uid/")
        self.datasources[uid] = body
        self._reply(200, {"message": "Datasource updated"})


@pytest.fixture
def grafana() -> Iterator[str]:
    FakeGrafana.datasources, FakeGrafana.dashboards, FakeGrafana.calls = {}, {}, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeGrafana)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def push(url: str, *more: str, token: str = "secret-token") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cairn.cli", "gateway", "grafana", "push",
                           "--url", url, "--token", token, *more],
                          capture_output=True, text=True, timeout=60, check=False)


def test_push_creates_then_updates(grafana: str) -> None:
    done = push(grafana, "--gateway-url", "http://10.0.0.5:8080")
    assert done.returncode == 0, done.stderr
    assert set(FakeGrafana.datasources) == {"cairn-gateway", "cairn-prometheus"}
    gw = FakeGrafana.datasources["cairn-gateway"]
    assert gw["url"] == "http://10.0.0.5:8080"
    assert gw["jsonData"]["allowedHosts"] == ["http://10.0.0.5:8080"]
    assert set(FakeGrafana.dashboards) == {"cairn-fleet", "cairn-device", "cairn-integrity"}
    assert all(auth == "Bearer secret-token" for _, _, auth in FakeGrafana.calls)
    FakeGrafana.calls.clear()
    done = push(grafana)
    assert done.returncode == 0, done.stderr
    methods = [(m, p) for m, p, _ in FakeGrafana.calls if "datasources" in p]
    assert ("PUT", "/api/datasources/uid/cairn-gateway") in methods
    assert not [p for m, p in methods if m == "POST"]  # updated, not created twice
    assert "updated data source" in done.stdout


def test_push_says_when_grafana_is_not_there() -> None:
    done = push("http://127.0.0.1:9")  # nothing listens on the discard port
    assert done.returncode == 1 and "Grafana at http://127.0.0.1:9" in done.stderr


def test_push_gives_grafana_the_gateways_read_token(grafana: str, tmp_path: Path) -> None:
    token_file = tmp_path / "api-read.token"
    read = new_token(token_file)
    done = push(grafana, "--gateway-token-file", str(token_file))
    assert done.returncode == 0, done.stderr
    gw = FakeGrafana.datasources["cairn-gateway"]
    assert gw["jsonData"]["httpHeaderName1"] == "Authorization"
    assert gw["secureJsonData"] == {"httpHeaderValue1": f"Bearer {read}"}
    assert read not in done.stdout + done.stderr  # the token is never printed
    done = push(grafana)  # without the file: Grafana keeps what it holds
    assert done.returncode == 0, done.stderr
    gw = FakeGrafana.datasources["cairn-gateway"]
    assert "secureJsonData" not in gw  # the provisioning file's ${...} is never sent
    token_file.chmod(0o644)
    done = push(grafana, "--gateway-token-file", str(token_file))
    assert done.returncode == 2 and "readable by others" in done.stderr  # a usage error
    assert "Traceback" not in done.stderr


def test_an_editor_token_is_told_to_use_an_admin_service_account(grafana: str) -> None:
    """Grafana answers 403 to an Editor creating data sources: push says which role it needs,
    in one line, and installs nothing half-way."""
    done = push(grafana, token="editor-token")
    lines = done.stderr.strip().splitlines()
    told = done.returncode == 1 and len(lines) == 1 and "Admin role" in lines[0]
    record("grafana", "grafana push with an Editor token (403 on data sources)", 1,
           int(not told), "runs without one line naming the Admin role")
    assert done.returncode == 1, done.stdout
    [line] = lines
    assert "403 Forbidden" in line and "Admin role" in line and "service account" in line
    assert "data source 'Cairn gateway'" in line and "Traceback" not in done.stderr
    assert not FakeGrafana.datasources and not FakeGrafana.dashboards

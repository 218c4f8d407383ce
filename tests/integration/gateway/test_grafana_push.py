"""`cairn gateway grafana push` against a stand-in for Grafana's HTTP API on 127.0.0.1.

Grafana itself cannot be installed here (no Debian package, no network), so this is a test
double of the four endpoints the command uses, checking what a Grafana would receive: the
data sources (created, then updated by uid on a second push, URLs overridden) and the three
dashboards (overwrite on)."""

from __future__ import annotations

import json
import os
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


# -- the PostgreSQL data source --------------------------------------------------------------

PG_DASHBOARDS = {"cairn-pg-fleet", "cairn-pg-device", "cairn-pg-integrity"}


def _password_file(tmp_path: Path, text: str = "s3cret-grafana-pw") -> Path:
    path = tmp_path / "grafana-db.password"
    path.write_text(text + "\n")
    path.chmod(0o600)
    return path


def test_push_postgres_creates_the_data_source_and_its_dashboards(grafana: str,
                                                                 tmp_path: Path) -> None:
    pw = _password_file(tmp_path)
    done = push(grafana, "--datasource", "postgres", "--store-url",
                "postgresql://cairn_grafana@db.example:5433/cairn?sslmode=disable",
                "--store-password-file", str(pw))
    assert done.returncode == 0, done.stderr
    assert set(FakeGrafana.datasources) == {"cairn-postgres"}  # nothing of the Infinity set
    ds = FakeGrafana.datasources["cairn-postgres"]
    assert ds["type"] == "grafana-postgresql-datasource"
    assert (ds["url"], ds["user"]) == ("db.example:5433", "cairn_grafana")
    assert ds["jsonData"]["database"] == "cairn" and ds["jsonData"]["sslmode"] == "disable"
    assert ds["secureJsonData"] == {"password": "s3cret-grafana-pw"}
    assert set(FakeGrafana.dashboards) == PG_DASHBOARDS
    assert "s3cret-grafana-pw" not in done.stdout + done.stderr
    assert "postgresql://cairn_grafana@db.example:5433/cairn" in done.stdout
    done = push(grafana, "--datasource", "postgres", "--store-url",
                "postgresql://cairn_grafana@db.example:5433/cairn")  # no password: kept
    assert done.returncode == 0, done.stderr
    ds = FakeGrafana.datasources["cairn-postgres"]
    assert "secureJsonData" not in ds and ds["jsonData"]["sslmode"] == "require"


def test_push_postgres_takes_the_password_from_the_environment(grafana: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cairn.cli", "gateway", "grafana", "push", "--url", grafana,
         "--token", "secret-token", "--datasource", "postgres",
         "--store-url", "postgres://reader@[::1]/cairn"],
        capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "CAIRN_GRAFANA_DB_PASSWORD": "from-the-env-pw"})
    assert done.returncode == 0, done.stderr
    ds = FakeGrafana.datasources["cairn-postgres"]
    assert ds["url"] == "[::1]:5432" and ds["secureJsonData"] == {"password": "from-the-env-pw"}
    assert "from-the-env-pw" not in done.stdout + done.stderr


def test_push_postgres_from_the_gateway_config_leaves_the_gateways_password_out(
        grafana: str, tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    writer = tmp_path / "gateway.pw"  # the gateway's own password: never Grafana's
    writer.write_text("gateway-writer-pw\n")
    writer.chmod(0o600)
    config.write_text('[store]\nurl = "postgresql://cairn@pg.lan/fleet"\n'
                      'password_file = "gateway.pw"\n')
    done = push(grafana, "--datasource", "postgres", "--config", str(config),
                "--store-user", "cairn_grafana", "--store-password-file",
                str(_password_file(tmp_path)))
    assert done.returncode == 0, done.stderr
    ds = FakeGrafana.datasources["cairn-postgres"]
    assert (ds["url"], ds["user"], ds["jsonData"]["database"]) == \
        ("pg.lan:5432", "cairn_grafana", "fleet")
    assert ds["secureJsonData"] == {"password": "s3cret-grafana-pw"}
    assert "gateway-writer-pw" not in json.dumps(FakeGrafana.datasources)
    assert "gateway-writer-pw" not in done.stdout + done.stderr
    record("grafana", "grafana push --datasource postgres from a config with the gateway's "
           "password file", 1, 0, "passwords given to Grafana or shown")


@pytest.mark.parametrize(("args", "says"), [
    (["--store-url", "postgresql://u:pw-on-the-command-line@db/cairn"], "holds a password"),
    (["--store-url", "mysql://u@db/cairn"], "give a postgresql:// URL"),
    (["--store-url", "postgresql://u@db/"], "postgresql://user@host:port/database"),
    (["--store-url", "postgresql://u@db:99999/cairn"], "store URL: Port out of range"),
    (["--store-url", "postgresql://u@db/cairn?sslmode=prefer"], "sslmode 'prefer'"),
    ([], "needs --store-url or --config"),
    (["--store-url", "postgresql://u@db/cairn", "--gateway-url", "http://x"],
     "--gateway-url: not for --datasource postgres"),
])
def test_push_postgres_refuses_what_it_cannot_use_in_one_line(
        grafana: str, args: list[str], says: str) -> None:
    done = push(grafana, "--datasource", "postgres", *args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and says in lines[0], done.stderr
    assert "pw-on-the-command-line" not in done.stderr + done.stdout
    assert not FakeGrafana.datasources and not FakeGrafana.dashboards


def test_push_postgres_refuses_a_password_file_others_can_read(grafana: str,
                                                               tmp_path: Path) -> None:
    pw = _password_file(tmp_path, "readable-by-all-pw")
    pw.chmod(0o644)
    done = push(grafana, "--datasource", "postgres", "--store-url", "postgresql://u@db/cairn",
                "--store-password-file", str(pw))
    assert done.returncode == 2 and "readable by others" in done.stderr
    assert "readable-by-all-pw" not in done.stderr + done.stdout
    config = tmp_path / "sqlite.toml"
    config.write_text('[store]\nretention_days = 30\n')
    done = push(grafana, "--datasource", "postgres", "--config", str(config))
    assert done.returncode == 2 and "has no [store] url" in done.stderr
    record("grafana", "grafana push --datasource postgres with a password file others can "
           "read", 1, 0, "passwords used or shown")

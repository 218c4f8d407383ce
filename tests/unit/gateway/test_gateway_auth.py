"""The API's guard, in process (httpx over ASGI, no sockets): bearer tokens on every route but
/healthz, 401/403 with reasons, body limits, errors as JSON without tracebacks, hostile query
strings never a 500; the token files; the [api] config keys; `gateway init` writes the tokens;
`gateway run` refuses an API open to the network without a token."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cairn.frames import Frame, Sample
from cairn.settings import ConfigError
from cairn_gateway.api import make_app
from cairn_gateway.auth import ApiAuth, Guard, TokenError, load_token, new_token
from cairn_gateway.cli import gateway
from cairn_gateway.config import TEMPLATE, parse_config
from cairn_gateway.serve import RateLimitedLog, accept_error_handler, check_listen, is_loopback
from cairn_gateway.store import Store

T0 = 1_764_000_000.0
READ = b"r" * 43
ADMIN = b"a" * 43


def bearer(token: bytes) -> dict[str, str]:
    return {"Authorization": f"Bearer {token.decode()}"}


def seeded_store(path: Path) -> Store:
    store = Store(path)
    dev = store.device(b"d" * 32, "board-1", T0)
    sid = store.stream(dev, "board-1/temperature", b"k" * 32, "Cel")
    store.ingest(sid, [(i, 0, Frame((Sample("board-1/temperature", "Cel", T0 + i * 30,
                                            20.0 + i),))) for i in range(40)])
    return store


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    store = seeded_store(tmp_path / "gw.db")
    app = make_app(store, auth=ApiAuth(READ, ADMIN), max_body_bytes=1000)

    @app.get("/api/boom")
    async def boom() -> None:
        raise RuntimeError("a bug\nwith a second line")

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gateway") as c:
        yield c, app
    store.close()


ROUTES = ["/api/devices", "/api/streams", "/api/latest", "/api/integrity", "/metrics",
          "/api/samples?stream=1&from=0&to=1", "/openapi.json", "/docs", "/no/such/path"]


@pytest.mark.parametrize("path", ROUTES)
async def test_every_route_but_healthz_needs_a_token(
        guarded: tuple[httpx.AsyncClient, Any], path: str) -> None:
    client, _ = guarded
    for headers in ({}, bearer(b"x" * 43), {"Authorization": "Basic dXNlcjpwYXNz"},
                    {"Authorization": "Bearer"}, bearer(READ + b"x")):
        r = await client.get(path, headers=headers)
        assert r.status_code == 401, (path, headers)
        assert r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["detail"]
    for token in (READ, ADMIN):
        r = await client.get(path, headers=bearer(token))
        assert r.status_code in (200, 404), (path, r.text)  # 404: the unknown path only
        assert (r.status_code == 404) == (path == "/no/such/path")
    r = await client.get("/healthz")
    assert r.status_code == 200 and r.json()["ok"] is True


async def test_every_method_that_changes_state_needs_the_admin_token(
        guarded: tuple[httpx.AsyncClient, Any]) -> None:
    client, _ = guarded
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        r = await client.request(method, "/api/devices", headers=bearer(READ))
        assert r.status_code == 403 and "read token" in r.json()["detail"]
        r = await client.request(method, "/api/devices")
        assert r.status_code == 401 and "www-authenticate" in r.headers
        r = await client.request(method, "/healthz")  # open for GET only
        assert r.status_code == 401
        r = await client.request(method, "/api/devices", headers=bearer(ADMIN))
        # past the guard: POST enrols (422: no body), the others have no such route
        assert r.status_code == (422 if method == "POST" else 405)


async def test_without_tokens_reads_are_open_and_nothing_changes_state(tmp_path: Path) -> None:
    store = seeded_store(tmp_path / "gw.db")
    try:
        transport = httpx.ASGITransport(app=make_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            assert (await client.get("/api/latest")).status_code == 200
            r = await client.post("/api/devices", headers=bearer(ADMIN))
            assert r.status_code == 403 and "admin_token_file" in r.json()["detail"]
    finally:
        store.close()


def test_the_check_is_exact() -> None:
    auth = ApiAuth(READ, None)
    assert auth.check("GET", b"Bearer " + READ) is None
    assert auth.check("GET", b"bearer  " + READ + b" ") is None
    assert auth.check("GET", b"Bearer " + READ[:-1]) is not None
    assert auth.check("GET", b"Bearer " + READ + b"\x00") is not None
    refused = auth.check("DELETE", b"Bearer " + READ)
    assert refused is not None and refused[0] == 403 and "none is configured" in refused[1]
    assert ApiAuth(READ, ADMIN).check("DELETE", b"Bearer " + READ) == (
        403, "DELETE needs the admin token; this is the read token")


async def test_an_unexpected_error_is_one_log_line_and_a_500_without_traceback(
        guarded: tuple[httpx.AsyncClient, Any], caplog: pytest.LogCaptureFixture) -> None:
    client, _ = guarded
    with caplog.at_level(logging.ERROR, logger="cairn_gateway.auth"):
        r = await client.get("/api/boom", headers=bearer(READ))
    assert r.status_code == 500
    assert r.json() == {"detail": "internal error (logged by the gateway)"}
    [line] = caplog.records
    assert line.exc_info is None and "RuntimeError: a bug" in line.getMessage()


async def test_bodies_are_bounded(guarded: tuple[httpx.AsyncClient, Any]) -> None:
    client, _ = guarded
    r = await client.post("/api/devices", headers=bearer(ADMIN), content=b"x" * 1001)
    assert r.status_code == 413 and "1000 bytes" in r.json()["detail"]
    r = await client.post("/api/devices", headers={**bearer(ADMIN), "Content-Length": "-1"},
                          content=b"")
    assert r.status_code == 413


async def test_a_number_sqlite_cannot_hold_is_never_a_500(
        guarded: tuple[httpx.AsyncClient, Any]) -> None:
    client, _ = guarded
    r = await client.get("/api/samples", headers=bearer(READ),
                         params={"stream": 2 ** 70, "from": 0, "to": 1})
    assert r.status_code == 404 and f"no stream '{2 ** 70}'" in r.json()["detail"]
    r = await client.get("/api/samples", headers=bearer(READ),
                         params={"stream": 1, "from": 0, "to": 1, "cursor": f"1.0_{2 ** 70}_0"})
    assert r.status_code == 422 and "cursor" in r.json()["detail"]


NUMBERS = st.one_of(st.integers(-(2 ** 80), 2 ** 80).map(str),
                    st.floats(allow_nan=True, allow_infinity=True).map(repr),
                    st.sampled_from(["", "nan", "inf", "-inf", "1e999", "0x10", " 1", "1_0",
                                     "١", "\x00", "%00", "true", "[]"]),
                    st.text(max_size=12))
QUERY = st.dictionaries(st.sampled_from(["stream", "from", "to", "step", "device", "x",
                                         "cursor", "limit", "order"]),
                        NUMBERS, max_size=5)


@settings(max_examples=300, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(path=st.sampled_from(["/api/samples", "/api/rollups", "/api/states", "/api/streams",
                             "/api/devices", "/api/latest", "/metrics"]), query=QUERY)
async def test_hostile_query_strings_are_never_a_500(
        guarded: tuple[httpx.AsyncClient, Any], path: str, query: dict[str, str]) -> None:
    client, _ = guarded
    r = await client.get(path, params=query, headers=bearer(READ))
    assert r.status_code in (200, 400, 404, 422), (path, query, r.text)
    if r.status_code != 200:
        assert r.json()["detail"], (path, query)
        assert "Traceback" not in r.text


def test_token_files(tmp_path: Path) -> None:
    path = tmp_path / "t.token"
    token = new_token(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(token) >= 32
    assert load_token(path, "read token") == token.encode()
    with pytest.raises(TokenError, match="already exists"):
        new_token(path)
    os.chmod(path, 0o644)
    with pytest.raises(TokenError, match=r"readable by others.*chmod 600"):
        load_token(path, "read token")
    short = tmp_path / "short"
    short.write_text("hunter2\n")
    short.chmod(0o600)
    with pytest.raises(TokenError, match="at least 32"):
        load_token(short, "read token")
    spaced = tmp_path / "spaced"
    spaced.write_text("a" * 20 + " " + "b" * 20)
    spaced.chmod(0o600)
    with pytest.raises(TokenError, match="without spaces"):
        load_token(spaced, "read token")
    with pytest.raises(TokenError, match=r"no admin token at .*cairn gateway init"):
        load_token(tmp_path / "missing", "admin token")
    same = tmp_path / "same"
    same.write_text(token)
    same.chmod(0o600)
    path.chmod(0o600)
    with pytest.raises(TokenError, match="hold the same token"):
        ApiAuth.from_files(path, same)
    assert ApiAuth.from_files(path, None) == ApiAuth(token.encode(), None)


def test_api_config_keys(tmp_path: Path) -> None:
    cfg = parse_config(TEMPLATE, tmp_path)
    assert cfg.api == ("127.0.0.1", 8080)  # loopback by default
    assert cfg.api_read_token_file == tmp_path / "api-read.token"
    assert cfg.api_admin_token_file == tmp_path / "api-admin.token"
    assert (cfg.api_max_connections, cfg.api_request_timeout, cfg.api_max_header_bytes,
            cfg.api_max_body_bytes) == (256, 10.0, 16384, 65536)
    bare = parse_config("", tmp_path)
    assert bare.api == ("127.0.0.1", 8080) and bare.api_read_token_file is None
    for text, message in [
            ("[api]\ntoken = 'x'", r"\[api\]: unknown key\(s\) token"),
            ("[api]\nread_token_file = 3", r"\[api\].read_token_file: expected a path"),
            ("[api]\nmax_connections = 0", r"\[api\].max_connections: 0 is not an integer"),
            ("[api]\nrequest_timeout = inf", r"\[api\].request_timeout: inf is not a number"),
            ("[api]\nmax_header_bytes = 10", r"\[api\].max_header_bytes: 10 is not"),
            ("[api]\nmax_body_bytes = -1", r"\[api\].max_body_bytes: -1 is not")]:
        with pytest.raises(ConfigError, match=message):
            parse_config(text, tmp_path)


def test_a_network_listener_needs_a_read_token() -> None:
    for host in ("127.0.0.1", "127.1.2.3", "::1", "[::1]", "localhost"):
        assert is_loopback(host)
        check_listen(host, 8080, read_token=False)
    for host in ("0.0.0.0", "::", "192.168.1.10", "gateway"):
        assert not is_loopback(host)
        with pytest.raises(ConfigError, match="read_token_file is not set"):
            check_listen(host, 8080, read_token=False)
        check_listen(host, 8080, read_token=True)


def test_rate_limited_log_says_how_many(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    events = RateLimitedLog(10.0, clock=lambda: now[0])
    with caplog.at_level(logging.WARNING, logger="cairn_gateway.serve"):
        logged = []
        for k in range(1000):  # 1,000 failed accepts over 25 s
            now[0] = k * 0.025
            logged.append(events.note("accept", "cannot accept connections"))
    assert sum(logged) == 3  # at 0, 10 and 20 s
    assert [r.getMessage() for r in caplog.records][1].endswith("(400 times since the last "
                                                                "such line)")
    assert events.totals["accept"] == 1000


def test_init_writes_the_tokens_and_run_refuses_an_open_network_api(tmp_path: Path) -> None:
    runner = CliRunner()
    out = runner.invoke(gateway, ["init", str(tmp_path / "gw")])
    assert out.exit_code == 0, out.output
    for name in ("api-read.token", "api-admin.token"):
        assert f"wrote {tmp_path / 'gw' / name} (mode 0600)" in out.output
        assert stat.S_IMODE((tmp_path / "gw" / name).stat().st_mode) == 0o600
        load_token(tmp_path / "gw" / name, "token")
    assert load_token(tmp_path / "gw" / "api-read.token", "t") != \
        load_token(tmp_path / "gw" / "api-admin.token", "t")
    config = tmp_path / "gw" / "gateway.toml"
    text = config.read_text()
    config.write_text(text.replace('listen = "127.0.0.1:8080"', 'listen = "0.0.0.0:0"')
                      .replace('read_token_file = "api-read.token"', ""))
    out = runner.invoke(gateway, ["run", "--config", str(config)])
    assert out.exit_code == 1
    assert "reachable from other hosts but [api].read_token_file is not set" in out.output
    assert "Traceback" not in out.output
    (tmp_path / "gw" / "api-admin.token").chmod(0o640)
    config.write_text(text)
    out = runner.invoke(gateway, ["run", "--config", str(config)])
    assert out.exit_code == 1 and "readable by others" in out.output


async def test_a_body_that_does_not_arrive_in_time_is_a_408() -> None:
    async def reads_the_body(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        raise AssertionError("the body never comes")

    guard = Guard(reads_the_body, ApiAuth(None, ADMIN), body_timeout=0.05)
    never = asyncio.Event()
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await never.wait()  # a client that sent its headers and then nothing
        return {}

    async def send(message: Any) -> None:
        sent.append(message)

    await guard({"type": "http", "method": "POST", "path": "/api/devices",
                 "headers": [(b"authorization", b"Bearer " + ADMIN),
                             (b"content-length", b"10")]}, receive, send)
    assert sent[0]["status"] == 408
    assert b"took longer than 0.05 s" in sent[1]["body"]


def test_only_a_failed_accept_is_counted_quietly(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.new_event_loop()
    try:
        events = RateLimitedLog()
        handle = accept_error_handler(events)
        emfile = OSError(errno.EMFILE, "Too many open files")
        with caplog.at_level(logging.WARNING):
            for _ in range(50):
                handle(loop, {"message": "socket.accept() out of system resource",
                              "exception": emfile})
            handle(loop, {"message": "Task exception was never retrieved",
                          "exception": emfile})  # not an accept: asyncio's own handler
        assert events.totals == {"accept": 50}
        lines = [r.getMessage() for r in caplog.records]
        assert len(lines) == 2
        assert "cannot accept connections: Too many open files" in lines[0]
        assert "Task exception was never retrieved" in lines[1]
    finally:
        loop.close()


async def test_enrolment_through_the_api_needs_the_admin_token(
        guarded: tuple[httpx.AsyncClient, Any]) -> None:
    from cairn.crypto import random_key_pair
    from cairn.fleet.enrollment import Enrollment

    c, _app = guarded
    key = random_key_pair().public_key
    string = str(Enrollment("board-7", key))
    body = {"enrollment": string}
    assert (await c.post("/api/devices", json=body)).status_code == 401
    assert (await c.post("/api/devices", json=body, headers=bearer(READ))).status_code == 403
    r = await c.post("/api/devices", json=body, headers=bearer(ADMIN))
    assert r.status_code == 201, r.text
    assert (r.json()["name"], r.json()["status"]) == ("board-7", "enrolled")
    listed = (await c.get("/api/devices", headers=bearer(READ))).json()
    assert [d["enrolled"] for d in listed if d["record_key"] == key.hex()] == [True]
    # bad input: a mistyped string, neither form, a name taken by another key, a bad key
    typo = string[:-1] + ("0" if string[-1] != "0" else "1")
    for bad, code, says in [
            ({"enrollment": typo}, 400, "checksum"),
            ({"name": "board-8"}, 400, "give enrollment"),
            ({"record_key": random_key_pair().public_key.hex(), "name": "board-7"}, 409,
             "board-7"),
            ({"record_key": "zz", "name": "board-9"}, 400, "64 hex"),
            ({"enrollment": "x" * 201}, 422, "")]:
        r = await c.post("/api/devices", json=bad, headers=bearer(ADMIN))
        assert r.status_code == code and says in r.text, (bad, r.status_code, r.text)
    assert (await c.delete("/api/devices/board-7", headers=bearer(READ))).status_code == 403
    r = await c.delete("/api/devices/board-7", headers=bearer(ADMIN))
    assert r.status_code == 200 and r.json()["status"] == "removed", r.text
    assert (await c.delete("/api/devices/board-7", headers=bearer(ADMIN))).status_code == 404

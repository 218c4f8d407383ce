"""The edge agent's /healthz and /readyz (cairn_edge.health): the checks on a fake clock, the
answer to each request line, hostile request lines."""

from __future__ import annotations

import json
from typing import Any

from cairn_edge.health import EdgeHealth, answer
from tests.scorecard import record


class Clock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def _health(status: dict[str, Any], clock: Clock, max_disk: int = 0) -> EdgeHealth:
    return EdgeHealth(lambda: status, "mqtt://127.0.0.1:1883", 300.0, max_disk, clock=clock)


def _body(response: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body) if body else {}


def test_ready_when_connected_committing_and_within_the_quota() -> None:
    clock = Clock()
    status = {"broker_connected": True, "disk_bytes": 1_000_000}
    h = _health(status, clock, max_disk=5_000_000)
    h.committed()
    clock.now += 2
    ready, body = h.readiness()
    assert ready, body
    assert body["checks"]["commits"]["detail"] == "last commit 2s ago"
    assert body["checks"]["disk"]["detail"] == "1.0 MB of a 5 MB quota"


def test_each_failing_check_says_what_failed() -> None:
    clock = Clock()
    status = {"broker_connected": False, "disk_bytes": 6_000_000}
    h = _health(status, clock, max_disk=5_000_000)
    clock.now += 301
    ready, body = h.readiness()
    checks = body["checks"]
    assert not ready and not any(c["ok"] for c in checks.values())
    assert checks["broker"]["detail"] == "not connected to mqtt://127.0.0.1:1883"
    assert checks["commits"]["detail"].startswith("no commit since the start 5m1s ago (over 300")
    assert "6.0 MB of a 5 MB quota: the oldest" in checks["disk"]["detail"]


def test_no_commit_bound_and_no_quota() -> None:
    clock = Clock()
    h = EdgeHealth(lambda: {"broker_connected": True, "disk_bytes": 10**12},
                   "b", 0.0, 0, clock=clock)
    clock.now += 10**6
    assert h.readiness()[0]


def test_the_answers() -> None:
    clock = Clock()
    status = {"broker_connected": True, "disk_bytes": 0}
    h = _health(status, clock)
    assert _body(answer(b"GET /healthz HTTP/1.1", h)) == (200, {"ok": True})
    code, body = _body(answer(b"GET /readyz?verbose=1 HTTP/1.0", h))
    assert code == 200 and body["ready"] is True
    status["broker_connected"] = False
    code, body = _body(answer(b"GET /readyz HTTP/1.1", h))
    assert code == 503 and body["checks"]["broker"]["ok"] is False
    head = answer(b"HEAD /readyz HTTP/1.1", h)
    assert head.startswith(b"HTTP/1.1 503") and head.endswith(b"\r\n\r\n")


def test_hostile_request_lines_get_a_short_error() -> None:
    h = _health({"broker_connected": True, "disk_bytes": 0}, Clock())
    cases = {b"": 400, b"GET": 400, b"\xff\xfe\x00 / HTTP/1.1": 404, b"GET / HTTP/1.1": 404,
             b"GET /metrics HTTP/1.1": 404, b"POST /readyz HTTP/1.1": 405,
             b"GET /readyz FTP/1.0": 400, b"GET /../readyz HTTP/1.1": 404,
             b"DELETE /healthz HTTP/1.1": 405, b"GET /healthz HTTP/1.1 extra": 400}
    wrong = 0
    for line, want in cases.items():
        code, body = _body(answer(line, h))
        wrong += code != want or "error" not in body
    assert wrong == 0
    record("api", "hostile request lines to the edge's health endpoints", len(cases), wrong,
           "answers other than a short JSON error")

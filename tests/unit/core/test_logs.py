"""cairn.logs: JSON lines with extra fields, credentials redacted from every part of a record,
a noisy library's tracebacks kept out, and the root set up once by every entry point."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator

import pytest

from cairn import logs
from tests.scorecard import record

SECRET = "hunter2-mqtt-password-7f3a"
TOKEN = "tok_4b1f0c9e8d7a6b5c4d3e2f1a0b9c8d7e"


class Err:
    """What was written to stderr so far (pytest's capture)."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys
        self.text = ""

    def getvalue(self) -> str:
        self.text += self.capsys.readouterr().err
        return self.text


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Iterator[Err]:
    """The root logger configured by cairn.logs, its stderr captured; undone afterwards."""
    out = Err(capsys)
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    monkeypatch.setattr(logs, "_secrets", set())
    monkeypatch.setattr(logs, "_quiet", {})
    yield out
    for h in list(root.handlers):
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def test_json_lines_carry_time_level_logger_message_and_extra_fields(
        stream: Err) -> None:
    logs.configure_logging("json", 1)
    logging.getLogger("cairn_gateway.daemon").info(
        "round %d: %d devices", 3, 2, extra={"round": 3, "devices": 2, "duration_s": 0.25})
    logging.getLogger("x").debug("not at -v")
    [line] = stream.getvalue().splitlines()
    obj = json.loads(line)
    assert obj["level"] == "info" and obj["logger"] == "cairn_gateway.daemon"
    assert obj["message"] == "round 3: 2 devices"
    assert obj["round"] == 3 and obj["devices"] == 2 and obj["duration_s"] == 0.25
    assert obj["time"].endswith("+00:00")


def test_a_traceback_is_one_field_of_one_line(stream: Err) -> None:
    logs.configure_logging("json", 0)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("x").exception("failed")
    [line] = stream.getvalue().splitlines()
    assert "ValueError: boom" in json.loads(line)["exception"]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_secrets_never_reach_a_line(stream: Err, fmt: str) -> None:
    logs.configure_logging(fmt, 2)
    logs.add_secret(SECRET)
    logs.add_secret(TOKEN.encode())
    logs.add_secret(bytes(range(32)))  # a seed: its hex form too
    log = logging.getLogger("anything.at.all")
    attempts: list[Callable[[], None]] = [
        lambda: log.info("password is %s", SECRET),
        lambda: log.info(f"token {TOKEN} in the message itself"),
        lambda: log.debug("a url mqtt://edge:%s@broker:1883/x", "other-pass-99"),
        lambda: log.warning("seed %s", bytes(range(32)).hex()),
        lambda: log.info("in an extra field", extra={"auth": f"Bearer {TOKEN}"}),
        lambda: log.info("https://admin:grafana-pass-123@grafana.local/api seen"),
    ]
    for attempt in attempts:
        attempt()
    try:
        raise RuntimeError(f"connect failed with {SECRET}")
    except RuntimeError:
        log.exception("traceback holds it")
    text = stream.getvalue()
    leaked = [s for s in (SECRET, TOKEN, bytes(range(32)).hex(), "other-pass-99",
                          "grafana-pass-123") if s in text]
    assert not leaked, text
    assert text.count("***") >= len(attempts)
    assert "mqtt://edge:***@broker:1883/x" in text
    record("logs", f"credentials logged in {fmt} lines (message, arguments, URL userinfo, "
           "extra fields, tracebacks)", len(attempts) + 1, len(leaked),
           "secrets that reached a line")


def test_short_secrets_are_not_registered() -> None:
    before = set(logs._secrets)
    logs.add_secret("ab")
    logs.add_secret(None)
    assert logs._secrets == before


def test_a_quieted_library_logs_no_traceback_and_only_from_its_level(
        stream: Err) -> None:
    logs.configure_logging("text", 0)
    logs.quiet_tracebacks("amqtt", logging.INFO)
    lib = logging.getLogger("amqtt.mqtt.protocol.handler")
    try:
        raise TimeoutError("Timeout waiting for PUBACK")
    except TimeoutError:
        lib.warning("Unhandled exception in reader coro", exc_info=True)
    assert stream.getvalue() == ""  # lowered to info: not shown at the default level
    logs.configure_logging("text", 1)
    try:
        raise TimeoutError("Timeout waiting for PUBACK")
    except TimeoutError:
        lib.error("Unhandled exception in reader coro", exc_info=True)
    text = stream.getvalue()
    assert "Unhandled exception in reader coro" in text and "INFO" in text
    assert "Traceback" not in text
    logging.getLogger("cairn").warning("ours stay warnings")
    assert "WARNING" in stream.getvalue()


def test_an_unknown_format_is_refused() -> None:
    with pytest.raises(ValueError, match="xml"):
        logs.configure_logging("xml", 0)

"""Board logins for the embedded broker, and credentials kept out of messages (issue 17 part 5)."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from cairn.brokers import parse_broker, redact
from cairn_edge.adapters import DEFAULT_ROUTES, Route, match_topic
from cairn_edge.adapters.routing import route_device
from cairn_edge.boards import (
    EdgeLogin,
    check_names,
    check_password,
    is_loopback,
    load_boards,
    own_filters,
    topic_allowed,
)
from cairn_edge.config import ConfigError, parse_config

SECRET = "S3cret-pa55word"


def mosquitto_hash(password: str, salt: bytes = b"0123456789ab", rounds: int = 101) -> str:
    """What mosquitto_passwd writes: $7$, PBKDF2-HMAC-SHA512."""
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, rounds)
    return f"$7${rounds}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def boards_file(tmp_path: Path, text: str, mode: int = 0o600) -> Path:
    p = tmp_path / "boards.passwd"
    p.write_text(text)
    os.chmod(p, mode)
    return p


def test_passwords_check_against_mosquitto_passwd_hashes(tmp_path: Path) -> None:
    hashed = mosquitto_hash(SECRET)
    assert check_password(hashed, SECRET)
    assert not check_password(hashed, SECRET + "x") and not check_password(hashed, "")
    salt = b"saltsalt"
    digest = base64.b64encode(hashlib.sha512(b"pw" + salt).digest()).decode()
    old = f"$6${base64.b64encode(salt).decode()}${digest}"
    assert check_password(old, "pw") and not check_password(old, "px")
    assert not check_password("plain-text", "plain-text")
    tool = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    if os.access(tool, os.X_OK):  # the real tool's output, when it is installed
        f = boards_file(tmp_path, "")
        subprocess.run([tool, "-b", str(f), "board-1", SECRET], check=True, timeout=30,
                       capture_output=True)
        assert check_password(load_boards(f)["board-1"], SECRET)


@pytest.mark.parametrize(("text", "mode", "message"), [
    (f"board-1:{SECRET}\n", 0o600, "line 1: board 'board-1' has no mosquitto_passwd hash"),
    ("board-1\n", 0o600, "line 1: not 'board-name:hash'"),
    (f"# c\nbo/ard:{mosquitto_hash('x')}\n", 0o600, "line 2: not 'board-name:hash'"),
    (f"b:{mosquitto_hash('x')}\nb:{mosquitto_hash('y')}\n", 0o600, "'b' is listed twice"),
    ("b:$7$999999999$AAAA$AAAA\n", 0o600, "no mosquitto_passwd hash"),
    (f"b:{mosquitto_hash('x')}\n", 0o644, "may be read or written by any user"),
    ("\xff", 0o600, "cannot read"),
], ids=["plain-text", "no-hash", "bad-name", "twice", "huge-rounds", "world-readable",
        "not-utf8"])
def test_a_bad_boards_file_is_refused_by_line(tmp_path: Path, text: str, mode: int,
                                              message: str) -> None:
    p = tmp_path / "boards.passwd"
    p.write_bytes(text.encode("latin-1"))
    os.chmod(p, mode)
    with pytest.raises(ConfigError, match="boards_file") as caught:
        load_boards(p)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert SECRET not in str(caught.value)  # a clear password in the file is not echoed


def test_a_board_owns_its_topics_from_the_routes() -> None:
    assert own_filters("board-1", DEFAULT_ROUTES) == [
        "board-1/#", "homie/5/board-1/#", "homie/board-1/#", "senml/board-1/#",
        "tele/board-1/#"]  # as the
    # Mosquitto ACL (deploy/mosquitto/acl): ESPHome's <board>/sensor/... and <board>/status
    routes = [Route("factory/+/line/+/senml", "senml", 2), Route("x/y", "senml", 1, "board-9")]
    assert own_filters("b", routes) == ["factory/+/line/b/#"]
    assert own_filters("board-9", routes) == ["factory/+/line/board-9/#", "x/y"]
    mine = own_filters("board-1", DEFAULT_ROUTES)
    for topic in ("senml/board-1/temperature", "tele/board-1/SENSOR", "tele/board-1/LWT",
                  "board-1/sensor/t/state", "homie/5/board-1/env/t", "senml/board-1"):
        assert topic_allowed(topic, mine), topic
    for topic in ("senml/board-2/temperature", "tele/board-10/SENSOR", "board-2/sensor/t/state",
                  "homie/5/board-2/env/t", "senml/+/temperature", "#", "senml/#",
                  "senml/board-1x/t"):
        assert not topic_allowed(topic, mine), topic
    assert topic_allowed("senml/board-1/+", mine) and topic_allowed("senml/board-1/#", mine)


def test_board_names_that_would_own_other_devices_topics_are_refused() -> None:
    check_names(["board-1"], DEFAULT_ROUTES)
    with pytest.raises(ConfigError, match="senml"):
        check_names(["board-1", "senml"], DEFAULT_ROUTES)  # it would own senml/#: every board


def test_the_embedded_broker_is_loopback_only_without_logins(tmp_path: Path) -> None:
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("edge.local")
    with pytest.raises(ConfigError, match=r"\[mqtt\]\.listen: .* 0\.0\.0\.0.*boards_file"):
        parse_config('[mqtt]\nbroker = "embedded"\nlisten = "0.0.0.0:1883"\n', tmp_path)
    boards_file(tmp_path, f"board-1:{mosquitto_hash(SECRET)}\n")
    cfg = parse_config('[mqtt]\nbroker = "embedded"\nlisten = "0.0.0.0:1883"\n'
                       'boards_file = "boards.passwd"\n', tmp_path)
    assert cfg.boards is not None and [name for name, _ in cfg.boards] == ["board-1"]
    assert "$7$" not in repr(cfg)
    with pytest.raises(ConfigError, match="for broker = \"embedded\""):
        parse_config('[mqtt]\nboards_file = "boards.passwd"\n', tmp_path)
    assert parse_config('[mqtt]\nbroker = "embedded"\n', tmp_path).boards is None  # the demo


def test_no_credential_in_a_broker_message_or_repr(tmp_path: Path) -> None:
    url = f"mqtt://edge:{SECRET}@broker.local:1883"
    b = parse_broker(url)
    assert (b.username, b.password) == ("edge", SECRET)
    assert SECRET not in b.url() and SECRET not in repr(b) and SECRET not in str(b)
    assert redact(url) == "mqtt://edge:***@broker.local:1883"
    assert redact("mqtt://edge@h:1") == "mqtt://edge@h:1" and redact("embedded") == "embedded"
    for bad in (f"mqtt://edge:{SECRET}@h:99999", f"http://edge:{SECRET}@h",
                f"mqtt://edge:{SECRET}@h/path", f"mqtt://edge:{SECRET}@[::1"):
        with pytest.raises(ValueError, match="broker URL") as caught:
            parse_broker(bad)
        assert SECRET not in str(caught.value), caught.value
        with pytest.raises(ConfigError, match=r"\[mqtt\]\.broker") as cfg_error:
            parse_config(f'[mqtt]\nbroker = "{bad}"\n', tmp_path)
        assert SECRET not in str(cfg_error.value), cfg_error.value
    cfg = parse_config(f'[mqtt]\nbroker = "{url}"\npassword = "{SECRET}"\n', tmp_path)
    assert SECRET not in repr(cfg)
    login = EdgeLogin.new("cairn-edge")
    assert login.secret not in repr(login) and login.client_id.startswith("cairn-edge-")
    assert EdgeLogin.new("cairn-edge").client_id != login.client_id


LEVELS = ["senml", "tele", "homie", "5", "sensor", "state", "SENSOR", "board-1", "board-2", "x"]


@settings(max_examples=500, deadline=None, derandomize=True)
@given(st.lists(st.sampled_from(LEVELS), min_size=1, max_size=6),
       st.sampled_from(["board-1", "board-2", "x", "5", "sensor"]))
@example(["senml", "board-1", "x"], "board-1")
@example(["board-1", "sensor", "x", "state"], "board-1")
@example(["tele", "board-1", "SENSOR"], "board-1")
@example(["homie", "5", "board-1", "x", "state"], "board-1")
def test_a_topic_a_board_may_use_is_read_as_that_boards_only(levels: list[str],
                                                             board: str) -> None:
    """Whatever topic a board may publish, the route that reads it (the first that matches)
    names that board as the device: the ACL and the edge's reading of topics agree."""
    topic = "/".join(levels)
    try:
        check_names([board], DEFAULT_ROUTES)
    except ConfigError:
        assert board == "5"  # a fixed level of a route ("homie/5/..."): a reserved name
        return
    if not topic_allowed(topic, own_filters(board, DEFAULT_ROUTES)):
        return
    for route in DEFAULT_ROUTES:
        matched = match_topic(route.filter, topic)
        if matched is not None:  # the first route that matches reads it, as this device:
            assert route_device(route, topic, matched) in (board, None), (topic, route.filter)
            break

"""cairn.sdnotify without a socket: what $NOTIFY_SOCKET and $WATCHDOG_USEC mean."""

from __future__ import annotations

import asyncio
import os

from cairn.sdnotify import Notifier, pet_watchdog


def test_without_notify_socket_nothing_is_sent() -> None:
    n = Notifier({})
    assert not n.enabled and not n.ready() and not n.stopping() and n.watchdog is None


def test_the_socket_path_and_the_abstract_namespace() -> None:
    assert Notifier({"NOTIFY_SOCKET": "/run/systemd/notify"}).address == "/run/systemd/notify"
    assert Notifier({"NOTIFY_SOCKET": "@abstract"}).address == "\0abstract"
    assert Notifier({"NOTIFY_SOCKET": "relative/path"}).address is None


def test_the_watchdog_pets_at_half_its_period_and_only_for_this_process() -> None:
    env = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "30000000"}
    assert Notifier(env).watchdog == 15.0
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid())}).watchdog == 15.0
    assert Notifier({**env, "WATCHDOG_PID": str(os.getpid() + 1)}).watchdog is None
    for bad in ("0", "-5", "abc", ""):
        assert Notifier({**env, "WATCHDOG_USEC": bad}).watchdog is None


def test_a_socket_that_is_gone_never_fails_the_daemon(tmp_path: object) -> None:
    n = Notifier({"NOTIFY_SOCKET": "/nonexistent/notify.sock"})
    assert n.enabled and not n.ready("x") and not n.send("WATCHDOG=1")


def test_no_watchdog_returns_at_once() -> None:
    asyncio.run(asyncio.wait_for(pet_watchdog(Notifier({})), 5))

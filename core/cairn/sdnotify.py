"""systemd's notify protocol (``Type=notify``, ``WatchdogSec=``), written here: no dependency.

systemd gives a service ``$NOTIFY_SOCKET``, the path of an ``AF_UNIX`` datagram socket (a
leading ``@`` names one in the abstract namespace); each datagram is newline-separated
``KEY=VALUE`` lines (sd_notify(3)). Cairn's daemons send ``READY=1`` once they serve,
``STATUS=...`` lines a person reads in ``systemctl status``, ``STOPPING=1`` when they begin to
stop, and, when the unit has ``WatchdogSec=`` (systemd then sets ``$WATCHDOG_USEC``, and
``$WATCHDOG_PID`` to the process it means), ``WATCHDOG=1`` every half of that period from a
task of the daemon's event loop (:func:`pet_watchdog`): a loop that is stuck stops petting,
and systemd restarts the service.

Without ``$NOTIFY_SOCKET`` (run by hand, in a container) every call does nothing. A send that
fails (systemd gone) is ignored: notifying never stops a daemon.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

__all__ = ["Notifier", "pet_watchdog"]


class Notifier:
    """Sends notify messages to ``$NOTIFY_SOCKET`` of ``environ`` (``os.environ``)."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        path = env.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        if path.startswith("@"):
            self.address = "\0" + path[1:]  # the abstract namespace
        elif path.startswith("/"):
            self.address = path
        self.watchdog: float | None = None  # seconds between pets (half of WatchdogSec)
        pid = env.get("WATCHDOG_PID", "")
        usec = env.get("WATCHDOG_USEC", "")
        if usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog = int(usec) / 2e6

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *lines: str) -> bool:
        """Send ``lines`` in one datagram; True when it was sent."""
        if self.address is None:
            return False
        data = "\n".join(lines).encode("utf-8", "replace")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
                s.settimeout(1.0)  # (a datagram socket of a stuck reader must not hold us)
                s.sendto(data, self.address)
        except OSError:
            return False
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, status: str) -> bool:
        return self.send(f"STATUS={status}")

    def stopping(self, status: str = "stopping") -> bool:
        return self.send("STOPPING=1", f"STATUS={status}")


async def pet_watchdog(notifier: Notifier, healthy: Callable[[], bool] = lambda: True) -> None:
    """``WATCHDOG=1`` every half period while ``healthy()``, until cancelled (nothing to do
    without a watchdog). Runs on the daemon's event loop: a stuck loop stops the pets."""
    if notifier.watchdog is None or not notifier.enabled:
        return
    while True:
        if healthy():
            notifier.send("WATCHDOG=1")
        await asyncio.sleep(notifier.watchdog)

"""A stand-in for systemd's notify socket: an AF_UNIX datagram socket a test binds, hands to a
real entry point as $NOTIFY_SOCKET, and reads the messages of (cairn.sdnotify)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from types import TracebackType

__all__ = ["NotifySocket"]


class NotifySocket:
    """Bound in a short temporary directory (a socket path has at most 107 bytes)."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="cairn-notify-"))
        self.path = self.dir / "notify"
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(self.path))
        self.messages: list[str] = []

    def env(self, watchdog_usec: int | None = None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        env["NOTIFY_SOCKET"] = str(self.path)
        if watchdog_usec is not None:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        return env

    def until(self, line: str, count: int = 1, timeout: float = 30.0) -> list[str]:
        """Read datagrams until ``count`` of them hold ``line``; every datagram so far."""
        deadline = time.monotonic() + timeout
        while sum(line in m.splitlines() for m in self.messages) < count:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {line!r} (x{count}) in {timeout:g} s; got "
                                     f"{self.messages[-10:]}")
            self.sock.settimeout(left)
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except TimeoutError:
                continue
        return self.messages

    def close(self) -> None:
        self.sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> NotifySocket:
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

"""The demo's child processes: each a ``cairn`` command whose stdout says when it is ready.

:class:`Child` starts one (``python -m cairn.cli ...``), reads its stdout line by line (JSON
lines kept as dicts, the last one as its status), keeps its stderr in a log file, and stops it
with SIGTERM (the edge commits and acknowledges what it holds) or kills it (a power cut).
"""

from __future__ import annotations

import contextlib
import json
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cairn.errors import ServiceError, UsageError

__all__ = ["WAIT", "Child", "DemoDataError", "DemoError", "cairn_command"]

WAIT = 60.0  # seconds a process may take to say it is ready


class DemoError(ServiceError, RuntimeError):
    """A part of the demo could not start: says which, and where its log is."""


class DemoDataError(UsageError):
    """The data directory given is not a demo's: the demo will not remove it."""


def cairn_command(*args: str) -> list[str]:
    """The argv of a ``cairn`` command run by this Python."""
    return [sys.executable, "-m", "cairn.cli", *args]


class Child:
    """One of the demo's processes: its stdout read line by line (JSON lines kept as dicts),
    its stderr in a log file."""

    def __init__(self, name: str, argv: list[str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.log_path = log
        self.proc: subprocess.Popen[str] | None = None
        self.lines: queue.Queue[dict[str, Any] | str | None] = queue.Queue()
        self.last: dict[str, Any] = {}
        self._log: Any = None
        self._eof = threading.Event()  # its stdout was read to the end

    def start(self, ready: Callable[[dict[str, Any] | str], bool]) -> dict[str, Any] | str:
        self.lines = queue.Queue()
        self._eof = threading.Event()
        self._log = open(self.log_path, "a", encoding="utf-8")  # noqa: SIM115 (the child's)
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=self._log,
                                     text=True, start_new_session=True)
        threading.Thread(target=self._read, args=(self.proc, self.lines), daemon=True).start()
        deadline = time.monotonic() + WAIT
        while True:
            try:
                item = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                item = None
            if item is None:
                self.stop()
                tail = self.log_path.read_text(errors="replace")[-1500:]
                raise DemoError(f"{self.name} did not start (see {self.log_path}):\n{tail}")
            if ready(item):
                return item

    def _read(self, proc: subprocess.Popen[str],
              out: queue.Queue[dict[str, Any] | str | None]) -> None:
        assert proc.stdout is not None
        with proc.stdout:
            for line in proc.stdout:
                item: dict[str, Any] | str = line.rstrip("\n")
                if line.startswith("{"):
                    with contextlib.suppress(ValueError):
                        item = json.loads(line)
                if isinstance(item, dict):
                    # the last line is its status; a stop's line without counters (an error)
                    # keeps the counters of the line before
                    self.last = {**self.last, **item} if item.get("stopped") else item
                out.put(item)
        out.put(None)
        self._eof.set()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        """SIGTERM (the edge commits and acknowledges what it holds), SIGKILL if it hangs."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout)
            self._eof.wait(timeout)  # its last line (an edge's final counters) read
        self._close()

    def kill(self) -> None:
        """kill -9: a power cut."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(WAIT)
        self._close()

    def _close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

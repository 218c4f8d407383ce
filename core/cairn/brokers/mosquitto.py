"""A Mosquitto broker in a child process, with its own config, port and persistence directory.

For tests, benchmarks and the demo: :class:`Mosquitto` writes a config into a directory it is
given, starts ``mosquitto -c`` on 127.0.0.1 and a free port, waits (bounded) until the port
accepts connections, and can be stopped (SIGTERM: Mosquitto saves its persistence file) and
started again on the same port with the same persistence, as a broker restart.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import threading
from collections import deque
from pathlib import Path
from types import TracebackType

from cairn.errors import ServiceError

__all__ = ["Mosquitto", "MosquittoError", "find_mosquitto", "free_port"]

SBIN = Path("/usr/sbin/mosquitto")


class MosquittoError(ServiceError, RuntimeError):
    """The broker could not be started (missing, bad config, port taken): says why."""


def find_mosquitto() -> Path | None:
    """The mosquitto executable, from PATH or Debian's /usr/sbin."""
    found = shutil.which("mosquitto")
    if found:
        return Path(found)
    return SBIN if os.access(SBIN, os.X_OK) else None


#: Where :func:`free_port` looks: below Linux's ephemeral range (32768-60999), so no port the
#: kernel hands to an outgoing connection or a ``bind(..., 0)`` elsewhere (another test worker,
#: another process) can take it between the pick and the bind.
PICK_RANGE = (20_000, 32_767)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody uses right now, for TCP and UDP alike, picked at random outside the
    ephemeral range (the port 0 way when none is found in 200 tries)."""
    pick = random.SystemRandom()
    for _ in range(200):
        port = pick.randint(*PICK_RANGE)
        try:
            with socket.socket() as tcp, socket.socket(type=socket.SOCK_DGRAM) as udp:
                tcp.bind((host, port))
                udp.bind((host, port))
        except OSError:
            continue
        return port
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class Mosquitto:
    """Mosquitto on 127.0.0.1 with its config, log and persistence in ``directory``; a context
    manager that starts and stops it (:class:`MosquittoError` when it cannot start)."""

    def __init__(self, directory: str | os.PathLike[str], *, port: int | None = None,
                 executable: str | os.PathLike[str] | None = None, extra: str = "",
                 start_timeout: float = 10.0) -> None:
        exe = executable or find_mosquitto()
        if exe is None:
            raise MosquittoError("mosquitto is not installed (apt-get install mosquitto)")
        self.executable = Path(exe)
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.host = "127.0.0.1"
        self.extra = extra
        self.start_timeout = start_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self._drain: threading.Thread | None = None
        self.config = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def _write_config(self) -> None:
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {self.dir}/",
            "autosave_interval 1",
            f"log_dest file {self.log}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "max_queued_messages 100000",
        ]
        if os.geteuid() == 0:
            # as root mosquitto drops to the "mosquitto" user, which cannot write our directory
            lines.append(f"user {pwd.getpwuid(os.geteuid()).pw_name}")
        self.config.write_text("\n".join(lines) + "\n" + self.extra)

    def start(self) -> Mosquitto:
        if self.proc is not None and self.proc.poll() is None:
            return self
        self._write_config()
        proc = self.proc = subprocess.Popen(
            [str(self.executable), "-c", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        ready = threading.Event()
        lines: deque[str] = deque(maxlen=50)

        def drain() -> None:
            # read the broker's log lines (so its pipe never fills) and notice when it runs
            assert proc.stderr is not None
            with proc.stderr:
                for raw in proc.stderr:
                    line = raw.decode(errors="replace").rstrip()
                    lines.append(line)
                    if " running" in line:
                        ready.set()
            ready.set()  # EOF: it exited

        self._drain = threading.Thread(target=drain, name="mosquitto-log", daemon=True)
        self._drain.start()
        if not ready.wait(self.start_timeout):
            self.stop()
            raise MosquittoError(
                f"mosquitto did not start in {self.start_timeout} s: " + " | ".join(lines))
        if proc.poll() is not None:
            proc.wait()
            raise MosquittoError(
                f"mosquitto exited ({proc.returncode}): " + " | ".join(lines))
        return self

    def stop(self) -> None:
        """SIGTERM (Mosquitto writes its persistence file), then wait for it to exit."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if self._drain is not None:
            self._drain.join(10)  # it ends at the pipe's EOF, closing it
            self._drain = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

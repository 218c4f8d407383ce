"""One writer per data directory: an advisory lock file held for the process's life.

Two processes writing one store (``cairn gateway fetch`` while ``cairn gateway run`` runs, two
edge agents on one directory) would race on the same rows and files. The process that writes
takes ``DATA_DIR/cairn.lock`` with ``fcntl.flock`` (exclusive, non-blocking) and writes its pid
and command into it; a second one is refused with :class:`DataDirectoryBusyError` naming the
holder. The kernel drops the lock when the holder exits, however it exits (a crash, SIGKILL),
so a stale file never blocks anyone: only a live holder does. Readers (``status``, ``export``,
``devices list``) take no lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from cairn.errors import ServiceError

__all__ = ["LOCK_NAME", "DataDirectoryBusyError", "hold"]

LOCK_NAME = "cairn.lock"


class DataDirectoryBusyError(ServiceError):
    """Another live process holds the data directory's lock."""


@contextlib.contextmanager
def hold(data_dir: Path, command: str) -> Iterator[Path]:
    """Hold ``data_dir``'s lock while the block runs (making the directory if needed);
    :class:`DataDirectoryBusyError` when another process holds it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise DataDirectoryBusyError(
                f"{data_dir} is in use by {holder}: one process at a time writes a data "
                f"directory; stop it first, or use its API while it runs") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} ({command})\n".encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the lock

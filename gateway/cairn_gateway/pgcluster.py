"""A throwaway PostgreSQL cluster in a temporary directory: for tests, benchmarks and a person
trying the PostgreSQL store.

::

    from cairn_gateway.pgcluster import PostgresCluster
    with PostgresCluster(fast=True) as pg:
        pg.create_database("cairn")
        print(pg.url("cairn"))      # postgresql://postgres@127.0.0.1:<port>/cairn

:class:`PostgresCluster` finds the server's programs (:func:`find_bindir`: ``initdb`` and
``postgres`` side by side, on ``PATH`` or in Debian's ``/usr/lib/postgresql/<version>/bin``,
the newest version first), runs ``initdb`` into a new temporary directory and starts
``postgres`` in the foreground as its child process: listening on 127.0.0.1 only, on a free
port (or the one it is given), with its unix socket in the data directory (never
``/var/run/postgresql``), anyone on 127.0.0.1 trusted (a throwaway cluster holds nothing
secret; never point it at a network). PostgreSQL refuses to run as root: when the caller is
root, the cluster's files and processes belong to the ``postgres`` system user (the one
Debian's ``postgresql`` package creates) or to the user named by ``run_as``.

Layout of the directory (removed by :meth:`PostgresCluster.close`)::

    cairn-pg-XXXX/           owned by the server's user
      data/                  the cluster (PGDATA), with the unix socket .s.PGSQL.<port>
      postgres.log           the server's log (stderr), appended across restarts

Readiness is read from ``data/postmaster.pid``: its first line is the postmaster's pid, its
eighth the state PostgreSQL writes for ``pg_ctl -w`` (``ready`` once connections are
accepted, also after crash recovery); the wait has a deadline, and a server that exits instead
raises :class:`PostgresClusterError` with the end of its log (a port already taken says so).

``fast=True`` turns off what only a machine crash needs (``fsync``, ``full_page_writes``;
``initdb --no-sync``): every commit still survives a stop, a restart and a SIGKILL of the
server (:meth:`PostgresCluster.kill`), not a power cut. ``settings`` adds any other
server setting (``-c name=value``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

import psycopg

from cairn.brokers.mosquitto import free_port
from cairn.errors import ServiceError

__all__ = ["FAST_SETTINGS", "SUPERUSER", "PostgresCluster", "PostgresClusterError",
           "find_bindir"]

#: Where Debian's postgresql-<version> packages put the server's programs (not on PATH).
DEBIAN_BINDIRS = "/usr/lib/postgresql/*/bin"
#: The cluster's superuser (``initdb --username``), whoever runs the server.
SUPERUSER = "postgres"
#: The system user that runs the server when the caller is root (Debian's package creates it).
SYSTEM_USER = "postgres"
#: Settings for a machine that does not crash: what they skip only matters after a power cut.
#: (Not ``synchronous_commit=off``: that loses the last commits to a SIGKILL of the server
#: too, and with ``fsync=off`` a commit waits for no disk anyway.)
FAST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "full_page_writes": "off",
}
#: A database name this module creates: a plain lower-case identifier (no quoting surprises).
DBNAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
#: How often a wait looks at the condition it waits for (each wait has a deadline).
POLL = 0.01
#: Tries at a first start on a port this module picked, when another process took it meanwhile.
PORT_TRIES = 3


class PostgresClusterError(ServiceError, RuntimeError):
    """PostgreSQL is missing, or the cluster could not be made, started or stopped: says why."""


def _version(bindir: Path) -> tuple[int, ...]:
    """The version in ``/usr/lib/postgresql/<version>/bin`` as numbers (15 -> (15,))."""
    return tuple(int(p) for p in re.findall(r"\d+", bindir.parent.name)) or (0,)


def _has_server(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in ("initdb", "postgres"))


def find_bindir(path: str | None = None, debian: str = DEBIAN_BINDIRS) -> Path | None:
    """The directory holding both ``initdb`` and ``postgres``: the one ``path`` (``PATH`` by
    default) leads to (a symlink on it is followed to its directory), else the newest version
    among the ``debian`` glob (``/usr/lib/postgresql/<version>/bin``); None when there is
    none."""
    for name in ("postgres", "initdb"):
        found = shutil.which(name, path=path)
        if found is None:
            continue
        for candidate in (Path(found).parent, Path(found).resolve().parent):
            if _has_server(candidate):
                return candidate
    versions = sorted((Path(p) for p in glob.glob(debian) if _has_server(Path(p))),
                      key=_version, reverse=True)
    return versions[0] if versions else None


def _server_user(run_as: str | None) -> pwd.struct_passwd | None:
    """The user the server runs as: ``run_as``, else None (this process's user) unless this
    process is root, which PostgreSQL refuses: then the ``postgres`` system user."""
    name = run_as if run_as is not None else (SYSTEM_USER if os.geteuid() == 0 else None)
    if name is None:
        return None
    try:
        user = pwd.getpwnam(name)
    except KeyError:
        if run_as is not None:
            raise PostgresClusterError(f"no system user {name!r} to run PostgreSQL as") from None
        raise PostgresClusterError(
            "PostgreSQL refuses to run as root and there is no 'postgres' system user: "
            "apt-get install postgresql creates it, or pass run_as= another user") from None
    if user.pw_uid == 0:
        raise PostgresClusterError("PostgreSQL refuses to run as root: run_as names root")
    return user


class PostgresCluster:
    """A PostgreSQL cluster of its own in a temporary directory, its server on 127.0.0.1; a
    context manager that starts it and always stops it and removes the directory.

    ``parent``: where the temporary directory goes (the system's temp dir by default; when the
    server runs as another user, that user must be able to reach it). ``port``: the TCP port
    (a free one by default). ``fast``: :data:`FAST_SETTINGS`. ``settings``: more server
    settings. ``run_as``: the system user for the server (default: this one, or ``postgres``
    when this is root). ``bindir``: the server's programs (default :func:`find_bindir`).
    ``start_timeout``: how long a start (with its crash recovery) may take.
    """

    def __init__(self, *, parent: str | os.PathLike[str] | None = None, port: int | None = None,
                 fast: bool = False, settings: Mapping[str, str] | None = None,
                 run_as: str | None = None, bindir: str | os.PathLike[str] | None = None,
                 start_timeout: float = 60.0) -> None:
        found = Path(bindir) if bindir is not None else find_bindir()
        if found is None or not _has_server(found):
            where = found or f"PATH or {DEBIAN_BINDIRS}"
            raise PostgresClusterError(
                f"PostgreSQL's server programs (initdb, postgres) are not in {where}: "
                "apt-get install postgresql")
        self.bindir = found
        self.user = _server_user(run_as)
        self.parent = Path(parent) if parent is not None else Path(tempfile.gettempdir())
        self.host = "127.0.0.1"
        #: the port may not change: the caller gave it, or the server has run on it (URLs
        #: handed out name it); only a first start on a port picked here tries another
        self._port_fixed = port is not None
        self.port = port if port is not None else free_port(self.host)
        self.fast = fast
        self.settings = {**(FAST_SETTINGS if fast else {}), **(settings or {})}
        self.start_timeout = start_timeout
        self.dir: Path | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    # -- where things are ------------------------------------------------------------------

    @property
    def data(self) -> Path:
        """The cluster's data directory (PGDATA); its unix socket lives there too."""
        if self.dir is None:
            raise PostgresClusterError("the cluster has not been made (start it first)")
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        """The server's log (its stderr), appended across restarts."""
        if self.dir is None:
            raise PostgresClusterError("the cluster has not been made (start it first)")
        return self.dir / "postgres.log"

    def url(self, dbname: str = "postgres") -> str:
        """A ``postgresql://`` URL for database ``dbname`` as the superuser over TCP."""
        return f"postgresql://{SUPERUSER}@{self.host}:{self.port}/{dbname}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # -- the server's life -------------------------------------------------------------------

    def _run_as_kwargs(self) -> dict[str, object]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _make(self) -> None:
        """A new temporary directory owned by the server's user, and ``initdb`` into it."""
        self.dir = Path(tempfile.mkdtemp(prefix="cairn-pg-", dir=self.parent))
        if self.user is not None:
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        argv = [str(self.bindir / "initdb"), "-D", str(self.data), "--username", SUPERUSER,
                "--auth", "trust", "--encoding", "UTF8", "--locale", "C"]
        if self.fast:
            argv.append("--no-sync")
        done = subprocess.run(
            argv, cwd=self.dir, capture_output=True, text=True, check=False,
            **self._run_as_kwargs(),  # type: ignore[call-overload]
        )
        if done.returncode != 0:
            out = (done.stderr or done.stdout).strip().splitlines()[-3:]
            hint = ""
            if self.user is not None and "ermission denied" in done.stderr:
                hint = (f" (user {self.user.pw_name!r} cannot reach {self.parent}: "
                        "choose a parent directory it can enter)")
            raise PostgresClusterError(f"initdb failed ({done.returncode}): "
                                       + " | ".join(out) + hint)

    def start(self) -> PostgresCluster:
        """Make the cluster if it is new, start the server and wait until it accepts
        connections (after crash recovery, when it was killed). Idempotent."""
        if self.running:
            return self
        if self.dir is None:
            self._make()
        tries = 1 if self._port_fixed else PORT_TRIES
        for attempt in range(tries):
            try:
                self._start_once()
                self._port_fixed = True
                return self
            except _PortTaken as exc:
                if attempt + 1 == tries:
                    raise PostgresClusterError(str(exc)) from None
                self.port = free_port(self.host)  # ours to pick again: another took it
        raise AssertionError("unreachable")

    def _start_once(self) -> None:
        argv = [str(self.bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                "-c", f"listen_addresses={self.host}",
                "-c", f"unix_socket_directories={self.data}"]
        for name, value in self.settings.items():
            argv += ["-c", f"{name}={value}"]
        log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:  # the child keeps its own copy of the fd
            self.proc = subprocess.Popen(
                argv, cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True,  # its backends share its process group (kill waits on it)
                **self._run_as_kwargs(),  # type: ignore[call-overload]
            )
        deadline = time.monotonic() + self.start_timeout
        while not self._ready():
            try:
                self.proc.wait(POLL)
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    self._terminate()
                    raise PostgresClusterError(
                        f"PostgreSQL did not accept connections within {self.start_timeout} s: "
                        + self._log_tail(log_start)) from None
                continue
            code, self.proc = self.proc.returncode, None
            tail = self._log_tail(log_start)
            if "already in use" in tail or "could not create any TCP/IP sockets" in tail:
                raise _PortTaken(f"port {self.port} on {self.host} is already in use by another "
                                 f"process: PostgreSQL could not listen there ({tail})")
            raise PostgresClusterError(f"PostgreSQL exited ({code}) while starting: {tail}")

    def _ready(self) -> bool:
        """postmaster.pid names our server and says ``ready`` (pg_ctl's own test)."""
        assert self.proc is not None
        try:
            lines = (self.data / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return False
        return len(lines) >= 8 and lines[0].strip() == str(self.proc.pid) \
            and lines[7].strip() == "ready"

    def _log_tail(self, start: int = 0, lines: int = 4) -> str:
        """The last lines the server logged since ``start`` (a byte offset), on one line."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(start)
                text = f.read().decode(errors="replace")
        except FileNotFoundError:
            return "(no log)"
        return " | ".join(text.strip().splitlines()[-lines:]) or "(empty log)"

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server (a fast shutdown: open sessions are ended, their transactions
        rolled back, everything committed kept) and wait for it; a server that does not stop in
        ``timeout`` seconds is killed."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._terminate()
        self.proc.wait()
        self.proc = None

    def _terminate(self) -> None:
        """SIGKILL the server and every process of its group, and reap it."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def kill(self, timeout: float = 30.0) -> None:
        """SIGKILL the postmaster, as a crash: its backends notice and exit on their own (they
        are waited for, so that :meth:`start` finds the shared memory free); committed data
        come back by crash recovery at the next :meth:`start`."""
        if self.proc is None:
            return
        pgid = self.proc.pid  # its own session: the group id is its pid
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        deadline = time.monotonic() + timeout
        while _group_alive(pgid):
            if time.monotonic() > deadline:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
                deadline = time.monotonic() + timeout
            time.sleep(POLL)

    def restart(self) -> None:
        """Stop, then start on the same data directory and port."""
        self.stop()
        self.start()

    def create_database(self, name: str) -> str:
        """Create database ``name`` (a lower-case identifier) and return its URL. In a
        ``fast`` cluster the copy of the template is a file copy (``STRATEGY FILE_COPY``: about
        4x faster than the default WAL-logged copy when fsync is off)."""
        if not DBNAME.fullmatch(name):
            raise ValueError(f"database name {name!r}: use lower-case letters, digits and _ "
                             "(at most 63, not starting with a digit)")
        if not self.running:
            raise PostgresClusterError("the server is not running: start() it first")
        strategy = " STRATEGY FILE_COPY" if self.fast else ""
        try:
            with psycopg.connect(self.url(), autocommit=True) as admin:
                admin.execute(f'CREATE DATABASE "{name}"{strategy}'.encode())
        except psycopg.Error as exc:
            raise PostgresClusterError(f"CREATE DATABASE {name} failed: {exc}") from exc
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database ``name``, ending the sessions still connected to it."""
        if not DBNAME.fullmatch(name):
            raise ValueError(f"database name {name!r}: not one this cluster creates")
        try:
            with psycopg.connect(self.url(), autocommit=True) as admin:
                admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'.encode())
        except psycopg.Error as exc:
            raise PostgresClusterError(f"DROP DATABASE {name} failed: {exc}") from exc

    def close(self) -> None:
        """Stop the server (killed if it will not stop) and remove the directory."""
        try:
            self.stop()
        finally:
            if self.dir is not None:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None

    def __enter__(self) -> PostgresCluster:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


class _PortTaken(PostgresClusterError):
    """The port was taken (a first start on a picked port tries another)."""


def _group_alive(pgid: int) -> bool:
    """Whether a live (not zombie) process of process group ``pgid`` remains."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces and parentheses
        fields = text[text.rfind(")") + 2:].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False

"""The NAT lab: Linux network namespaces joined by veth links, routers doing nftables masquerade.

`Lab` (a context manager, root only) builds, under a per-run unique prefix::

    public segment 10.0.0.0/24 (a bridge in the "public" namespace, which is itself the host
    at 10.0.0.1: run the DHT bootstrap node and the gateway there)
      |-- router "eim"  10.0.0.11  masquerade (endpoint-independent, port-preserving: a home
      |                            router)             --- host 192.168.1.2 (its LAN)
      |-- router "sym"  10.0.0.12  masquerade fully-random (symmetric: every destination a
      |                            new public port: carrier-grade NAT) --- host 192.168.2.2
      |-- router "fw"   10.0.0.13  masquerade, and every forwarded UDP packet dropped (a
      |                            firewall that lets only TCP out) --- host 192.168.3.2
      `-- router "eim2" 10.0.0.14  a second home router like "eim" (only when asked:
                                   ``Lab(kinds=(*KINDS, "eim2"))``) --- host 192.168.4.2

``Lab(ttl_guard=True)``: every router drops packets arriving on its public side with an IP TTL
below 16 before connection tracking sees them (nat.md 6). A holepunch's first probe goes out
with TTL 5 to open the sender's own NAT; without the guard it reaches the far Linux NAT, whose
UNREPLIED conntrack entry then makes that side's own outbound mapping take another port, and
punching between two Linux NATs fails. Real home routers are farther apart than 5 hops.

Every router forwards what its LAN starts and the answers to it, nothing else: the public
namespace has routes to every LAN (as a neighbour on the segment could), so inbound traffic is
stopped by the router's filter, not by a missing route. `Lab.cut(site)` drops everything the
router forwards (the path is down) until `Lab.restore(site)`.

Everything is bounded in time (each command has a timeout) and torn down on exit, failure or
Ctrl-C: the processes started in the lab's namespaces are killed, the namespaces deleted.
Namespaces are named ``cairnlab-<pid>-<n>-<role>``: parallel test workers never collide, and a
lab whose process died (kill -9) is removed by the next `Lab` to start (`clean_leftovers`).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from cairn.errors import ServiceError

__all__ = [
    "ALL_KINDS",
    "KINDS",
    "PUBLIC_IP",
    "ROOT",
    "TTL_GUARD",
    "Lab",
    "LabError",
    "Running",
    "Site",
    "clean_leftovers",
    "lab_unavailable",
    "until",
]

#: The repository root (the working directory of every Python process started in the lab).
ROOT = Path(__file__).resolve().parents[2]
#: The public host's address (the public namespace itself).
PUBLIC_IP = "10.0.0.1"
#: The kinds of site behind a router a lab has by default, in the order their subnets are
#: numbered.
KINDS = ("eim", "sym", "fw")
#: Every kind a lab can have (``Lab(kinds=...)``): "eim2" is a second home router.
ALL_KINDS = (*KINDS, "eim2")
#: Packets from the public side with a TTL below this are dropped by a ``ttl_guard`` router.
TTL_GUARD = 16
#: Seconds any one setup or teardown command may take.
COMMAND_TIMEOUT = 10.0

_NAME = re.compile(r"^cairnlab-(\d+)-(\d+)-")
_counter = itertools.count()
_masquerade = {"eim": "masquerade", "sym": "masquerade fully-random", "fw": "masquerade",
               "eim2": "masquerade"}


class LabError(ServiceError, RuntimeError):
    """A lab command failed (the host lacks something the lab needs, or refused it): says
    which command and what it printed."""


def lab_unavailable() -> str | None:
    """Why the lab cannot run here (not root, `ip` or `nft` missing), or None."""
    if os.geteuid() != 0:
        return "root (network namespaces and nftables): run the lab tests as root"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables")):
        if shutil.which(tool) is None and not os.access(f"/usr/sbin/{tool}", os.X_OK):
            return f"`{tool}` (Debian's {package}: `make test` as root installs it)"
    return None


def _tool(name: str) -> str:
    return shutil.which(name) or f"/usr/sbin/{name}"


def _run(argv: Sequence[str], *, stdin: str | None = None, check: bool = True,
         timeout: float = COMMAND_TIMEOUT, cwd: Path | None = None
         ) -> subprocess.CompletedProcess[str]:
    try:
        done = subprocess.run(list(argv), input=stdin, capture_output=True, text=True,
                              timeout=timeout, check=False, cwd=cwd or ROOT)
    except subprocess.TimeoutExpired:
        raise LabError(f"`{' '.join(argv)}` did not finish within {timeout:g} s") from None
    if check and done.returncode != 0:
        raise LabError(f"`{' '.join(argv)}` exited {done.returncode}: "
                       f"{(done.stderr or done.stdout).strip()[-500:]}")
    return done


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _namespaces() -> list[str]:
    out = _run([_tool("ip"), "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _kill_all_in(ns: str) -> None:
    """SIGKILL every process still in namespace `ns` (they were started by a lab)."""
    out = _run([_tool("ip"), "netns", "pids", ns], check=False).stdout
    for pid in out.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)


def _delete(names: Sequence[str]) -> None:
    for ns in names:
        _kill_all_in(ns)
    for ns in names:
        _run([_tool("ip"), "netns", "delete", ns], check=False)


def clean_leftovers() -> list[str]:
    """Delete the namespaces of labs whose process is gone (a run killed before its teardown);
    returns their names."""
    gone = [ns for ns in _namespaces()
            if (m := _NAME.match(ns)) is not None and not _alive(int(m.group(1)))]
    _delete(gone)
    return gone


@dataclass(frozen=True, slots=True)
class Site:
    """A host behind a router: its namespace, its private address and the router's."""

    kind: str
    host_ns: str
    router_ns: str
    host_ip: str
    public_ip: str  # the router's address on the public segment (what the world sees)


def until(what: str, done: Callable[[], bool], timeout: float, every: float = 0.2) -> None:
    """Poll `done` until it holds; fail saying `what` never happened within `timeout` s."""
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while not done():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        pause.wait(every)


class Running:
    """A process started in the lab: its stdout lines in a queue (JSON lines parsed)."""

    def __init__(self, proc: subprocess.Popen[str], log: Path | None) -> None:
        self.proc = proc
        self.log = log
        self.lines: queue.Queue[Any] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        with self.proc.stdout:
            for line in self.proc.stdout:
                item: Any = line.rstrip("\n")
                if item.startswith(("{", "[")):
                    with contextlib.suppress(ValueError):
                        item = json.loads(item)
                self.lines.put(item)
        self.lines.put(_EOF)

    def line(self, timeout: float = 30.0) -> Any:
        """The next line of its stdout (a dict or list when it is JSON); fails when the
        process exits or says nothing within `timeout` s."""
        try:
            item = self.lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"{self.proc.args!r} said nothing within {timeout:g} s"
                                 + self._tail()) from None
        if item is _EOF:
            self.lines.put(_EOF)
            raise AssertionError(f"{self.proc.args!r} exited ({self.proc.wait(5)})"
                                 + self._tail())
        return item

    def until(self, done: Callable[[Any], bool], timeout: float = 30.0) -> Any:
        """The first line for which `done` holds, within `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            item = self.line(max(0.01, deadline - time.monotonic()))
            if done(item):
                return item

    def _tail(self) -> str:
        if self.log is None or not self.log.exists():
            return ""
        return "\n--- its log ---\n" + self.log.read_text(errors="replace")[-2000:]


_EOF = object()


class Lab:
    """The namespaces, links and routers described in this module's docstring."""

    def __init__(self, *, kinds: Sequence[str] = KINDS, ttl_guard: bool = False) -> None:
        unknown = [k for k in kinds if k not in ALL_KINDS]
        if unknown:
            raise LabError(f"no site kind {unknown[0]!r} (kinds: {', '.join(ALL_KINDS)})")
        self.prefix = f"cairnlab-{os.getpid()}-{next(_counter)}-"
        self.public = self.prefix + "pub"
        self.ttl_guard = ttl_guard
        self.sites = {
            kind: Site(kind, f"{self.prefix}h{kind}", f"{self.prefix}r{kind}",
                       f"192.168.{i}.2", f"10.0.0.{10 + i}")
            for i, kind in enumerate(ALL_KINDS, start=1) if kind in kinds
        }
        self._made: list[str] = []
        self._procs: list[subprocess.Popen[Any]] = []
        self._files: list[IO[Any]] = []

    # -- building and tearing down -----------------------------------------------------------

    def __enter__(self) -> Lab:
        why = lab_unavailable()
        if why is not None:
            raise LabError(f"the NAT lab needs {why}")
        clean_leftovers()
        try:
            self._build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def _ns(self, name: str) -> None:
        _run([_tool("ip"), "netns", "add", name])
        self._made.append(name)
        self.ip(name, "link", "set", "lo", "up")

    def ip(self, ns: str, *args: str) -> None:
        """`ip -n NS ARGS...` (raises LabError if it fails)."""
        _run([_tool("ip"), "-n", ns, *args])

    def nft(self, ns: str, script: str) -> None:
        """Load an nft script in namespace `ns`."""
        _run([_tool("ip"), "netns", "exec", ns, _tool("nft"), "-f", "-"], stdin=script)

    def _build(self) -> None:
        pub = self.public
        self._ns(pub)
        self.ip(pub, "link", "add", "seg", "type", "bridge")
        self.ip(pub, "addr", "add", f"{PUBLIC_IP}/24", "dev", "seg")
        self.ip(pub, "link", "set", "seg", "up")
        for site in self.sites.values():
            i = ALL_KINDS.index(site.kind) + 1
            r, h = site.router_ns, site.host_ns
            self._ns(r)
            self._ns(h)
            self.ip(r, "link", "add", "wan", "type", "veth", "peer", "name", f"r{i}",
                    "netns", pub)
            self.ip(pub, "link", "set", f"r{i}", "master", "seg", "up")
            self.ip(r, "addr", "add", f"{site.public_ip}/24", "dev", "wan")
            self.ip(r, "link", "set", "wan", "up")
            self.ip(r, "link", "add", "lan", "type", "veth", "peer", "name", "eth0",
                    "netns", h)
            self.ip(r, "addr", "add", f"192.168.{i}.1/24", "dev", "lan")
            self.ip(r, "link", "set", "lan", "up")
            self.ip(h, "addr", "add", f"{site.host_ip}/24", "dev", "eth0")
            self.ip(h, "link", "set", "eth0", "up")
            self.ip(h, "route", "add", "default", "via", f"192.168.{i}.1")
            # a neighbour on the segment could route to the LAN: only the filter stops it
            self.ip(pub, "route", "add", f"192.168.{i}.0/24", "via", site.public_ip)
            _run([_tool("ip"), "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1"])
            self.nft(r, self._router_rules(site.kind, self.ttl_guard))

    @staticmethod
    def _router_rules(kind: str, ttl_guard: bool = False) -> str:
        udp = "meta l4proto udp drop\n" if kind == "fw" else ""
        guard = (
            # before conntrack (priority raw): a dropped low-TTL probe leaves no entry behind
            "  chain guard {\n"
            "    type filter hook prerouting priority raw; policy accept;\n"
            f'    iifname "wan" ip ttl < {TTL_GUARD} drop\n'
            "  }\n") if ttl_guard else ""
        return (
            "table ip cairnlab {\n"
            "  chain post {\n"
            "    type nat hook postrouting priority srcnat; policy accept;\n"
            f'    oifname "wan" {_masquerade[kind]}\n'
            "  }\n"
            "  chain forward {\n"
            "    type filter hook forward priority filter; policy drop;\n"
            f"    {udp}"
            "    ct state established,related accept\n"
            '    iifname "lan" oifname "wan" accept\n'
            "  }\n"
            "  chain cut {\n"
            "    type filter hook forward priority filter - 10; policy accept;\n"
            "  }\n"
            f"{guard}"
            "}\n")

    def close(self) -> None:
        """Kill every process started in the lab, delete its namespaces (idempotent)."""
        for proc in reversed(self._procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5.0
        for proc in self._procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(COMMAND_TIMEOUT)
        self._procs.clear()
        for f in self._files:
            f.close()
        self._files.clear()
        _delete(self._made)
        self._made.clear()

    # -- running things in it ----------------------------------------------------------------

    def command(self, ns: str, argv: Sequence[str]) -> list[str]:
        """The argv that runs `argv` inside namespace `ns` (`ip netns exec`, which execs it:
        the process's pid is the command's)."""
        return [_tool("ip"), "netns", "exec", ns, *argv]

    @staticmethod
    def python(*args: str) -> list[str]:
        """The argv of this Python with `args` (for `run` and `spawn`, which run it in a
        namespace with the repository as its working directory)."""
        return [sys.executable, *args]

    def run(self, ns: str, argv: Sequence[str], *, timeout: float = COMMAND_TIMEOUT,
            check: bool = True, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
        """Run `argv` in namespace `ns` to its end (at most `timeout` s)."""
        return _run(self.command(ns, argv), check=check, timeout=timeout, cwd=cwd)

    def spawn(self, ns: str, argv: Sequence[str], *, log: Path | None = None,
              cwd: Path = ROOT) -> Running:
        """Start `argv` in namespace `ns` in its own session, its stdout read line by line
        (`Running.line`), its stderr to `log` (or discarded); it is killed when the lab
        closes, if it is still running."""
        err: Any = subprocess.DEVNULL
        if log is not None:
            err = open(log, "a", encoding="utf-8")  # noqa: SIM115 - closed by close()
            self._files.append(err)
        proc = subprocess.Popen(self.command(ns, argv), stdout=subprocess.PIPE, stderr=err,
                                text=True, cwd=cwd, start_new_session=True)
        self._procs.append(proc)
        return Running(proc, log)

    # -- the network path --------------------------------------------------------------------

    def site(self, kind: str) -> Site:
        """The site of `kind` (one of KINDS)."""
        try:
            return self.sites[kind]
        except KeyError:
            raise LabError(f"no site {kind!r} in the lab (sites: {', '.join(self.sites)})"
                           ) from None

    def cut(self, kind: str) -> None:
        """The path between the site's host and the public side goes down: its router drops
        every packet it would forward (both ways), until `restore`."""
        self.nft(self.site(kind).router_ns, "add rule ip cairnlab cut drop\n")

    def restore(self, kind: str) -> None:
        """The path is back (the router's conntrack entries are kept, as a real outage's)."""
        self.nft(self.site(kind).router_ns, "flush chain ip cairnlab cut\n")

    def down_for(self, kind: str, seconds: float) -> None:
        """The path is down for `seconds` (this call blocks that long), then back."""
        with self.outage(kind):
            threading.Event().wait(seconds)

    @contextlib.contextmanager
    def outage(self, kind: str) -> Iterator[None]:
        """The path is down inside the ``with`` block, restored on leaving it, however left."""
        self.cut(kind)
        try:
            yield
        finally:
            self.restore(kind)

    def forget_mappings(self, kind: str) -> bool:
        """The router forgets every connection it tracks (its NAT mappings), as after a reboot
        or an idle timeout: a connection through it is dead once the path is back (under the
        symmetric NAT its next packet gets a new public port). False when conntrack-tools is
        not installed (nothing forgotten)."""
        if shutil.which("conntrack") is None:
            return False
        _run(self.command(self.site(kind).router_ns, ["conntrack", "-F"]), check=False)
        return True

    def conntrack(self, kind: str) -> list[str]:
        """The router's connection-tracking table (`conntrack -L`), one entry a line; empty
        when conntrack-tools is not installed."""
        if shutil.which("conntrack") is None:
            return []
        out = _run(self.command(self.site(kind).router_ns, ["conntrack", "-L"]), check=False)
        return [line for line in out.stdout.splitlines() if line.strip()]

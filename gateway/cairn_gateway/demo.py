"""``cairn demo``: a whole fleet on one machine, every part a real process on 127.0.0.1.

What runs, in start order:

1. an MQTT broker: Mosquitto when it is installed, else the embedded pure-Python one (amqtt, in
   this process);
2. a local DHT network (``cairn dht testnet``, 5 nodes);
3. the gateway (``cairn gateway run``), with the three boards enrolled in its roster (by their
   record keys, as board-1..3), which finds them on the fleet's DHT topic and collects every
   0.5 s (the default is 10 s): a reading is at the API within 2 s of being sent
   (an edge commits every second; bench/e2e.py measures it);
4. three edge agents (``cairn edge run``), each reading one board's topics into its signed
   logs, publishing its record on the DHT and serving its logs to the gateway only;
5. the firmware simulator in this process: 3 boards x 5 sensors, each board in another payload
   shape (SenML JSON, SenML CBOR, Tasmota), with a few faults (malformed messages, duplicates,
   a burst out of order), every message written to a ledger.

Everything lives under the data directory (``./demo-data``): keys, configs, logs, the gateway's
store, each process's log file. :class:`Demo` is also what the end-to-end test drives (it can
kill and restart an edge, and put a proxy it can cut between the gateway and each edge).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from cairn.brokers import parse_broker
from cairn.fleet.identity import load_seed, new_seed, noise_key_pair
from cairn_sim.fleet import Fleet
from cairn_sim.mosquitto import Mosquitto, find_mosquitto, free_port
from cairn_sim.mqtt import Ledger, Runner
from cairn_sim.scenario import Scenario

__all__ = ["DEFAULT_SCENARIO", "Demo", "DemoError", "Proxy", "demo", "run_demo"]

FORMATS = ("senml", "senml-cbor", "tasmota")
KINDS = ("temperature", "humidity", "pressure", "co2", "battery")
FLEET = "demo"
WAIT = 60.0  # seconds a process may take to say it is ready

# a few faults, so that rejects, duplicates and late samples show up in the first minute
DEFAULT_SCENARIO = """\
[[fault]]
kind = "malformed"
probability = 0.02
variants = ["truncated", "wrong_type", "nan", "wrong_unit"]

[[fault]]
kind = "duplicate"
probability = 0.02

[[fault]]
kind = "out_of_order"
devices = ["board-1"]
start = 20
duration = 10
burst = 4
probability = 0.2
"""


class DemoError(RuntimeError):
    """A part of the demo could not start: says which, and where its log is."""


def _watermark_public_key(seed: bytes) -> bytes:
    from cairn.fleet.identity import watermark_key_pair

    return bytes(watermark_key_pair(seed).public_key)


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

    def start(self, ready: Callable[[dict[str, Any] | str], bool]) -> dict[str, Any] | str:
        self.lines = queue.Queue()
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
                    self.last = item
                out.put(item)
        out.put(None)

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


class Proxy:
    """A TCP relay on 127.0.0.1 between the gateway and one edge; :meth:`cut` drops every
    connection through it and refuses new ones until :meth:`restore` (a network path down)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, port: int, target: tuple[str, int]):
        self.loop = loop
        self.port = port
        self.target = target
        self.server: asyncio.Server | None = None
        self.conns: set[asyncio.StreamWriter] = set()
        self.relayed = 0  # bytes

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(WAIT)

    def restore(self) -> None:
        self.server = self._call(asyncio.start_server(self._serve, "127.0.0.1", self.port,
                                                      reuse_address=True))

    def cut(self) -> None:
        async def down() -> None:
            server, self.server = self.server, None  # at once: see _serve
            if server is not None:
                server.close()
                await server.wait_closed()
            for w in list(self.conns):
                w.transport.abort()
            self.conns.clear()
            await asyncio.sleep(0)  # the aborted transports close their sockets

        self._call(down())

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_w: asyncio.StreamWriter | None = None
        self.conns.add(writer)  # at once: a cut while the upstream connects drops it too
        try:
            if self.server is None:  # accepted as the path was cut: it is cut too
                return
            try:
                up_r, up_w = await asyncio.open_connection(*self.target)
            except OSError:  # the edge is down: so is this connection
                return
            if self.server is None or writer not in self.conns:  # cut while connecting
                return
            self.conns.add(up_w)

            async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                try:
                    while data := await r.read(65536):
                        self.relayed += len(data)
                        w.write(data)
                        await w.drain()
                except (OSError, asyncio.IncompleteReadError):
                    pass
                finally:
                    w.transport.abort()  # the other direction ends too

            await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        finally:  # every way out (a cut, an error, the loop shutting down) closes both ends
            for w in (writer, up_w):
                if w is not None:
                    w.transport.abort()
                    self.conns.discard(w)


@dataclass
class Summary:
    sent_messages: int = 0
    sent_samples: int = 0
    valid_samples: int = 0
    accepted: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    late: int = 0
    stored: int = 0
    streams: int = 0
    streams_ok: int = 0


class Demo:
    """The whole system, started and stopped as one."""

    def __init__(self, data: str | Path, *, api_port: int = 8080, boards: int = 3,
                 sensors: int = 5, seed: int = 7, scenario: str = DEFAULT_SCENARIO,
                 broker: str = "auto", proxies: bool = False, rate: float = 1.0,
                 commit_interval: float = 1.0, collect_interval: float = 0.5) -> None:
        self.data = Path(data).resolve()
        self.api_port = api_port
        self.boards = boards
        self.sensors = sensors
        self.seed = seed
        self.scenario = Scenario.parse(scenario, "demo scenario")
        self.broker_choice = broker
        self.use_proxies = proxies
        self.rate = rate
        self.commit_interval = commit_interval
        self.collect_interval = collect_interval
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                             name="demo-loop")
        self.mosquitto: Mosquitto | None = None
        self.embedded: Any = None
        self.broker_url = ""
        self.broker_kind = ""
        self.dht: Child | None = None
        self.gateway: Child | None = None
        self.edges: list[Child] = []
        self.proxies: list[Proxy] = []
        self.api = ""
        self.runner: Runner | None = None
        self.ledger: Ledger | None = None
        self._sim: threading.Thread | None = None
        self.started = 0.0

    # -- set-up ---------------------------------------------------------------------------------

    def _cairn(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "cairn.cli", *args]

    def _prepare(self, bootstrap: str) -> None:
        """Keys (kept across runs) and configs (written each run) for the gateway and edges."""
        (self.data / "logs").mkdir(parents=True, exist_ok=True)
        gw = self.data / "gateway"
        gw.mkdir(exist_ok=True)
        if not (gw / "gateway.seed").exists():
            new_seed(gw / "gateway.seed")
        gw_seed = load_seed(gw / "gateway.seed")
        gw_noise = noise_key_pair(gw_seed).public_key.hex()
        gw_marks = _watermark_public_key(gw_seed).hex()
        (gw / "gateway.toml").write_text(
            'data_dir = "data"\nkey_file = "gateway.seed"\n'
            f'[dht]\nbootstrap = ["{bootstrap}"]\nfleet = "{FLEET}"\n'
            f"[collect]\ninterval = {self.collect_interval}\n"
            f'[api]\nlisten = "127.0.0.1:{self.api_port}"\n')
        protocol = "3.1.1" if self.broker_kind == "embedded" else "auto"
        self.edge_ports: list[int] = []
        self.proxy_ports: list[int] = []
        for i in range(1, self.boards + 1):
            d = self.data / f"edge-{i}"
            d.mkdir(exist_ok=True)
            if not (d / "device.seed").exists():
                new_seed(d / "device.seed")
            port = free_port()
            self.edge_ports.append(port)
            advertise = ""
            if self.use_proxies:
                self.proxy_ports.append(free_port())
                advertise = f'advertise = "127.0.0.1:{self.proxy_ports[-1]}"\n'
            board = f"board-{i}"
            fmt = FORMATS[(i - 1) % len(FORMATS)]
            filt, shape = ((f"tele/{board}/SENSOR", "tasmota") if fmt == "tasmota"
                           else (f"senml/{board}/+", "senml"))
            topic = f'[[topic]]\nfilter = "{filt}"\nformat = "{shape}"\ndevice = "{board}"\n'
            (d / "edge.toml").write_text(
                'data_dir = "data"\nseed_file = "device.seed"\n'
                f'[mqtt]\nbroker = "{self.broker_url}"\nclient_id = "cairn-edge-{i}"\n'
                f'protocol = "{protocol}"\n'
                f"[logs]\ncommit_interval = {self.commit_interval}\n"
                f'[replication]\nhost = "127.0.0.1"\nport = {port}\n{advertise}'
                f'gateways = ["{gw_noise}"]\n'
                f'[dht]\nbootstrap = ["{bootstrap}"]\nfleet = "{FLEET}"\n'
                f"publish_interval = 1.0\nwatermarks = [\"{gw_marks}\"]\n"
                + topic)
        self._enroll_boards()

    def _enroll_boards(self) -> None:
        """Enrol the demo's own boards (by their record keys, as board-1..N) in the gateway's
        roster, before the gateway starts: it collects enrolled devices only."""
        from cairn.fleet.identity import record_key_pair
        from cairn_gateway.roster import Roster
        from cairn_gateway.store import Store

        (self.data / "gateway" / "data").mkdir(exist_ok=True)
        store = Store(self.data / "gateway" / "data" / "gw.db")
        try:
            roster = Roster(store.conn)
            now = time.time()
            for i in range(1, self.boards + 1):
                key = bytes(record_key_pair(load_seed(self.data / f"edge-{i}" /
                                                      "device.seed")).public_key)
                held = roster.by_name(f"board-{i}")
                if held is not None and held.status == "enrolled" and held.record_key != key:
                    roster.remove(f"board-{i}", now)  # the board got a new seed: re-bind
                roster.enroll(key, f"board-{i}", now)
        finally:
            store.close()

    def _start_broker(self) -> None:
        exe = find_mosquitto() if self.broker_choice in ("auto", "mosquitto") else None
        if self.broker_choice == "mosquitto" and exe is None:
            raise DemoError("--broker mosquitto: mosquitto is not installed")
        if exe is not None:
            self.mosquitto = Mosquitto(self.data / "broker", executable=exe)
            self.mosquitto.start()
            self.broker_url, self.broker_kind = self.mosquitto.url, "mosquitto"
            return
        from cairn_edge.agent import start_embedded_broker

        port = free_port()
        try:
            self.embedded = asyncio.run_coroutine_threadsafe(
                start_embedded_broker("127.0.0.1", port), self.loop).result(WAIT)
        except RuntimeError as exc:
            raise DemoError(str(exc)) from None
        self.broker_url, self.broker_kind = f"mqtt://127.0.0.1:{port}", "embedded"

    def start(self) -> None:
        """Start everything; returns once the simulator is publishing."""
        self.data.mkdir(parents=True, exist_ok=True)
        self._loop_thread.start()
        self.started = time.time()
        logs = self.data / "logs"
        logs.mkdir(exist_ok=True)
        try:
            self._start_broker()
            port = free_port()
            self.dht = Child("dht", self._cairn("dht", "testnet", "--nodes", "5", "--host",
                                                "127.0.0.1", "--port", str(port)),
                             logs / "dht.log")
            self.dht.start(lambda x: isinstance(x, str) and x.startswith("testnet ready"))
            self._prepare(f"127.0.0.1:{port}")
            self.gateway = Child("gateway", self._cairn(
                "gateway", "run", "--config", str(self.data / "gateway" / "gateway.toml")),
                logs / "gateway.log")
            self.start_gateway()
            for i in range(1, self.boards + 1):
                edge = Child(f"edge-{i}", self._cairn(
                    "edge", "run", "--config", str(self.data / f"edge-{i}" / "edge.toml"),
                    "--status-lines"), logs / f"edge-{i}.log")
                self.edges.append(edge)
                self.start_edge(i - 1)
                if self.use_proxies:
                    proxy = Proxy(self.loop, self.proxy_ports[i - 1],
                                  ("127.0.0.1", self.edge_ports[i - 1]))
                    proxy.restore()
                    self.proxies.append(proxy)
            self._start_sim()
        except BaseException:
            self.stop()
            raise

    def start_gateway(self) -> None:
        """Start (or start again) the gateway; its API address is ``self.api``."""
        assert self.gateway is not None
        first = self.gateway.start(lambda x: isinstance(x, dict) and bool(x.get("ready")))
        assert isinstance(first, dict)
        self.api = str(first["api"])

    def start_edge(self, k: int) -> None:
        self.edges[k].start(lambda x: isinstance(x, dict) and bool(x.get("ready")))

    def _start_sim(self) -> None:
        fleet = Fleet(devices=self.boards, sensors=self.sensors, formats=FORMATS,
                      rate=self.rate, seed=self.seed, scenario=self.scenario,
                      start_time=time.time(), kinds=KINDS)
        self.ledger = Ledger(self.data / "ledger.jsonl")
        self.runner = Runner(fleet, parse_broker(self.broker_url), ledger=self.ledger,
                             protocol="3.1.1" if self.broker_kind == "embedded" else "auto")
        runner = self.runner
        self._sim = threading.Thread(target=lambda: runner.run(1e9), daemon=True, name="sim")
        self._sim.start()

    # -- running ---------------------------------------------------------------------------------

    def get(self, path: str) -> Any:
        """GET from the gateway API (what Grafana and a person see)."""
        with urllib.request.urlopen(self.api + path, timeout=5) as r:  # noqa: S310 (http://)
            return json.loads(r.read())

    def view(self) -> dict[str, Any]:
        """What the live table shows: the gateway's latest values with their integrity, the
        edges' counters and the simulator's."""
        try:
            latest = self.get("/api/latest")
            integrity = {s["stream"]: s for s in self.get("/api/integrity")}
        except (OSError, urllib.error.URLError, ValueError):
            latest, integrity = [], {}
        rows = []
        now = time.time()
        for r in sorted(latest, key=lambda r: str(r["name"])):
            st = integrity.get(r["stream"], {})
            rows.append({"device": r["device"], "stream": r["name"], "value": r["value"],
                         "unit": r["unit"],
                         "age": now - float(r["time"]) if r["time"] is not None else None,
                         "verified": bool(r.get("verified")) and st.get("status") == "ok",
                         "blocks": st.get("stored_blocks", 0)})
        return {"rows": rows, "summary": self.summary(quick=True)}

    def summary(self, quick: bool = False) -> Summary:
        s = Summary()
        if self.runner is not None:
            s.sent_messages = self.runner.stats.sent
        if not quick and self.ledger is not None:
            self.ledger.flush()
            messages, _ = Ledger.read(self.data / "ledger.jsonl")
            for m in messages:
                s.sent_samples += len(m["samples"])
                if m["valid"]:
                    s.valid_samples += len(m["samples"])
        for e in self.edges:
            st = e.last
            s.accepted += int(st.get("samples", 0))
            s.duplicates += int(st.get("duplicates", 0))
            s.late += int(st.get("late", 0))
            s.rejected.update(st.get("rejected", {}))
        db = self.data / "gateway" / "data" / "gw.db"
        if db.exists():
            with (contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as c,
                  contextlib.suppress(sqlite3.DatabaseError)):
                    c.execute("PRAGMA busy_timeout=2000")
                    s.stored = int(c.execute("SELECT count(*) FROM samples").fetchone()[0])
                    s.streams, s.streams_ok = c.execute(
                        "SELECT count(*), coalesce(sum(status = 'ok'), 0) FROM streams"
                    ).fetchone()
        return s

    def stop_sim(self) -> None:
        if self.runner is not None:
            self.runner.stop()
        if self._sim is not None:
            self._sim.join(WAIT)
            self._sim = None
        if self.ledger is not None:
            self.ledger.flush()

    def settle(self, timeout: float = 20.0) -> None:
        """After the simulator stopped: wait until the gateway's store stops growing (the
        edges commit, the gateway collects what they committed)."""
        deadline = time.monotonic() + timeout
        last, same = -1, 0
        while time.monotonic() < deadline and same < 3:
            n = self.summary(quick=True).stored
            same = same + 1 if n == last else 0
            last = n
            time.sleep(max(self.collect_interval, self.commit_interval) + 0.2)

    def stop(self) -> None:
        """Stop everything: the simulator, then the edges (they commit and acknowledge), the
        gateway, the DHT, the broker."""
        with contextlib.suppress(Exception):
            self.stop_sim()
        for proxy in self.proxies:
            with contextlib.suppress(Exception):
                proxy.cut()
        for child in [*self.edges, self.gateway, self.dht]:
            if child is not None:
                child.stop()
        if self.ledger is not None:
            self.ledger.close()
            self.ledger = None
        if self.mosquitto is not None:
            self.mosquitto.stop()
            self.mosquitto = None
        if self.embedded is not None and self._loop_thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self.embedded.shutdown(),
                                                 self.loop).result(10)
            self.embedded = None
        if self._loop_thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._loop_thread.join(10)
        if not self.loop.is_running() and not self.loop.is_closed():
            self._finish_loop()
            self.loop.close()

    def _finish_loop(self) -> None:
        """Cancel what still runs on the demo's (stopped) loop and let it finish, then let the
        closed transports close their sockets: a task dropped with the loop leaves them open."""
        tasks = asyncio.all_tasks(self.loop)
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            self.loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        for _ in range(3):  # aborted transports close their sockets in the next iterations
            self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())


def wipe(data: Path) -> None:
    """Remove a previous demo's data directory (only one that looks like ours)."""
    if data.exists():
        if not (data / "gateway").exists() and any(data.iterdir()):
            raise DemoError(f"{data} is not empty and not a demo's data directory: "
                            "give another --data")
        shutil.rmtree(data)


def _age(a: float | None) -> str:
    return "-" if a is None else f"{a:.0f}s" if a < 120 else f"{a / 60:.0f}m"


def render(demo: Demo, view: dict[str, Any]) -> Any:
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    t = Table(title=f"Cairn demo: gateway API {demo.api}", expand=False)
    for c in ("device", "stream", "value", "unit", "age", "verified", "blocks"):
        t.add_column(c, justify="right" if c in ("value", "age", "blocks") else "left")
    for r in view["rows"]:
        v = r["value"]
        t.add_row(r["device"], r["stream"], f"{v:.2f}" if isinstance(v, float) else str(v),
                  r["unit"] or "",
                  _age(r["age"]), Text("yes", style="green") if r["verified"]
                  else Text("NO", style="bold red"), f"{r['blocks']:,}")
    s: Summary = view["summary"]
    rejects = ", ".join(f"{k} {n}" for k, n in s.rejected.most_common()) or "none"
    foot = Text(
        f"simulator: {s.sent_messages:,} messages sent ({demo.broker_kind} broker)\n"
        f"edges: {s.accepted:,} samples signed into logs; duplicates {s.duplicates}, "
        f"late {s.late}; rejected: {rejects}\n"
        f"gateway: {s.stored:,} samples stored, every block verified "
        f"({s.streams_ok}/{s.streams} streams ok)\n"
        f"data in {demo.data}; Ctrl-C stops")
    return Group(t, foot)


def print_summary(demo: Demo, s: Summary, out: Callable[[str], None]) -> None:
    rejects = ", ".join(f"{k} {n}" for k, n in s.rejected.most_common()) or "none"
    out("summary:")
    out(f"  simulator sent        {s.sent_messages:>8,} messages, {s.sent_samples:,} samples")
    out(f"  valid samples sent    {s.valid_samples:>8,}")
    out(f"  signed at the edges   {s.accepted:>8,}  (duplicates dropped {s.duplicates}, "
        f"late {s.late})")
    out(f"  rejected at the edges {sum(s.rejected.values()):>8,}  ({rejects})")
    out(f"  stored and verified   {s.stored:>8,}  at the gateway "
        f"({s.streams_ok}/{s.streams} streams ok)")
    out(f"  data: {demo.data}")


def run_demo(data: Path, duration: float | None, api_port: int, *, broker: str = "auto",
             fresh: bool = False, say: Callable[[str], None] = print) -> Summary:
    """Run the demo with its live view until Ctrl-C or ``duration`` seconds."""
    from rich.console import Console
    from rich.live import Live

    if fresh:
        wipe(data)
    demo = Demo(data, api_port=api_port, broker=broker)
    say(f"starting: broker, DHT (5 nodes), gateway, {demo.boards} edges, the simulator "
        f"({demo.boards} boards x {demo.sensors} sensors); data in {demo.data}")
    demo.start()
    say(f"gateway API: {demo.api}  (try {demo.api}/api/latest, {demo.api}/docs)")
    stop = threading.Event()
    old = signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console = Console()
    try:
        deadline = time.monotonic() + duration if duration else None
        with Live(render(demo, demo.view()), console=console, refresh_per_second=2,
                  transient=not console.is_terminal) as live:
            while not stop.wait(1.0):
                live.update(render(demo, demo.view()))
                if deadline is not None and time.monotonic() >= deadline:
                    break
                for child in [*demo.edges, demo.gateway, demo.dht]:
                    if child is not None and not child.running:
                        raise DemoError(f"{child.name} stopped: see {child.log_path}")
        say("stopping: the simulator, then the edges (they commit what they hold)...")
        demo.stop_sim()
        if duration:
            demo.settle()
        summary = demo.summary()
    finally:
        signal.signal(signal.SIGINT, old)
        demo.stop()
    print_summary(demo, summary, say)
    return summary


@click.command("demo")
@click.option("--duration", type=click.FloatRange(min=1.0), default=None,
              help="Seconds to run, then stop and print a summary (default: until Ctrl-C).")
@click.option("--data", "data", type=click.Path(file_okay=False, path_type=Path),
              default="demo-data", show_default=True, help="Where everything is kept.")
@click.option("--api-port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="The gateway API's port on 127.0.0.1 (0: any free port).")
@click.option("--broker", type=click.Choice(["auto", "embedded", "mosquitto"]), default="auto",
              show_default=True, help="auto: Mosquitto when installed, else the embedded one.")
@click.option("--fresh", is_flag=True, help="Start from an empty data directory.")
def demo(duration: float | None, data: Path, api_port: int, broker: str, fresh: bool) -> None:
    """A whole fleet on this machine: broker, DHT, 3 simulated boards, 3 edges, a gateway.

    Shows a live table of the gateway's latest verified values; Ctrl-C (or --duration) stops
    it and prints a summary: samples sent, valid, signed, rejected (why), stored.
    """
    if api_port and not _port_free(api_port):
        raise click.ClickException(f"port {api_port} is in use: give another --api-port "
                                   "(0 takes any free port)")
    try:
        run_demo(data, duration, api_port, broker=broker, fresh=fresh, say=click.echo)
    except DemoError as exc:
        raise click.ClickException(str(exc)) from None


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True

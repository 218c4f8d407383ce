"""The demo's system: a whole fleet on one machine, every part a real process on 127.0.0.1.

What :meth:`Demo.start` runs, in start order:

1. an MQTT broker: Mosquitto when it is installed, else the embedded pure-Python one (amqtt, in
   this process), both from :mod:`cairn.brokers`;
2. a local DHT network (``cairn dht testnet``, 5 nodes);
3. the gateway (``cairn gateway run``), with the three boards enrolled in its roster (by their
   record keys, as board-1..3), which finds them on the fleet's DHT topic and collects every
   0.5 s (the default is 10 s): a reading is at the API within 2 s of being sent
   (an edge commits every second; bench/e2e.py measures it);
4. three edge agents (``cairn edge run``), each reading one board's topics into its signed
   logs, publishing its record on the DHT and serving its logs to the gateway only;
5. the firmware simulator in this process: boards x 5 sensors, each board in another payload
   family (board-1 SenML JSON, 2 SenML CBOR, 3 Tasmota, 4 ESPHome, 5 Homie 5, 6 Zigbee2MQTT,
   7 Shelly Gen2: ``make demo`` runs all seven; the tests the first three), with a few
   faults (malformed messages, duplicates, a burst out of order), every message written to a
   ledger.

Everything lives under the data directory (``./demo-data``): keys, configs
(:mod:`cairn_demo.configs`), logs, the gateway's store (SQLite, ``gateway/data/gw.db``; or a
PostgreSQL database, ``store``: its URL), each process's log file. The summary reads the
store through the store's interface (:mod:`cairn_gateway.store`, :mod:`cairn_gateway.queries`),
whichever engine holds it. :class:`Demo`
is also what the end-to-end test drives (it can kill and restart an edge, and put a
:class:`~cairn_demo.proxy.Proxy` it can cut between the gateway and each edge).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cairn.brokers import (
    EmbeddedBrokerError,
    Mosquitto,
    find_mosquitto,
    free_port,
    parse_broker,
)
from cairn_demo.configs import FORMATS, enroll_boards, write_edge, write_gateway
from cairn_demo.processes import WAIT, Child, DemoError, cairn_command
from cairn_demo.proxy import Proxy
from cairn_gateway import queries
from cairn_gateway.store import Store, StoreError
from cairn_sim.fleet import Fleet
from cairn_sim.mqtt import Ledger, Runner
from cairn_sim.scenario import Scenario

__all__ = ["DEFAULT_SCENARIO", "KINDS", "Demo", "Summary"]

KINDS = ("temperature", "humidity", "pressure", "co2", "battery")
STOP_WAIT = 60.0  # seconds for the demo's event loop to stop (it takes far less when not loaded)

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
    sent_twice: int = 0  # valid samples the simulator sent again on purpose (duplicate fault)
    unacked: int = 0  # valid samples in messages the broker never acknowledged to the simulator
    refused: Counter[str] = field(default_factory=Counter)  # readings the edges refused alone

    def reconcile(self) -> list[str]:
        """Why signed is not valid sent minus duplicates (and stored not signed), in lines; one
        line saying that it adds up when it does."""
        expected = self.valid_samples - self.duplicates
        out = []
        if self.accepted == expected:
            out.append(f"adds up: valid {self.valid_samples:,} - duplicates "
                       f"{self.duplicates:,} = {self.accepted:,} signed")
        else:
            out.append(f"does not add up: valid {self.valid_samples:,} - duplicates "
                       f"{self.duplicates:,} = {expected:,}, signed {self.accepted:,} "
                       f"({self.accepted - expected:+,}), because:")
            refused = sum(self.refused.values())
            if refused:
                why = ", ".join(f"{k} {n}" for k, n in self.refused.most_common())
                out.append(f"  {refused:,} readings of valid messages refused alone at the "
                           f"edges ({why})")
            again = self.duplicates - self.sent_twice
            if again > 0:
                out.append(f"  {again:,} of the duplicates were delivered again by the broker "
                           "(an edge stopped before acknowledging them), not sent twice")
            if self.unacked:
                out.append(f"  {self.unacked:,} valid samples were in messages the broker never "
                           "acknowledged to the simulator (they may not have reached an edge)")
            # missing samples none of the above accounts for (negative: samples more)
            left = expected - self.accepted - refused + max(0, again)
            if left > self.unacked:
                out.append(f"  {left - self.unacked:,} samples missing that these do not "
                           "explain: see the edges' logs in the data directory's logs/")
            elif left < 0:
                out.append(f"  {-left:,} samples more than expected that these do not "
                           "explain: see the edges' logs in the data directory's logs/")
        if self.stored < self.accepted:
            out.append(f"{self.accepted - self.stored:,} signed samples were not collected by "
                       "the gateway before the edges stopped (they are in the edges' logs)")
        return out


class Demo:
    """The whole system, started and stopped as one."""

    def __init__(self, data: str | Path, *, api_port: int = 8080, boards: int = 3,
                 sensors: int = 5, seed: int = 7, scenario: str = DEFAULT_SCENARIO,
                 broker: str = "auto", proxies: bool = False, rate: float = 1.0,
                 commit_interval: float = 1.0, collect_interval: float = 0.5,
                 store: str = "") -> None:
        self.data = Path(data).resolve()
        self.store_url = store  # "": SQLite in the gateway's data directory
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
        self.store: Store | None = None  # the gateway's store, read for the summary

    # -- set-up ---------------------------------------------------------------------------------

    def _prepare(self, bootstrap: tuple[str, int]) -> None:
        """Keys (kept across runs) and configs (written each run) for the gateway and edges."""
        (self.data / "logs").mkdir(parents=True, exist_ok=True)
        gateway = write_gateway(self.data / "gateway", bootstrap=bootstrap,
                                api_port=self.api_port, collect_interval=self.collect_interval,
                                store_url=self.store_url)
        protocol = "3.1.1" if self.broker_kind == "embedded" else "auto"
        self.edge_ports: list[int] = []
        self.proxy_ports: list[int] = []
        for i in range(1, self.boards + 1):
            port = free_port()
            self.edge_ports.append(port)
            advertise = None
            if self.use_proxies:
                self.proxy_ports.append(free_port())
                advertise = ("127.0.0.1", self.proxy_ports[-1])
            write_edge(self.data / f"edge-{i}", i, broker_url=self.broker_url,
                       protocol=protocol, commit_interval=self.commit_interval, port=port,
                       advertise=advertise, gateway=gateway, bootstrap=bootstrap,
                       # with proxies (the chaos runs) every path to an edge is a TCP one
                       # through its proxy, which a cut can stop; else by key first
                       transport="tcp" if self.use_proxies else "auto")
        enroll_boards(self.data, self.boards, self.store_target)

    @property
    def store_target(self) -> str | Path:
        """The gateway's store: the PostgreSQL URL, else its SQLite file."""
        return self.store_url or self.data / "gateway" / "data" / "gw.db"

    def _start_broker(self) -> None:
        exe = find_mosquitto() if self.broker_choice in ("auto", "mosquitto") else None
        if self.broker_choice == "mosquitto" and exe is None:
            raise DemoError("--broker mosquitto: mosquitto is not installed")
        if exe is not None:
            self.mosquitto = Mosquitto(self.data / "broker", executable=exe)
            self.mosquitto.start()
            self.broker_url, self.broker_kind = self.mosquitto.url, "mosquitto"
            return
        port = free_port()
        try:
            from cairn_edge.agent import start_embedded_broker

            self.embedded = asyncio.run_coroutine_threadsafe(
                start_embedded_broker("127.0.0.1", port), self.loop).result(WAIT)
        except (RuntimeError, EmbeddedBrokerError) as exc:
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
            self.dht = Child("dht", cairn_command("dht", "testnet", "--nodes", "5", "--host",
                                                  "127.0.0.1", "--port", str(port)),
                             logs / "dht.log")
            self.dht.start(lambda x: isinstance(x, str) and x.startswith("testnet ready"))
            self._prepare(("127.0.0.1", port))
            self.gateway = Child("gateway", cairn_command(
                "gateway", "run", "--config", str(self.data / "gateway" / "gateway.toml")),
                logs / "gateway.log")
            self.start_gateway()
            for i in range(1, self.boards + 1):
                edge = Child(f"edge-{i}", cairn_command(
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
            messages, acked = Ledger.read(self.data / "ledger.jsonl")
            for m in messages:
                s.sent_samples += len(m["samples"])
                if m["valid"]:
                    s.valid_samples += len(m["samples"])
                    if "duplicate" in m["faults"]:
                        s.sent_twice += len(m["samples"])
                    if m["seq"] not in acked:
                        s.unacked += len(m["samples"])
        for e in self.edges:
            st = e.last
            s.accepted += int(st.get("samples", 0))
            s.duplicates += int(st.get("duplicates", 0))
            s.late += int(st.get("late", 0))
            s.rejected.update(st.get("rejected", {}))
            s.refused.update(st.get("refused_samples", {}))
        if self.store is None and (self.store_url or Path(self.store_target).exists()):
            with contextlib.suppress(StoreError):
                self.store = Store(self.store_target)
        if self.store is not None:
            with contextlib.suppress(StoreError):  # (busy: the next view says it)
                c = self.store.conn
                s.stored = queries.total_samples(c)
                s.streams = queries.stream_count(c)
                s.streams_ok = s.streams - queries.stopped_streams(c)
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

    def stop_edges(self) -> None:
        """Stop the edges (each commits and acknowledges what it holds, and says its final
        counters), so a summary counts every sample they took."""
        for edge in self.edges:
            edge.stop()

    def stop(self) -> None:
        """Stop everything: the simulator, then the edges (they commit and acknowledge), the
        gateway, the DHT, the broker."""
        try:
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
            if self.store is not None:
                self.store.close()
                self.store = None
            if self.mosquitto is not None:
                self.mosquitto.stop()
                self.mosquitto = None
            if self.embedded is not None and self._loop_thread.is_alive():
                with contextlib.suppress(Exception):
                    asyncio.run_coroutine_threadsafe(self.embedded.shutdown(),
                                                     self.loop).result(10)
                self.embedded = None
        finally:  # the loop is stopped and closed whatever failed above
            if self._loop_thread.is_alive():
                self.loop.call_soon_threadsafe(self.loop.stop)
                # on a loaded machine (the test suite's parallel workers) the loop can take more
                # than 10 s to come round to the stop; a loop left running is never closed, and
                # its sockets were reported later, in whichever test the garbage collector ran
                self._loop_thread.join(STOP_WAIT)
                if self._loop_thread.is_alive():
                    raise DemoError(f"the demo's event loop did not stop within {STOP_WAIT:g} s")
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
        for proxy in self.proxies:  # a cut that timed out (a loaded machine) left its pipes
            for writer in list(proxy.conns):
                writer.transport.abort()
            proxy.conns.clear()
        for _ in range(3):  # aborted transports close their sockets in the next iterations
            self.loop.run_until_complete(asyncio.sleep(0))
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())

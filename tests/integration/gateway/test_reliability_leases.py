"""Several gateways, one fleet, on a real PostgreSQL server: three gateway processes share four
edges; one gateway is killed (SIGKILL) mid-run; its devices' samples flow again through the
others, and every sample the edges acknowledged is stored exactly once. Then two gateways racing
for one device, and a gateway whose clock is hours off: scorecard lines."""

from __future__ import annotations

import contextlib
import hashlib
import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cairn.brokers import free_port
from cairn.fleet.identity import new_seed, noise_key_pair
from cairn_gateway.leases import Leases, gateways, holders
from cairn_gateway.roster import Roster
from cairn_gateway.store import Store
from tests.integration.edge.test_edge_dht import testnet  # noqa: F401 - a fixture
from tests.integration.edge.test_edge_mqtt import EdgeProcess
from tests.integration.gateway.test_gateway_collect import enroll
from tests.scorecard import record

WAIT = 60.0
LEASE = 3.0  # seconds: the shortest lease, so a takeover comes soon


class GatewayProcess:
    """``cairn gateway run`` on the shared store, in a child process (its log in a file)."""

    def __init__(self, directory: Path, pg_url: str, dht: tuple[str, int],
                 lease: float = LEASE) -> None:
        directory.mkdir(parents=True)
        self.dir = directory
        self.key = noise_key_pair(new_seed(directory / "gateway.seed")).public_key
        self.config = directory / "gateway.toml"
        self.config.write_text(
            f'[dht]\nbootstrap = ["{dht[0]}:{dht[1]}"]\n'
            '[collect]\ninterval = 1.0\ningest_worker = false\n'
            f'[api]\nlisten = "127.0.0.1:{free_port()}"\n'
            '[replication]\nlisten = "127.0.0.1:0"\n'
            f'[store]\nurl = "{pg_url}"\nlease_seconds = {lease}\n')
        self.proc: subprocess.Popen[str] | None = None
        self.log: Any = None

    @property
    def id(self) -> str:
        return self.key.hex()

    def start(self) -> None:
        self.log = open(self.dir / "gateway.log", "a")  # noqa: SIM115 - the child writes it
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cairn.cli", "-v", "gateway", "run", "--config",
             str(self.config)],
            stdout=subprocess.PIPE, stderr=self.log, text=True)
        lines: queue.Queue[str] = queue.Queue()

        def read(proc: subprocess.Popen[str]) -> None:
            assert proc.stdout is not None
            with proc.stdout:
                for line in proc.stdout:
                    lines.put(line)

        threading.Thread(target=read, args=(self.proc,), daemon=True).start()
        try:
            first = json.loads(lines.get(timeout=WAIT))
        except queue.Empty:
            raise AssertionError("the gateway did not start: "
                                 + (self.dir / "gateway.log").read_text()[-2000:]) from None
        assert first.get("ready"), first

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(WAIT)
        self.log.close()

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(WAIT)
        self.log.close()


class Publisher:
    """Readings of one board to its edge's embedded broker (QoS 1, a few a second), in a
    thread; what the edge acknowledged (its PUBACK follows the durable commit) is kept."""

    def __init__(self, name: str, port: int, every: float = 0.2) -> None:
        self.name = name
        self.every = every
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"pub-{name}")
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        self.sent: list[tuple[mqtt.MQTTMessageInfo, float, float]] = []
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.stopping.wait(self.every):
            n += 1
            t = round(time.time(), 3)
            value = float(n)
            info = self.client.publish(
                f"senml/{self.name}/temp",
                json.dumps([{"bn": f"{self.name}/temp", "bt": t, "bu": "Cel", "v": value}]),
                qos=1)
            self.sent.append((info, t, value))

    def stop(self) -> set[tuple[float, float]]:
        """Stop publishing; the (time, value) of every reading the edge acknowledged."""
        self.stopping.set()
        self.thread.join(WAIT)
        for info, _t, _v in self.sent:
            if not info.is_published():
                info.wait_for_publish(WAIT)
        self.client.disconnect()
        self.client.loop_stop()
        return {(t, v) for info, t, v in self.sent if info.is_published()}


def stored(store: Store) -> dict[str, list[tuple[float, float]]]:
    """Every sample in the store by device name: (time, value), duplicates kept."""
    out: dict[str, list[tuple[float, float]]] = {}
    for name, t, v in store.conn.execute(
            "SELECT d.name, s.t, s.value FROM samples s JOIN streams st ON st.id = s.stream_id "
            "JOIN devices d ON d.id = st.device_id"):
        out.setdefault(str(name), []).append((float(t), float(v)))
    return out


def newest(store: Store) -> dict[str, float]:
    """The newest sample time stored of each device, by name."""
    return {str(n): float(t) for n, t in store.conn.execute(
        "SELECT d.name, max(s.t) FROM samples s JOIN streams st ON st.id = s.stream_id "
        "JOIN devices d ON d.id = st.device_id GROUP BY d.name")}


def wait_for(what: str, done: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.1)


@pytest.fixture
def processes() -> Iterator[list[Any]]:
    """Whatever the test starts: stopped at the end whatever happened."""
    started: list[Any] = []
    yield started
    for p in reversed(started):
        with contextlib.suppress(Exception):  # (the test's own failure says what went wrong)
            p.stop()


def test_three_gateways_one_killed_every_acknowledged_sample_stored_once(
        pg_url: str, testnet: tuple[str, int], tmp_path: Path,  # noqa: F811
        processes: list[Any]) -> None:
    edges_n = 4
    gws = [GatewayProcess(tmp_path / f"gw{i}", pg_url, testnet) for i in range(3)]
    keys = [g.id for g in gws]
    ports = [free_port() for _ in range(edges_n)]
    edges = [EdgeProcess(tmp_path / f"edge{i}", None, gateways=keys, dht=testnet,  # type: ignore[arg-type]
                         embedded=ports[i]) for i in range(edges_n)]
    names = [f"board-{i}" for i in range(edges_n)]
    for edge, name in zip(edges, names, strict=True):
        enroll(gws[0].config, edge, name)  # one roster: the shared store's
    for g in gws:
        g.start()
        processes.append(g)
    for edge in edges:
        edge.start()
        processes.append(edge)
    store = Store(pg_url)
    try:
        pubs = [Publisher(name, port) for name, port in zip(names, ports, strict=True)]
        # the fleet split among the three (a share of 2 each: 2, 1, 1) and every board stored
        wait_for("every gateway holds a lease", lambda: len(set(holders(store.conn).values())) == 3
                 and len(holders(store.conn)) == edges_n)
        wait_for("samples of every board", lambda: set(newest(store)) == set(names))
        held = holders(store.conn)
        victim = max(gws, key=lambda g: sum(1 for h in held.values() if h == g.id))
        orphans = {name for name, edge in zip(names, edges, strict=True)
                   if held.get(_record_key(edge)) == victim.id}
        assert orphans
        killed_at = time.time()
        victim.kill()
        # its devices taken over by the others, their samples flowing again
        wait_for("the victim's devices taken over", lambda: all(
            holders(store.conn).get(_record_key(e)) not in (None, victim.id) for e in edges))
        wait_for("the victim's devices' samples flowing again", lambda: all(
            newest(store).get(n, 0) > killed_at + 1.0 for n in orphans))
        resumed = time.time() - killed_at
        survivors = {g.id for g in gws if g is not victim}
        assert set(holders(store.conn).values()) <= survivors
        later = time.time() + 1.0  # a little more traffic through the survivors
        wait_for("every board's samples flowing through the survivors",
                 lambda: all(t > later for t in newest(store).values()))
        acked = {name: p.stop() for name, p in zip(names, pubs, strict=True)}
        total = sum(len(a) for a in acked.values())
        assert total > 10 * edges_n, acked
        wait_for("every acknowledged sample stored", lambda: all(
            acked[n] <= set(stored(store).get(n, [])) for n in names))
        got = stored(store)
        duplicates = sum(len(v) - len(set(v)) for v in got.values())
        lost = sum(len(acked[n] - set(got.get(n, []))) for n in names)
        extra = sum(len(set(got.get(n, [])) - acked[n]) for n in names)
        assert store.missing() == {}  # no holes reported: every acknowledged sample is due
        rows = {r.id: r for r in gateways(store.conn, LEASE)}
        assert not rows[victim.id].live
        wait_for("the survivors live", lambda: all(  # (a heartbeat late under load: waited)
            r.live for r in gateways(store.conn, LEASE) if r.id in survivors))
    finally:
        store.close()
    record("chaos", "three gateways on one PostgreSQL, one killed (SIGKILL) mid-run: "
           "acknowledged samples lost or stored twice", total, lost + duplicates,
           "lost or duplicated",
           detail=f"{len(orphans)} device(s) taken over; their samples flowed again "
                  f"{resumed:.1f} s after the kill (lease {LEASE:g} s); {extra} unacknowledged "
                  "sample(s) stored as well")
    assert (lost, duplicates, extra) == (0, 0, 0)


def _record_key(edge: EdgeProcess) -> bytes:
    from cairn.fleet.identity import record_key_pair

    return record_key_pair(edge.seed).public_key


# -- leases under contention and skew -------------------------------------------------------------


def _key(i: int) -> bytes:
    return hashlib.blake2b(f"device-{i}".encode(), digest_size=32).digest()


def _gw(i: int) -> str:
    return hashlib.blake2b(f"gateway-{i}".encode(), digest_size=32).hexdigest()


def test_two_gateways_racing_for_each_device_never_both_hold_it(pg_url: str) -> None:
    """Two gateways (two connections to one PostgreSQL, two threads) beat at the same moment
    over a fleet whose leases all just expired, thirty times: no device ever has two holders
    and each gateway's idea of what it holds is what the database says."""
    runs = 30
    a_store, b_store = Store(pg_url), Store(pg_url)
    try:
        roster = Roster(a_store.conn)
        for i in range(10):
            roster.enroll(_key(i), f"board-{i}", 1000.0)
        a = Leases(a_store.conn, _gw(0), 30)
        b = Leases(b_store.conn, _gw(1), 30)
        bad = 0
        for _ in range(runs):
            a_store.conn.execute("UPDATE leases SET expires = expires - 3600")
            barrier = threading.Barrier(2)

            def beat(g: Leases, barrier: threading.Barrier = barrier) -> None:
                barrier.wait(10)
                g.beat()

            threads = [threading.Thread(target=beat, args=(g,)) for g in (a, b)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(WAIT)
            held = holders(a_store.conn)
            bad += len(a.held & b.held)
            bad += sum(1 for k in a.held if held.get(k) != a.id)
            bad += sum(1 for k in b.held if held.get(k) != b.id)
    finally:
        a_store.close()
        b_store.close()
    record("storage", "two gateways beating at once over expired leases (PostgreSQL)", runs, bad,
           "devices held twice or misbelieved")
    assert bad == 0


def test_a_gateway_whose_clock_is_hours_off_still_honours_leases(
        pg_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gateway A's clock runs five hours ahead, gateway B's five hours behind: leases are
    measured by the database's clock, so B never takes A's live leases (nor A B's), and a
    lease A renews expires one lease period from the database's now."""
    real = time.time
    a_store, b_store = Store(pg_url), Store(pg_url)
    bad = 0
    tries = 0
    try:
        roster = Roster(a_store.conn)
        for i in range(6):
            roster.enroll(_key(i), f"board-{i}", 1000.0)
        a = Leases(a_store.conn, _gw(0), 30)
        b = Leases(b_store.conn, _gw(1), 30)
        for _ in range(3):  # settled: three each
            a.beat()
            b.beat()
        for skew_a, skew_b in ((5 * 3600, -5 * 3600), (-5 * 3600, 5 * 3600)):
            for _ in range(3):
                monkeypatch.setattr(time, "time", lambda s=skew_a: real() + s)
                tries += 1
                before = holders(a_store.conn)
                a.beat()
                monkeypatch.setattr(time, "time", lambda s=skew_b: real() + s)
                b.beat()
                after = holders(a_store.conn)
                bad += sum(1 for k in before if after.get(k) != before[k])  # stolen
            row = a_store.conn.execute(
                "SELECT max(expires) - extract(epoch FROM clock_timestamp()) FROM leases "
                "WHERE holder = ?", (a.id,)).fetchone()
            assert row[0] is not None and 25 < float(row[0]) <= 30, row
            assert len(a.held) + len(b.held) == 6 and not a.held & b.held
    finally:
        monkeypatch.setattr(time, "time", real)
        a_store.close()
        b_store.close()
    record("storage", "gateways whose clocks are 5 h ahead and 5 h behind share leases",
           tries, bad, "leases taken while live")
    assert bad == 0


def test_a_gateway_cut_off_from_the_database_stops_before_another_takes_over(
        pg_url: str) -> None:
    """Gateway A loses its database (its connections closed) right after a renewal; gateway B
    keeps beating. Sampled every 20 ms until B holds every device: never both trusting a lease
    at once (A stops when its renewal can no longer prove it, before the lease can expire),
    and A's failed heartbeats are told, not raised."""
    from cairn_gateway.daemon import beat_once

    lease = 3.0
    a_store, b_store = Store(pg_url), Store(pg_url)
    try:
        roster = Roster(b_store.conn)
        keys = [_key(i) for i in range(4)]
        for i, k in enumerate(keys):
            roster.enroll(k, f"board-{i}", 1000.0)
        a = Leases(a_store.conn, _gw(0), lease)
        b = Leases(b_store.conn, _gw(1), lease)
        a.beat()
        assert a.held == set(keys)
        a_store.close()  # cut off
        samples = both = 0
        deadline = time.monotonic() + WAIT
        next_a = next_b = 0.0
        while b.proven() != set(keys):
            assert time.monotonic() < deadline, "B never took over"
            now = time.monotonic()
            if now >= next_a:
                next_a = now + beat_once(a)  # fails: logged, counted, retried
            if now >= next_b:
                next_b = now + beat_once(b)
            samples += 1
            both += sum(1 for k in keys if a.holds(k) and b.holds(k))
            time.sleep(0.02)
        assert a.proven() == frozenset()
    finally:
        b_store.close()
        with contextlib.suppress(Exception):
            a_store.close()
    record("storage", "a gateway cut off from the database while another takes its leases",
           samples, both, "moments two gateways trusted one lease")
    assert both == 0

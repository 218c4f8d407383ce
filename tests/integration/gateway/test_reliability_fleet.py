"""Fleet trust, over real sockets and processes: a rogue edge on the fleet topic whose streams
copy an enrolled board's names (and whose record seals its log keys to the gateway, whose key
is public) is listed pending and never downloaded, stored or shown; enrolled as a second device,
its record's claim on the first board's stream names is refused. The gateway keeps running and
the honest board stays current throughout."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.request import urlopen

import pytest
from prometheus_client.parser import text_string_to_metric_families

from cairn.brokers import Mosquitto, free_port
from cairn.fleet.identity import new_seed, noise_key_pair
from tests.integration.edge.test_edge_dht import publish, testnet  # noqa: F401 - a fixture
from tests.integration.edge.test_edge_mqtt import WAIT, EdgeProcess
from tests.scorecard import record

STREAM = "board-1/temperature"
ROGUE_VALUE = 666.0


@pytest.fixture
def brokers(tmp_path: Path, mosquitto_path: Path) -> Iterator[tuple[Mosquitto, Mosquitto]]:
    """The honest board's broker and the rogue's own (its readings differ from the board's)."""
    with (Mosquitto(tmp_path / "broker", executable=mosquitto_path) as honest,
          Mosquitto(tmp_path / "rogue-broker", executable=mosquitto_path) as rogue):
        yield honest, rogue


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cairn.cli", *args], capture_output=True,
                          text=True, timeout=WAIT, check=False)


def get(api: str, path: str) -> Any:
    with urlopen(api + path, timeout=10) as r:
        body = r.read().decode()
    return body if path == "/metrics" else json.loads(body)


def until(what: str, check: Callable[[], Any]) -> Any:
    """Poll the running gateway until ``check`` returns something true (its collection
    rounds run every 0.3 s); fail after WAIT seconds saying what was awaited."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_rogue_edge_is_pending_and_a_copycat_record_is_refused(
        brokers: tuple[Mosquitto, Mosquitto], testnet: tuple[str, int],  # noqa: F811
        tmp_path: Path) -> None:
    honest_broker, rogue_broker = brokers
    gdir = tmp_path / "gw"
    gdir.mkdir()
    gw = noise_key_pair(new_seed(gdir / "gateway.seed"))
    config = str(gdir / "gateway.toml")
    (gdir / "gateway.toml").write_text(
        f'[dht]\nbootstrap = ["{testnet[0]}:{testnet[1]}"]\n'
        f'[collect]\ninterval = 0.3\ningest_worker = false\n'
        f'[api]\nlisten = "127.0.0.1:{free_port()}"\n[replication]\nlisten = "127.0.0.1:0"\n')
    honest = EdgeProcess(tmp_path / "honest", honest_broker, gateways=[gw.public_key.hex()],
                         dht=testnet)
    rogue = EdgeProcess(tmp_path / "rogue", rogue_broker, gateways=[gw.public_key.hex()],
                        dht=testnet)
    honest.start()
    rogue.start()
    t0 = time.time() - 60
    publish(honest_broker, [(STREAM, t0 + k, 20.0 + k) for k in range(5)])
    publish(rogue_broker, [(STREAM, t0 + k + 0.5, ROGUE_VALUE) for k in range(5)])
    honest.until(lambda s: s.get("samples", 0) >= 5 and s.get("dht_publishes", 0) >= 1)
    rogue_status = rogue.until(lambda s: s.get("samples", 0) >= 5
                               and s.get("dht_publishes", 0) >= 1)
    rogue_key = str(rogue_status["record_key"])
    keys = json.loads(cli("edge", "keys", "--config", str(honest.config), "--json").stdout)
    honest_key = keys["record_key"]
    added = cli("gateway", "devices", "add", keys["enrollment"], "--name", "board-1",
                "--config", config)
    assert added.returncode == 0, added.stderr

    proc = subprocess.Popen([sys.executable, "-m", "cairn.cli", "gateway", "run", "--config",
                             config], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out: queue.Queue[str] = queue.Queue()
    errors: list[str] = []

    def read(stream: Any, sink: Callable[[str], None]) -> None:
        with stream:
            for line in stream:
                sink(line)

    threading.Thread(target=read, args=(proc.stdout, out.put), daemon=True).start()
    threading.Thread(target=read, args=(proc.stderr, errors.append), daemon=True).start()
    try:
        api = json.loads(out.get(timeout=WAIT))["api"]

        def latest_value() -> float | None:
            rows = [x for x in get(api, "/api/latest") if x["name"] == STREAM]
            return rows[0]["value"] if len(rows) == 1 else None

        # 1. the rogue, not enrolled: pending with what its record says, nothing of it taken
        until("the honest board's readings", lambda: latest_value() == 24.0)
        [pending] = until("the rogue listed pending with its record read", lambda: [
            p for p in get(api, "/api/devices/pending") if p["streams"]])
        assert (pending["record_key"], pending["streams"]) == (rogue_key, [STREAM])
        listed = cli("gateway", "devices", "list", "--config", config)
        assert "pending" in listed.stdout and rogue_key in listed.stdout
        watched = subprocess.run([sys.executable, "-m", "cairn.cli", "gateway", "watch",
                                  "--once", "--config", config], capture_output=True, text=True,
                                 timeout=WAIT, check=False, env={**os.environ, "COLUMNS": "250"})
        assert watched.returncode == 0, watched.stderr
        assert "1 not enrolled, not shown" in watched.stdout and "board-1" in watched.stdout
        # the rogue's readings, public in its record (as a number of its own: not digits of a
        # time or a size that happen to hold 666)
        assert not re.search(r"(?<![\d.])666(\.0*)?(?![\d.])", watched.stdout), watched.stdout

        def shown_from_rogue() -> int:
            """Rogue values and keys anywhere a user looks: API, metrics, the store's rows."""
            latest = get(api, "/api/latest")
            metrics = str(get(api, "/metrics"))
            values = [x.value for f in text_string_to_metric_families(metrics) for x in f.samples]
            bad: int = sum(x["value"] == ROGUE_VALUE or x["record_key"] == rogue_key
                      or not x["verified"] for x in latest)
            # (the rogue's value as a sample's value: "666" as a substring was also the digits
            # of a timestamp or a byte count now and then)
            bad += metrics.count(rogue_key) + values.count(ROGUE_VALUE)
            bad += sum(d["record_key"] == rogue_key for d in get(api, "/api/devices"))
            bad += sum(s["record_key"] == rogue_key for s in get(api, "/api/streams"))
            return bad

        [row] = get(api, "/api/latest")
        assert (row["device"], row["record_key"], row["verified"]) == ("board-1", honest_key,
                                                                       True)
        assert [d["record_key"] for d in get(api, "/api/devices")] == [honest_key]
        first = shown_from_rogue()

        # the honest board stays current
        publish(honest_broker, [(STREAM, t0 + k, 20.0 + k) for k in range(5, 10)])
        publish(rogue_broker, [(STREAM, t0 + k + 0.5, ROGUE_VALUE) for k in range(5, 10)])
        honest.until(lambda s: s.get("samples", 0) >= 10)
        until("the honest board's new readings", lambda: latest_value() == 29.0)
        record("fleet", "unenrolled rogue edge copying a board's stream names", 10,
               first + shown_from_rogue(), "rogue items shown",
               detail="pending with its record's stream names; nothing downloaded or stored")
        assert first == 0 and shown_from_rogue() == 0

        # 2. the rogue enrolled as a second device: its claim on board-1's stream is refused
        added = cli("gateway", "devices", "add", rogue_key, "--name", "board-2",
                    "--config", config)
        assert added.returncode == 0, added.stderr
        refusal = f"refused: stream '{STREAM}' belongs to device 'board-1'"
        until("the gateway to refuse the copycat record",
              lambda: any(refusal in line for line in errors))
        publish(honest_broker, [(STREAM, t0 + 10, 30.0)])
        honest.until(lambda s: s.get("samples", 0) >= 11)
        until("the honest board's reading after the refusal", lambda: latest_value() == 30.0)
        streams = get(api, "/api/streams")
        stolen = sum(s["record_key"] == rogue_key for s in streams)
        stolen += sum(x["value"] == ROGUE_VALUE for x in get(api, "/api/latest"))
        record("fleet", "enrolled device's record claiming another's stream names", 1, stolen,
               "streams or values taken", detail="refused naming the owner; the gateway runs on")
        assert stolen == 0 and [s["record_key"] for s in streams] == [honest_key]
        assert get(api, "/healthz")["ok"] and proc.poll() is None  # still running
        assert not any("Traceback" in line for line in errors), "".join(errors)[-2000:]
    finally:
        proc.terminate()
        proc.wait(WAIT)
        honest.stop()
        rogue.stop()

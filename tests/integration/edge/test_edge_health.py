"""`cairn edge run` as a process under a stand-in for systemd, against a real Mosquitto:
READY=1, watchdog pets, /healthz and /readyz (503 naming the broker when it goes away),
STOPPING=1 on SIGTERM; at -vv, neither the MQTT password nor the seed in anything printed."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cairn.brokers import Mosquitto
from cairn.fleet.identity import new_seed
from tests.notify_socket import NotifySocket
from tests.scorecard import record

WAIT = 30.0
PASSWORD = "mqtt-pass-5e884898da28047151d0e56f8dc62927"


def _get(url: str) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=WAIT) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def _until(what: str, check: Callable[[], Any]) -> Any:
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_edge_notify_readiness_watchdog_health_and_stop(tmp_path: Path,
                                                        mosquitto_path: Path) -> None:
    d = tmp_path / "edge"
    d.mkdir()
    seed = new_seed(d / "device.seed")
    err: list[str] = []
    with Mosquitto(tmp_path / "broker", executable=mosquitto_path) as broker, \
            NotifySocket() as notify:
        (d / "edge.toml").write_text(
            f'[mqtt]\nbroker = "mqtt://edge:{PASSWORD}@127.0.0.1:{broker.port}"\n'
            f'client_id = "edge-health"\nusername = "edge"\npassword = "{PASSWORD}"\n'
            '[replication]\nhost = "127.0.0.1"\nport = 0\n'
            '[health]\nlisten = "127.0.0.1:0"\nmax_commit_age = 600\n')
        proc = subprocess.Popen(
            [sys.executable, "-m", "cairn.cli", "-vv", "--log-format", "json", "edge", "run",
             "--config", str(d / "edge.toml")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, env=notify.env(watchdog_usec=200_000))
        assert proc.stdout is not None and proc.stderr is not None
        reader = threading.Thread(target=lambda: err.extend(proc.stderr or ()), daemon=True)
        reader.start()
        out = ""
        try:
            out = proc.stdout.readline()
            first = json.loads(out)
            host, port = first["health"]
            base = f"http://{host}:{port}"
            notify.until("READY=1")
            notify.until("WATCHDOG=1", count=3)
            assert _get(f"{base}/healthz") == (200, {"ok": True})
            _code, body = _until("ready", lambda: (r := _get(f"{base}/readyz"))[0] == 200 and r)
            assert body["checks"]["broker"]["ok"] and body["checks"]["disk"]["ok"]
            broker.stop()
            _code, body = _until("not ready", lambda: (r := _get(f"{base}/readyz"))[0] == 503
                                and r)
            assert body["ready"] is False and not body["checks"]["broker"]["ok"]
            assert body["checks"]["broker"]["detail"].startswith("not connected to mqtt://")
            assert PASSWORD not in json.dumps(body)
            proc.send_signal(signal.SIGTERM)
            notify.until("STOPPING=1")
            assert proc.wait(WAIT) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(WAIT)
            reader.join(WAIT)
            out += proc.stdout.read()
            proc.stdout.close()
            proc.stderr.close()
    text = out + "".join(err) + "".join(notify.messages)
    assert any('"level": "debug"' in line for line in err)  # -vv took effect
    leaked = [s for s in (PASSWORD, seed.hex()) if s in text]
    assert not leaked
    record("logs", "the edge at -vv with an MQTT password (URL and key) and its seed: grep of "
           "stdout, stderr and notify messages", 2, len(leaked), "secrets printed")

"""`cairn gateway run` as a process under a stand-in for systemd: READY=1 once it serves, the
watchdog petted from its loop, /readyz and /healthz, a JSON line per round at -v, STOPPING=1
on SIGTERM; and at -vv no token of its config in anything it printed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cairn.brokers import free_port
from cairn.fleet.identity import new_seed
from tests.notify_socket import NotifySocket
from tests.scorecard import record

WAIT = 30.0
READ_TOKEN = "read-token-d41d8cd98f00b204e9800998ecf8427e"
ADMIN_TOKEN = "admin-token-0cc175b9c0f1b6a831c399e269772661"


def _get(url: str, token: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}
                                 if token else {})
    try:
        with urllib.request.urlopen(req, timeout=WAIT) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def _gateway_dir(tmp_path: Path) -> Path:
    d = tmp_path / "gw"
    d.mkdir()
    new_seed(d / "gateway.seed")
    for name, token in (("read.token", READ_TOKEN), ("admin.token", ADMIN_TOKEN)):
        (d / name).write_text(token + "\n")
        (d / name).chmod(0o600)
    (d / "gateway.toml").write_text(
        '[collect]\ninterval = 0.2\ningest_worker = false\n'
        '[api]\nlisten = "127.0.0.1:0"\nread_token_file = "read.token"\n'
        'admin_token_file = "admin.token"\n[replication]\nlisten = ""\n')
    return d


def test_systemd_notify_readiness_watchdog_and_stop(tmp_path: Path) -> None:
    d = _gateway_dir(tmp_path)
    err: list[str] = []
    with NotifySocket() as notify:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cairn.cli", "-vv", "--log-format", "json", "gateway", "run",
             "--config", str(d / "gateway.toml")],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=notify.env(watchdog_usec=200_000))
        assert proc.stderr is not None and proc.stdout is not None
        reader = threading.Thread(target=lambda: err.extend(proc.stderr or ()), daemon=True)
        reader.start()
        try:
            first = proc.stdout.readline()
            api = json.loads(first)["api"]
            notify.until("READY=1")
            notify.until("WATCHDOG=1", count=3)  # every 0.1 s from the loop
            code, health = _get(f"{api}/healthz")
            assert code == 200 and health["ok"] is True
            deadline = time.monotonic() + WAIT
            while (ready := _get(f"{api}/readyz"))[0] != 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert ready[0] == 200, ready  # an empty fleet, rounds ending: ready
            assert ready[1]["checks"]["store"]["ok"]
            proc.send_signal(signal.SIGTERM)
            notify.until("STOPPING=1")
            assert proc.wait(WAIT) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(WAIT)
            reader.join(WAIT)
            out = first + proc.stdout.read()
            proc.stdout.close()
            proc.stderr.close()
    ready_at = next(i for i, m in enumerate(notify.messages) if "READY=1" in m)
    assert not any("WATCHDOG=1" in m for m in notify.messages[:ready_at])
    objects = [json.loads(line) for line in err if line.startswith("{")]
    assert len(objects) == len([line for line in err if line.strip()]), err[:5]  # all JSON
    rounds = [o for o in objects if o["message"].startswith("round ")]
    assert rounds and rounds[0]["level"] == "info" and rounds[0]["devices"] == 0
    assert {"time", "logger", "samples", "blocks", "errors", "duration_s"} <= set(rounds[0])
    text = out + "".join(err) + "".join(notify.messages)
    leaked = [t for t in (READ_TOKEN, ADMIN_TOKEN, (d / "gateway.seed").read_text().strip())
              if t in text]
    assert not leaked
    record("logs", "the gateway at -vv with API tokens and its seed: grep of stdout, stderr "
           "and notify messages", 3, len(leaked), "secrets printed")


def test_grafana_push_at_debug_level_prints_neither_its_token_nor_a_url_password() -> None:
    token, password = "glsa_" + "7" * 40, "grafana-admin-pass-8c1e"
    done = subprocess.run(
        [sys.executable, "-m", "cairn.cli", "-vv", "gateway", "grafana", "push", "--url",
         f"http://admin:{password}@127.0.0.1:{free_port()}", "--token", token],
        capture_output=True, text=True, timeout=WAIT, check=False)
    assert done.returncode == 1 and "Grafana at http://admin:***@127.0.0.1:" in done.stderr
    leaked = [s for s in (token, password) if s in done.stdout + done.stderr]
    assert not leaked, done.stderr
    record("logs", "grafana push at -vv with a token and a URL password, Grafana down", 2,
           len(leaked), "secrets printed")


def test_without_notify_socket_it_runs_as_before(tmp_path: Path) -> None:
    d = _gateway_dir(tmp_path)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cairn.cli", "gateway", "run", "--config",
         str(d / "gateway.toml")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={k: v for k, v in os.environ.items()
             if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")})
    try:
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline())["ready"] is True
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=WAIT)
        assert proc.returncode == 0 and err == "", err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=WAIT)


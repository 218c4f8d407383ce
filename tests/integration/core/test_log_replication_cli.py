"""`cairn log serve` in a process of its own, `cairn log download` against it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from cairn.cli import main
from cairn.frames import Frame, Sample
from cairn.log import Log

SEED = "07" * 32


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Log]]:
    path = tmp_path / "w.db"
    runner = CliRunner()
    assert runner.invoke(main, ["log", "create", str(path), "--seed", SEED]).exit_code == 0
    with Log.open(path) as lg:
        t0 = 1_700_000_000.0
        lg.append([Frame((Sample("temp", "Cel", t0 + i, 20.0 + i / 100),)).encode()
                   for i in range(2000)])
    proc = subprocess.Popen(
        [sys.executable, "-c", "from cairn.cli import main; main()", "log", "serve", str(path),
         "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()  # "serving 1 log(s) on HOST:PORT"
        assert first.startswith("serving"), first + (proc.stderr.read() if proc.stderr else "")
        noise = proc.stdout.readline()
        assert noise.startswith("noise public key: ") and len(noise.split()[-1]) == 64
        with Log.open(path) as lg:
            yield first.split()[-1], lg
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # reads and closes both pipes


def test_download_by_index_time_and_all(served: tuple[str, Log], tmp_path: Path) -> None:
    addr, writer = served
    key = writer.key.hex()
    runner = CliRunner()
    r = runner.invoke(main, ["log", "download", "--from", addr, "--key", key,
                             str(tmp_path / "a.db"), "--start", "100", "--end", "150"])
    assert r.exit_code == 0, r.output
    assert "ok: 50 blocks held of 2000" in r.stdout
    r = runner.invoke(main, ["log", "download", "--from", addr, "--key", key,
                             str(tmp_path / "b.db"), "--since", "2023-11-14T22:30:00",
                             "--until", "2023-11-14T22:31:00"])
    assert r.exit_code == 0, r.output
    with Log.open(tmp_path / "b.db") as b:
        held = {i for i in range(b.length) if b.has(i)}
        # t0 is 2023-11-14T22:13:20Z: the window is frames 1,000 to 1,060 (one a second), plus
        # the frame before it (which proves where the window starts)
        assert set(range(1000, 1060)) <= held and len(held) <= 63
    r = runner.invoke(main, ["log", "download", "--from", addr, "--key", key,
                             str(tmp_path / "c.db"), "--since", "1700000100",
                             "--until", "1700000200"])
    assert r.exit_code == 0, r.output
    with Log.open(tmp_path / "c.db") as c:
        held2 = {i for i in range(c.length) if c.has(i)}
        assert set(range(100, 201)) <= held2 and len(held2) <= 103
    r = runner.invoke(main, ["log", "download", "--from", addr, "--key", key,
                             str(tmp_path / "a.db")])
    assert r.exit_code == 0 and "ok: 2000 blocks held of 2000" in r.stdout
    assert runner.invoke(main, ["log", "verify", str(tmp_path / "a.db")]).exit_code == 0
    assert runner.invoke(main, ["log", "get", str(tmp_path / "a.db"), "1999"]).stdout_bytes == \
        writer.get(1999)


def test_download_errors_are_clear(served: tuple[str, Log], tmp_path: Path) -> None:
    addr, _ = served
    runner = CliRunner()
    r = runner.invoke(main, ["log", "download", "--from", addr, "--key", "ab" * 32,
                             str(tmp_path / "x.db"), "--timeout", "3"])
    assert r.exit_code == 1 and "does not have this log" in r.stderr
    assert not (tmp_path / "x.db").exists()  # no empty replica left behind
    r = runner.invoke(main, ["log", "download", "--from", "nohost", "--key", "ab" * 32,
                             str(tmp_path / "y.db")])
    assert r.exit_code == 2 and "HOST:PORT" in r.stderr
    r = runner.invoke(main, ["log", "download", "--from", addr, "--key", "zz",
                             str(tmp_path / "y.db")])
    assert r.exit_code == 2 and "hex" in r.stderr
    r = runner.invoke(main, ["log", "download", "--from", addr, "--key", "ab" * 32,
                             str(tmp_path / "y.db"), "--start", "5", "--since", "1"])
    assert r.exit_code == 2 and "not both" in r.stderr

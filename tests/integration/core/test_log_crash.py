"""Kill a writer process at random points during appends: every append that returned survives."""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from cairn.log import Log

CHILD = r"""
import hashlib, random, sys
from cairn.crypto import key_pair
from cairn.log import Log

path, seed = sys.argv[1], int(sys.argv[2])
try:
    log = Log.open(path)
except FileNotFoundError:
    log = Log.create(path, key_pair(bytes([4]) * 32))
rng = random.Random(seed)
while True:
    n = log.length
    count = rng.randint(1, 40)
    log.append([hashlib.sha256(str(i).encode()).digest() * (1 + i % 3)
                for i in range(n, n + count)])
    sys.stdout.write(f"{log.length}\n")
    sys.stdout.flush()
"""


def expected_block(i: int) -> bytes:
    return hashlib.sha256(str(i).encode()).digest() * (1 + i % 3)


def test_kill_writer_during_appends(tmp_path: Path) -> None:
    path = tmp_path / "crash.db"
    script = tmp_path / "writer.py"
    script.write_text(CHILD)
    rng = random.Random(1234)
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    acknowledged = 0
    kills = 0
    for trial in range(100):
        proc = subprocess.Popen(
            [sys.executable, str(script), str(path), str(trial)],
            stdout=subprocess.PIPE, env=env, text=True,
        )
        assert proc.stdout is not None
        wanted = rng.randint(1, 15)
        for _ in range(wanted):
            line = proc.stdout.readline()
            assert line, f"writer exited early (trial {trial}, rc {proc.poll()})"
            acknowledged = int(line)
        proc.send_signal(signal.SIGKILL)  # mid-way through a later append, most of the time
        proc.wait(timeout=30)
        proc.stdout.close()
        kills += 1
        with Log.open(path) as lg:
            assert lg.length >= acknowledged, f"trial {trial}: lost acknowledged appends"
            report = lg.verify_all()
            assert report.blocks == lg.length
            for i in (0, acknowledged - 1, lg.length - 1, rng.randrange(lg.length)):
                assert lg.get(i) == expected_block(i)
            acknowledged = lg.length
    assert kills == 100
    with Log.open(path) as lg:
        assert all(lg.get(i) == expected_block(i) for i in range(lg.length))

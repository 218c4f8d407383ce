"""Benchmark of the edge agent.

    python bench/edge.py [--seconds S] [--markdown]

1. ingest pipeline without a broker, one core: SenML JSON messages (one sample each) from 100
   simulated sensors, parsed, validated, appended and committed (a group commit every 10,000
   samples) as fast as one thread goes; samples/s (target >= 50,000);
2. RSS: `cairn edge run` as its own process with Mosquitto and the simulator sending 100 streams
   at 1 Hz for S seconds (default 60); the agent's resident memory at the end (target <= 40 MB);
3. disk: the same with 10 streams at 1 Hz; bytes the agent process wrote to storage
   (/proc/PID/io write_bytes, from when it is ready until it has exited, its last checkpoint
   included) per sample stored (target <= 300). Run it for longer than the checkpoint interval
   (300 s) to see the steady state: --disk-seconds 660.

No JS anchor (JS has no edge agent): the JS column is empty.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_table import Row, print_tables
from cairn.brokers import Mosquitto, parse_broker
from cairn.fleet.identity import new_seed
from cairn_edge.adapters import DEFAULT_ROUTES
from cairn_edge.pipeline import Pipeline, Validator
from cairn_edge.streams import StreamStore
from cairn_sim.fleet import Fleet, Outgoing
from cairn_sim.mqtt import Runner


def pipeline_rate(tmp: Path, n: int = 200_000) -> tuple[float, int]:
    t0 = 1_764_000_000.0
    fleet = Fleet(devices=10, sensors=10, kinds=["temperature"], seed=2, start_time=t0,
                  rate=10.0)
    msgs: list[Outgoing] = []
    t = 0.0
    while len(msgs) < n:
        t += 1.0
        msgs.extend(m for m in fleet.pop_due(t) if isinstance(m, Outgoing))
    msgs = msgs[:n]
    store = StreamStore(tmp / "pipeline", bytes(32))
    now = [t0 + t + 1]
    p = Pipeline(store, Validator(floor=t0 - 86400, max_future=300), DEFAULT_ROUTES,
                 commit_samples=10_000, clock=lambda: now[0])
    c0, w0 = time.thread_time(), time.perf_counter()
    for m in msgs:
        p.submit(m.publish.topic, m.publish.payload, None, m.seq)
        if p.due() <= now[0]:
            p.commit()
    p.commit()
    cpu, wall = time.thread_time() - c0, time.perf_counter() - w0
    store.close()
    assert p.stats.accepted == n, p.stats
    return n / max(cpu, wall * 0.5), p.stats.frames


def agent_run(tmp: Path, name: str, devices: int, sensors: int, seconds: float
              ) -> dict[str, float]:
    d = tmp / name
    d.mkdir()
    new_seed(d / "device.seed")
    with Mosquitto(d / "broker") as broker:
        (d / "edge.toml").write_text(
            f'data_dir = "data"\nseed_file = "device.seed"\n[mqtt]\nbroker = "{broker.url}"\n'
            f'[replication]\nhost = "127.0.0.1"\nport = 0\n')
        # as the service runs it (deploy/systemd): `cairn-edge run`
        # (no --status-lines: nobody reads them until the end, and a full pipe would stall it)
        proc = subprocess.Popen([sys.executable, "-m", "cairn_edge.cli", "run", "--config",
                                 str(d / "edge.toml")],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        assert json.loads(proc.stdout.readline()).get("ready")
        io0 = _io(proc.pid)
        fleet = Fleet(devices=devices, sensors=sensors, kinds=["temperature"], seed=3,
                      start_time=time.time())
        stats = Runner(fleet, parse_broker(broker.url)).run(seconds)
        rss = _rss(proc.pid)
        proc.terminate()
        out, _ = proc.communicate(timeout=60)
        final = json.loads(out.strip().splitlines()[-1])
        # counted by the agent itself after its last checkpoint: everything it wrote
        written = final["write_bytes"] - io0
    return {"rss_mb": rss / 1024, "samples": final["samples"], "sent": stats.sent,
            "write_bytes": written, "disk_bytes": on_disk(d), "seconds": seconds}


def _rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _io(pid: int) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith("write_bytes:"):
            return int(line.split()[1])
    return 0


def on_disk(d: Path) -> int:
    """Bytes of the files the run left in the data directory."""
    return sum(p.stat().st_size for p in (d / "data").rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--disk-seconds", type=float, default=None,
                    help="length of the disk run (default: --seconds)")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    print(f"# python bench/edge.py --seconds {args.seconds:g}"
          + (f" --disk-seconds {args.disk_seconds:g}" if args.disk_seconds else ""))
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%S%z')}  {platform.machine()}, "
          f"python {platform.python_version()}")
    rows = []
    with tempfile.TemporaryDirectory(prefix="cairn-bench-edge-") as d:
        tmp = Path(d)
        rate, frames = pipeline_rate(tmp)
        print(f"  pipeline: {rate:,.0f} samples/s ({frames} frames)", file=sys.stderr)
        rows.append(Row("ingest pipeline, no broker, one core (SenML, 100 streams)",
                        "samples/s", rate, None, None, ">= 50,000",
                        "PASS" if rate >= 50_000 else "MISS"))
        big = agent_run(tmp, "rss", 10, 10, args.seconds)
        print(f"  100 streams: {big}", file=sys.stderr)
        rows.append(Row("agent RSS, 100 streams at 1 Hz, steady", "MB", big["rss_mb"], None,
                        None, "<= 40 MB", "PASS" if big["rss_mb"] <= 40 else "MISS"))
        small = agent_run(tmp, "disk", 1, 10, args.disk_seconds or args.seconds)
        per = small["write_bytes"] / max(1, small["samples"])
        print(f"  10 streams: {small}", file=sys.stderr)
        rows.append(Row("bytes written per sample, 10 streams at 1 Hz", "B/sample", per, None,
                        None, "<= 300", "PASS" if per <= 300 else "MISS"))
    print_tables(rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

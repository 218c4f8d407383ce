"""Benchmark of firmware-sim against a real Mosquitto on 127.0.0.1.

    python bench/sim.py [--seconds S] [--sensors N] [--markdown]

Three runs, each with a fresh broker (its own config, port and persistence directory):

1. schedule: N sensors (default 1,000: 100 boards x 10 sensors, SenML JSON) at 1 Hz for S seconds
   (default 30) in one process on one thread; the schedule lag (how late each message left
   against when it was due) p50 / p99 / max, and the CPU the thread used;
2. 100 Hz: 10 vibration sensors sampling at 100 Hz, sent as SenML runs of 10 samples; lag, and
   samples sent against samples due;
3. throughput: 20 boards x 10 sensors asked for far more than one process can send (200 Hz each,
   40,000 msg/s); messages per second the broker acknowledged (QoS 1) over the run.

Targets (issue 6): 1,000 sensors at 1 Hz with schedule lag p99 <= 50 ms. No JS anchor: the JS
column is empty.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

from bench_table import Row, print_tables
from cairn.brokers import Mosquitto, find_mosquitto, parse_broker
from cairn_sim.fleet import Fleet
from cairn_sim.mqtt import Runner, RunStats


def run(tmp: Path, name: str, seconds: float, **fleet: object) -> tuple[RunStats, float, Fleet]:
    with Mosquitto(tmp / name) as broker:
        f = Fleet(start_time=time.time(), seed=1, **fleet)  # type: ignore[arg-type]
        runner = Runner(f, parse_broker(broker.url))
        cpu0 = time.thread_time()
        stats = runner.run(seconds, drain=10.0)
        cpu = time.thread_time() - cpu0
    return stats, cpu, f


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--sensors", type=int, default=1000, help="sensors at 1 Hz (10 per board)")
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    if find_mosquitto() is None:
        print("bench/sim.py needs mosquitto (apt-get install mosquitto)", file=sys.stderr)
        return 2
    boards = max(1, args.sensors // 10)
    print(f"# python bench/sim.py --seconds {args.seconds:g} --sensors {args.sensors}")
    print(f"# {time.strftime('%Y-%m-%dT%H:%M:%S%z')}  {platform.machine()}, "
          f"python {platform.python_version()}")
    rows: list[Row] = []
    results: dict[str, object] = {}
    with tempfile.TemporaryDirectory(prefix="cairn-bench-sim-") as d:
        tmp = Path(d)

        stats, cpu, fleet = run(tmp, "schedule", args.seconds, devices=boards, sensors=10,
                                formats=["senml"])
        p99 = stats.lag(0.99) * 1e3
        rows += [
            Row(f"{fleet.units:,} sensors at 1 Hz: schedule lag p50", "ms",
                stats.lag(0.5) * 1e3, None, None, "info", "-"),
            Row(f"{fleet.units:,} sensors at 1 Hz: schedule lag p99", "ms", p99, None, None,
                "<= 50 ms", "PASS" if p99 <= 50 else "MISS"),
            Row(f"{fleet.units:,} sensors at 1 Hz: schedule lag max", "ms", stats.lag_max * 1e3,
                None, None, "info", "-"),
            Row(f"{fleet.units:,} sensors at 1 Hz: CPU of the one thread", "% of a core",
                100 * cpu / stats.elapsed, None, None, "info", "-"),
            Row(f"{fleet.units:,} sensors at 1 Hz: acknowledged / sent", "%",
                100 * stats.acked / max(1, stats.sent), None, None, "info", "-"),
        ]
        results["schedule"] = {"sent": stats.sent, "acked": stats.acked, "p50_ms":
                               stats.lag(0.5) * 1e3, "p99_ms": p99, "max_ms":
                               stats.lag_max * 1e3, "cpu_s": cpu, "seconds": stats.elapsed}
        print(f"  schedule: {stats.sent:,} sent, {stats.acked:,} acked, lag p99 {p99:.1f} ms",
              file=sys.stderr)

        fast_s = min(args.seconds, 20.0)
        stats, cpu, fleet = run(tmp, "fast", fast_s, devices=10, sensors=1,
                                kinds=["vibration"], batch=10)
        due = 10 * 100 * fast_s
        samples = 10 * (stats.sent - 10)  # 10 samples a message, less the 10 births
        p99f = stats.lag(0.99) * 1e3
        rows += [
            Row("10 sensors at 100 Hz (runs of 10): schedule lag p99", "ms", p99f, None, None,
                "info", "-"),
            Row("10 sensors at 100 Hz: samples sent / due", "%", 100 * samples / due, None,
                None, "100 %", "PASS" if samples >= due - 10 * 10 else "MISS"),
        ]
        results["fast"] = {"sent": stats.sent, "samples": samples, "due": due,
                           "p99_ms": p99f, "max_ms": stats.lag_max * 1e3}
        print(f"  100 Hz: {samples:,} samples of {due:,.0f} due, lag p99 {p99f:.1f} ms",
              file=sys.stderr)

        tp_s = min(args.seconds, 10.0)
        stats, cpu, fleet = run(tmp, "throughput", tp_s, devices=20, sensors=10, rate=200.0,
                                formats=["senml"])
        rate = stats.acked / stats.elapsed
        rows.append(Row("messages into Mosquitto, one process (QoS 1, acknowledged)", "msg/s",
                        rate, None, None, "info", "-"))
        results["throughput"] = {"acked": stats.acked, "seconds": stats.elapsed,
                                 "msg_per_s": rate, "cpu_s": cpu}
        print(f"  throughput: {rate:,.0f} msg/s acknowledged", file=sys.stderr)

    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print_tables(rows, args.markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``cairn sim``: run a simulated fleet of sensor boards against an MQTT broker."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from cairn.brokers import parse_broker
from cairn_sim.fleet import DEFAULT_KINDS, Fleet
from cairn_sim.models import KINDS
from cairn_sim.mqtt import Ledger, Runner, RunStats
from cairn_sim.payloads import FORMATS
from cairn_sim.scenario import Scenario, ScenarioError, describe

__all__ = ["sim"]


def _names(value: str, known: tuple[str, ...] | list[str], what: str) -> list[str]:
    items = [x.strip() for x in value.split(",") if x.strip()]
    bad = [x for x in items if x not in known]
    if not items or bad:
        raise click.BadParameter(
            f"{', '.join(bad) or 'nothing'}: not a {what} (known: {', '.join(known)})"
        )
    return items


def _table(stats: RunStats, fleet: Fleet) -> Table:
    t = Table(title=f"cairn sim: {len(fleet.devices)} devices, {fleet.units} schedules, "
                    f"{fleet.rate():,.0f} msg/s planned", show_header=False)
    t.add_row("run time", f"{stats.elapsed:.0f} s")
    t.add_row("messages sent", f"{stats.sent:,}")
    t.add_row("acknowledged by the broker", f"{stats.acked:,}")
    t.add_row("devices online", f"{stats.online} / {stats.devices}")
    t.add_row("connections / reconnects", f"{stats.connects} / {stats.reconnects}")
    if stats.fallbacks:
        t.add_row("fell back to MQTT 3.1.1", str(stats.fallbacks))
    t.add_row("schedule lag p50 / p99 / max",
              f"{stats.lag(0.5) * 1e3:.1f} / {stats.lag(0.99) * 1e3:.1f} / "
              f"{stats.lag_max * 1e3:.1f} ms")
    faults = ", ".join(f"{k} {v:,}" for k, v in sorted(stats.faults.items())) or "none"
    t.add_row("faults injected", faults)
    return t


@click.group()
def sim() -> None:
    """Simulated sensor firmware: fleets of boards publishing over MQTT, with faults."""


@sim.command("run")
@click.option("--broker", default="mqtt://127.0.0.1:1883", show_default=True,
              help="mqtt[s]://[user:password@]host[:port]")
@click.option("--devices", type=click.IntRange(1, 100_000), default=3, show_default=True,
              help="How many boards to simulate.")
@click.option("--sensors", type=click.IntRange(1, 1000), default=5, show_default=True,
              help="Sensors per device.")
@click.option("--rate", type=click.FloatRange(0.001, 1000), default=1.0, show_default=True,
              help="Readings per second of each (1 Hz class) sensor.")
@click.option("--format", "formats", default="senml", show_default=True,
              help=f"Payload shape, or several comma-separated, one per device in turn: "
                   f"{', '.join(FORMATS)}.")
@click.option("--kinds", default=",".join(DEFAULT_KINDS), show_default=True,
              help=f"Sensor kinds, given to each device in turn: {', '.join(KINDS)}.")
@click.option("--batch", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="Samples per message for fast sensors (vibration: 100 Hz).")
@click.option("--scenario", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file of faults (see docs/sim.md).")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Seed of the readings and faults: the same seed, the same run.")
@click.option("--duration", type=click.FloatRange(0.1, 365 * 86400.0), default=60.0,
              show_default=True, help="Seconds to run.")
@click.option("--start-time", type=float,
              help="Epoch seconds of the first reading (default: now). Fix it to get the same "
                   "messages byte for byte from the same seed.")
@click.option("--ledger", type=click.Path(dir_okay=False, path_type=Path),
              help="Record every message sent (JSON lines) and every broker acknowledgement.")
@click.option("--protocol", type=click.Choice(["auto", "5", "3.1.1"]), default="auto",
              show_default=True, help="MQTT version; auto tries 5, then 3.1.1.")
@click.option("--ha-discovery", is_flag=True, help="Publish Home Assistant discovery messages.")
@click.option("--quiet", is_flag=True, help="No live table; only the summary at the end.")
@click.option("--connect-timeout", type=click.FloatRange(0, 3600), default=5.0,
              show_default=True, help="Give up (exit 1) when no device has connected to the "
              "broker after this many seconds; 0: keep trying for the whole --duration.")
def run(broker: str, devices: int, sensors: int, rate: float, formats: str, kinds: str,
        batch: int, scenario: Path | None, seed: int, duration: float, start_time: float | None,
        ledger: Path | None, protocol: str, ha_discovery: bool, quiet: bool,
        connect_timeout: float) -> None:
    """Run a fleet against a broker for --duration seconds, then print a summary."""
    try:
        target = parse_broker(broker)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--broker") from None
    fmt_list = _names(formats, FORMATS, "payload format")
    kind_list = _names(kinds, list(KINDS), "sensor kind")
    try:
        plan = Scenario.load(scenario) if scenario is not None else Scenario()
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        fleet = Fleet(devices=devices, sensors=sensors, formats=fmt_list, rate=rate, seed=seed,
                      scenario=plan, start_time=time.time() if start_time is None else start_time,
                      kinds=kind_list, batch=batch, ha_discovery=ha_discovery)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    book = None
    if ledger is not None:
        try:
            book = Ledger(ledger)
        except OSError as exc:
            raise click.ClickException(f"cannot write the ledger {ledger}: {exc}") from None
    runner = Runner(fleet, target, ledger=book, protocol=protocol,
                    connect_timeout=connect_timeout or None)
    console = Console(stderr=True)
    for line in describe(plan.faults):
        console.print(f"fault: {line}")
    try:
        if quiet or not console.is_terminal:
            stats = runner.run(duration)
        else:
            with Live(_table(runner.stats, fleet), console=console,
                      refresh_per_second=2) as live:

                def tick(s: RunStats) -> None:
                    s.elapsed = runner.now()
                    live.update(_table(s, fleet))

                stats = runner.run(duration, on_tick=tick)
    except KeyboardInterrupt:
        stats = runner.stats
        console.print("stopped")
    finally:
        if book is not None:
            book.close()
    if runner.gave_up:
        raise click.ClickException(
            f"no device could connect to {target.url()} within {connect_timeout:g} s: start "
            "the broker (e.g. mosquitto, or an edge with broker = \"embedded\") or give "
            "--broker")
    Console(file=sys.stdout, width=120).print(_table(stats, fleet))
    if stats.connects == 0:
        raise click.ClickException(f"no device could connect to {target.url()}: start the "
                                   "broker or give --broker")

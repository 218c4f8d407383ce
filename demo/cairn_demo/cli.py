"""``cairn demo``: the command, and :func:`run_demo`, the run with its live view.

The ``cairn`` command finds this group through the ``cairn.commands`` entry point ``demo``
(pyproject.toml), installed with the ``demo`` extra.
"""

from __future__ import annotations

import shutil
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

import click

from cairn_demo.configs import FAMILY_BOARDS
from cairn_demo.processes import DemoDataError, DemoError
from cairn_demo.system import Demo, Summary
from cairn_demo.view import print_summary, render

__all__ = ["demo", "run_demo", "wipe"]


def wipe(data: Path) -> None:
    """Remove a previous demo's data directory (only one that looks like ours)."""
    if data.exists():
        if not (data / "gateway").exists() and any(data.iterdir()):
            raise DemoDataError(f"{data} is not empty and not a demo's data directory: "
                            "give another --data")
        shutil.rmtree(data)


def run_demo(data: Path, duration: float | None, api_port: int, *, broker: str = "auto",
             fresh: bool = False, store: str = "",
             say: Callable[[str], None] = print) -> Summary:
    """Run the demo with its live view until Ctrl-C or ``duration`` seconds (``store``: a
    PostgreSQL URL for the gateway's store; "": SQLite in the data directory)."""
    from rich.console import Console
    from rich.live import Live

    if fresh:
        wipe(data)
    demo = Demo(data, api_port=api_port, broker=broker, boards=FAMILY_BOARDS, store=store)
    say(f"starting: broker, DHT (5 nodes), gateway, {demo.boards} edges, the simulator "
        f"({demo.boards} boards x {demo.sensors} sensors); data in {demo.data}"
        + (f", the gateway's store in {store}" if store else ""))
    demo.start()
    say(f"gateway API: {demo.api}  (try {demo.api}/api/latest, {demo.api}/docs)")
    stop = threading.Event()
    old = signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    console = Console()
    try:
        deadline = time.monotonic() + duration if duration else None
        with Live(render(demo, demo.view()), console=console, refresh_per_second=2,
                  transient=not console.is_terminal) as live:
            while not stop.wait(1.0):
                live.update(render(demo, demo.view()))
                if deadline is not None and time.monotonic() >= deadline:
                    break
                for child in [*demo.edges, demo.gateway, demo.dht]:
                    if child is not None and not child.running:
                        raise DemoError(f"{child.name} stopped: see {child.log_path}")
        say("stopping: the simulator, then the edges (they commit what they hold)...")
        demo.stop_sim()
        demo.settle(20.0 if duration else 10.0)  # the gateway collects what was committed
        demo.stop_edges()  # their final counters, with what they held committed
        summary = demo.summary()
    finally:
        signal.signal(signal.SIGINT, old)
        demo.stop()
    print_summary(demo, summary, say)
    return summary


@click.command("demo")
@click.option("--duration", type=click.FloatRange(min=1.0), default=None,
              help="Seconds to run, then stop and print a summary (default: until Ctrl-C).")
@click.option("--data", "data", type=click.Path(file_okay=False, path_type=Path),
              default="demo-data", show_default=True, help="Where everything is kept.")
@click.option("--api-port", type=click.IntRange(0, 65535), default=8080, show_default=True,
              help="The gateway API's port on 127.0.0.1 (0: any free port).")
@click.option("--broker", type=click.Choice(["auto", "embedded", "mosquitto"]), default="auto",
              show_default=True, help="auto: Mosquitto when installed, else the embedded one.")
@click.option("--fresh", is_flag=True, help="Start from an empty data directory (a --store "
              "database keeps what it holds).")
@click.option("--store", default=None, metavar="URL", help="Keep the gateway's store in this "
              "PostgreSQL database, postgresql://user@host[:port]/dbname (an empty one; the "
              "password, if any, in PGPASSWORD or ~/.pgpass), instead of SQLite in the data "
              "directory.")
def demo(duration: float | None, data: Path, api_port: int, broker: str, fresh: bool,
         store: str | None) -> None:
    """A whole fleet on this machine: broker, DHT, 7 simulated boards (one of each payload
    shape: SenML JSON and CBOR, Tasmota, ESPHome, Homie, Zigbee2MQTT, Shelly), 7 edges, a
    gateway.

    Shows a live table of the gateway's latest verified values; Ctrl-C (or --duration) stops
    it and prints a summary: samples sent, valid, signed, rejected (why), stored.
    """
    store = store or ""
    if store:
        _check_store(store)
    if api_port and not _port_free(api_port):
        raise click.ClickException(f"port {api_port} is in use: give another --api-port "
                                   "(0 takes any free port)")
    try:
        run_demo(data, duration, api_port, broker=broker, fresh=fresh, store=store,
                 say=click.echo)
    except (DemoError, DemoDataError) as exc:
        raise click.ClickException(str(exc)) from None


def _check_store(url: str) -> None:
    """``--store``: a PostgreSQL URL without a password (the gateway's config refuses one)."""
    from cairn_gateway.store import check_url

    check_url(url, "--store", DemoDataError,
              "give it in PGPASSWORD or ~/.pgpass (the gateway reads them too)")


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True

"""``cairn edge``: set up and run the edge agent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
import sys
import threading
from pathlib import Path

import click

from cairn.datalock import hold
from cairn.entry import EXIT_RUNTIME, EntryGroup, apply_config, describe, global_options
from cairn.errors import StorageError
from cairn.fleet.enrollment import Enrollment, EnrollmentError, check_device_name
from cairn.fleet.identity import (
    SeedError,
    init_directory,
    load_seed,
    noise_key_pair,
    record_key_pair,
)
from cairn.sdnotify import Notifier, pet_watchdog
from cairn.settings import hex_keys, hostport
from cairn_edge.config import TEMPLATE, ConfigError, EdgeConfig, load_config
from cairn_edge.damage import read_damage, verify_store
from cairn_edge.streams import StreamsError, peek, stream_log_key

__all__ = ["edge", "edge_main", "main"]


def _config(path: Path) -> EdgeConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def edge() -> None:
    """The edge agent: MQTT readings into signed stream logs, served to your gateways."""


@edge.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--gateway", "gateways", multiple=True, metavar="KEY",
              help="A gateway's Noise public key (hex, `cairn gateway init` prints it): the "
                   "edge serves it and dials it (repeat for several gateways).")
@click.option("--dial", "dial", multiple=True, metavar="HOST:PORT",
              help="Where the gateways take edges ([replication].listen on the gateway); "
                   "without it the edge finds them on the DHT by their key.")
def init(directory: Path, gateways: tuple[str, ...], dial: tuple[str, ...]) -> None:
    """Make DIRECTORY/edge.toml (commented) and DIRECTORY/device.seed (mode 0600). With
    --gateway, the edge is collected with no other network setting: it dials the gateway
    (behind any NAT, no port forwarding)."""
    try:
        keys = hex_keys(list(gateways), "--gateway", "Noise public key")
        addresses = [hostport(d, "--dial") for d in dial]
    except ConfigError as exc:
        raise click.BadParameter(str(exc)) from None
    template = TEMPLATE
    if keys:
        template = template.replace(
            "gateways = []", "gateways = [" + ", ".join(f'"{k.hex()}"' for k in keys) + "]", 1)
    if addresses:
        template = template.replace(
            "dial = []", "dial = [" + ", ".join(f'"{h}:{p}"' for h, p in addresses) + "]", 1)
    try:
        seed = init_directory(directory, "edge.toml", "device.seed", template)
    except SeedError as exc:
        raise click.ClickException(str(exc)) from None
    config = directory / "edge.toml"
    click.echo(f"wrote {config} and {directory / 'device.seed'} (keep it secret, back it up)")
    click.echo(f"noise public key (give it to your gateways): "
               f"{noise_key_pair(seed).public_key.hex()}")
    click.echo(f"record key (a gateway's [collect].devices, gateway fetch --device): "
               f"{record_key_pair(seed).public_key.hex()}")
    click.echo("enrollment string (on the gateway: cairn gateway devices add STRING):")
    click.echo(str(_enrollment(seed, _suggested_name(directory.resolve().name))))


def _suggested_name(text: str) -> str:
    """A device name made of ``text`` (a directory's, a [[topic]] device's): what the name rule
    allows of it, else ``edge``."""
    name = re.sub(r"[^A-Za-z0-9._-]", "-", text).lstrip("._-")[:63]
    try:
        return check_device_name(name)
    except EnrollmentError:
        return "edge"


def _enrollment(seed: bytes, name: str) -> Enrollment:
    return Enrollment(name, bytes(record_key_pair(seed).public_key))


@edge.command("keys")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="edge.toml", show_default=True, help="The edge's config file.")
@click.option("--stream", "streams", multiple=True, help="Also print this stream's log key.")
@click.option("--name", default=None, help="The device name the enrollment string suggests "
              "(default: the [[topic]] device, if one, else the config's directory name).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def keys(config_path: Path, streams: tuple[str, ...], name: str | None, as_json: bool) -> None:
    """The public keys to give a gateway: the enrollment string (the device's record key and a
    suggested name, for `cairn gateway devices add`), the edge's Noise key and its streams'
    log keys."""
    cfg = _config(config_path)
    try:
        seed = load_seed(cfg.seed_file)
        names = [*peek(cfg.data_dir), *streams]
    except (SeedError, StreamsError) as exc:
        raise click.ClickException(str(exc)) from None
    if name is None:
        devices = {r.device for r in cfg.routes if r.device}
        name = _suggested_name(devices.pop() if len(devices) == 1
                               else config_path.resolve().parent.name)
    try:
        enrollment = _enrollment(seed, name)
    except EnrollmentError as exc:
        raise click.BadParameter(str(exc), param_hint="--name") from None
    known = {n: stream_log_key(seed, n).hex() for n in names}
    out = {"enrollment": str(enrollment), "record_key": enrollment.record_key.hex(),
           "noise_key": noise_key_pair(seed).public_key.hex(), "streams": known}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"enrollment {out['enrollment']}")
    click.echo(f"record key {out['record_key']}")
    click.echo(f"noise key  {out['noise_key']}")
    for name, key in sorted(known.items()):
        click.echo(f"{name:<40} {key}")


@edge.command("status")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="edge.toml", show_default=True, help="The edge's config file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def status(config_path: Path, as_json: bool) -> None:
    """The device's record key, its streams, their lengths, the disk they use, and the blocks
    the agent found damaged while serving them (read from the data directory, read only: the
    agent may be running; `cairn edge verify` checks every block)."""
    cfg = _config(config_path)
    try:
        seed = load_seed(cfg.seed_file)
        lengths = peek(cfg.data_dir)
        damaged = read_damage(cfg.data_dir)
    except (SeedError, StreamsError) as exc:
        raise click.ClickException(str(exc)) from None
    streams = {name: {"length": n, "key": stream_log_key(seed, name).hex(),
                      "damaged_blocks": damaged.get(name, [])}
               for name, n in lengths.items()}
    disk = sum(p.stat().st_size for p in cfg.data_dir.rglob("*") if p.is_file())
    record_key = record_key_pair(seed).public_key.hex()
    out = {"record_key": record_key, "streams": streams, "disk_bytes": disk}
    if as_json:
        click.echo(json.dumps(out, indent=2))
        return
    click.echo(f"record key {record_key}")
    click.echo(f"{len(streams)} streams, {disk / 1e6:.1f} MB on disk")
    for name, info in sorted(streams.items()):
        bad = damaged.get(name, [])
        click.echo(f"{name:<40} {info['length']:>10,} frames"
                   + (f"  damaged blocks: {_blocks(bad)}" if bad else ""))


def _blocks(indexes: list[int]) -> str:
    """``3, 7..9``: block indexes (sorted) as runs."""
    runs: list[list[int]] = []
    for i in indexes:
        if runs and runs[-1][1] == i - 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(str(a) if a == b else f"{a}..{b}" for a, b in runs)


@edge.command("verify")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="edge.toml", show_default=True, help="The edge's config file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def verify(config_path: Path, as_json: bool) -> None:
    """Check every log of the edge's store: each held block against its leaf hash, then the
    tree and the signed head. Safe while the agent runs (a copy of the database is checked;
    commits since the agent's last checkpoint are in its journal, checked when it starts).
    Prints each stream ok or its damaged blocks; exit 1 when anything is damaged."""
    cfg = _config(config_path)
    try:
        checks = verify_store(cfg.data_dir)
    except StreamsError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps([{"stream": c.name, "length": c.length, "blocks": c.blocks,
                                "ok": c.ok, "damaged_blocks": c.damaged, "error": c.error}
                               for c in checks], indent=2))
    else:
        for c in checks:
            state = "ok" if c.ok else "DAMAGED"
            click.echo(f"{c.name:<40} {c.length:>10,} frames  {state}")
            if c.damaged:
                click.echo(f"  damaged blocks ({len(c.damaged)}): {_blocks(c.damaged)}")
            if c.error is not None:
                click.echo(f"  {c.error}")
        bad = sum(not c.ok for c in checks)
        click.echo(f"{len(checks)} logs checked, {bad} damaged")
    if any(not c.ok for c in checks):
        sys.exit(1)


STOP_GRACE = 15.0
"""Seconds after SIGTERM the agent may take to commit and acknowledge what it holds; then its
tasks are cancelled (a commit already started finishes)."""
STOP_BOUND = 25.0
"""Seconds after SIGTERM by which the process has exited, whatever the broker's backlog or a
stuck call: below the systemd unit's TimeoutStopSec (30 s). What was not acknowledged to the
broker is delivered again after a restart, so exiting loses nothing acknowledged."""


def _exit_after(seconds: float) -> None:
    """End the process ``seconds`` from now if it is still running (a daemon thread: it fires
    even when the event loop is blocked)."""

    def now() -> None:
        sys.stderr.write(f"Error: the agent did not stop within {seconds:g} s of SIGTERM: "
                         "exiting now (what was not acknowledged comes again from the "
                         "broker)\n")
        sys.stderr.flush()
        os._exit(EXIT_RUNTIME)

    timer = threading.Timer(seconds, now)
    timer.daemon = True
    timer.start()


@edge.command("run")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="edge.toml", show_default=True, help="The edge's config file.")
@click.option("--status-lines", is_flag=True,
              help="Print a JSON status line on stdout after every commit.")
def run(config_path: Path, status_lines: bool) -> None:
    """Run the agent until SIGINT or SIGTERM: it commits and acknowledges what it holds and
    exits within 25 s, whatever the broker still holds (a second signal: at once)."""
    from cairn_edge.agent import Agent

    cfg = _config(config_path)
    if cfg.broker == "embedded":
        try:
            import amqtt  # type: ignore[import-untyped]  # noqa: F401
        except ImportError:
            raise click.ClickException("broker = \"embedded\" needs amqtt: pip install "
                                       "'cairn[embedded-broker]'") from None
    def said(a: Agent) -> None:
        print(json.dumps(a.status()), flush=True)

    click.get_current_context().with_resource(hold(cfg.data_dir, "cairn-edge run"))
    try:
        agent = Agent(cfg, on_status=said if status_lines else None)
    except (SeedError, StreamsError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    except StorageError as exc:  # a damaged file under the store (a bad sector)
        raise click.ClickException(f"{exc} (cairn edge verify lists what is damaged)") from None

    notifier = Notifier()

    def ready(a: Agent) -> None:
        print(json.dumps({"ready": True, "replication": a.replication_address,
                          "health": a.health_address,
                          "noise_key": a.noise.public_key.hex()}), flush=True)
        notifier.ready(f"serving replication on {a.replication_address}")

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()

        def stop() -> None:
            # the first signal: commit what is held, then exit; a second, or STOP_GRACE s
            # later: stop now (what was not acknowledged comes again from the broker); and
            # whatever happens, the process is gone STOP_BOUND s after the first
            if agent.stopping:
                task.cancel()
                return
            notifier.stopping("committing what is held, then stopping")
            agent.stop()
            loop.call_later(STOP_GRACE, task.cancel)
            _exit_after(STOP_BOUND)

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop)
        # pets from this loop: an agent whose loop is stuck is restarted by systemd
        watchdog = asyncio.create_task(pet_watchdog(notifier), name="systemd watchdog")
        try:
            await agent.run(ready=ready)
        finally:
            watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watchdog

    try:
        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(main())
    except (StreamsError, OSError) as exc:
        # a write failed (the disk is full, failing): nothing unsynced was acknowledged; the
        # service manager starts us again, and opening the store appends the journal again
        print(json.dumps({"stopped": True, "error": describe(exc)}), flush=True)
        raise click.ClickException(f"stopped: {describe(exc)}") from None
    finally:
        notifier.stopping()
    print(json.dumps({"stopped": True, **agent.status(), "write_bytes": _written()}), flush=True)
    sys.exit(0)


def _written() -> int | None:
    """Bytes this process has caused to be written to storage (Linux), after its last
    checkpoint: what the SD card wears by."""
    try:
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


@click.group("cairn-edge", cls=EntryGroup, commands=edge.commands,
             context_settings={"help_option_names": ["-h", "--help"]})
@global_options("cairn-edge")
@click.pass_context
def edge_main(ctx: click.Context, log_format: str, verbosity: int,
              global_config: Path | None) -> None:
    """The Cairn edge agent: MQTT readings into signed stream logs, served to your gateways
    (the commands of `cairn edge`, alone: what the service runs)."""
    from cairn.logs import configure_logging  # the one logging setup

    configure_logging(log_format, verbosity)
    apply_config(ctx, global_config)


def main() -> None:
    """``cairn-edge``: the edge commands alone (what the service runs: it loads no other
    command group, so the agent's process carries only what it needs)."""
    edge_main.main(prog_name="cairn-edge")


if __name__ == "__main__":
    main()

"""``cairn gateway``: set up and run the gateway; look into its store."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import Any

import click

from cairn.datalock import hold
from cairn.errors import UsageError
from cairn.fleet.enrollment import EnrollmentError, parse_enrollment, parse_record_key
from cairn.fleet.identity import (
    SeedError,
    init_directory,
    load_seed,
    noise_key_pair,
    watermark_key_pair,
)
from cairn.logs import add_secret, redact_text
from cairn_gateway.config import TEMPLATE, ConfigError, GatewayConfig, load_config
from cairn_gateway.leases import gateways, holders
from cairn_gateway.roster import Roster, RosterError, reach
from cairn_gateway.store import MISSING_REASONS, Store, StoreError, describe_missing
from cairn_gateway.store_commands import store_group

__all__ = ["gateway"]

log = logging.getLogger(__name__)


def _config(path: Path) -> GatewayConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _store(cfg: GatewayConfig) -> Store:
    from cairn_gateway.daemon import open_store

    try:
        return open_store(cfg)
    except (StoreError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def gateway() -> None:
    """The gateway: collect verified samples from edges, store them, serve them to Grafana."""


@gateway.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".")
def init(directory: Path) -> None:
    """Make DIRECTORY/gateway.toml (commented), DIRECTORY/gateway.seed and the API's bearer
    tokens DIRECTORY/api-read.token and api-admin.token (all mode 0600)."""
    from cairn_gateway.auth import TokenError, new_token

    try:
        seed = init_directory(directory, "gateway.toml", "gateway.seed", TEMPLATE)
    except SeedError as exc:
        raise click.ClickException(str(exc)) from None
    config = directory / "gateway.toml"
    click.echo(f"wrote {config} and {directory / 'gateway.seed'}")
    for name, use in (("api-read.token", "Grafana's data source and Prometheus' scrape"),
                      ("api-admin.token", "enrolling devices through the API")):
        try:
            new_token(directory / name)
            click.echo(f"wrote {directory / name} (mode 0600): the API's bearer token for {use}")
        except TokenError as exc:
            click.echo(f"kept {directory / name}: {exc}")
    click.echo("gateway key (put it in each edge's [replication].gateways): "
               f"{noise_key_pair(seed).public_key.hex()}")
    click.echo("watermark key (in an edge's [dht].watermarks, to free what this gateway "
               f"stored): {watermark_key_pair(seed).public_key.hex()}")


class _Usage(UsageError, click.ClickException):
    """A usage error said in one line (exit code 2), without click's usage banner."""

    exit_code = 2


_CONFIG = click.option("--config", "config_path", default="gateway.toml", show_default=True,
                       type=click.Path(dir_okay=False, path_type=Path),
                       help="The gateway's config file.")


@gateway.group("devices")
def devices() -> None:
    """The fleet roster: only enrolled devices are collected (deny by default)."""


@devices.command("add")
@click.argument("device")
@click.option("--name", default=None,
              help="The device's name (default: the one the enrollment string suggests).")
@_CONFIG
def devices_add(device: str, name: str | None, config_path: Path) -> None:
    """Enrol DEVICE: the enrollment string `cairn edge keys` prints on the board
    (cairn1:NAME:KEY:CHECKSUM), or its record key (64 hex digits) with --name."""
    try:
        if ":" in device or len(device.strip()) != 64:
            enrollment = parse_enrollment(device)
            key, name = enrollment.record_key, name or enrollment.name
        else:
            key = parse_record_key(device)
            if name is None:
                raise _Usage("a bare record key needs --name NAME")
    except EnrollmentError as exc:
        raise _Usage(str(exc)) from None
    store = _store(_config(config_path))
    try:
        m = Roster(store.conn).enroll(key, name, time.time())
    except EnrollmentError as exc:
        raise _Usage(str(exc)) from None
    except RosterError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    click.echo(f"enrolled {m.name} ({key.hex()}): collected from the next round")


@devices.command("remove")
@click.argument("name")
@_CONFIG
def devices_remove(name: str, config_path: Path) -> None:
    """Stop collecting the enrolled device NAME. Its stored data stays (flagged removed), and
    the name may be given to another record key (a replaced board)."""
    store = _store(_config(config_path))
    try:
        m = Roster(store.conn).remove(name, time.time())
    except RosterError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    click.echo(f"removed {name} ({m.record_key.hex()}): no longer collected; its data is kept")


@devices.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per device.")
@_CONFIG
def devices_list(as_json: bool, config_path: Path) -> None:
    """Enrolled, removed and pending devices: name, record key, status, last seen (and, with
    several gateways on one PostgreSQL store, which gateway collects each)."""
    cfg = _config(config_path)
    store = _store(cfg)
    try:
        roster = Roster(store.conn)
        members = roster.members() + roster.pending()
        states = reach(store.conn)
        held = holders(store.conn)
        names = {g.id: g.name for g in gateways(store.conn, cfg.lease_seconds)}
    finally:
        store.close()
    if as_json:
        for m in members:
            click.echo(json.dumps({**m.as_dict(), "reach": states.get(m.record_key),
                                   "holder": held.get(m.record_key)}))
        return
    click.echo(f"{'name':<24} {'status':<9} {'last seen (UTC)':<20} record key")
    for m in members:
        seen = (time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(m.last_seen))
                if m.last_seen is not None else "-")
        click.echo(f"{m.name or '-':<24} {m.status:<9} {seen:<20} {m.record_key.hex()}")
        if m.status == "enrolled":
            click.echo(f"{'':<24} reach: {states.get(m.record_key, 'not tried yet')}")
            if m.record_key in held:
                gid = held[m.record_key]
                click.echo(f"{'':<24} collected by: gateway {gid[:16]}"
                           + (f" ({names[gid]})" if names.get(gid) else ""))
        if m.status == "pending" and (m.streams or m.error):
            click.echo(f"{'':<24} streams: {', '.join(m.streams) or '-'}"
                       + (f" ({m.error})" if m.error else ""))


@gateway.command("gateways")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per gateway.")
@_CONFIG
def gateways_list(as_json: bool, config_path: Path) -> None:
    """The gateways sharing this gateway's PostgreSQL store: each one's last heartbeat (by the
    database's clock), whether it is live (a heartbeat within [store] lease_seconds) and how
    many devices it collects (leases held). A gateway on SQLite is alone: none are listed."""
    cfg = _config(config_path)
    store = _store(cfg)
    try:
        rows = gateways(store.conn, cfg.lease_seconds)
        free = len(Roster(store.conn).enrolled_keys()) - len(holders(store.conn))
    finally:
        store.close()
    if as_json:
        for g in rows:
            click.echo(json.dumps(g.as_dict()))
        return
    if not rows:
        click.echo("no gateway has shared this store (one gateway on SQLite holds every device)")
        return
    click.echo(f"{'gateway':<18} {'name':<20} {'state':<8} {'heartbeat':<12} {'leases':>6}")
    for g in rows:
        state = "live" if g.live else "gone"
        click.echo(f"{g.id[:16]:<18} {g.name[:20]:<20} {state:<8} {g.age:>8.1f} s ago "
                   f"{g.leases:>6}")
    if free > 0:
        click.echo(f"{free} enrolled device(s) held by no gateway (taken at the next heartbeat)")


@gateway.command("run")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="gateway.toml", show_default=True, help="The gateway's config file.")
def run(config_path: Path) -> None:
    """Collect from the fleet and serve the API until SIGINT or SIGTERM."""
    from cairn_gateway.daemon import api_auth, run_gateway

    cfg = _config(config_path)
    try:
        load_seed(cfg.key_file)
        api_auth(cfg)
    except (SeedError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None

    def ready(addr: tuple[str, int]) -> None:
        print(json.dumps({"ready": True, "api": f"http://{addr[0]}:{addr[1]}"}), flush=True)

    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        await run_gateway(cfg, ready=ready)

    try:
        with hold(cfg.data_dir, "cairn gateway run"), \
                contextlib.suppress(asyncio.CancelledError):
            asyncio.run(main())
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


@gateway.command("collect")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="gateway.toml", show_default=True, help="The gateway's config file.")
def collect(config_path: Path) -> None:
    """One collection round (every enrolled device, every stream), then exit."""
    from cairn.dht.api import DHT
    from cairn_gateway.collect import Collector
    from cairn_gateway.daemon import limits_of, schedule_of
    from cairn_gateway.roster import Member, discover

    cfg = _config(config_path)
    if not cfg.dht_bootstrap:
        raise _Usage(f"[dht].bootstrap is empty in {config_path}: no way to find devices (list "
                     "your DHT bootstrap nodes, HOST:PORT)")
    try:
        key = noise_key_pair(load_seed(cfg.key_file))
    except SeedError as exc:
        raise click.ClickException(str(exc)) from None

    pending: list[Member] = []

    async def once() -> list[Any]:
        store = _store(cfg)
        collector = Collector(cfg.data_dir, key, store, schedule=schedule_of(cfg, key.public_key),
                              limits=limits_of(cfg))
        try:
            async with DHT.start("0.0.0.0", 0, cfg.dht_bootstrap,  # noqa: S104
                                 persistent=False) as dht:
                await dht.ready()  # UnreachableError: no bootstrap node answered
                roster = Roster(store.conn)
                keys = await discover(roster, collector, dht, cfg.fleet, cfg.devices)
                pending.extend(roster.pending())
                got = await collector.collect_round(dht, keys, cfg.policy)
                reached.update(collector.reach)
                return got
        finally:
            collector.close()
            store.close()

    reached: dict[bytes, str] = {}

    with hold(cfg.data_dir, "cairn gateway collect"):
        results = asyncio.run(once())
    for r in results:
        click.echo(f"{r.stream:<40} {r.blocks:>8,} blocks {r.samples:>8,} samples"
                   + (f"  ({r.error})" if r.error else ""))
    for k, state in sorted(reached.items()):
        if not state.startswith(("reachable", "connected")):
            click.echo(f"device {k.hex()[:16]}: {state}", err=True)
    if pending:
        click.echo(f"{len(pending)} device(s) seen but not enrolled (not collected): "
                   "`cairn gateway devices list`", err=True)


@gateway.command("fetch")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="gateway.toml", show_default=True, help="The gateway's config file.")
@click.option("--device", required=True,
              help="The enrolled device's name or record key (hex).")
@click.option("--stream", required=True, help="Stream name, e.g. board-1/temperature.")
@click.option("--since", type=float, required=True, help="Epoch seconds.")
@click.option("--until", "until_", type=float, required=True, help="Epoch seconds.")
def fetch(config_path: Path, device: str, stream: str, since: float, until_: float) -> None:
    """Download and store just one window of one stream of an enrolled device (verified),
    then exit."""
    from cairn.dht.api import DHT
    from cairn_gateway.collect import Collector
    from cairn_gateway.roster import stream_owners

    cfg = _config(config_path)
    if until_ <= since:
        raise click.BadParameter("--until must be after --since")
    click.get_current_context().with_resource(hold(cfg.data_dir, "cairn gateway fetch"))
    store = _store(cfg)
    try:
        member = Roster(store.conn).find(device)
    finally:
        store.close()
    if member is None or member.status != "enrolled":
        raise _Usage(f"--device {device!r} is not an enrolled device's name or record key "
                     "(`cairn gateway devices list`; enrol with `cairn gateway devices add`)")
    record_key = member.record_key
    if not cfg.dht_bootstrap:
        raise _Usage(f"[dht].bootstrap is empty in {config_path}: no way to find the device "
                     "(list your DHT bootstrap nodes, HOST:PORT)")
    key = noise_key_pair(load_seed(cfg.key_file))

    async def go() -> Any:
        store = _store(cfg)
        collector = Collector(cfg.data_dir, key, store)
        try:
            async with DHT.start("0.0.0.0", 0, cfg.dht_bootstrap,  # noqa: S104
                                 persistent=False) as dht:
                await dht.ready()  # UnreachableError: no bootstrap node answered
                dev = await collector.device(dht, record_key)
                if dev is None or dev.record.address is None:
                    raise click.ClickException("no usable record for that device on the DHT")
                if stream not in dev.streams:
                    raise click.ClickException(
                        f"the device has no stream {stream!r} (or did not seal its key to us)")
                device_id = store.device(record_key, None, float(dev.record.time))
                owner = stream_owners(store.conn, device_id, [stream]).get(stream)
                if owner is not None:
                    raise click.ClickException(f"refused: stream {stream!r} belongs to "
                                               f"device {owner!r}")
                return await collector.sync(dev, stream, dev.record.address, since=since,
                                            until=until_)
        finally:
            collector.close()
            store.close()

    r = asyncio.run(go())
    click.echo(f"{r.stream}: {r.blocks:,} blocks, {r.samples:,} samples stored"
               + (f" ({r.error})" if r.error else ""))
    if r.error:
        sys.exit(1)


@gateway.command("watch")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="gateway.toml", show_default=True, help="The gateway's config file.")
@click.option("--interval", type=click.FloatRange(0.2, 3600), default=2.0, show_default=True,
              help="Seconds between redraws.")
@click.option("--once", is_flag=True, help="Print the table once and exit.")
def watch(config_path: Path, interval: float, once: bool) -> None:
    """A live table of the enrolled devices' latest readings, from their signed DHT records
    (devices seen but not enrolled are counted, not shown)."""
    from rich.console import Console
    from rich.live import Live
    from rich.markup import escape
    from rich.table import Table

    from cairn.dht.api import DHT
    from cairn.fleet.record import RecordError, decode_record, fleet_topic

    cfg = _config(config_path)
    if not cfg.dht_bootstrap:
        raise _Usage(f"[dht].bootstrap is empty in {config_path}: no way to find devices (list "
                     "your DHT bootstrap nodes, HOST:PORT)")
    key = noise_key_pair(load_seed(cfg.key_file))
    console = Console()
    seen: dict[bytes, int] = {}  # seq hints: never show a record older than one shown before

    def enrolled() -> dict[bytes, str]:
        store = _store(cfg)
        try:
            return {m.record_key: m.name or "" for m in Roster(store.conn).members()
                    if m.status == "enrolled"}
        finally:
            store.close()

    async def table(dht: DHT) -> Table:
        names = enrolled()
        keys = set(cfg.devices)
        async with dht.lookup(fleet_topic(cfg.fleet)) as peers:
            async for p in peers:
                keys.add(p.public_key)
        others = len(keys - set(names))
        t = Table(title=f"fleet {cfg.fleet!r}: latest readings of the enrolled devices "
                        f"(signed DHT records; {others} not enrolled, not shown)")
        for col in ("device", "stream", "value", "unit", "age", "record"):
            t.add_column(col)
        now = time.time()
        for k in sorted(names, key=names.__getitem__):
            # the first sweep asks every storing node for the newest (stale copies may be
            # around: an old record is validly signed too); then the seq seen is the floor
            got = await dht.mutable_get(k, min_seq=seen.get(k, 0), latest=k not in seen)
            if got is not None:
                seen[k] = max(seen.get(k, 0), got.seq)
            if got is None:
                t.add_row(names[k], "-", "-", "", "", "[red]no record[/]")
                continue
            try:
                rec = decode_record(got.value, key)
            except RecordError as exc:
                t.add_row(names[k], "-", "-", "", "", f"[red]bad: {escape(str(exc))}[/]")
                continue
            for r in rec.readings:
                value = f"{r.value:g}" if isinstance(r.value, float) else escape(str(r.value))
                t.add_row(names[k], escape(r.stream), value, _unit(r.stream),
                          f"{now - r.time:.0f} s", f"[green]verified[/] seq {got.seq}")
        return t

    def _unit(stream: str) -> str:
        from cairn.fleet.units import QUANTITY_UNITS

        quantity = stream.rsplit("/", 1)[-1]
        base, dash, number = quantity.rpartition("-")
        return QUANTITY_UNITS.get(base if dash and number.isdigit() else quantity, "")

    async def go() -> None:
        async with DHT.start("0.0.0.0", 0, cfg.dht_bootstrap,  # noqa: S104
                             persistent=False) as dht:
            await dht.ready()  # UnreachableError: no bootstrap node answered
            if once:
                console.print(await table(dht))
                return
            with Live(await table(dht), console=console, refresh_per_second=1) as live:
                while True:
                    await asyncio.sleep(interval)
                    live.update(await table(dht))

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())


@gateway.group("grafana")
def grafana() -> None:
    """Install Cairn's Grafana data sources and dashboards."""


@grafana.command("push")
@click.option("--url", required=True, help="Grafana's URL, e.g. http://localhost:3000.")
@click.option("--token", required=True, envvar="GRAFANA_TOKEN",
              help="A token of a service account with the Admin role (or $GRAFANA_TOKEN): "
              "creating data sources needs Admin; an Editor token is refused (403).")
@click.option("--datasource", type=click.Choice(["infinity", "postgres"]), default="infinity",
              show_default=True, help="infinity: the Infinity plugin on the gateway's API and "
              "Prometheus; postgres: Grafana's built-in PostgreSQL data source on the shared "
              "store (no plugin), with its own three dashboards.")
@click.option("--gateway-url", default=None, help="infinity: the gateway API as Grafana "
              "reaches it (default: the provisioning file's).")
@click.option("--prometheus-url", default=None, help="infinity: Prometheus as Grafana "
              "reaches it.")
@click.option("--gateway-token-file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="infinity: the gateway's read token file "
              "([api].read_token_file): Grafana sends it to the gateway as a bearer token. "
              "Without it, an existing data source keeps the token Grafana holds; a new one "
              "gets none.")
@click.option("--store-url", default=None, help="postgres: the store as Grafana reaches it, "
              "postgresql://user@host:port/database[?sslmode=disable] (no password here: "
              "sslmode require unless given).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="postgres: take the store from this gateway config's "
              "[store] url instead (its password, the gateway's, is not given to Grafana).")
@click.option("--store-user", default=None, help="postgres: the role Grafana connects as "
              "(default: the URL's user); give it SELECT on the store's tables only.")
@click.option("--store-password-file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="postgres: a file (mode 0600) holding that role's password, "
              "else $CAIRN_GRAFANA_DB_PASSWORD; without either, an existing data source keeps "
              "the password Grafana holds.")
def grafana_push(url: str, token: str, datasource: str, gateway_url: str | None,
                 prometheus_url: str | None, gateway_token_file: Path | None,
                 store_url: str | None, config_path: Path | None, store_user: str | None,
                 store_password_file: Path | None) -> None:
    """Create or update Cairn's data sources and its three dashboards in a running Grafana
    (a service account token with the Admin role)."""
    from cairn_gateway import provision

    add_secret(token)  # never in a log line (cairn.logs)
    given = {"--gateway-url": gateway_url, "--prometheus-url": prometheus_url,
             "--gateway-token-file": gateway_token_file} if datasource == "postgres" else {
        "--store-url": store_url, "--config": config_path, "--store-user": store_user,
        "--store-password-file": store_password_file}
    stray = [name for name, value in given.items() if value is not None]
    if stray:
        raise provision.ProvisionError(f"{', '.join(stray)}: not for --datasource {datasource}")
    if datasource == "postgres":
        if store_url is not None:
            target, from_config = store_url, False
        elif config_path is not None:
            target, from_config = provision.store_url_of_config(config_path), True
        else:
            raise provision.ProvisionError("--datasource postgres needs --store-url or --config "
                                           "(a gateway config with [store] url)")
        body, shown = provision.postgres_source(target, from_config=from_config,
                                                user=store_user,
                                                password_file=store_password_file)
        sources = [body]
        click.echo(f"PostgreSQL data source on {shown}")
    else:
        from cairn_gateway.auth import TokenError, load_token

        try:
            read_token = None if gateway_token_file is None \
                else load_token(gateway_token_file, "read token").decode()
        except TokenError as exc:
            raise click.ClickException(str(exc)) from None
        sources = provision.infinity_sources(gateway_url, prometheus_url, read_token)
    _push(url, token, sources, list(provision.dashboards(datasource)))


def _push(url: str, token: str, sources: list[dict[str, Any]],
          dashboards: list[dict[str, Any]]) -> None:
    """Upsert the data sources, then install the dashboards (overwrite)."""
    from grafana_client.api import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaException

    from cairn_gateway.provision import upsert_source

    api = GrafanaApi.from_url(url, credential=token)
    doing = "connect"
    try:
        for body in sources:
            doing = f"set up the data source {body['name']!r}"
            upsert_source(api, body, GrafanaClientError, click.echo)
        for dash in dashboards:
            doing = f"install the dashboard {dash['title']!r}"
            api.dashboard.update_dashboard({"dashboard": dash, "overwrite": True,
                                            "message": "cairn gateway grafana push"})
            click.echo(f"installed dashboard {dash['title']} ({dash['uid']})")
    except GrafanaException as exc:
        raise click.ClickException(redact_text(_grafana_refusal(url, doing, exc))) from None
    except OSError as exc:
        raise click.ClickException(redact_text(f"Grafana at {url}: {exc}")) from None


def _grafana_refusal(url: str, doing: str, exc: Exception) -> str:
    """One line for an error Grafana answered: what to do about a 401 or a 403."""
    status = getattr(exc, "status_code", None)
    if status == 403:
        return (f"Grafana at {url} refused to {doing} (403 Forbidden): the token's role may not; "
                "data sources need the Admin role. Use a token of a service account with the "
                "Admin role (Administration > Users and access > Service accounts), not Editor")
    if status == 401:
        return (f"Grafana at {url} did not accept the token (401 Unauthorized): give a service "
                "account token (glsa_...) with the Admin role, with --token or $GRAFANA_TOKEN")
    return f"Grafana at {url}: could not {doing}: {exc}"


@gateway.command("integrity")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="gateway.toml", show_default=True, help="The gateway's config file.")
def integrity(config_path: Path) -> None:
    """Each stream: blocks stored, whether a fork stopped it, and its holes (blocks its edge
    signed but would not serve: damaged there, or not served). Exit 1 if any stream is
    stopped or has holes."""
    from cairn_gateway.queries import health

    store = _store(_config(config_path))
    try:
        rows = health(store.conn, order_by_name=True)
        holes = store.missing()
    finally:
        store.close()
    for h in rows:
        click.echo(f"{h.name:<40} {h.stored_blocks:>10,} blocks  {h.status}")
        runs = holes.get(h.id, [])
        if runs:
            n = sum(z - a for a, z, _, _ in runs)
            click.echo(f"  missing {n:,} blocks: "
                       f"{describe_missing((a, z, r) for a, z, r, _ in runs)}")
            for reason in sorted({r for _, _, r, _ in runs}):
                click.echo(f"    {reason}: {MISSING_REASONS[reason]}")
    if any(h.status != "ok" or holes.get(h.id) for h in rows):
        sys.exit(1)


@gateway.command("export")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="gateway.toml", show_default=True, help="The gateway's config file.")
@click.option("--stream", required=True, help="Stream name, e.g. board-1/temperature.")
@click.option("--since", type=float, default=0.0, help="Epoch seconds.")
@click.option("--until", "until_", type=float, default=4e9, help="Epoch seconds.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv",
              show_default=True, help="CSV with a header, or one JSON object per line.")
def export(config_path: Path, stream: str, since: float, until_: float, fmt: str) -> None:
    """Write a stream's stored samples (with their provenance) to stdout; each value in its
    kind (a number, true or false, a string)."""
    if until_ <= since:
        raise click.BadParameter("--until must be after --since")
    from cairn_gateway.queries import export_stream

    store = _store(_config(config_path))
    try:
        row = export_stream(store.conn, stream)
        if row is None:
            raise click.ClickException(f"no stream {stream!r} in the store")
        samples = store.samples(row[0], since, until_)
    finally:
        store.close()
    if fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(["time", "value", "unit", "block", "fork"])
        for t, v, b, f in samples:  # booleans as in JSON (true, false)
            w.writerow([t, json.dumps(v) if isinstance(v, bool) else v, row[1] or "", b, f])
    else:
        for t, v, b, f in samples:
            click.echo(json.dumps({"time": t, "value": v, "unit": row[1], "block": b,
                                   "fork": f}))


gateway.add_command(store_group)

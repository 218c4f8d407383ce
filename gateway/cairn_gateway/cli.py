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

from cairn.fleet.identity import (
    SeedError,
    init_directory,
    load_seed,
    noise_key_pair,
    watermark_key_pair,
)
from cairn_gateway.config import TEMPLATE, ConfigError, GatewayConfig, load_config
from cairn_gateway.store import Store, StoreError

__all__ = ["gateway", "run_gateway"]

log = logging.getLogger(__name__)


def _config(path: Path) -> GatewayConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


def _store(cfg: GatewayConfig) -> Store:
    cfg.data_dir.mkdir(parents=True, exist_ok=True)
    try:
        return Store(cfg.data_dir / "gw.db")
    except StoreError as exc:
        raise click.ClickException(str(exc)) from None


def _schedule(cfg: GatewayConfig, public_key: bytes) -> Any:
    """The collector's schedule; its jitter seeded by the gateway's key (the same retries on
    every run of one gateway, different ones on two gateways)."""
    from random import Random

    from cairn_gateway.schedule import Backoff, Schedule

    return Schedule(cfg.concurrency, Backoff(cfg.backoff_initial, cfg.backoff_max),
                    Random(public_key))  # noqa: S311 - jitter, not a secret


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


def _api_auth(cfg: GatewayConfig) -> Any:
    """The API's tokens from their files; refuses (ConfigError) an API open to the network
    without a read token."""
    from cairn_gateway.auth import ApiAuth, TokenError
    from cairn_gateway.serve import check_listen

    try:
        auth = ApiAuth.from_files(cfg.api_read_token_file, cfg.api_admin_token_file)
    except TokenError as exc:
        raise ConfigError(str(exc)) from None
    check_listen(cfg.api[0], cfg.api[1], auth.read is not None)
    if auth.read is None:
        log.warning("the API on %s:%d has no read token: anything on this host may read it "
                    "([api].read_token_file)", *cfg.api)
    return auth


def _api_limits(cfg: GatewayConfig) -> Any:
    from cairn_gateway.serve import ApiLimits

    return ApiLimits(cfg.api_max_connections, cfg.api_request_timeout, cfg.api_max_header_bytes)


async def run_gateway(cfg: GatewayConfig, *, ready: Any = None,
                      rounds: int | None = None) -> None:
    """Collect every ``interval`` seconds and serve the API until cancelled (or ``rounds``)."""
    from cairn.dht.api import DHT
    from cairn_gateway.api import make_app
    from cairn_gateway.collect import Collector
    from cairn_gateway.serve import serving

    seed = load_seed(cfg.key_file)
    auth = _api_auth(cfg)
    key = noise_key_pair(seed)
    store = _store(cfg)
    collector = Collector(cfg.data_dir, key, store, schedule=_schedule(cfg, key.public_key))
    if cfg.ingest_worker:
        collector.start_worker()
    marks_seq = 0  # milliseconds of the clock: grows across restarts without being stored

    def demand(stream_id: int) -> bool:
        entry = collector.known.get(stream_id)
        return entry is not None and cfg.policy(entry[1]).mode == "on_demand"

    app = make_app(store, on_demand=collector.on_demand, demand=demand,
                   edges=lambda: collector.schedule.status(collector.clock()), auth=auth,
                   max_body_bytes=cfg.api_max_body_bytes, body_timeout=cfg.api_request_timeout)
    try:
        async with contextlib.AsyncExitStack() as stack:
            address = await stack.enter_async_context(serving(app, *cfg.api, _api_limits(cfg)))
            dht = None
            if cfg.dht_bootstrap:
                dht = await stack.enter_async_context(
                    DHT.start("0.0.0.0", 0, cfg.dht_bootstrap, persistent=False))  # noqa: S104
            if ready is not None:
                ready(address)
            done = 0
            while rounds is None or done < rounds:
                if dht is not None:
                    keys = set(cfg.devices)
                    try:
                        keys |= await collector.devices_on(dht, cfg.fleet)
                    except Exception as exc:
                        log.warning("fleet lookup failed: %s", exc)
                    for r in await collector.collect_round(dht, keys, cfg.policy):
                        if r.error and not r.unreachable:  # the schedule logs those
                            log.warning("stream %s: %s", r.stream, r.error)
                    marks_seq = max(marks_seq + 1, int(time.time() * 1000))
                    try:
                        await collector.publish_watermarks(dht, watermark_key_pair(seed),
                                                           marks_seq)
                    except Exception as exc:  # a bad round must not stop us
                        log.warning("could not publish the watermark record: %s", exc)
                if cfg.retention_days:
                    store.prune(time.time() - cfg.retention_days * 86400)
                done += 1
                if rounds is None or done < rounds:
                    await asyncio.sleep(cfg.interval)
    finally:
        collector.close()
        store.close()


@gateway.command("run")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="gateway.toml", show_default=True)
def run(config_path: Path) -> None:
    """Collect from the fleet and serve the API until SIGINT or SIGTERM."""
    cfg = _config(config_path)
    try:
        load_seed(cfg.key_file)
        _api_auth(cfg)
    except (SeedError, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None

    def ready(addr: tuple[str, int]) -> None:
        print(json.dumps({"ready": True, "api": f"http://{addr[0]}:{addr[1]}"}), flush=True)

    async def main() -> None:
        task = asyncio.create_task(run_gateway(cfg, ready=ready))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())


@gateway.command("collect")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="gateway.toml", show_default=True)
def collect(config_path: Path) -> None:
    """One collection round (every device of the fleet, every stream), then exit."""
    from cairn.dht.api import DHT
    from cairn_gateway.collect import Collector

    cfg = _config(config_path)
    if not cfg.dht_bootstrap:
        raise click.ClickException("[dht].bootstrap is empty: no way to find devices")
    try:
        key = noise_key_pair(load_seed(cfg.key_file))
    except SeedError as exc:
        raise click.ClickException(str(exc)) from None

    async def once() -> list[Any]:
        store = _store(cfg)
        collector = Collector(cfg.data_dir, key, store, schedule=_schedule(cfg, key.public_key))
        try:
            async with DHT.start("0.0.0.0", 0, cfg.dht_bootstrap,  # noqa: S104
                                 persistent=False) as dht:
                keys = set(cfg.devices) | await collector.devices_on(dht, cfg.fleet)
                return await collector.collect_round(dht, keys, cfg.policy)
        finally:
            collector.close()
            store.close()

    results = asyncio.run(once())
    for r in results:
        click.echo(f"{r.stream:<40} {r.blocks:>8,} blocks {r.samples:>8,} samples"
                   + (f"  ({r.error})" if r.error else ""))


@gateway.command("fetch")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="gateway.toml", show_default=True)
@click.option("--device", required=True, help="The device's record key (hex).")
@click.option("--stream", required=True, help="Stream name, e.g. board-1/temperature.")
@click.option("--since", type=float, required=True, help="Epoch seconds.")
@click.option("--until", "until_", type=float, required=True, help="Epoch seconds.")
def fetch(config_path: Path, device: str, stream: str, since: float, until_: float) -> None:
    """Download and store just one window of one stream (verified), then exit."""
    from cairn.dht.api import DHT
    from cairn_gateway.collect import Collector

    cfg = _config(config_path)
    try:
        record_key = bytes.fromhex(device)
    except ValueError:
        record_key = b""
    if len(record_key) != 32:
        raise click.BadParameter("a 64-hex-digit record key", param_hint="--device")
    if until_ <= since:
        raise click.BadParameter("--until must be after --since")
    if not cfg.dht_bootstrap:
        raise click.ClickException("[dht].bootstrap is empty: no way to find the device")
    key = noise_key_pair(load_seed(cfg.key_file))

    async def go() -> Any:
        store = _store(cfg)
        collector = Collector(cfg.data_dir, key, store)
        try:
            async with DHT.start("0.0.0.0", 0, cfg.dht_bootstrap,  # noqa: S104
                                 persistent=False) as dht:
                dev = await collector.device(dht, record_key)
                if dev is None or dev.record.address is None:
                    raise click.ClickException("no usable record for that device on the DHT")
                if stream not in dev.streams:
                    raise click.ClickException(
                        f"the device has no stream {stream!r} (or did not seal its key to us)")
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
              default="gateway.toml", show_default=True)
@click.option("--interval", type=click.FloatRange(0.2, 3600), default=2.0, show_default=True)
@click.option("--once", is_flag=True, help="Print the table once and exit.")
def watch(config_path: Path, interval: float, once: bool) -> None:
    """A live table of every device's latest readings, from their signed DHT records."""
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    from cairn.dht.api import DHT
    from cairn.fleet.record import RecordError, decode_record, fleet_topic

    cfg = _config(config_path)
    if not cfg.dht_bootstrap:
        raise click.ClickException("[dht].bootstrap is empty: no way to find devices")
    key = noise_key_pair(load_seed(cfg.key_file))
    console = Console()
    seen: dict[bytes, int] = {}  # seq hints: never show a record older than one shown before

    async def table(dht: DHT) -> Table:
        t = Table(title=f"fleet {cfg.fleet!r}: latest readings (signed DHT records)")
        for col in ("device", "stream", "value", "unit", "age", "record"):
            t.add_column(col)
        keys = set(cfg.devices)
        async with dht.lookup(fleet_topic(cfg.fleet)) as peers:
            async for p in peers:
                keys.add(p.public_key)
        now = time.time()
        for k in sorted(keys):
            # the first sweep asks every storing node for the newest (stale copies may be
            # around: an old record is validly signed too); then the seq seen is the floor
            got = await dht.mutable_get(k, min_seq=seen.get(k, 0), latest=k not in seen)
            if got is not None:
                seen[k] = max(seen.get(k, 0), got.seq)
            if got is None:
                t.add_row(k.hex()[:12], "-", "-", "", "", "[red]no record[/]")
                continue
            try:
                rec = decode_record(got.value, key)
            except RecordError as exc:
                t.add_row(k.hex()[:12], "-", "-", "", "", f"[red]bad: {exc}[/]")
                continue
            for r in rec.readings:
                t.add_row(k.hex()[:12], r.stream, f"{r.value:g}" if isinstance(r.value, float)
                          else str(r.value), _unit(r.stream), f"{now - r.time:.0f} s",
                          f"[green]verified[/] seq {got.seq}")
        return t

    def _unit(stream: str) -> str:
        from cairn.fleet.units import QUANTITY_UNITS

        quantity = stream.rsplit("/", 1)[-1]
        base, dash, number = quantity.rpartition("-")
        return QUANTITY_UNITS.get(base if dash and number.isdigit() else quantity, "")

    async def go() -> None:
        async with DHT.start("0.0.0.0", 0, cfg.dht_bootstrap,  # noqa: S104
                             persistent=False) as dht:
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


GRAFANA_FILES = Path(__file__).with_name("grafana")


@grafana.command("push")
@click.option("--url", required=True, help="Grafana's URL, e.g. http://localhost:3000.")
@click.option("--token", required=True, envvar="GRAFANA_TOKEN",
              help="A service account token with the Editor role (or $GRAFANA_TOKEN).")
@click.option("--gateway-url", default=None, help="The gateway API as Grafana reaches it "
              "(default: the provisioning file's).")
@click.option("--prometheus-url", default=None, help="Prometheus as Grafana reaches it.")
@click.option("--gateway-token-file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="The gateway's read token file ([api].read_token_file): "
              "Grafana sends it to the gateway as a bearer token. Without it, an existing "
              "data source keeps the token Grafana holds; a new one gets none.")
def grafana_push(url: str, token: str, gateway_url: str | None,
                 prometheus_url: str | None, gateway_token_file: Path | None) -> None:
    """Create or update the data sources and the three dashboards in a running Grafana."""
    from cairn_gateway.auth import TokenError, load_token

    try:
        read_token = None if gateway_token_file is None \
            else load_token(gateway_token_file, "read token").decode()
    except TokenError as exc:
        raise click.ClickException(str(exc)) from None
    import yaml  # type: ignore[import-untyped]
    from grafana_client.api import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaException

    sources = yaml.safe_load((GRAFANA_FILES / "provisioning" / "datasources" /
                              "cairn.yaml").read_text())["datasources"]
    urls = {"yesoreyeram-infinity-datasource": gateway_url, "prometheus": prometheus_url}
    api = GrafanaApi.from_url(url, credential=token)
    try:
        for ds in sources:
            body = {k: v for k, v in ds.items() if k not in ("editable", "secureJsonData")}
            if "secureJsonData" in ds and read_token is not None:  # never the ${...} itself
                body["secureJsonData"] = {"httpHeaderValue1": f"Bearer {read_token}"}
            if urls.get(ds["type"]):
                body["url"] = urls[ds["type"]]
                if "allowedHosts" in body.get("jsonData", {}):
                    body["jsonData"] = {**body["jsonData"], "allowedHosts": [body["url"]]}
            try:
                api.datasource.get_datasource_by_uid(ds["uid"])
                api.datasource.update_datasource_by_uid(ds["uid"], body)
                click.echo(f"updated data source {ds['name']} ({ds['uid']})")
            except GrafanaClientError as exc:
                if getattr(exc, "status_code", None) != 404:
                    raise
                api.datasource.create_datasource(body)
                click.echo(f"created data source {ds['name']} ({ds['uid']})")
        for path in sorted((GRAFANA_FILES / "dashboards").glob("*.json")):
            dash = json.loads(path.read_text())
            dash.pop("id", None)
            api.dashboard.update_dashboard({"dashboard": dash, "overwrite": True,
                                            "message": "cairn gateway grafana push"})
            click.echo(f"installed dashboard {dash['title']} ({dash['uid']})")
    except (GrafanaException, OSError) as exc:
        raise click.ClickException(f"Grafana at {url}: {exc}") from None


@gateway.command("integrity")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="gateway.toml", show_default=True)
def integrity(config_path: Path) -> None:
    """Each stream: blocks stored, and whether a fork stopped it. Exit 1 if any did."""
    store = _store(_config(config_path))
    try:
        rows = store.conn.execute(
            "SELECT name, stored_blocks, status FROM streams ORDER BY name").fetchall()
    finally:
        store.close()
    for name, blocks, status in rows:
        click.echo(f"{name:<40} {blocks:>10,} blocks  {status}")
    if any(status != "ok" for _, _, status in rows):
        sys.exit(1)


@gateway.command("export")
@click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
              default="gateway.toml", show_default=True)
@click.option("--stream", required=True, help="Stream name, e.g. board-1/temperature.")
@click.option("--since", type=float, default=0.0, help="Epoch seconds.")
@click.option("--until", "until_", type=float, default=4e9, help="Epoch seconds.")
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv",
              show_default=True)
def export(config_path: Path, stream: str, since: float, until_: float, fmt: str) -> None:
    """Write a stream's stored samples (with their provenance) to stdout."""
    if until_ <= since:
        raise click.BadParameter("--until must be after --since")
    store = _store(_config(config_path))
    try:
        row = store.conn.execute("SELECT id, unit FROM streams WHERE name = ?",
                                 (stream,)).fetchone()
        if row is None:
            raise click.ClickException(f"no stream {stream!r} in the store")
        samples = store.samples(int(row[0]), since, until_)
    finally:
        store.close()
    if fmt == "csv":
        w = csv.writer(sys.stdout)
        w.writerow(["time", "value", "unit", "block", "fork"])
        for t, v, b, f in samples:
            w.writerow([t, v, row[1] or "", b, f])
    else:
        for t, v, b, f in samples:
            click.echo(json.dumps({"time": t, "value": v, "unit": row[1], "block": b,
                                   "fork": f}))

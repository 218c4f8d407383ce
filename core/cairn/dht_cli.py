"""``cairn dht``: run DHT nodes, and put, get, announce and look up records from the shell.

Each command is a few lines over :class:`cairn.dht.api.DHT`. The commands create their event loop
with uvloop when it is installed (the library itself never chooses a loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import ipaddress
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import click

from cairn.crypto import key_pair
from cairn.dht.api import DEFAULT_TIMEOUT, DHT, DHTError
from cairn.dht.messages import Address
from cairn.dht.records import MAX_VALUE_SIZE, MutableRecord, Peer
from cairn.keys_cli import parse_seed

__all__ = ["dht", "parse_hex32", "parse_host_port"]

T = TypeVar("T")


# -- argument types ---------------------------------------------------------------------------


def parse_host_port(text: str, *, ipv4_only: bool = False) -> Address:
    """``HOST:PORT``, HOST an IPv4 address (or, unless ``ipv4_only``, a name), PORT 1-65535."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host or not port_text:
        raise click.BadParameter(f"{text!r} is not HOST:PORT (for example 127.0.0.1:7423)")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise click.BadParameter(f"port {port_text!r} in {text!r} is not a number from 1 to "
                                 f"65535")
    if ":" in host or host.strip() != host or host == "0.0.0.0":  # noqa: S104
        raise click.BadParameter(f"{host!r} in {text!r} is not an IPv4 address or host name a "
                                 f"node listens on")
    if ipv4_only:
        try:
            host = str(ipaddress.IPv4Address(host))
        except ValueError:
            raise click.BadParameter(f"{host!r} in {text!r} is not an IPv4 address") from None
    return (host, int(port_text))


def parse_hex32(text: str, what: str) -> bytes:
    """32 bytes given as 64 hex digits."""
    try:
        raw = bytes.fromhex(text)
    except ValueError:
        raise click.BadParameter(f"{what} must be hex, got {text!r}") from None
    if len(raw) != 32:
        raise click.BadParameter(f"{what} must be 32 bytes (64 hex digits), got {len(raw)} "
                                 f"bytes")
    return raw


def _host_ports(ctx: click.Context, param: click.Parameter,
                value: tuple[str, ...]) -> tuple[Address, ...]:
    return tuple(parse_host_port(v) for v in value)


def _relays(ctx: click.Context, param: click.Parameter,
            value: tuple[str, ...]) -> tuple[Address, ...]:
    if len(value) > 3:
        raise click.BadParameter("at most 3 relay addresses")
    return tuple(parse_host_port(v, ipv4_only=True) for v in value)


def _hex32(ctx: click.Context, param: click.Parameter, value: str) -> bytes:
    return parse_hex32(value, (param.name or "value").upper())


def _ipv4(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an IPv4 address") from None


def _seed(ctx: click.Context, param: click.Parameter, value: str) -> bytes:
    return parse_seed(value)


_bootstrap_option = click.option(
    "--bootstrap", "bootstrap", multiple=True, required=True, callback=_host_ports,
    metavar="HOST:PORT",
    help="A DHT node to join through, as HOST:PORT (repeat for several).")
_timeout_option = click.option(
    "--timeout", type=click.FloatRange(min=0, min_open=True), default=DEFAULT_TIMEOUT,
    show_default=True, help="Seconds the operation may take.")
_seed_option = click.option(
    "--seed", required=True, callback=_seed,
    help="32-byte Ed25519 seed as 64 hex digits (the key pair that signs).")
_json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")
_host_option = click.option(
    "--host", default="127.0.0.1", show_default=True, callback=_ipv4,
    help="IPv4 address to listen on (0.0.0.0 for every interface, then give --address).")
_address_option = click.option(
    "--address", callback=_ipv4,
    help="The IPv4 address other nodes reach this one at (default: --host).")


# -- running -----------------------------------------------------------------------------------


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when it is installed (faster datagram handling), else asyncio's."""
    try:
        uvloop = importlib.import_module("uvloop")
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def _run(main: Coroutine[Any, Any, T]) -> T:
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main)


def _client(main: Callable[[DHT], Coroutine[Any, Any, T]], bootstrap: tuple[Address, ...],
            timeout: float) -> T:
    """Run ``main`` on an ephemeral node (bound to every interface, any port) joined through
    ``bootstrap``; DHT errors become clean command errors (exit code 1)."""

    async def run() -> T:
        # every interface: the replies of a node on another host come back to the address
        # of the route toward it, never to 127.0.0.1
        async with DHT.start("0.0.0.0", 0, bootstrap=bootstrap,  # noqa: S104
                             persistent=False, timeout=timeout) as node:
            await node.ready()
            return await main(node)

    try:
        return _run(run())
    except (DHTError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None


def _say(line: str) -> None:
    click.echo(line)
    sys.stdout.flush()


async def _until_signalled() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _node_address(host: str, address: str | None) -> tuple[str, int] | None:
    if address is not None:
        return (address, 0)
    if host == "0.0.0.0":  # noqa: S104
        raise click.UsageError("with --host 0.0.0.0, give --address: the IPv4 address other "
                               "nodes reach this one at")
    return None


def _peer_json(peer: Peer) -> dict[str, object]:
    return {"public_key": peer.public_key.hex(),
            "relay_addresses": [f"{h}:{p}" for h, p in peer.relay_addresses]}


# -- commands ----------------------------------------------------------------------------------


@click.group()
def dht() -> None:
    """Run DHT nodes (hyperdht 6 wire) and put, get, announce and look up records."""


@dht.command("bootstrap")
@_host_option
@click.option("--port", type=click.IntRange(0, 65535), default=7423, show_default=True,
              help="UDP port to listen on (0 = any free port).")
@_address_option
def bootstrap(host: str, port: int, address: str | None) -> None:
    """Run a persistent node that others bootstrap from, until SIGINT or SIGTERM.

    Prints `ready HOST:PORT id ID` once it listens.
    """
    public = _node_address(host, address)

    async def run() -> None:
        async with DHT.start(host=host, port=port, bootstrap=[], persistent=True,
                             address=public) as node:
            await node.ready()
            h, p = node.address
            _say(f"ready {h}:{p} id {node.id.hex()}")
            await _until_signalled()

    _run_node(run)


@dht.command("testnet")
@click.option("--nodes", type=click.IntRange(1, 1000), default=10, show_default=True,
              help="How many persistent nodes to run.")
@_host_option
@click.option("--port", type=click.IntRange(0, 65535), default=7423, show_default=True,
              help="UDP port of the first node, the one the others bootstrap from (0 = any).")
@_address_option
def testnet(nodes: int, host: str, port: int, address: str | None) -> None:
    """Run a local network of persistent nodes in one process, until SIGINT or SIGTERM.

    The first node listens on --port; the others take any free port and bootstrap from it.
    Prints one `node I HOST:PORT id ID` line per node, then
    `testnet ready: N nodes, bootstrap HOST:PORT`.
    """
    public = _node_address(host, address)

    async def run() -> None:
        async with contextlib.AsyncExitStack() as stack:
            first = await stack.enter_async_context(
                DHT.start(host=host, port=port, bootstrap=[], persistent=True, address=public))
            await first.ready()
            started = [first]
            for _ in range(nodes - 1):
                node = await stack.enter_async_context(
                    DHT.start(host=host, port=0, bootstrap=[first.address], persistent=True,
                              address=(public[0], 0) if public else None))
                await node.ready()
                started.append(node)
            for i, node in enumerate(started):
                h, p = node.address
                _say(f"node {i} {h}:{p} id {node.id.hex()}")
            h, p = first.address
            _say(f"testnet ready: {nodes} nodes, bootstrap {h}:{p}")
            await _until_signalled()

    _run_node(run)


def _run_node(run: Callable[[], Coroutine[Any, Any, None]]) -> None:
    try:
        _run(run())
    except OSError as exc:  # the port is taken, the address is not ours
        raise click.ClickException(f"cannot listen: {exc.strerror or exc}") from None
    except (DHTError, TimeoutError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


@dht.command("put")
@_bootstrap_option
@_seed_option
@click.option("--seq", type=click.IntRange(0, 2**64 - 1), required=True,
              help="Sequence number; must be higher than the stored one to replace it.")
@_timeout_option
@click.argument("value")
def put(bootstrap: tuple[Address, ...], seed: bytes, seq: int, timeout: float,
        value: str) -> None:
    """Sign VALUE (UTF-8) with --seq and store it as the mutable record of the seed's key.

    Prints the public key, the seq and how many nodes stored it.
    """
    data = value.encode("utf-8")
    if len(data) > MAX_VALUE_SIZE:
        raise click.BadParameter(f"is {len(data)} bytes in UTF-8; the most a DHT record holds "
                                 f"is {MAX_VALUE_SIZE}", param_hint="VALUE")
    kp = key_pair(seed)

    async def run(node: DHT) -> int:
        return (await node.mutable_put_receipt(kp, data, seq)).nodes

    stored = _client(run, bootstrap, timeout)
    _say(f"public key: {kp.public_key.hex()}")
    _say(f"seq: {seq}")
    _say(f"stored on: {stored} nodes")


@dht.command("get")
@_bootstrap_option
@click.argument("public_key", callback=_hex32)
@click.option("--min-seq", type=click.IntRange(0, 2**64 - 1), default=0, show_default=True,
              help="Ignore records with a lower seq.")
@click.option("--latest/--first", default=True, show_default=True,
              help="Ask every storing node on the way and take the highest seq, or stop at the "
                   "first verified record with seq >= --min-seq (faster; may be an old one).")
@_json_option
@_timeout_option
def get(bootstrap: tuple[Address, ...], public_key: bytes, min_seq: int, latest: bool,
        as_json: bool, timeout: float) -> None:
    """Print the mutable record of PUBLIC_KEY (64 hex digits), its signature verified.

    Prints the value as text when it is UTF-8, else as hex; with --json, an object with `seq`
    and `value` (hex). Exits with 1 when no record is found.
    """

    async def run(node: DHT) -> MutableRecord | None:
        return await node.mutable_get(public_key, min_seq=min_seq, latest=latest)

    record = _client(run, bootstrap, timeout)
    if record is None:
        more = f" with seq >= {min_seq}" if min_seq else ""
        raise click.ClickException(f"no record{more} found for {public_key.hex()}")
    if as_json:
        _say(json.dumps({"seq": record.seq, "value": record.value.hex()}))
        return
    try:
        _say(record.value.decode("utf-8"))
    except UnicodeDecodeError:
        _say(record.value.hex())


@dht.command("announce")
@_bootstrap_option
@_seed_option
@click.option("--relay", "relays", multiple=True, callback=_relays, metavar="HOST:PORT",
              help="An IPv4 HOST:PORT where the peer can be reached (up to 3).")
@_timeout_option
@click.argument("topic", callback=_hex32)
def announce(bootstrap: tuple[Address, ...], seed: bytes, relays: tuple[Address, ...],
             timeout: float, topic: bytes) -> None:
    """Announce the seed's public key on TOPIC (64 hex digits) for about 20 minutes.

    Prints the public key and how many nodes stored the announce.
    """
    kp = key_pair(seed)

    async def run(node: DHT) -> int:
        return await node.announce(topic, kp, relays)

    stored = _client(run, bootstrap, timeout)
    _say(f"public key: {kp.public_key.hex()}")
    _say(f"stored on: {stored} nodes")


@dht.command("lookup")
@_bootstrap_option
@click.argument("topic", callback=_hex32)
@_json_option
@_timeout_option
def lookup(bootstrap: tuple[Address, ...], topic: bytes, as_json: bool, timeout: float) -> None:
    """Print the public keys announced on TOPIC (64 hex digits), one a line, as they come.

    With --json, one JSON array of objects with `public_key` and `relay_addresses`. Exits with
    1 when nobody announced on the topic.
    """

    async def run(node: DHT) -> int:
        found: list[Peer] = []
        async with node.lookup(topic) as peers:
            async for peer in peers:
                found.append(peer)
                if not as_json:
                    relays = " ".join(f"{h}:{p}" for h, p in peer.relay_addresses)
                    _say(f"{peer.public_key.hex()}{' ' + relays if relays else ''}")
        if as_json and found:
            _say(json.dumps([_peer_json(p) for p in found]))
        return len(found)

    if _client(run, bootstrap, timeout) == 0:
        raise click.ClickException(f"nobody announced on topic {topic.hex()}")


if __name__ == "__main__":
    dht()

"""``cairn log``: create, append to, inspect and verify logs on disk."""

from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path

import click

from cairn.crypto import KeyPair, key_pair
from cairn.errors import CairnError, UsageError
from cairn.keys_cli import parse_seed
from cairn.log import Log

__all__ = ["log"]


class _NoSuchFile(UsageError, click.ClickException):
    """A file the user named is not there: a usage error (exit 2), said in one line."""

    exit_code = 2


def _open(path: Path) -> Log:
    try:
        return Log.open(path)
    except FileNotFoundError:
        raise _NoSuchFile(f"no log at {path} (`cairn log create` makes one)") from None
    except CairnError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def log() -> None:
    """Create, append to, inspect and verify signed logs (Hypercore 11 format)."""


@log.command("create")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", required=True, help="32-byte Ed25519 seed, 64 hex digits.")
@click.option(
    "--compat", is_flag=True, help="Hypercore 10 style: key = public key, 64-byte signatures."
)
def create(path: Path, seed: str, compat: bool) -> None:
    """Create a writable log at PATH and print its key."""
    kp = key_pair(parse_seed(seed))
    if path.exists():
        raise click.ClickException(f"{path} already exists")
    with Log.create(path, kp, compat=compat) as lg:
        click.echo(lg.key.hex())


@log.command("append")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("values", nargs=-1)
@click.option("--stdin", "from_stdin", is_flag=True, help="Read one block per line from stdin.")
def append(path: Path, values: tuple[str, ...], from_stdin: bool) -> None:
    """Append each VALUE (UTF-8) as one block, all in one signed batch; print the new length."""
    blocks = [v.encode("utf-8") for v in values]
    if from_stdin:
        blocks += [line.rstrip(b"\r\n") for line in sys.stdin.buffer]
    if not blocks:
        raise click.UsageError("nothing to append: give VALUEs or --stdin")
    with _open(path) as lg:
        if not lg.writable:
            raise click.ClickException(f"{path} is a read-only replica")
        try:
            click.echo(lg.append(blocks))
        except CairnError as exc:
            raise click.ClickException(str(exc)) from None


@log.command("info")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(path: Path, as_json: bool) -> None:
    """Print the log's key, discovery key, length, fork, tree hash and signature."""
    with _open(path) as lg:
        out = {
            "key": lg.key.hex(),
            "discovery_key": lg.discovery_key.hex(),
            "public_key": lg.public_key.hex() if lg.public_key else None,
            "length": lg.length,
            "contiguous_length": lg.contiguous_length,
            "byte_length": lg.byte_length,
            "fork": lg.fork,
            "tree_hash": lg.tree_hash().hex(),
            "signature": lg.signature.hex() if lg.signature else None,
            "compat": lg.compat,
            "writable": lg.writable,
            "frozen": lg.frozen,
        }
    if as_json:
        click.echo(json.dumps(out))
    else:
        width = max(len(k) for k in out)
        for k, v in out.items():
            click.echo(f"{k:<{width}}  {v}")


@log.command("get")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("index", type=click.IntRange(min=0))
def get(path: Path, index: int) -> None:
    """Write the bytes of block INDEX to stdout."""
    with _open(path) as lg:
        try:
            data = lg.get(index)
        except CairnError as exc:
            raise click.ClickException(str(exc)) from None
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


@log.command("verify")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
def verify_cmd(path: Path) -> None:
    """Re-verify every held block and tree node against the signed head."""
    with _open(path) as lg:
        try:
            report = lg.verify_all()
        except CairnError as exc:
            raise click.ClickException(f"verification failed: {exc}") from None
    click.echo(
        f"ok: {report.blocks} blocks and {report.nodes} tree nodes verify "
        f"up to length {report.length}"
    )


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def _when(value: str | None, name: str) -> float | None:
    """Seconds since the epoch, from a number or an ISO 8601 time (UTC when no zone is given)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        pass
    from datetime import UTC, datetime

    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{name} must be seconds since 1970 or an ISO 8601 time, "
                                 f"got {value!r}") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def _noise_key_pair(seed: str | None) -> KeyPair:
    from cairn.crypto import random_key_pair

    return key_pair(parse_seed(seed, "noise seed")) if seed else random_key_pair()


@log.command("serve")
@click.argument("paths", nargs=-1, required=True,
                type=click.Path(dir_okay=False, exists=True, path_type=Path))
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=0, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free port).")
@click.option("--allow", "allow", multiple=True,
              help="Noise public key (hex) allowed to replicate; repeat. Default: anyone who "
                   "knows a log's key.")
@click.option("--noise-seed", help="32-byte seed of this server's Noise key (random if omitted).")
def serve_cmd(paths: tuple[Path, ...], host: str, port: int, allow: tuple[str, ...],
              noise_seed: str | None) -> None:
    """Serve the logs at PATHS over TCP (hypercore/alpha on Noise secret-stream) until stopped."""
    import asyncio
    import signal

    from cairn.replication.net import serve

    allowed = []
    for a in allow:
        try:
            k = bytes.fromhex(a)
        except ValueError:
            raise click.BadParameter(f"--allow must be hex, got {a!r}") from None
        if len(k) != 32:
            raise click.BadParameter(f"--allow keys are 32 bytes, got {len(k)}")
        allowed.append(k)
    kp = _noise_key_pair(noise_seed)
    logs = [_open(p) for p in paths]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)

        def ready(addr: tuple[str, int]) -> None:
            click.echo(f"serving {len(logs)} log(s) on {addr[0]}:{addr[1]}")
            click.echo(f"noise public key: {kp.public_key.hex()}")
            for lg in logs:
                click.echo(f"  {lg.key.hex()}  length {lg.length}  {lg.path}")
            sys.stdout.flush()

        with contextlib.suppress(asyncio.CancelledError):  # stopped by a signal
            await serve(logs, kp, host, port, allow=allowed or None, ready=ready)

    try:
        asyncio.run(main())
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from None
    finally:
        for lg in logs:
            lg.close()


@log.command("download")
@click.option("--from", "source", required=True, help="Server address, HOST:PORT.")
@click.option("--key", required=True, help="The log's key (64 hex digits).")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--start", type=click.IntRange(min=0), help="First block (default 0).")
@click.option("--end", type=click.IntRange(min=0), help="Block after the last (default: all).")
@click.option("--since", help="Frames from this time (seconds since 1970 or ISO 8601).")
@click.option("--until", "until_", help="Frames before this time.")
@click.option("--tail", is_flag=True, help="Keep following new blocks until interrupted.")
@click.option("--timeout", default=30.0, show_default=True, type=click.FloatRange(min=0.1),
              help="Seconds without progress before giving up.")
def download_cmd(source: str, key: str, path: Path, start: int | None, end: int | None,
                 since: str | None, until_: str | None, tail: bool, timeout: float) -> None:
    """Download a log (or part of it) into a sparse replica at PATH, verifying every block."""
    import asyncio

    from cairn.replication.net import download

    host, port = _host_port(source)
    try:
        log_key = bytes.fromhex(key)
    except ValueError:
        raise click.BadParameter(f"--key must be hex, got {key!r}") from None
    if len(log_key) != 32:
        raise click.BadParameter(f"--key is 32 bytes (64 hex digits), got {len(log_key)} bytes")
    t_since, t_until = _when(since, "--since"), _when(until_, "--until")
    if (t_since is not None or t_until is not None) and (start is not None or end is not None):
        raise click.UsageError("give either --start/--end or --since/--until, not both")
    if start is not None and end is not None and end < start:
        raise click.UsageError(f"--end {end} is before --start {start}")
    created = not path.exists()
    replica = Log.open(path) if not created else Log.replica(path, log_key)
    if replica.key != log_key:
        replica.close()
        raise click.ClickException(f"{path} holds another log ({replica.key.hex()})")
    bar_state = {"shown": 0}
    bar = click.progressbar(length=0, label="blocks", file=sys.stderr, show_pos=True)

    def progress(lg: Log) -> None:
        held = lg.contiguous_length if end is None and start is None else 0
        if held > bar_state["shown"]:
            bar.length = max(bar.length or 0, lg.length)
            bar.update(held - bar_state["shown"])
            bar_state["shown"] = held

    async def main() -> None:
        await download(host, port, replica, _noise_key_pair(None), start=start or 0, end=end,
                       tail=tail, since=t_since, until_time=t_until, idle_timeout=timeout,
                       on_progress=progress)

    try:
        with bar:
            asyncio.run(main())
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    except (CairnError, ConnectionError, OSError, TimeoutError) as exc:
        raise click.ClickException(f"download failed: {type(exc).__name__}: {exc}") from None
    finally:
        length, held = replica.length, sum(1 for _ in replica.iter_blocks())
        replica.close()
        if created and length == 0:  # nothing came: leave no empty replica behind
            for suffix in ("", "-wal", "-shm"):
                Path(f"{path}{suffix}").unlink(missing_ok=True)
    click.echo(f"ok: {held} blocks held of {length}")

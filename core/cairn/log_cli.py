"""``cairn log``: create, append to, inspect and verify logs on disk."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from cairn.crypto import key_pair
from cairn.errors import CairnError
from cairn.keys_cli import parse_seed
from cairn.log import Log

__all__ = ["log"]


def _open(path: Path) -> Log:
    try:
        return Log.open(path)
    except FileNotFoundError:
        raise click.ClickException(f"no log at {path}") from None
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

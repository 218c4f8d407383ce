"""``cairn keys``: make and inspect Ed25519 key pairs."""

from __future__ import annotations

import json

import click

from cairn.crypto import derive_stream_key_pair, key_pair, random_key_pair

__all__ = ["keys"]


def parse_seed(value: str, what: str = "seed") -> bytes:
    try:
        seed = bytes.fromhex(value)
    except ValueError:
        raise click.BadParameter(f"{what} must be hex, got {value!r}") from None
    if len(seed) != 32:
        raise click.BadParameter(f"{what} must be 32 bytes (64 hex digits), got {len(seed)} bytes")
    return seed


@click.group()
def keys() -> None:
    """Make and inspect Ed25519 key pairs."""


@keys.command("new")
@click.option("--seed", help="32-byte seed as 64 hex digits; random when omitted.")
@click.option("--stream", help="Derive the key pair of this named stream from the seed.")
def new(seed: str | None, stream: str | None) -> None:
    """Print a key pair as JSON: public_key, secret_key, seed (hex)."""
    if stream is not None:
        if seed is None:
            raise click.UsageError("--stream needs --seed (the device's primary seed)")
        kp = derive_stream_key_pair(parse_seed(seed), stream)
    else:
        kp = key_pair(parse_seed(seed)) if seed is not None else random_key_pair()
    assert kp.secret_key is not None
    out = {
        "public_key": kp.public_key.hex(),
        "secret_key": kp.secret_key.hex(),
        "seed": kp.seed.hex(),
    }
    if stream is not None:
        out["stream"] = stream
    click.echo(json.dumps(out))

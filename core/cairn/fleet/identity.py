"""The device's primary seed: one 32-byte secret from which every key of the edge follows.

The seed file holds 64 hex digits and a newline, mode 0600. Stream key pairs are derived
corestore-style from the seed and the stream's name (:func:`cairn.crypto.derive_stream_key_pair`);
the Noise key pair the edge serves replication with, the device's record key and a gateway's
watermark key are derived from the seed too, under names no stream can have (``#noise``,
``#record``, ``#watermark`` are not SenML names), so a device backs up one file.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from cairn.crypto import KeyPair, derive_stream_key_pair
from cairn.errors import UsageError
from cairn.logs import add_secret

__all__ = ["NOISE_NAME", "RECORD_NAME", "WATERMARK_NAME", "SeedError", "init_directory",
           "load_seed", "new_seed", "noise_key_pair", "read_secret", "record_key_pair",
           "watermark_key_pair", "write_secret"]

# Key derivation names: none can be a stream's name (a SenML name never starts with "#").
NOISE_NAME = "#noise"  # an edge's or a gateway's Noise static key (replication)
RECORD_NAME = "#record"  # a device's DHT record key: its identity in the fleet
WATERMARK_NAME = "#watermark"  # a gateway's watermark record key


class SeedError(UsageError, ValueError):
    """The seed file is missing, unreadable, malformed or readable by others."""


def write_secret(path: str | Path, text: str, error: type[Exception], what: str) -> None:
    """Write one line of secret ``text`` to ``path``, which must not exist, mode 0600, synced.
    ``error`` (naming ``what``) when it exists or cannot be made."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise error(f"{p} already exists: refusing to overwrite a {what}") from None
    except OSError as exc:
        raise error(f"cannot create {p}: {exc}") from None
    with os.fdopen(fd, "w") as f:
        f.write(text + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_secret(path: str | Path, error: type[Exception], what: str, missing: str) -> str:
    """The one line of a secret file, stripped; ``error`` when it is missing (``missing`` says
    how to make one), unreadable, or readable by group or others."""
    p = Path(path)
    try:
        st = p.stat()
        text = p.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise error(f"no {what} at {p}: {missing}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"cannot read the {what} {p}: {exc}") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise error(f"{p} is readable by others (mode {stat.S_IMODE(st.st_mode):o}): "
                    f"chmod 600 {p}")
    add_secret(text)  # never in a log line (cairn.logs)
    return text


def new_seed(path: str | Path) -> bytes:
    """Write a fresh random seed to ``path`` (which must not exist), mode 0600."""
    seed = os.urandom(32)
    write_secret(path, seed.hex(), SeedError, "device seed")
    return seed


def init_directory(directory: Path, config_name: str, seed_name: str, template: str) -> bytes:
    """A new service directory: a fresh seed (0600) and the commented config. Refuses to
    overwrite either (:class:`SeedError`). Returns the seed."""
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / config_name
    if config.exists():
        raise SeedError(f"{config} already exists")
    seed = new_seed(directory / seed_name)
    config.write_text(template)
    return seed


def load_seed(path: str | Path) -> bytes:
    text = read_secret(path, SeedError, "seed", "make one with `cairn edge init`")
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise SeedError(f"{Path(path)} does not hold a seed (64 hex digits)")
    return seed


def noise_key_pair(seed: bytes) -> KeyPair:
    """The edge's Noise static key pair (what gateways see and what they allow)."""
    return derive_stream_key_pair(seed, NOISE_NAME)


def record_key_pair(seed: bytes) -> KeyPair:
    """The key pair the device's DHT record is signed with: its identity in the fleet (what a
    gateway enrolls)."""
    return derive_stream_key_pair(seed, RECORD_NAME)


def watermark_key_pair(seed: bytes) -> KeyPair:
    """The key pair a gateway's watermark record is signed with."""
    return derive_stream_key_pair(seed, WATERMARK_NAME)

"""Seeded randomness for tests and simulations: reproducible, and never for keys or nonces."""

from __future__ import annotations

import hashlib
import random

__all__ = ["SeededRandom"]


class SeededRandom(random.Random):
    """A `random.Random` that remembers its seed and derives independent children from it.

    Protocol cores take an `rng` argument instead of reading a random source of their own; a test
    gives each core `SeededRandom(seed).fork(name)`, so a failing run replays from one number.
    `randbytes(n)` gives `n` reproducible bytes (ids, tokens and padding in tests).
    This is not a cryptographic generator: keys and nonces come from libsodium.
    """

    def __init__(self, seed: int | str | bytes = 0) -> None:
        super().__init__(seed)
        self.initial_seed = seed

    def __repr__(self) -> str:
        return f"SeededRandom({self.initial_seed!r})"

    def randbytes(self, n: int) -> bytes:
        """`n` bytes drawn from this generator."""
        if n < 0:
            raise ValueError(f"cannot draw a negative number of bytes ({n})")
        return super().randbytes(n)

    def fork(self, label: str) -> SeededRandom:
        """A generator seeded from this one's seed and `label`, independent of draws made so far."""
        material = f"{type(self.initial_seed).__name__}:{self.initial_seed!r}/{label}".encode()
        digest = hashlib.blake2b(material, digest_size=16, person=b"cairn.testing").digest()
        return SeededRandom(int.from_bytes(digest, "big"))

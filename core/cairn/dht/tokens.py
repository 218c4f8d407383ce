"""Write tokens: what a DHT node gives a host so that host's next write proves its address.

A node answers a request with a token bound to the sender's host (a keyed BLAKE2b of the host
under a secret); a write (a put, an announce, a commit) must bring one back, so a forged source
address cannot write. As dht-rpc's, two secrets are kept and rotated every
:data:`TOKEN_ROTATE` seconds, so a token is accepted for 7.5 to 15 s. Time and randomness come
in as arguments: :class:`TokenSecrets` is driven by its node's ``handle_timer``.
"""

from __future__ import annotations

import hashlib
import random

__all__ = ["TOKEN_ROTATE", "TokenSecrets"]

TOKEN_ROTATE = 7.5  # tokens live 7.5-15 s, as dht-rpc's


class TokenSecrets:
    """The two secrets tokens are made with, and when they next rotate."""

    __slots__ = ("_secrets", "next_rotation")

    def __init__(self, rng: random.Random, now: float) -> None:
        self._secrets = [rng.randbytes(32), rng.randbytes(32)]
        self.next_rotation = now + TOKEN_ROTATE

    def token(self, host: str, i: int = 1) -> bytes:
        """The token for ``host``: ``i`` = 1 the current secret's, 0 the previous one's."""
        return hashlib.blake2b(host.encode(), key=self._secrets[i], digest_size=32).digest()

    def valid(self, host: str, token: bytes) -> bool:
        """``token`` is one this node gave ``host`` in the last one or two rotations."""
        return token in (self.token(host, 1), self.token(host, 0))

    def rotate_if_due(self, now: float) -> None:
        if now >= self.next_rotation:
            self.next_rotation = now + TOKEN_ROTATE
            self._secrets = [self._secrets[1], hashlib.blake2b(self._secrets[0],
                                                               digest_size=32).digest()]

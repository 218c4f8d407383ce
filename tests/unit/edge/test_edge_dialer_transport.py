"""The dialer's choice of transport (no sockets: fake openers): by key first, TCP when that
fails (saying why), by key again only after ``key_retry``; "key" and "tcp" choose one."""

from __future__ import annotations

import asyncio
import random
from typing import Any

from cairn.crypto import key_pair
from cairn.hyperdht import PeerNotFoundError
from cairn_edge.dialer import Dialer

GW = key_pair(b"g" * 32).public_key


class FakeConn:
    def __init__(self, peer: tuple[str, int]) -> None:
        self.writer = self
        self.peer = peer

    def get_extra_info(self, name: str, default: object = None) -> object:
        return self.peer if name == "peername" else default


def dialer(transport: str, by_key_fails: bool) -> tuple[Dialer, list[str]]:
    calls: list[str] = []

    async def by_key(key: bytes, kp: Any) -> Any:
        calls.append("key")
        if by_key_fails:
            raise PeerNotFoundError("no DHT node holds an announce")
        return FakeConn(("10.0.0.1", 5000))

    async def tcp(address: tuple[str, int], key: bytes, kp: Any) -> Any:
        calls.append("tcp")
        return FakeConn(address)

    d = Dialer(key_pair(b"e" * 32), [GW], [], dial=[("10.0.0.1", 7420)], opener=tcp,
               by_key=by_key, transport=transport, rng=random.Random(1))
    return d, calls


def test_auto_tries_by_key_then_tcp_and_says_why() -> None:
    d, calls = dialer("auto", by_key_fails=True)
    link = d.links[GW]
    assert asyncio.run(d._open(link)) is not None
    assert calls == ["key", "tcp"] and link.transport == "tcp"
    assert link.by_key_error is not None and "PeerNotFoundError" in link.by_key_error
    assert link.as_dict()["by_key_error"] == link.by_key_error
    asyncio.run(d._open(link))  # within key_retry: straight to TCP
    assert calls == ["key", "tcp", "tcp"]
    d.key_retry = 0.0
    asyncio.run(d._open(link))
    assert calls == ["key", "tcp", "tcp", "key", "tcp"]


def test_auto_by_key_success_uses_udx() -> None:
    d, calls = dialer("auto", by_key_fails=False)
    link = d.links[GW]
    assert asyncio.run(d._open(link)) is not None
    assert calls == ["key"] and link.transport == "udx" and link.address == ("10.0.0.1", 5000)
    assert link.by_key_error is None and link.as_dict()["transport"] == "udx"


def test_key_only_never_dials_tcp_and_tcp_only_never_by_key() -> None:
    d, calls = dialer("key", by_key_fails=True)
    link = d.links[GW]
    assert asyncio.run(d._open(link)) is None
    assert calls == ["key"] and link.error is not None and "connect by key" in link.error
    d, calls = dialer("tcp", by_key_fails=False)
    assert asyncio.run(d._open(d.links[GW])) is not None
    assert calls == ["tcp"] and d.links[GW].transport == "tcp"

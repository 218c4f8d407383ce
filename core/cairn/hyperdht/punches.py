"""A hyperdht server's punches in flight (one :class:`~cairn.hyperdht.puncher.ServerPuncher`
per handshake that needs one), bounded: at most :data:`MAX_PUNCHES` at once (the oldest gives
way), each given up (its socket closed) about :data:`~cairn.hyperdht.holepunch.SERVER_GIVE_UP`
seconds after its handshake unless its client got through. A punch whose client got through
is handed to the caller of :meth:`Punches.stream`, who owns its socket from then on
(``writer.stream.socket``: close it with the connection)."""

from __future__ import annotations

import asyncio
import random
from collections import OrderedDict
from collections.abc import Callable, Sequence

from cairn.dht.aio import UDPNode
from cairn.dht.messages import Address
from cairn.hyperdht.events import Established
from cairn.hyperdht.holepunch import SERVER_GIVE_UP, HolepunchAbortedError
from cairn.hyperdht.messages import Holepunch
from cairn.hyperdht.puncher import ServerPuncher
from cairn.replication.noise import RandomSource
from cairn.udx.aio import UDXReader, UDXWriter

__all__ = ["MAX_PUNCHES", "Punches"]

MAX_PUNCHES = 64


class Punches:
    def __init__(self, node: UDPNode, relays: Callable[[], Sequence[Address]], *,
                 rng: RandomSource | None = None, max_punches: int = MAX_PUNCHES,
                 give_up: float = SERVER_GIVE_UP + 1.0) -> None:
        self.node = node
        self.relays = relays
        self._rng = rng or random.SystemRandom()
        self.max_punches = max_punches
        self.give_up = give_up
        self._by_id: OrderedDict[int, ServerPuncher] = OrderedDict()
        self._by_reply: dict[bytes, ServerPuncher] = {}
        self.stats = {"started": 0, "evicted": 0, "expired": 0}
        self._timers: dict[ServerPuncher, asyncio.TimerHandle] = {}

    def _sweep(self) -> None:
        now = self.node.now()
        for pid, p in list(self._by_id.items()):
            if p.expired(now) and not p.connected.done():
                self._remove(pid)
                self.stats["expired"] += 1

    def _remove(self, pid: int) -> None:
        p = self._by_id.pop(pid, None)
        if p is None:
            return
        timer = self._timers.pop(p, None)
        if timer is not None:
            timer.cancel()
        self._by_reply = {r: q for r, q in self._by_reply.items() if q is not p}
        if not p.connected.done():
            p.connected.set_exception(HolepunchAbortedError(
                "holepunch given up: the client did not get through in time"))
            p.connected.exception()
        p.close()

    def start(self, established: Established, reply: bytes) -> None:
        assert established.holepunch_id is not None
        self._sweep()
        self._remove(established.holepunch_id)
        while len(self._by_id) >= self.max_punches:
            self._remove(next(iter(self._by_id)))
            self.stats["evicted"] += 1
        p = ServerPuncher(self.node, established, self._rng, self.relays)
        self._by_id[established.holepunch_id] = p
        self._by_reply[reply] = p
        self.stats["started"] += 1
        # a punch nobody completes closes its socket on its own, not at the next start()
        self._timers[p] = asyncio.get_running_loop().call_later(
            self.give_up, self._give_up, established.holepunch_id, p)

    def _give_up(self, pid: int, p: ServerPuncher) -> None:
        self._timers.pop(p, None)
        if self._by_id.get(pid) is p and not p.connected.done():
            self._remove(pid)
            self.stats["expired"] += 1

    def answer_from_puncher(self, reply: bytes, tid: int, relay: Address, target: bytes,
                            value: bytes) -> bool:
        p = self._by_reply.get(reply)
        if p is None or p.closed:
            return False
        p.send_handshake_answer(tid, relay, target, value)
        return True

    def take_holepunch(self, tid: int, relay: Address, target: bytes, hp: Holepunch,
                       now: float) -> bool:
        p = self._by_id.get(hp.id)
        if p is None or p.closed:
            return False
        p.take_relayed(tid, relay, target, hp)
        return True

    async def stream(self, established: Established, timeout: float,  # noqa: ASYNC109
                     ) -> tuple[UDXReader, UDXWriter]:
        pid = established.holepunch_id
        p = self._by_id.get(pid) if pid is not None else None
        if p is None or p.established is not established:
            raise HolepunchAbortedError("no holepunch runs for this connection")
        try:
            pair = await p.stream(timeout)
        except TimeoutError:
            raise HolepunchAbortedError(
                f"holepunch failed: the client's first packet did not come within "
                f"{timeout:g} s") from None
        # the connection owns the puncher socket from now on (writer.stream.socket)
        timer = self._timers.pop(p, None)
        if timer is not None:
            timer.cancel()
        self._by_id.pop(p.id, None)
        self._by_reply = {r: q for r, q in self._by_reply.items() if q is not p}
        return pair

    def close(self) -> None:
        for pid in list(self._by_id):
            self._remove(pid)

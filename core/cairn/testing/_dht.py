"""A whole DHT in one process: many sans-I/O nodes on a :class:`FakeNetwork`, on fake time."""

from __future__ import annotations

import heapq
from collections.abc import Callable

from cairn.dht.events import Event, QueryDone
from cairn.dht.hyper import HyperHandler
from cairn.dht.node import CLIENT, SERVER, DHTNode
from cairn.testing._network import Address, FakeNetwork
from cairn.testing._random import SeededRandom

__all__ = ["DHTSwarm", "SwarmNode"]


class SwarmNode:
    """One node of a swarm: the core, its handler, its two addresses and the events it gave."""

    def __init__(self, index: int, node: DHTNode, handler: HyperHandler, server: Address,
                 client: Address) -> None:
        self.index = index
        self.node = node
        self.handler = handler
        self.server = server
        self.client = client
        self.events: list[Event] = []
        self.alive = True

    def done(self, qid: int) -> QueryDone | None:
        for e in self.events:
            if isinstance(e, QueryDone) and e.query == qid:
                return e
        return None


class DHTSwarm:
    """``n`` nodes at 127.1.x.y addresses (fake: nothing leaves the process), seeded.

    The first node is the bootstrap node; every node is persistent unless ``persistent`` says
    otherwise. :meth:`run_until` moves fake time forward, delivering datagrams and firing
    timers, until a condition holds.
    """

    def __init__(self, n: int, *, seed: int = 1, loss: float = 0.0, min_delay: float = 0.0005,
                 max_delay: float = 0.002, persistent: bool = True) -> None:
        self.rng = SeededRandom(seed)
        self.net = FakeNetwork(self.rng.fork("net"), loss=loss, min_delay=min_delay,
                               max_delay=max_delay)
        self.now = 0.0
        self.nodes: list[SwarmNode] = []
        self._by_addr: dict[Address, tuple[SwarmNode, int]] = {}
        self._timers: list[tuple[float, int]] = []
        self._persistent = persistent
        for _ in range(n):
            self.add_node()

    def _address(self, i: int) -> tuple[Address, Address]:
        host = f"127.1.{i // 250}.{i % 250 + 1}"
        return (host, 20000), (host, 30000)

    def add_node(self, *, persistent: bool | None = None, adaptive: bool = False) -> SwarmNode:
        """A new node (not bootstrapped yet). ``adaptive``: ephemeral until its reachability
        check passes; otherwise ``persistent`` (the swarm's default when None)."""
        i = len(self.nodes)
        server, client = self._address(i)
        bootstrap = [self.nodes[0].server] if self.nodes else []
        holder: list[DHTNode] = []
        handler = HyperHandler(lambda: holder[0])
        node = DHTNode(
            rng=self.rng.fork(f"node{i}"), now=self.now, address=server, bootstrap=bootstrap,
            persistent=None if adaptive else (
                self._persistent if persistent is None else persistent),
            handler=handler,
        )
        holder.append(node)
        sn = SwarmNode(i, node, handler, server, client)
        self.nodes.append(sn)
        self.net.register(server)
        self.net.register(client)
        self._by_addr[server] = (sn, SERVER)
        self._by_addr[client] = (sn, CLIENT)
        self._schedule(i)
        return sn

    def kill(self, sn: SwarmNode) -> None:
        """The node stops without a word: its addresses go dark."""
        if not sn.alive:
            return
        sn.alive = False
        self.net.unregister(sn.server)
        self.net.unregister(sn.client)

    def _schedule(self, i: int) -> None:
        t = self.nodes[i].node.get_timer()
        if t is not None:
            heapq.heappush(self._timers, (t, i))

    def _flush(self, i: int) -> None:
        sn = self.nodes[i]
        for data, dst, socket in sn.node.datagrams_to_send():
            src = sn.server if socket == SERVER else sn.client
            if sn.alive:
                self.net.send(src, dst, data, self.now)
        while (e := sn.node.next_event()) is not None:
            sn.events.append(e)
        self._schedule(i)

    def touch(self, sn: SwarmNode) -> None:
        """Collect what a node has to send after it was called from outside."""
        self._flush(sn.index)

    def bootstrap_all(self, spacing: float = 0.001) -> None:
        """Every node but the first bootstraps, one after another, then the network settles."""
        for sn in self.nodes[1:]:
            sn.node.bootstrap(self.now)
            self.touch(sn)
            self.run_for(spacing)
        self.run_for(1.0)

    def step(self, until: float) -> bool:
        """Process the next thing that happens before ``until``; False when nothing does."""
        arrival = self.net.next_arrival()
        while self._timers and (not self.nodes[self._timers[0][1]].alive):
            heapq.heappop(self._timers)
        timer = self._timers[0][0] if self._timers else None
        nxt = min(t for t in (arrival, timer, until) if t is not None)
        if nxt >= until and (arrival is None or arrival > until) and (timer is None or
                                                                      timer > until):
            self.now = until
            return False
        self.now = max(self.now, nxt)
        touched: set[int] = set()
        for dg in self.net.deliver_due(self.now):
            target = self._by_addr.get(dg.dst)
            if target is None or not target[0].alive:
                continue
            sn, socket = target
            sn.node.receive_datagram(dg.data, dg.src, self.now, socket)
            touched.add(sn.index)
        while self._timers and self._timers[0][0] <= self.now:
            _, i = heapq.heappop(self._timers)
            sn = self.nodes[i]
            if not sn.alive:
                continue
            t = sn.node.get_timer()
            if t is not None and t <= self.now:
                sn.node.handle_timer(self.now)
            touched.add(i)
        for i in touched:
            self._flush(i)
        return True

    def run_for(self, seconds: float) -> None:
        until = self.now + seconds
        while self.step(until):
            pass

    def run_until(self, done: Callable[[], bool], timeout: float = 60.0) -> bool:
        until = self.now + timeout
        while not done():
            if not self.step(until):
                return done()
        return True

    def run_query(self, sn: SwarmNode, qid: int, timeout: float = 60.0) -> QueryDone:
        self.touch(sn)
        self.run_until(lambda: sn.done(qid) is not None, timeout)
        done = sn.done(qid)
        if done is None:
            raise TimeoutError(f"query {qid} did not finish in {timeout} s of fake time")
        return done


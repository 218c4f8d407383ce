"""The iterative query of a DHT node, apart from the node (as dht-rpc keeps ``lib/query.js``).

A :class:`Query` walks towards a 32-byte target: it asks the closest nodes it knows (at most
``concurrency`` at a time, a slow one not counted), adds the closer nodes each reply names,
keeps the k closest repliers (at most :data:`~cairn.dht.routing.PER_HOST` of one host) and,
once no closer node is left to ask, either ends or *commits*: sends a value with each closest
replier's token. It holds no socket and no clock either: it sends through its node
(:class:`QueryHost`, which :class:`~cairn.dht.node.DHTNode` is) and its end is the node's
:class:`~cairn.dht.events.QueryDone` event.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from typing import Protocol

from cairn.dht.events import Event, QueryReply, Reply
from cairn.dht.messages import Address, node_id_int
from cairn.dht.routing import PER_HOST, RoutingTable, capped_host

__all__ = ["Candidate", "Query", "QueryHost"]


class QueryHost(Protocol):
    """What a query needs of its node: the node's own members, named as the node names them."""

    address: Address | None
    table: RoutingTable
    _now: float
    _events: deque[Event]

    def _is_dead(self, addr: Address) -> bool:
        """``addr`` timed out moments ago (in any query or request)."""

    def _down_hint(self, to: Address, down: Address) -> None:
        """Tell ``to``, which named ``down`` to us, that ``down`` did not answer."""

    def _send_request(self, to: Address, command: int, internal: bool, target: bytes | None,
                      value: bytes | None, token: bytes | None, now: float,
                      on_done: Callable[[Reply | None, str | None], None],
                      on_slow: Callable[[], None] | None, retries: int,
                      pad_to: int = 0) -> None:
        """Send one request; ``on_done`` gets the reply or an error, ``on_slow`` a hint."""

    def _query_done(self, q: Query, commits: int, error: str | None) -> None:
        """The query ended: emit its :class:`~cairn.dht.events.QueryDone`."""


class Candidate:
    """A node the query knows of: how far it got with it, and who told it of the node."""

    __slots__ = ("addr", "referrers", "state")

    def __init__(self, addr: Address) -> None:
        self.addr = addr
        self.state = 0  # 0 new, 1 in flight, 2 slow, 3 done, 4 down
        self.referrers: list[Address] = []


class Query:
    """One iterative query (dht-rpc lib/query.js, with candidates kept sorted by distance)."""

    def __init__(self, node: QueryHost, qid: int, target: bytes, command: int, internal: bool,
                 value: bytes | None, commit: Callable[[Reply], bytes | None] | None,
                 on_reply: Callable[[Reply], bool] | None, emit: bool, concurrency: int,
                 retries: int, pad_to: int, commit_command: int) -> None:
        self.node = node
        self.id = qid
        self.target = target
        self.t = int.from_bytes(target, "big")
        self.command = command
        self.internal = internal
        self.value = value
        self.commit = commit
        self.on_reply = on_reply
        self.emit = emit
        self.concurrency = concurrency
        self.retries = retries
        self.pad_to = pad_to
        self.commit_command = commit_command
        self.candidates: dict[Address, Candidate] = {}
        self.order: list[tuple[int, int, Address]] = []  # heap of new candidates
        self.seq = 0
        self.closest: list[tuple[int, Reply]] = []  # sorted, at most k
        self.active = 0
        self.slow = 0
        self.finished = False
        self.committing = False
        self.pending_commits = 0
        self.commits_ok = 0
        self.commit_errors: list[int] = []

    def add(self, addr: Address, referrer: Address | None) -> bool:
        c = self.candidates.get(addr)
        dist = node_id_int(addr) ^ self.t
        if c is None and self.node._is_dead(addr):
            # it timed out moments ago in another query: do not wait on it again
            c = self.candidates[addr] = Candidate(addr)
            c.state = 4
            if referrer is not None:
                self.node._down_hint(referrer, addr)
            return self.is_closer(dist)
        if c is not None:
            if referrer is not None:
                if c.state == 4:
                    self.node._down_hint(referrer, addr)
                else:
                    c.referrers.append(referrer)
            return True
        if not self.is_closer(dist):
            return False
        c = self.candidates[addr] = Candidate(addr)
        if referrer is not None:
            c.referrers.append(referrer)
        self.seq += 1
        heapq.heappush(self.order, (dist, self.seq, addr))
        return True

    def is_closer(self, dist: int) -> bool:
        k = self.node.table.k
        return len(self.closest) < k or dist < self.closest[-1][0]

    def pump(self, now: float) -> None:
        if self.finished or self.committing:
            return
        limit = self.concurrency
        while self.active < limit and self.order:
            dist, _, addr = heapq.heappop(self.order)
            c = self.candidates[addr]
            if c.state != 0:
                continue
            if not self.is_closer(dist):
                self.order.clear()
                break
            self.visit(c, now)
        if self.order:
            return
        if self.active == 0 and (self.slow == 0 or len(self.closest) >= self.node.table.k):
            self.flush(now)

    def visit(self, c: Candidate, now: float) -> None:
        c.state = 1
        self.active += 1

        def done(reply: Reply | None, error: str | None) -> None:
            if c.state == 2:
                self.slow -= 1
            else:
                self.active -= 1
            if reply is None:
                c.state = 4
                if error == "timeout":
                    for ref in c.referrers:
                        self.node._down_hint(ref, c.addr)
            else:
                c.state = 3
                self.on_visit(reply)
            self.pump(self.node._now)

        def slow() -> None:
            if c.state == 1:
                c.state = 2
                self.active -= 1
                self.slow += 1
                self.pump(self.node._now)

        self.node._send_request(c.addr, self.command, self.internal, self.target, self.value,
                                None, now, done, slow, self.retries, self.pad_to)

    def on_visit(self, reply: Reply) -> None:
        if self.finished or self.committing:
            return
        if reply.error == 0 and reply.from_id is not None:
            dist = int.from_bytes(reply.from_id, "big") ^ self.t
            if self.is_closer(dist):
                self.push_closest(dist, reply)
        own = self.node.address
        for addr in reply.closer_nodes:
            if addr == own or addr[1] == 0:
                continue
            if not self.add(addr, reply.from_addr):
                break
        if reply.error != 0:
            return
        if self.emit:
            self.node._events.append(QueryReply(self.id, reply))
        if self.on_reply is not None and self.on_reply(reply):
            self.stop()

    def push_closest(self, dist: int, reply: Reply) -> None:
        """Keep the k closest repliers, at most PER_HOST of one host: a host that ground
        ports for ids next to the target holds two places, and the query goes on to honest
        nodes for the rest (the nodes it commits to and that bound its search)."""
        closest = self.closest
        if any(d == dist for d, _ in closest):
            return
        host = reply.from_addr[0]
        if capped_host(host):
            same = [i for i, (_, r) in enumerate(closest) if r.from_addr[0] == host]
            if len(same) >= PER_HOST:
                far = same[-1]
                if closest[far][0] <= dist:
                    return
                del closest[far]
        for i, (d, _) in enumerate(closest):
            if d > dist:
                closest.insert(i, (dist, reply))
                break
        else:
            closest.append((dist, reply))
        del closest[self.node.table.k :]

    def stop(self) -> None:
        """Finish now (an early answer was good enough); no commit."""
        if self.finished:
            return
        self.finished = True
        self.node._query_done(self, 0, None)

    def flush(self, now: float) -> None:
        if self.committing or self.finished:
            return
        if self.commit is None:
            self.finished = True
            self.node._query_done(self, 0, None)
            return
        self.committing = True
        for _, reply in self.closest:
            if reply.token is None:
                continue
            value = self.commit(reply)
            if value is None:
                continue
            self.pending_commits += 1
            self.node._send_request(reply.from_addr, self.commit_command, False, self.target,
                                    value, reply.token, now, self.commit_done, None, 3)
        if self.pending_commits == 0:
            self.finished = True
            self.node._query_done(self, 0, "too few nodes responded")

    def commit_done(self, reply: Reply | None, error: str | None) -> None:
        self.pending_commits -= 1
        if reply is not None and reply.error == 0:
            self.commits_ok += 1
        elif reply is not None:
            self.commit_errors.append(reply.error)
        if self.pending_commits == 0 and not self.finished:
            self.finished = True
            err = None if self.commits_ok else "no node accepted the commit"
            self.node._query_done(self, self.commits_ok, err)

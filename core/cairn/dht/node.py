"""A dht-rpc 6 node without I/O: datagrams and ``now`` in, datagrams, events and a timer out.

The verbs are aioquic's: :meth:`DHTNode.receive_datagram`, :meth:`DHTNode.datagrams_to_send`,
:meth:`DHTNode.get_timer`, :meth:`DHTNode.handle_timer`, :meth:`DHTNode.next_event`. Time and
randomness come in as arguments, so hundreds of nodes run in one process on a fake network.

Like dht-rpc, a node has two sockets: ``SERVER`` (the address other nodes know it by) and
``CLIENT`` (where an ephemeral node sends its requests from). A persistent node sends everything
from ``SERVER`` with its id; an ephemeral node sends no id and never enters routing tables.

This module is the node: datagrams in and out, requests answered (with the 3x amplification
bound), retries and timeouts, the routing table's upkeep, bootstrap and the reachability check.
Its parts live beside it: the iterative query in :mod:`cairn.dht.query` (as dht-rpc keeps
``lib/query.js``), a request in flight and the congestion window in :mod:`cairn.dht.requests`,
write tokens and their secrets in :mod:`cairn.dht.tokens`.
"""

from __future__ import annotations

import hashlib
import heapq
import random
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from cairn.dht.events import Bootstrapped, Event, QueryDone, Reply, RequestDone
from cairn.dht.messages import (
    Address,
    Command,
    ErrorCode,
    Request,
    Response,
    canonical,
    decode,
    encode_ipv4,
    encode_request,
    encode_response,
    encode_response_within,
    node_id,
    node_id_int,
)
from cairn.dht.query import Query
from cairn.dht.requests import CONGESTION_SLOT, DEFAULT_TIMEOUT, CongestionWindow, Outgoing
from cairn.dht.routing import K, NodeInfo, RoutingTable
from cairn.dht.tokens import TokenSecrets
from cairn.errors import DecodeError

__all__ = [
    "CLIENT",
    "SERVER",
    "Answer",
    "DHTNode",
    "IncomingRequest",
    "RequestHandler",
]

SERVER = 0
CLIENT = 1

TICK = 5.0  # seconds between maintenance ticks
CONCURRENCY = 10
UNKNOWN_SLOW = 0.1  # a request to a peer we have no RTT for is marked slow after this
MAX_DELAYED_PING = 10.0
DOWN_HINTS_PER_TICK = 50
AMPLIFICATION = 3  # never answer an unverified address with more than 3x the bytes it sent
_LRU = 4096
_RTT_PEERS = 256
_DEAD_PEERS = 1024
DEAD_FOR = 30.0  # a peer that timed out is skipped by queries for this long (unless it talks)


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    """A request for a non-internal command, handed to the :class:`RequestHandler`."""

    command: int
    target: bytes | None
    value: bytes | None
    token_ok: bool  # it carried a token this node issued to that host
    token: bytes | None  # that token (announces sign it)
    from_addr: Address
    from_id: bytes | None  # the sender's id when it matches its address
    tid: int = 0  # its transaction id (hyperdht relays a request under the same tid)
    socket: int = SERVER  # the socket it arrived on (a relayed answer leaves from it)


@dataclass(frozen=True, slots=True)
class Answer:
    value: bytes | None = None
    error: int = 0
    closer: bool = True  # add the closest nodes to the target
    token: bool = True  # add a fresh write token
    silent: bool = False  # send nothing back (as hyperdht does for malformed requests)


class RequestHandler(Protocol):
    def on_request(self, req: IncomingRequest, now: float) -> Answer | None:
        """Answer a request, or None for an unknown command."""


class DHTNode:
    """One node. ``persistent``: True = a routing node from the start (its address must be
    known); False = an ephemeral client; None = adaptive: ephemeral until a reachability check
    (PING_NAT) after bootstrap shows other nodes can reach its server socket."""

    def __init__(
        self,
        *,
        rng: random.Random,
        now: float,
        address: Address | None = None,
        bootstrap: Sequence[Address] = (),
        persistent: bool | None = False,
        handler: RequestHandler | None = None,
        k: int = K,
        concurrency: int = CONCURRENCY,
        server_port: int | None = None,
    ) -> None:
        if persistent and address is None:
            raise ValueError("a persistent node needs its public address")
        self._rng = rng
        self._now = now
        self.address = address
        self._server_port = server_port if server_port is not None else (
            address[1] if address is not None else None)
        self.bootstrap_nodes = [a for a in bootstrap if a != address]
        self.ephemeral = not persistent
        self.adaptive = persistent is None
        self.id = node_id(address) if address is not None and persistent else rng.randbytes(32)
        self.table = RoutingTable(self.id, k)
        self.handler = handler
        self.concurrency = concurrency
        self.bootstrapped = False
        self._tokens = TokenSecrets(rng, now)
        self._next_tick = now + TICK
        self._ticks = 0
        self._tid = rng.randrange(0x10000)
        self._inflight: dict[int, Outgoing] = {}
        self._timers: list[tuple[float, int, int]] = []  # (when, seq, tid), lazily deleted
        self._delayed: list[tuple[float, int, bytes, Address, int]] = []
        self._timer_seq = 0
        self._queued: deque[Outgoing] = deque()  # waiting for the congestion window
        self._congestion = CongestionWindow()
        self._outbox: list[tuple[bytes, Address, int]] = []
        self._events: deque[Event] = deque()
        self._queries: dict[int, Query] = {}
        self._next_query = 1
        self._verified: OrderedDict[str, None] = OrderedDict()
        self._rtt: dict[Address, float] = {}  # per peer, newest last, at most _RTT_PEERS
        self._srtt: float | None = None  # over every peer: the guess for one never measured
        self._repinging = 0
        self._checks = 0
        self._down_hints_sent = 0
        self._nat_sample: dict[Address, int] = {}
        self._dead: dict[Address, float] = {}  # peers that timed out lately, and when
        self._bootstrap_query: int | None = None
        self._nat_pings = 0
        self._reachable = False
        self.stats = {"rx": 0, "tx": 0, "bad": 0, "timeouts": 0, "queries": 0, "requests": 0}

    # -- the sans-I/O surface --------------------------------------------------------------

    def receive_datagram(self, data: bytes, addr: Address, now: float,
                         socket: int = SERVER) -> None:
        """Feed one datagram that arrived on ``socket`` from ``addr``. Never raises on bad input."""
        self._now = now
        self.stats["rx"] += 1
        if not 0 < addr[1] < 0x10000:
            self.stats["bad"] += 1
            return
        try:
            addr = canonical(addr)
        except ValueError:
            self.stats["bad"] += 1
            return
        try:
            msg = decode(data)
        except DecodeError:
            self.stats["bad"] += 1
            return
        if self._dead:
            self._dead.pop(addr, None)
        if isinstance(msg, Request):
            self._on_request(msg, addr, len(data), socket, now)
        else:
            self._on_response(msg, addr, socket, now)

    def datagrams_to_send(self) -> list[tuple[bytes, Address, int]]:
        """(data, destination, socket) for everything ready to go out."""
        out = self._outbox
        self._outbox = []
        self.stats["tx"] += len(out)
        return out

    def next_event(self) -> Event | None:
        return self._events.popleft() if self._events else None

    def get_timer(self) -> float | None:
        t = min(self._next_tick, self._tokens.next_rotation)
        while self._timers and self._timers[0][2] not in self._inflight:
            heapq.heappop(self._timers)
        if self._timers:
            t = min(t, self._timers[0][0])
        if self._delayed:
            t = min(t, self._delayed[0][0])
        if self._queued:
            t = min(t, (self._congestion.slot + 1) * CONGESTION_SLOT)
        return t

    def handle_timer(self, now: float) -> None:
        self._now = now
        self._congestion.advance(now)
        while self._queued and not self._congestion.full():
            self._transmit(self._queued.popleft(), now)
        while self._timers and self._timers[0][0] <= now:
            _, _, tid = heapq.heappop(self._timers)
            req = self._inflight.get(tid)
            if req is not None:
                self._on_timer(req, now)
        while self._delayed and self._delayed[0][0] <= now:
            _, _, data, to, socket = heapq.heappop(self._delayed)
            self._outbox.append((data, to, socket))
        self._tokens.rotate_if_due(now)
        if now >= self._next_tick:
            self._next_tick = now + TICK
            self._tick(now)

    # -- operations --------------------------------------------------------------------------

    def bootstrap(self, now: float) -> int:
        """Join the network: a query for our own id through the bootstrap nodes."""
        self._now = now
        # recorded before the query starts: with no one to ask it finishes inside find_node
        self._bootstrap_query = self._next_query
        qid = self.find_node(self.id, now)
        assert qid == self._bootstrap_query
        return qid

    def find_node(self, target: bytes, now: float) -> int:
        return self.query(target, Command.FIND_NODE, None, now, internal=True)

    def query(
        self,
        target: bytes,
        command: int,
        value: bytes | None,
        now: float,
        *,
        internal: bool = False,
        commit: Callable[[Reply], bytes | None] | None = None,
        on_reply: Callable[[Reply], bool] | None = None,
        emit_replies: bool = False,
        concurrency: int | None = None,
        retries: int = 2,
        pad_to: int = 0,
        commit_command: int | None = None,
    ) -> int:
        """Start an iterative query; its end is a :class:`QueryDone` event.

        ``on_reply`` sees every successful reply and returns True to stop the query there
        (without a commit); ``commit`` makes the value to send, with its token, to each of the
        closest repliers once the query converges (as ``commit_command``, by default the query's
        own command). ``pad_to`` pads each request datagram to that
        size, so nodes that do not know us yet may answer with up to 3x as many bytes.
        """
        self._now = now
        if len(target) != 32:
            raise ValueError("a query target is 32 bytes")
        qid = self._next_query
        self._next_query += 1
        q = Query(self, qid, target, command, internal, value, commit, on_reply, emit_replies,
                   concurrency or self.concurrency, retries, pad_to,
                   command if commit_command is None else commit_command)
        self._queries[qid] = q
        self.stats["queries"] += 1
        for n in self.table.closest(target):
            q.add(n.addr, None)
        if len(q.candidates) < self.table.k:
            for addr in self.bootstrap_nodes:
                q.add(addr, None)
        q.pump(now)
        return qid

    def cancel(self, qid: int) -> None:
        q = self._queries.pop(qid, None)
        if q is not None:
            q.finished = True

    def request(self, to: Address, command: int, now: float, *, internal: bool = False,
                target: bytes | None = None, value: bytes | None = None,
                token: bytes | None = None, retries: int = 3, blame: bool = True) -> int:
        """One request; its end is a :class:`RequestDone` event carrying the returned handle.
        ``blame=False``: a timeout does not mark ``to`` dead nor drop it from the table (a
        PEER_HANDSHAKE the relay forwards to a server whose firewall stays silent: the relay
        is fine, and may be the only node a client knows)."""
        self._now = now
        handle = self._next_query
        self._next_query += 1

        def done(reply: Reply | None, error: str | None) -> None:
            self._events.append(RequestDone(handle, reply, error))

        self._send_request(to, command, internal, target, value, token, now, done, None, retries,
                           blame=blame)
        return handle

    def ping(self, to: Address, now: float) -> int:
        return self.request(to, Command.PING, now, internal=True)

    def add_node(self, addr: Address, now: float) -> None:
        """Ping an address and add it to the routing table if it answers with a valid id."""
        self.request(addr, Command.PING, now, internal=True)

    def relay_request(self, tid: int, to: Address, command: int, target: bytes | None,
                      value: bytes | None, socket: int = SERVER) -> None:
        """Send a request under someone else's ``tid``, untracked (dht-rpc ``req.relay``):
        hyperdht forwards PEER_HANDSHAKE / PEER_HOLEPUNCH so; the answer goes to that peer."""
        nid = self.id if not self.ephemeral and socket == SERVER else None
        try:
            data = encode_request(Request(tid, to, command, False, nid, None, target, value))
        except ValueError:
            return
        self._outbox.append((data, to, socket))

    def reply_to(self, tid: int, to: Address, value: bytes | None,
                 socket: int = SERVER) -> None:
        """Send a response under ``tid`` to ``to`` (dht-rpc ``req.reply(v, {to})``), without
        token or closer nodes: the end of a relayed PEER_HANDSHAKE / PEER_HOLEPUNCH."""
        nid = self.id if not self.ephemeral and socket == SERVER else None
        try:
            data = encode_response(Response(tid, to, nid, None, (), 0, value))
        except ValueError:
            return
        self._outbox.append((data, to, socket))

    def token(self, host: str, i: int = 1) -> bytes:
        """The write token this node gives ``host`` now (``i`` = 0: the one before)."""
        return self._tokens.token(host, i)

    # -- internals: requests out -------------------------------------------------------------

    def _send_request(self, to: Address, command: int, internal: bool, target: bytes | None,
                      value: bytes | None, token: bytes | None, now: float,
                      on_done: Callable[[Reply | None, str | None], None],
                      on_slow: Callable[[], None] | None, retries: int,
                      pad_to: int = 0, blame: bool = True) -> None:
        tid = self._tid
        self._tid = (tid + 1) & 0xFFFF
        while tid in self._inflight:  # 65,536 requests in flight: reuse nothing still pending
            tid = self._tid
            self._tid = (tid + 1) & 0xFFFF
        socket = SERVER if not self.ephemeral else CLIENT
        msg = Request(tid, to, command, internal, None if self.ephemeral else self.id, token,
                      target, value)
        try:
            data = encode_request(msg)
        except ValueError:
            on_done(None, "bad address")
            return
        if len(data) < pad_to:
            data += bytes(pad_to - len(data))  # dht-rpc ignores bytes after the last field
        req = Outgoing(tid, to, data, socket, retries, on_done, on_slow)
        req.blame = blame
        req.started = now
        self.stats["requests"] += 1
        self._inflight[tid] = req
        self._congestion.advance(now)
        if self._congestion.full():
            self._queued.append(req)
        else:
            self._transmit(req, now)

    def _transmit(self, req: Outgoing, now: float) -> None:
        if req.tid not in self._inflight:
            return
        req.sent += 1
        self._congestion.send()
        self._outbox.append((req.data, req.to, req.socket))
        srtt = self._rtt.get(req.to, self._srtt)
        if srtt is not None and self._srtt is not None:
            # a peer's own estimate may be stale (measured under load, or it has died since):
            # never wait on it much longer than on the network as it is now
            srtt = min(srtt, 2 * self._srtt)
        if srtt is None:
            req.timeout = DEFAULT_TIMEOUT / 2 if req.sent == 1 else DEFAULT_TIMEOUT
            slow = UNKNOWN_SLOW
        else:
            req.timeout = min(DEFAULT_TIMEOUT, max(0.05, 8 * srtt + 0.01)) * req.sent
            slow = min(0.25, max(0.01, 4 * srtt + 0.004))
        req.deadline = now + req.timeout
        if req.sent == 1 and req.on_slow is not None:
            req.slow_at = now + slow
            self._push_timer(req.slow_at, req.tid)
        self._push_timer(req.deadline, req.tid)

    def _push_timer(self, when: float, tid: int) -> None:
        self._timer_seq += 1
        heapq.heappush(self._timers, (when, self._timer_seq, tid))

    def _on_timer(self, req: Outgoing, now: float) -> None:
        if req.on_slow is not None and not req.slow and req.slow_at and now >= req.slow_at:
            req.slow = True
            if now < req.deadline:
                req.on_slow()
                return
        if now < req.deadline:
            return
        if req.sent <= req.retries:
            self._congestion.advance(now)
            if self._congestion.full():
                self._queued.append(req)
            else:
                self._transmit(req, now)
            return
        del self._inflight[req.tid]
        self.stats["timeouts"] += 1
        if req.blame:
            self._dead[req.to] = now
            if len(self._dead) > _DEAD_PEERS:
                del self._dead[next(iter(self._dead))]
            node = self._table_node(req.to)
            if node is not None:
                self.table.remove(node.id)
        req.on_done(None, "timeout")

    def _is_dead(self, addr: Address) -> bool:
        t = self._dead.get(addr)
        if t is None:
            return False
        if self._now - t > DEAD_FOR:
            del self._dead[addr]
            return False
        return True

    def _table_node(self, addr: Address) -> NodeInfo | None:
        n = self.table.get(node_id(addr))
        return n if n is not None and n.addr == addr else None

    def _down_hint(self, to: Address, down: Address) -> None:
        if self._down_hints_sent >= DOWN_HINTS_PER_TICK:
            return
        self._down_hints_sent += 1
        self._send_request(to, Command.DOWN_HINT, True, None, encode_ipv4(down), None,
                           self._now, lambda r, e: None, None, 0)

    def _query_done(self, q: Query, commits: int, error: str | None) -> None:
        self._queries.pop(q.id, None)
        closest = tuple(r for _, r in q.closest)
        self._events.append(QueryDone(q.id, closest, commits, error, tuple(q.commit_errors)))
        if q.id == self._bootstrap_query:
            self._on_bootstrapped(q, self._now)

    # -- internals: responses in ----------------------------------------------------------------

    def _on_response(self, msg: Response, addr: Address, socket: int, now: float) -> None:
        req = self._inflight.get(msg.tid)
        if req is None or req.to != addr:
            return  # not ours, or from someone else than we asked: ignore
        del self._inflight[msg.tid]
        self._congestion.recv()
        if req.sent == 1:
            self._rtt_sample(addr, now - req.started)
        self._verify(addr[0])
        from_id = msg.id if msg.id is not None and msg.id == node_id(addr) else None
        if from_id is not None:
            self._seen(from_id, addr, now)
        if msg.to[1] != 0:
            self._nat_sample[msg.to] = self._nat_sample.get(msg.to, 0) + 1
        reply = Reply(addr, from_id, msg.token, msg.closer_nodes, msg.error, msg.value, msg.to)
        req.on_done(reply, None)

    def _rtt_sample(self, addr: Address, rtt: float) -> None:
        old = self._rtt.pop(addr, None)
        self._rtt[addr] = rtt if old is None else 0.8 * old + 0.2 * rtt
        if len(self._rtt) > _RTT_PEERS:
            del self._rtt[next(iter(self._rtt))]
        self._srtt = rtt if self._srtt is None else 0.9 * self._srtt + 0.1 * rtt

    def _verify(self, host: str) -> None:
        """``host`` has shown it receives what we send (a reply to us, or a valid token)."""
        self._verified[host] = None
        self._verified.move_to_end(host)
        if len(self._verified) > _LRU:
            self._verified.popitem(last=False)

    def _seen(self, nid: bytes, addr: Address, now: float) -> None:
        node = self.table.get(nid)
        if node is not None:
            node.seen = now
            node.pinged = now
            return
        # the cached id and address objects, not the ones decoded from this datagram
        self._add_node(NodeInfo(node_id(addr), addr, now, node_id_int(addr)), now)

    def _add_node(self, node: NodeInfo, now: float) -> None:
        if self.table.add(node):
            return
        if node.id == self.id or self.table.get(node.id) is not None:
            return
        row = self.table.row_for(node.id)
        if not self.bootstrapped or self._repinging >= 3 or not row:
            return
        oldest = min(row, key=lambda n: (n.pinged, n.added))
        if now - oldest.pinged < 60.0:
            return
        self._reping_and_swap(node, oldest, now)

    def _reping_and_swap(self, new: NodeInfo, old: NodeInfo, now: float) -> None:
        self._repinging += 1
        old.pinged = now
        last_seen = old.seen

        def done(reply: Reply | None, error: str | None) -> None:
            self._repinging -= 1
            if reply is not None and old.seen > last_seen:
                return
            self.table.remove(old.id)
            self.table.add(new)

        self._send_request(old.addr, Command.PING, True, None, None, None, now, done, None, 2)

    # -- internals: requests in -----------------------------------------------------------------

    def _on_request(self, msg: Request, addr: Address, size: int, socket: int,
                    now: float) -> None:
        from_id = msg.id if msg.id is not None and msg.id == node_id(addr) else None
        token_ok = False
        if msg.token is not None:
            token_ok = self._tokens.valid(addr[0], msg.token)
            if not token_ok:
                self._reply(msg, addr, size, socket, error=ErrorCode.INVALID_TOKEN, token=True,
                            closer=True)
                return
            self._verify(addr[0])
        if from_id is not None:
            self._seen(from_id, addr, now)
        if msg.internal:
            self._on_internal(msg, addr, size, socket, now)
            return
        answer = None
        if self.handler is not None:
            answer = self.handler.on_request(
                IncomingRequest(msg.command, msg.target, msg.value, token_ok, msg.token, addr,
                                from_id, msg.tid, socket),
                now,
            )
        if answer is None:
            self._reply(msg, addr, size, socket, error=ErrorCode.UNKNOWN_COMMAND, token=False,
                        closer=msg.target is not None)
            return
        if answer.silent:
            return
        self._reply(msg, addr, size, socket, value=answer.value, error=answer.error,
                    token=answer.token, closer=answer.closer and msg.target is not None)

    def _on_internal(self, msg: Request, addr: Address, size: int, socket: int,
                     now: float) -> None:
        cmd = msg.command
        if cmd == Command.PING:
            self._reply(msg, addr, size, socket)
        elif cmd == Command.FIND_NODE:
            if msg.target is not None:
                self._reply(msg, addr, size, socket, closer=True)
        elif cmd == Command.PING_NAT:
            if msg.value is None or len(msg.value) < 2:
                return
            port = msg.value[0] | msg.value[1] << 8
            if port:  # answer to the sender's other port: can it be reached there?
                self._reply(msg, (addr[0], port), size, socket)
        elif cmd == Command.DOWN_HINT:
            if msg.value is None or len(msg.value) < 6:
                return
            if self._checks < 10:
                node = self.table.get(hashlib.blake2b(msg.value[:6], digest_size=32).digest())
                if node is not None and (node.pinged < now or node.down_hints == 0):
                    node.down_hints += 1
                    self._check(node, now)
            self._reply(msg, addr, size, socket)
        elif cmd == Command.DELAYED_PING:
            if msg.value is None or len(msg.value) < 4:
                return
            delay = int.from_bytes(msg.value[:4], "little") / 1000
            if delay > MAX_DELAYED_PING:
                return
            data = self._encode_reply(msg, addr, size, socket, None, 0, False, False)
            if data is not None:
                self._timer_seq += 1
                heapq.heappush(self._delayed, (now + delay, self._timer_seq, data, addr, socket))
        else:
            self._reply(msg, addr, size, socket, error=ErrorCode.UNKNOWN_COMMAND,
                        closer=msg.target is not None)

    def _check(self, node: NodeInfo, now: float) -> None:
        node.pinged = now
        last_seen = node.seen
        self._checks += 1

        def done(reply: Reply | None, error: str | None) -> None:
            self._checks -= 1
            if reply is None or node.seen <= last_seen:
                self.table.remove(node.id)

        self._send_request(node.addr, Command.PING, True, None, None, None, now, done, None, 2)

    def _reply(self, msg: Request, to: Address, size: int, socket: int, *,
               value: bytes | None = None, error: int = 0, token: bool = False,
               closer: bool = False) -> None:
        data = self._encode_reply(msg, to, size, socket, value, error, token, closer)
        if data is not None:
            self._outbox.append((data, to, socket))

    def _encode_reply(self, msg: Request, to: Address, size: int, socket: int,
                      value: bytes | None, error: int, token: bool,
                      closer: bool) -> bytes | None:
        rid = self.id if not self.ephemeral and socket == SERVER else None
        nodes: tuple[Address, ...] = ()
        if closer and msg.target is not None:
            nodes = tuple(n.addr for n in self.table.closest(msg.target) if n.addr != to)
        tok = self.token(to[0]) if token else None
        resp = Response(msg.tid, to, rid, tok, nodes, error, value)
        if to[0] in self._verified:
            return encode_response(resp)
        # An unverified source (its address may be forged): at most 3x the bytes of its request.
        return encode_response_within(resp, AMPLIFICATION * size)

    # -- maintenance ------------------------------------------------------------------------------

    def _tick(self, now: float) -> None:
        self._ticks += 1
        self._down_hints_sent = 0
        if not self.bootstrapped:
            return
        for node in self.table.oldest(3):
            if now - node.pinged > 60.0 and self._checks < 10:
                self._check(node, now)
        if (len(self.table) < self.table.k and self._ticks % 12 == 0) or self._ticks % 60 == 0:
            some = self.table.random_node(self._rng)
            self.find_node(some.id if some else self.id, now)

    def _on_bootstrapped(self, q: Query, now: float) -> None:
        if self.bootstrapped:
            return
        self.bootstrapped = True
        if self.address is None and self._nat_sample and self._server_port:
            # the host others see us at, and our server socket's port (samples come back to the
            # client socket, whose port is not the one to be reached at)
            host = max(self._nat_sample.items(), key=lambda kv: kv[1])[0][0]
            self.address = (host, self._server_port)
        if self.adaptive and self.address is not None:
            self._reachability_check(q, now)
            return
        self._events.append(Bootstrapped(not self.ephemeral, self.address, self.id))

    def _reachability_check(self, q: Query, now: float) -> None:
        """Ask a few nodes to answer to our server port from where they are (PING_NAT)."""
        assert self.address is not None
        port = self.address[1].to_bytes(2, "little")
        targets = [r.from_addr for _, r in q.closest][:3]
        if not targets:
            self._events.append(Bootstrapped(False, self.address, self.id))
            return
        self._nat_pings = len(targets)

        def done(reply: Reply | None, error: str | None) -> None:
            self._nat_pings -= 1
            if reply is not None and not self._reachable:
                self._reachable = True
                self._become_persistent()
            if self._nat_pings == 0 and not self._reachable:
                self._events.append(Bootstrapped(False, self.address, self.id))

        for addr in targets:
            self._send_request(addr, Command.PING_NAT, True, None, port, None, now, done, None, 1)

    def _become_persistent(self) -> None:
        assert self.address is not None
        self.ephemeral = False
        self.id = node_id(self.address)
        old = list(self.table)
        self.table = RoutingTable(self.id, self.table.k)
        for n in old:
            self.table.add(n)
        self._events.append(Bootstrapped(True, self.address, self.id))
        # a second query for our (new) id, now sent with the id: the nodes on the way add us
        self.find_node(self.id, self._now)

"""The asyncio side of holepunching: a puncher socket, the client's rounds, the server's answers.

A :class:`Puncher` is one :class:`~cairn.udx.UDXSocket` (bound to every interface, a fresh
port) that does what hyperdht does from its puncher sockets: pings a few DHT nodes to learn its
NAT class (:class:`~cairn.hyperdht.nat.NatSampler`), sends and answers PEER_HOLEPUNCH as plain
dht-rpc datagrams, and sends and takes 1-byte probes (the first toward a peer with IP TTL
:data:`~cairn.hyperdht.holepunch.HOLEPUNCH_TTL`). The data phase then runs UDX on the same
socket, to the address the probes found.

Client::

    established = await handshake_by_key(node, key, key_pair, holepunch=True)
    if established.holepunch_id is not None:
        puncher, path = await punch_as_client(node, established)
        reader, writer = await open_udx_connection(puncher.socket, established.local_udx_id,
                                                   established.remote_udx_id, path)

The server side is :class:`ServerPuncher` (one per handshake that needs a punch), which
:class:`~cairn.hyperdht.aio.KeyServer` creates; its :meth:`ServerPuncher.stream` is the UDX
stream the client's first packet connects.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import socket as pysocket
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from cairn.dht.aio import UDPNode
from cairn.dht.messages import (
    Address,
    Command,
    Request,
    Response,
    decode,
    encode_request,
    encode_response,
)
from cairn.dht.records import HyperCommand
from cairn.errors import DecodeError
from cairn.hyperdht.events import Established
from cairn.hyperdht.holepunch import (
    HOLEPUNCH_TTL,
    PROBE,
    HolepunchAbortedError,
    PunchSession,
    RemoteNotHolepunchableError,
    ServerPunch,
)
from cairn.hyperdht.messages import (
    Firewall,
    Holepunch,
    HolepunchPayload,
    Mode,
    NoiseError,
    decode_holepunch,
    encode_holepunch,
)
from cairn.hyperdht.nat import MIN_SAMPLES, NatSampler
from cairn.replication.noise import RandomSource
from cairn.udx import UDXSocket
from cairn.udx.aio import UDXReader, UDXStream, UDXWriter

__all__ = ["Puncher", "ServerPuncher", "punch_as_client", "sample_nodes"]

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 1.0
REQUEST_TRIES = 3
SAMPLE_TIMEOUT = 2.0
MAX_PENDING = 64
MAX_REQUESTS = 32
"""PEER_HOLEPUNCH requests one server punch answers at most."""


def sample_nodes(node: UDPNode, count: int = MIN_SAMPLES) -> list[Address]:
    """The DHT nodes a puncher pings for its NAT samples: the most recently added, skipping the
    5 newest when the table holds 8 or more (hyperdht: they may be the least settled)."""
    nodes = sorted(node.core.table, key=lambda n: n.added, reverse=True)
    if len(nodes) >= 8:
        nodes = nodes[5:]
    return [n.addr for n in nodes[:count]]


class Puncher:
    """A UDX socket for punching: NAT samples, PEER_HOLEPUNCH requests, probes."""

    def __init__(self, rng: RandomSource) -> None:
        self.socket = UDXSocket(self._on_other)
        self.nat = NatSampler()
        self._rng = rng
        self._pending: dict[int, tuple[Address, asyncio.Future[Response]]] = {}
        self.on_probe: Callable[[Address], None] | None = None
        self.on_request: Callable[[Request, Address], None] | None = None
        self.drops: dict[str, int] = {}
        self.closed = False

    @classmethod
    async def open(cls, rng: RandomSource | None = None, host: str = "0.0.0.0") -> Puncher:  # noqa: S104
        puncher = cls(rng or random.SystemRandom())
        bound = await UDXSocket.bind(host, 0, on_other=puncher._on_other)
        puncher.socket = bound
        return puncher

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.socket.close()
        for _, fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._pending.clear()

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    # -- datagrams --------------------------------------------------------------------------------

    def _on_other(self, data: bytes, addr: Address) -> None:
        if len(data) == 1:
            if self.on_probe is not None:
                self.on_probe(addr)
            else:
                self._drop("probe with no punch running")
            return
        try:
            msg = decode(data)
        except DecodeError:
            self._drop("not a dht-rpc message")
            return
        if isinstance(msg, Response):
            waiting = self._pending.get(msg.tid)
            if waiting is None or waiting[0] != addr:
                self._drop("response to no request of ours")
                return
            del self._pending[msg.tid]
            if not waiting[1].done():
                waiting[1].set_result(msg)
            return
        if self.on_request is not None:
            self.on_request(msg, addr)
        else:
            self._drop("request to a client puncher")

    def send(self, data: bytes, addr: Address, ttl: int | None = None) -> None:
        if self.closed:
            return
        sock = None
        transport = self.socket._transport  # IP_TTL per send needs the socket
        if ttl is not None and transport is not None:
            sock = transport.get_extra_info("socket")
        if sock is None:
            self.socket.send(data, addr)
            return
        before = sock.getsockopt(pysocket.IPPROTO_IP, pysocket.IP_TTL)
        sock.setsockopt(pysocket.IPPROTO_IP, pysocket.IP_TTL, ttl)
        try:
            self.socket.send(data, addr)  # at once (unless the kernel buffer is full: then later,
            # with the normal TTL: a probe that opens no mapping, the next round does)
        finally:
            sock.setsockopt(pysocket.IPPROTO_IP, pysocket.IP_TTL, before)

    def probe(self, addr: Address, *, low_ttl: bool = False) -> None:
        self.send(PROBE, addr, HOLEPUNCH_TTL if low_ttl else None)

    def _tid(self) -> int:
        for _ in range(16):
            tid = int.from_bytes(self._rng.randbytes(2), "little")
            if tid not in self._pending:
                return tid
        raise HolepunchAbortedError("too many requests in flight on a puncher socket")

    async def request(self, to: Address, command: int, *, internal: bool = False,
                      target: bytes | None = None, value: bytes | None = None,
                      tries: int = REQUEST_TRIES,
                      timeout: float = REQUEST_TIMEOUT) -> Response | None:  # noqa: ASYNC109
        """A dht-rpc request from this socket; the response, or None after ``tries`` tries."""
        if len(self._pending) >= MAX_PENDING:
            raise HolepunchAbortedError("too many requests in flight on a puncher socket")
        tid = self._tid()
        data = encode_request(Request(tid, to, command, internal, None, None, target, value))
        loop = asyncio.get_running_loop()
        try:
            for _ in range(tries):
                fut: asyncio.Future[Response] = loop.create_future()
                self._pending[tid] = (to, fut)
                self.send(data, to)
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(timeout):
                        return await fut
            return None
        finally:
            self._pending.pop(tid, None)

    def send_request(self, tid: int, to: Address, command: int, target: bytes,
                     value: bytes) -> None:
        """A request under someone else's tid (a server's FROM_SERVER answer to its relay)."""
        self.send(encode_request(Request(tid, to, command, False, None, None, target, value)), to)

    def send_response(self, tid: int, to: Address, value: bytes | None) -> None:
        self.send(encode_response(Response(tid, to, value=value)), to)

    async def sample(self, nodes: Sequence[Address]) -> Firewall:
        """Ping ``nodes`` from this socket, each reply's ``to`` a NAT sample; the class."""
        async def ping(addr: Address) -> None:
            got = await self.request(addr, Command.PING, internal=True, tries=2,
                                     timeout=SAMPLE_TIMEOUT / 2)
            if got is not None:
                self.nat.add(got.to, addr)

        await asyncio.gather(*(ping(a) for a in nodes))
        return self.nat.firewall


def _pick_relay(established: Established) -> tuple[Address, Address]:
    """(relayAddress, peerAddress) for round 0: the server's announce node that relayed our
    handshake if it is one, else its first (hyperdht's pickServerRelay)."""
    hp = established.remote_payload.holepunch
    assert hp is not None
    for relay, peer in hp.relays:
        if relay == established.relay:
            return relay, peer
    return hp.relays[0]


async def _round(puncher: Puncher, session: PunchSession, established: Established,
                 relay: Address, peer: Address, payload: HolepunchPayload
                 ) -> tuple[HolepunchPayload, Address | None]:
    hp = established.remote_payload.holepunch
    assert hp is not None
    value = encode_holepunch(Holepunch(Mode.FROM_CLIENT, hp.id, session.seal(payload), peer))
    got = await puncher.request(relay, HyperCommand.PEER_HOLEPUNCH,
                                target=_target(established), value=value)
    if got is None or got.value is None:
        raise HolepunchAbortedError(f"holepunch round {payload.round}: relay {relay[0]}:"
                                    f"{relay[1]} did not answer")
    try:
        wrapper = decode_holepunch(got.value)
        reply = session.open(wrapper.payload)
    except DecodeError as exc:
        raise HolepunchAbortedError(f"holepunch round {payload.round}: bad reply: {exc}") from exc
    puncher.nat.add(got.to, relay)
    if reply.error != NoiseError.NONE:
        raise HolepunchAbortedError(f"the server aborted the holepunch (error {reply.error})")
    echoed = (payload.token is not None and reply.remote_token == payload.token
              and wrapper.peer_address is not None)
    session.update_remote(reply, wrapper.peer_address[0] if echoed and wrapper.peer_address
                          else None)
    return reply, wrapper.peer_address


async def _tell_abort(puncher: Puncher, session: PunchSession, established: Established,
                      relay: Address, peer: Address) -> None:
    """Best effort: tell the server we stopped (hyperdht's abort round), so it does not keep
    its punch for its 10 s; no retry, no wait beyond one short timeout."""
    hp = established.remote_payload.holepunch
    assert hp is not None
    sealed = session.seal(HolepunchPayload(error=NoiseError.ABORTED,
                                           firewall=puncher.nat.firewall, round=2))
    value = encode_holepunch(Holepunch(Mode.FROM_CLIENT, hp.id, sealed, peer))
    with contextlib.suppress(HolepunchAbortedError):
        await puncher.request(relay, HyperCommand.PEER_HOLEPUNCH, target=_target(established),
                              value=value, tries=1, timeout=0.5)


def _target(established: Established) -> bytes:
    from cairn.dht.records import hash32

    return hash32(established.remote_public_key)


async def punch_as_client(node: UDPNode, established: Established, *,
                          rng: RandomSource | None = None,
                          puncher: Puncher | None = None) -> tuple[Puncher, Address]:
    """Punch to the server of ``established`` (a handshake whose ``holepunch_id`` is set):
    the puncher (its socket carries the data phase; close it when done) and the server's
    address on it. Raises :class:`HolepunchAbortedError` (and its kinds) with the reason."""
    payload = established.remote_payload
    if payload.holepunch is None or not payload.holepunch.relays:
        raise RemoteNotHolepunchableError("the server is behind a NAT and named no relay to "
                                          "punch through")
    own = puncher is None
    puncher = puncher or await Puncher.open(rng)
    try:
        return puncher, await _punch(node, established, puncher, rng or random.SystemRandom())
    except BaseException:
        if own:
            puncher.close()
        raise


async def _punch(node: UDPNode, established: Established, puncher: Puncher,
                 rng: RandomSource) -> Address:
    server_address = established.remote_address
    client_relay = established.relay or server_address
    server_relay, server_peer = _pick_relay(established)
    session = PunchSession(True, established.holepunch_secret, rng, puncher.nat)
    loop = asyncio.get_running_loop()
    found: asyncio.Future[Address] = loop.create_future()

    def on_probe(addr: Address) -> None:
        path = session.on_probe(addr, frozenset({server_address[0]}))
        if path is not None and not found.done():
            found.set_result(path)

    puncher.on_probe = on_probe
    puncher.probe(server_address, low_ttl=True)  # opens our NAT toward the server
    await puncher.sample(sample_nodes(node))
    token = None
    for attempt in range(2):
        reply, _ = await _round(puncher, session, established, server_relay, server_peer,
                                HolepunchPayload(firewall=puncher.nat.firewall, round=0,
                                                 addresses=puncher.nat.addresses,
                                                 remote_address=server_address))
        token = reply.token
        if found.done():  # the server's fast-open probe came through: no round 1
            return found.result()
        if session.remote_firewall != Firewall.UNKNOWN and token is not None:
            break
        if attempt == 0:
            await asyncio.sleep(1.0)  # the server may still be sampling its NAT
    try:
        session.check_punchable()
    except HolepunchAbortedError:
        await _tell_abort(puncher, session, established, server_relay, server_peer)
        raise
    mine = session.token(server_address[0])
    reply, _ = await _round(puncher, session, established, client_relay, server_address,
                            HolepunchPayload(firewall=puncher.nat.firewall, round=1,
                                             punching=True, addresses=puncher.nat.addresses,
                                             token=mine, remote_token=token))
    if not reply.punching:
        raise HolepunchAbortedError("holepunch aborted: the server is not punching")
    if found.done():
        return found.result()
    session.start(loop.time())
    while not found.done():
        for addr in session.probes_due(loop.time()):
            puncher.probe(addr)
        if session.exhausted:
            raise HolepunchAbortedError("holepunch failed: no probe from the server came "
                                        "through in 10 rounds")
        when = session.next_timer()
        delay = 0.05 if when is None else max(0.0, when - loop.time())
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(delay):
                await asyncio.shield(found)
    return found.result()


class ServerPuncher:
    """One handshake's punch on the server: its puncher socket (from which the FROM_SERVER
    handshake answer and every holepunch answer go), its :class:`ServerPunch` rounds, probes,
    and the UDX stream the client's first packet connects."""

    def __init__(self, node: UDPNode, established: Established, rng: RandomSource,
                 relays: Callable[[], Sequence[Address]]) -> None:
        assert established.holepunch_id is not None
        self.node = node
        self.established = established
        self.id = established.holepunch_id
        self._rng = rng
        self._relays = relays
        self.puncher: Puncher | None = None
        self.punch: ServerPunch | None = None
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.connected: asyncio.Future[UDXStream] = asyncio.get_running_loop().create_future()
        self.sampled: asyncio.Event = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._stream: UDXStream | None = None
        self.requests = 0
        self.drops: dict[str, int] = {}
        self.closed = False
        self._spawn(self._open())

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _open(self) -> None:
        try:
            puncher = await Puncher.open(self._rng)
        except OSError as exc:
            log.warning("hyperdht server: no puncher socket: %s", exc)
            if not self.ready.done():
                self.ready.set_exception(HolepunchAbortedError(f"no puncher socket: {exc}"))
                self.ready.exception()
            return
        if self.closed:
            puncher.close()
            return
        self.puncher = puncher
        est = self.established
        self.punch = ServerPunch(est.holepunch_secret, self._rng, puncher.nat,
                                 est.remote_address, self.node.now())
        puncher.on_probe = self._on_probe
        puncher.on_request = self._on_request
        stream = puncher.socket.create_stream(est.local_udx_id,
                                              on_first_packet=self._on_first_packet)
        self._stream = stream
        self.ready.set_result(None)
        try:
            await puncher.sample(sample_nodes(self.node))
        finally:
            self.sampled.set()

    def _hosts(self) -> frozenset[str]:
        return frozenset({self.established.remote_address[0]})

    def _on_first_packet(self, stream: UDXStream, addr: Address) -> bool:
        punch = self.punch
        if punch is None or punch.aborted:
            return False
        hosts = {a.address[0] for a in punch.session.remote_addresses} | self._hosts()
        if addr[0] not in hosts:
            return False
        if stream.core is None:
            stream.connect(self.established.remote_udx_id, addr)
        else:
            stream.change_remote(addr)
        punch.session.path = addr
        punch.session.punching = False
        if not self.connected.done():
            self.connected.set_result(stream)
        return True

    def _on_probe(self, addr: Address) -> None:
        punch = self.punch
        if punch is None or self.puncher is None:
            return
        echo = punch.session.on_probe(addr, self._hosts())
        if echo is not None:
            self.puncher.probe(echo)

    def send_handshake_answer(self, tid: int, relay: Address, target: bytes,
                              value: bytes) -> None:
        """The FROM_SERVER handshake answer, from the puncher socket (the relay then tells the
        client the puncher's public address)."""
        async def send() -> None:
            with contextlib.suppress(HolepunchAbortedError):
                await self.ready
                if self.puncher is not None:
                    self.puncher.send_request(tid, relay, HyperCommand.PEER_HANDSHAKE, target,
                                              value)
        self._spawn(send())

    def _on_request(self, req: Request, addr: Address) -> None:
        if req.command != HyperCommand.PEER_HOLEPUNCH or req.internal or req.value is None \
                or req.target is None:
            self._drop("request other than PEER_HOLEPUNCH")
            return
        try:
            hp = decode_holepunch(req.value)
        except DecodeError:
            self._drop("malformed PEER_HOLEPUNCH")
            return
        if hp.mode != Mode.FROM_RELAY or hp.id != self.id or hp.peer_address is None:
            self._drop("PEER_HOLEPUNCH not for this punch")
            return
        if self._admit(hp):
            self._spawn(self._answer(req.tid, addr, req.target, hp))

    def take_relayed(self, tid: int, relay: Address, target: bytes, hp: Holepunch) -> None:
        """A PEER_HOLEPUNCH that reached the DHT socket (round 0 through an announce node):
        answered from the puncher socket, as hyperdht."""
        if self._admit(hp):
            self._spawn(self._answer(tid, relay, target, hp))

    def _drop(self, reason: str) -> None:
        self.drops[reason] = self.drops.get(reason, 0) + 1

    def _admit(self, hp: Holepunch) -> bool:
        """Only a payload sealed with this punch's secret is answered (anything else is dropped
        here, before a task or a reply), and at most MAX_REQUESTS of them per punch (an honest
        client sends 2-4 rounds and their retries)."""
        if self.punch is not None:
            try:
                self.punch.session.open(hp.payload)
            except DecodeError:
                self._drop("holepunch payload that does not open")
                return False
        self.requests += 1
        if self.requests > MAX_REQUESTS:
            self._drop("too many PEER_HOLEPUNCH for one punch")
            return False
        return True

    async def _answer(self, tid: int, relay: Address, target: bytes, hp: Holepunch) -> None:
        with contextlib.suppress(HolepunchAbortedError):
            await self.ready
        punch, puncher = self.punch, self.puncher
        if punch is None or puncher is None or hp.peer_address is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SAMPLE_TIMEOUT * 2):
                await self.sampled.wait()
        try:
            reply, fast = punch.on_request(hp.payload, hp.peer_address,
                                           relay in tuple(self._relays()), self.node.now())
        except DecodeError:
            self._drop("holepunch payload that does not open")
            return
        value = encode_holepunch(Holepunch(Mode.FROM_SERVER, 0, reply, hp.peer_address))
        puncher.send_request(tid, relay, HyperCommand.PEER_HOLEPUNCH, target, value)
        if fast is not None:
            puncher.probe(fast)
        if punch.session.punching and not any(t.get_name() == "probes" for t in self._tasks):
            task = asyncio.ensure_future(self._probes())
            task.set_name("probes")
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _probes(self) -> None:
        punch, puncher = self.punch, self.puncher
        assert punch is not None and puncher is not None
        loop = asyncio.get_running_loop()
        session = punch.session
        while session.punching and session.path is None and not self.closed:
            for addr in session.probes_due(loop.time()):
                puncher.probe(addr)
            when = session.next_timer()
            if when is None:
                break
            await asyncio.sleep(max(0.0, when - loop.time()))

    async def stream(self, timeout: float = 15.0) -> tuple[UDXReader, UDXWriter]:  # noqa: ASYNC109
        """The data stream once the client's first UDX packet found it."""
        async with asyncio.timeout(timeout):
            stream = await self.connected
        return stream.reader, stream.writer

    def expired(self, now: float) -> bool:
        punch = self.punch
        return (punch is not None and now > punch.expires and not self.connected.done()) or \
            (punch is not None and punch.aborted)

    def close(self) -> None:
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        if self.puncher is not None:
            self.puncher.close()

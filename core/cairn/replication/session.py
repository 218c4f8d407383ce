"""One log replicated over one ``hypercore/alpha`` channel, without I/O.

A :class:`Session` serves what its :class:`~cairn.log.Log` holds (answering ``request`` with the
``data`` hypercore makes) and downloads what it is told to want, verifying every block before it
is stored. It has the verbs of every replication core (:mod:`cairn.replication`): it takes
channel messages in (:meth:`~Session.receive_data`), says what happened
(:meth:`~Session.next_event`: :class:`~cairn.replication.events.Synced`,
:class:`~cairn.replication.events.Stored`, :class:`~cairn.replication.events.SeekAnswered`) and
gives channel messages out (:meth:`~Session.data_to_send`); the connection that owns it frames
them on Protomux. The messages' bytes are :mod:`cairn.messages`.
"""

from __future__ import annotations

import logging
import struct
from collections import deque
from dataclasses import dataclass

from cairn import flat_tree
from cairn.crypto import replicate_capability
from cairn.encoding import Reader, write_buffer, write_uint
from cairn.errors import (
    CairnError,
    DamagedBlockError,
    DecodeError,
    ForkError,
    NotAvailableError,
    RemoteError,
    VerificationError,
)
from cairn.frames import frame_at, seek_time
from cairn.log import Log, range_proof_nodes
from cairn.messages import (
    ChannelHandshake,
    Data,
    Extension,
    MessageType,
    NoData,
    Node,
    Range,
    Request,
    RequestBlock,
    RequestUpgrade,
    Sync,
    decode_bitfield,
    decode_cancel,
    decode_data,
    decode_extension,
    decode_handshake,
    decode_no_data,
    decode_range,
    decode_request,
    decode_sync,
    decode_want,
    encode_data,
    encode_extension,
    encode_handshake,
    encode_no_data,
    encode_range,
    encode_request,
    encode_sync,
)
from cairn.replication.events import SeekAnswered, SessionEvent, Stored, Synced

__all__ = ["CapabilityError", "Session", "SessionStats"]

_REQUEST = int(MessageType.REQUEST)
_DATA = int(MessageType.DATA)
log = logging.getLogger(__name__)

WINDOW = 64  # block requests in flight
MAX_REQUEST_ID = 0xFFFFFFFF
RUN_BLOCKS = 2048  # blocks in one range request (Cairn peers)
RUN_BYTES = 2 << 20  # and at most this many bytes of blocks in its answer
RANGE_WINDOW = 4  # range requests in flight

EXT_HELLO = "cairn/hello"
EXT_RANGE = "cairn/range"
EXT_RANGE_DATA = "cairn/range-data"
EXT_RANGE_NONE = "cairn/range-none"
EXT_SEEK = "cairn/seek-time"
EXT_SEEK_RESULT = "cairn/seek-time-result"
# said just before the ``no-data`` for a block request when the block is held but damaged (its
# data no longer matches its leaf hash): the requester can tell a damaged block from one the
# server never held or cleared. Message: the block index (uint). Only to Cairn peers.
EXT_DAMAGED = "cairn/damaged"
_F64 = struct.Struct("<d")


class CapabilityError(RemoteError):
    """The remote's channel capability does not prove it knows this log's key."""


@dataclass(slots=True)
class SessionStats:
    requests_served: int = 0
    no_data_sent: int = 0
    damaged_refused: int = 0  # no-data answers for blocks held but damaged here
    blocks_downloaded: int = 0
    invalid: int = 0


@dataclass(slots=True)
class _Inflight:
    id: int
    block: int | None
    upgrade: bool
    end: int | None = None  # a range request: blocks block..end
    # a block request whose ``nodes`` hint counted on a node another request in flight brings
    need_node: int | None = None
    provider: int | None = None  # that request's id
    brings: tuple[int, ...] = ()  # tree nodes its answer will give us


class Session:
    """One log on one channel: serve what it holds, download what :meth:`want` asks for.

    ::

        session.receive_data(kind, payload)  # each channel message the peer sent
        while (event := session.next_event()) is not None:
            ...                              # Synced, Stored, SeekAnswered
        for kind, payload in session.data_to_send():
            mux.send(channel, kind, payload)

    The same state is readable at any time (:attr:`remote_length`, :attr:`seek_results`,
    :attr:`stats`, ...), as :mod:`cairn.replication.net` reads it.
    """

    def __init__(
        self, log_: Log, *, is_initiator: bool, handshake_hash: bytes, window: int = WINDOW
    ) -> None:
        self.log = log_
        self.is_initiator = is_initiator
        self.handshake_hash = handshake_hash
        self.window = window
        self.remote_opened = False
        self.remote_length = 0
        self.remote_fork = 0
        self.remote_has: list[tuple[int, int]] = []  # ranges the remote said it holds
        self.refused: set[int] = set()  # blocks asked for that the remote had no data for
        self.remote_damaged: set[int] = set()  # of those, the ones it said are damaged there
        self.stats = SessionStats()
        self._out: list[tuple[int, bytes]] = []
        self._events: deque[SessionEvent] = deque()
        self._wanted: deque[int] = deque()  # blocks to fetch, in order
        self._wanted_set: set[int] = set()
        self._inflight: dict[int, _Inflight] = {}
        self._next_id = 1
        self._upgrading = False
        self._sent_length = -1
        self.closed_reason: str | None = None
        self.remote_cairn = False  # the remote speaks Cairn's range extension
        self.synced = False  # the remote told us its length
        self.follow = False  # set: every block the remote announces is wanted (live push)
        self._announced = 0  # blocks 0.._announced told to the remote with ``range``
        self._queued: list[tuple[_Inflight, Data]] = []  # data waiting for flush()
        self._single: set[int] = set()  # blocks to ask for one by one (a run could not be)
        self._expect: dict[int, int] = {}  # tree node -> id of the request in flight bringing it
        self.seek_results: dict[int, int] = {}  # seek request id -> first frame at/after t
        self._seeks: dict[int, float] = {}

    # -- the channel -------------------------------------------------------------------------

    def handshake(self) -> bytes:
        """Our channel-open handshake: the capability for this log on this connection."""
        cap = replicate_capability(self.is_initiator, self.log.key, self.handshake_hash)
        return encode_handshake(ChannelHandshake(cap))

    def on_open(self, handshake: bytes) -> None:
        """The remote opened the channel: check its capability, then say what we have."""
        try:
            hs = decode_handshake(handshake)
        except DecodeError as exc:
            raise CapabilityError(f"bad channel handshake: {exc}") from exc
        expected = replicate_capability(not self.is_initiator, self.log.key, self.handshake_hash)
        if hs.capability != expected:
            raise CapabilityError("remote sent an invalid replication capability")
        self.remote_opened = True
        self._send(MessageType.EXTENSION, encode_extension(Extension(EXT_HELLO, b"\x01")))
        self.sync()
        self._announce_range()
        self._pump()

    def _announce_range(self) -> None:
        """Tell the remote which blocks we hold from the start (hypercore's ``range``): JS
        asks only peers that said they hold a block."""
        contiguous = self.log.contiguous_length
        if contiguous > self._announced:
            self._send(MessageType.RANGE,
                       encode_range(Range(self._announced, contiguous - self._announced)))
            self._announced = contiguous

    def sync(self) -> None:
        """Tell the remote our length (after opening, and whenever the log grew)."""
        lg = self.log
        self._sent_length = lg.length
        same_fork = lg.fork == self.remote_fork
        self._send(
            MessageType.SYNC,
            encode_sync(
                Sync(
                    fork=lg.fork,
                    length=lg.length,
                    remote_length=self.remote_length if same_fork else 0,
                    can_upgrade=same_fork and lg.length >= self.remote_length,
                    uploading=True,
                    downloading=bool(self._wanted or self._inflight) or not lg.writable,
                    has_manifest=lg.manifest is not None and not lg.compat,
                )
            ),
        )

    def data_to_send(self) -> list[tuple[int, bytes]]:
        """The channel messages to send, ``(type, payload)`` in order."""
        self.flush()  # data received since the last call: stored before we ask for more
        out = self._out
        self._out = []
        return out

    def next_event(self) -> SessionEvent | None:
        """The next event, or ``None`` when there is none."""
        return self._events.popleft() if self._events else None

    def _send(self, kind: MessageType, payload: bytes) -> None:
        self._out.append((int(kind), payload))

    # -- what to download --------------------------------------------------------------------

    def want(self, start: int, end: int) -> None:
        """Download blocks [start, end) that the log does not hold yet."""
        for i in range(start, end):
            if i not in self._wanted_set and not self.log.has(i):
                self._wanted.append(i)
                self._wanted_set.add(i)
        self._pump()

    @property
    def pending(self) -> int:
        """Blocks wanted and not stored yet (in flight included)."""
        return len(self._wanted_set)

    def _pump(self) -> None:
        if not self.remote_opened:
            return
        lg = self.log
        if self.remote_length > lg.length and not self._upgrading and (self.remote_fork >= lg.fork):
            self._request_upgrade()
            return
        if self._upgrading:
            return
        if self.remote_cairn:
            self._pump_ranges()
            return
        while len(self._inflight) < self.window and self._wanted:
            i = self._wanted[0]
            if lg.has(i):
                self._wanted.popleft()
                self._wanted_set.discard(i)
                continue
            if i >= lg.length:
                break  # not signed yet: wait for an upgrade
            self._wanted.popleft()
            self._request_block(i)

    def _request_block(self, i: int) -> None:
        """Ask for block ``i`` with the ``nodes`` hint it needs once the requests in flight are
        answered (not only what is stored now): a window of requests for neighbouring blocks
        then brings each upper node once, not once per request."""
        lg = self.log
        rid = self._new_id()
        head = 2 * lg.length
        ite = flat_tree.Iterator(2 * i)
        count = 0
        need: int | None = None
        brings: list[int] = []
        expect = self._expect
        if ite.peek_right_span() < head:
            while not ite.contains(head):
                if ite.index in expect:
                    need = ite.index
                    break
                if lg.get_node(ite.index) is not None:
                    break
                brings.append(ite.index)
                brings.append(ite.sibling())
                count += 1
                ite.parent()
        for node in brings:
            expect.setdefault(node, rid)
        self._inflight[rid] = _Inflight(
            rid, i, False, need_node=need, provider=expect.get(need) if need is not None else None,
            brings=tuple(brings),
        )
        req = Request(id=rid, fork=lg.fork, block=RequestBlock(i, count))
        self._send(MessageType.REQUEST, encode_request(req))

    def _settled(self, pending: _Inflight) -> None:
        """A block request was answered and stored, or given up: it brings nothing any more."""
        expect = self._expect
        for node in pending.brings:
            if expect.get(node) == pending.id:
                del expect[node]

    def _pump_ranges(self) -> None:
        """Cairn peers: contiguous runs of wanted blocks, each with one proof."""
        lg = self.log
        while len(self._inflight) < self.window and self._wanted:
            i = self._wanted[0]
            if lg.has(i):
                self._wanted.popleft()
                self._wanted_set.discard(i)
                continue
            if i >= lg.length:
                break
            if i in self._single:
                self._wanted.popleft()
                self._single.discard(i)
                self._request_block(i)
                continue
            if sum(1 for x in self._inflight.values() if x.end is not None) >= RANGE_WINDOW:
                break
            end = i
            while (
                self._wanted
                and self._wanted[0] == end
                and end < lg.length
                and end - i < RUN_BLOCKS
                and not lg.has(end)
            ):
                self._wanted.popleft()
                end += 1
            rid = self._new_id()
            self._inflight[rid] = _Inflight(rid, i, False, end)
            body = bytearray()
            for v in (rid, lg.fork, lg.length, i, end):
                write_uint(body, v)
            self._send(MessageType.EXTENSION, encode_extension(Extension(EXT_RANGE, bytes(body))))

    def _request_upgrade(self) -> None:
        lg = self.log
        rid = self._new_id()
        self._upgrading = True
        start = lg.length if self.remote_fork == lg.fork else 0
        # a follower wants what the upgrade announces: the first new block comes in the same
        # answer (hypercore's block + upgrade request), so a log that grew by one block costs
        # one round trip, one signature check and one commit
        block = None
        if self.follow and start == lg.length > 0 and not lg.has(start):
            block = RequestBlock(start, 0)
        self._inflight[rid] = _Inflight(rid, None, True)
        req = Request(
            id=rid,
            fork=self.remote_fork,
            block=block,
            upgrade=RequestUpgrade(start, self.remote_length - start),
            manifest=lg.manifest is None and not lg.compat,
        )
        self._send(MessageType.REQUEST, encode_request(req))

    def _new_id(self) -> int:
        rid = self._next_id
        self._next_id = 1 if rid >= MAX_REQUEST_ID else rid + 1
        return rid

    # -- messages in ---------------------------------------------------------------------------

    def receive_data(self, kind: int, payload: bytes) -> None:
        """One channel message. Raises :class:`RemoteError` for what should end the channel."""
        try:
            self._receive(kind, payload)
        except ForkError:
            raise
        except (DecodeError, VerificationError):
            self.stats.invalid += 1
            raise

    def _receive(self, kind: int, payload: bytes) -> None:
        if kind == _REQUEST:  # the two a transfer is made of first, as plain ints
            self._on_request(decode_request(payload))
        elif kind == _DATA:
            self._on_data(payload)
        elif kind == MessageType.SYNC:
            self._on_sync(decode_sync(payload))
        elif kind == MessageType.NO_DATA:
            self._on_no_data(decode_no_data(payload))
        elif kind == MessageType.RANGE:
            r = decode_range(payload)
            if not r.drop:
                self.remote_has.append((r.start, r.start + r.length))
        elif kind == MessageType.CANCEL:
            decode_cancel(payload)  # answers are sent at once: nothing to cancel
        elif kind in (MessageType.WANT, MessageType.UNWANT):
            decode_want(payload)  # we answer every request we can; wants change nothing
        elif kind == MessageType.BITFIELD:
            decode_bitfield(payload)
        elif kind == MessageType.EXTENSION:
            self._on_extension(decode_extension(payload))
        else:
            raise DecodeError(f"unknown hypercore/alpha message type {kind}")

    def _on_extension(self, ext: Extension) -> None:
        if ext.name == EXT_HELLO:
            self.remote_cairn = True
            self._pump()
        elif ext.name == EXT_RANGE:
            self._serve_range(ext.message)
        elif ext.name == EXT_RANGE_DATA:
            self._on_range_data(ext.message)
        elif ext.name == EXT_SEEK:
            self._serve_seek(ext.message)
        elif ext.name == EXT_SEEK_RESULT:
            self._on_seek_result(ext.message)
        elif ext.name == EXT_DAMAGED:
            block = Reader(ext.message).uint()
            # only for a block asked for and not answered yet: a peer cannot fill memory
            if any(p.block == block and p.end is None for p in self._inflight.values()):
                self.remote_damaged.add(block)
        elif ext.name == EXT_RANGE_NONE:
            pending = self._inflight.pop(Reader(ext.message).uint(), None)
            if pending is not None and pending.block is not None and pending.end is not None:
                # the peer cannot prove the whole run (a block cleared, say): ask block by
                # block, and give up only on the blocks it really does not have
                for b in range(pending.end - 1, pending.block - 1, -1):
                    self._single.add(b)
                    self._requeue(b)
            self._pump()
        # other extensions: not ours, ignored (as hypercore does)

    def seek_time(self, t: float) -> int:
        """Ask a Cairn peer for the first frame holding a sample at or after ``t`` (seconds).

        The answer, proven (that frame and the one before it, each with its Merkle proof), lands
        in :attr:`seek_results` under the returned id.
        """
        if not self.remote_cairn:
            raise NotAvailableError("the peer does not speak Cairn's time seek")
        rid = self._new_id()
        self._seeks[rid] = t
        body = bytearray()
        write_uint(body, rid)
        body += _F64.pack(t)
        self._send(MessageType.EXTENSION, encode_extension(Extension(EXT_SEEK, bytes(body))))
        return rid

    def _serve_seek(self, message: bytes) -> None:
        r = Reader(message)
        rid = r.uint()
        (t,) = _F64.unpack(r.fixed(8))
        out = bytearray()
        write_uint(out, rid)
        lg = self.log
        try:
            index = seek_time(lg, t)
            # proofs that reach the roots: the requester trusts those, nothing below
            proofs = [
                lg.proof(Request(fork=lg.fork, block=RequestBlock(i, _levels(i, lg.length))))
                for i in (index - 1, index)
                if 0 <= i < lg.length
            ]
        except (CairnError, ValueError) as exc:  # ValueError: t is NaN
            log.debug("no time seek for %d: %s", rid, exc)
            write_uint(out, 0)
            self._send(
                MessageType.EXTENSION, encode_extension(Extension(EXT_SEEK_RESULT, bytes(out)))
            )
            return
        write_uint(out, 1)
        write_uint(out, index)
        write_uint(out, len(proofs))
        for p in proofs:
            write_buffer(out, encode_data(p))
        self._send(MessageType.EXTENSION, encode_extension(Extension(EXT_SEEK_RESULT, bytes(out))))

    def _on_seek_result(self, message: bytes) -> None:
        r = Reader(message)
        rid = r.uint()
        t = self._seeks.pop(rid, None)
        if t is None:
            return
        if not r.uint():
            raise NotAvailableError(f"the peer could not seek to {t}")
        index = r.uint()
        n = r.uint()
        if n > 2:
            raise DecodeError("a time seek answer holds at most two proofs")
        lg = self.log
        for _ in range(n):
            proof = decode_data(r.bytes_())
            if proof.block is None or proof.block.index not in (index - 1, index):
                raise VerificationError("time seek proof is for another block")
            lg.verify_and_apply(proof)
        # the proven frames must bracket t: the one before ends before t, this one does not
        if index < lg.length and frame_at(lg, index).end < t:
            raise VerificationError(f"frame {index} ends before {t}: not the frame asked for")
        if 0 < index <= lg.length and frame_at(lg, index - 1).end >= t:
            raise VerificationError(f"frame {index - 1} already reaches {t}: seek was not first")
        self.seek_results[rid] = index
        self._events.append(SeekAnswered(lg.discovery_key, rid, index))
        self._pump()

    def _serve_range(self, message: bytes) -> None:
        r = Reader(message)
        rid, fork, length, start, end = r.uint(), r.uint(), r.uint(), r.uint(), r.uint()
        lg = self.log
        end = min(end, start + RUN_BLOCKS)
        try:
            if fork != lg.fork:
                raise NotAvailableError(f"fork {fork} asked, log is at fork {lg.fork}")
            values, proof = lg.range_proof(start, end, length)
        except (CairnError, ValueError) as exc:
            log.debug("no range for request %d: %s", rid, exc)
            self.stats.no_data_sent += 1
            none = bytearray()
            write_uint(none, rid)
            self._send(
                MessageType.EXTENSION, encode_extension(Extension(EXT_RANGE_NONE, bytes(none)))
            )
            return
        total = 0
        for k, v in enumerate(values):  # keep one answer within RUN_BYTES
            total += len(v)
            if total > RUN_BYTES and k:
                values = values[:k]
                proof = range_proof_nodes(lg.get_node, length, start, start + k)
                break
        out = bytearray()
        for x in (rid, start, len(values)):
            write_uint(out, x)
        for v in values:
            write_buffer(out, v)
        write_uint(out, len(proof))
        for n in proof:
            write_uint(out, n.index)
            write_uint(out, n.size)
            out += n.hash
        self.stats.requests_served += 1
        self._send(MessageType.EXTENSION, encode_extension(Extension(EXT_RANGE_DATA, bytes(out))))

    def _on_range_data(self, message: bytes) -> None:
        r = Reader(message)
        rid, start, count = r.uint(), r.uint(), r.uint()
        if count > RUN_BLOCKS or count > r.remaining():
            raise DecodeError(f"range answer of {count} blocks does not fit")
        values = [r.bytes_() for _ in range(count)]
        proof = r.array(lambda rr: Node(rr.uint(), rr.uint(), rr.fixed(32)), 512)
        pending = self._inflight.get(rid)
        if pending is None or pending.end is None or pending.block is None:
            return  # unsolicited: store nothing
        del self._inflight[rid]
        try:
            if start != pending.block or start + count > pending.end:
                raise VerificationError(
                    f"range answer {start}+{count} is not the run {pending.block}..{pending.end}"
                    " asked for")
            stored = self.log.verify_and_apply_range(start, values, proof)
        except RemoteError:  # counted by receive()
            for b in range(pending.end - 1, pending.block - 1, -1):
                self._requeue(b)
            raise
        self.stats.blocks_downloaded += stored
        if stored:
            self._events.append(Stored(self.log.discovery_key, stored))
        for b in range(start, start + count):
            self._wanted_set.discard(b)
        for b in range(pending.end - 1, start + count - 1, -1):  # a shortened answer: ask again
            self._requeue(b)
        self._pump()

    def _on_sync(self, m: Sync) -> None:
        self.synced = True
        self.remote_fork = m.fork
        self.remote_length = m.length
        self._events.append(Synced(self.log.discovery_key, m.fork, m.length))
        if self.log.length != self._sent_length:
            self.sync()
        self._pump()

    def _on_request(self, req: Request) -> None:
        try:
            proof = self.log.proof(req)
        except DamagedBlockError as exc:
            # held, but its data is gone bad: no data (all the protocol lets us send), said
            # loudly by the log (once per block), and named to a Cairn peer so its hole has
            # a reason
            self.stats.no_data_sent += 1
            self.stats.damaged_refused += 1
            if self.remote_cairn:
                body = bytearray()
                write_uint(body, exc.index)
                self._send(MessageType.EXTENSION,
                           encode_extension(Extension(EXT_DAMAGED, bytes(body))))
            self._send(MessageType.NO_DATA, encode_no_data(NoData(req.id)))
            return
        except (CairnError, ValueError) as exc:  # not held, out of range, another fork
            log.debug("no data for request %d: %s", req.id, exc)
            self.stats.no_data_sent += 1
            self._send(MessageType.NO_DATA, encode_no_data(NoData(req.id)))
            return
        self.stats.requests_served += 1
        self._send(MessageType.DATA, encode_data(proof))

    def _on_data(self, payload: bytes) -> None:
        proof = decode_data(payload)
        pending = self._inflight.pop(proof.request, None)
        if pending is None:
            return  # unsolicited (a push) or cancelled: ignore, store nothing
        if pending.upgrade:
            # an upgrade changes what later proofs verify against: apply it (and anything
            # queued before it) now
            self._queued.append((pending, proof))
            self.flush()
            return
        self._queued.append((pending, proof))
        if len(self._queued) >= self.window:
            self.flush()

    def flush(self) -> None:
        """Verify and store the data received so far, in one transaction.

        An answer whose proof stops at a node that another request in flight brings waits for
        that answer; if that request was given up, the block is asked for again.
        """
        if not self._queued:
            return
        queued = sorted(self._queued, key=lambda q: q[0].id)
        self._queued = []
        batch: list[tuple[_Inflight, Data]] = []
        in_batch: set[int] = set()
        waiting: set[int] = set()
        for pending, proof in queued:
            need = pending.need_node
            if (
                need is None
                or pending.provider in in_batch
                or self.log.get_node(need) is not None
            ):
                batch.append((pending, proof))
                in_batch.add(pending.id)
            elif pending.provider in self._inflight or pending.provider in waiting:
                self._queued.append((pending, proof))  # its proof ends at a node on its way
                waiting.add(pending.id)
            else:
                self._settled(pending)  # the node it counted on will not come: ask again
                if pending.block is not None:
                    self._requeue(pending.block)
        if not batch:
            return
        try:
            results = self.log.verify_and_apply_many([p for _, p in batch])
        except RemoteError:
            # nothing of the batch was stored: ask again (from this peer if it stays, or another)
            self.stats.invalid += 1
            for pending, _ in reversed(batch):
                self._settled(pending)
                if pending.upgrade:
                    self._upgrading = False
                elif pending.block is not None:
                    self._requeue(pending.block)
            raise
        stored = 0
        for (pending, _), applied in zip(batch, results, strict=True):
            self._settled(pending)
            if pending.upgrade:
                self._upgrading = False
            if applied.block is not None:
                stored += 1
                self.stats.blocks_downloaded += 1
                self._wanted_set.discard(applied.block)
                self.refused.discard(applied.block)
            elif pending.block is not None:
                self._requeue(pending.block)
        if stored:
            self._events.append(Stored(self.log.discovery_key, stored))
        if any(a.upgraded for a in results) and self.log.length != self._sent_length:
            self.sync()
        self._pump()

    def _on_no_data(self, m: NoData) -> None:
        pending = self._inflight.pop(m.request, None)
        if pending is None:
            return
        if pending.upgrade:
            self._upgrading = False
            self.remote_length = min(self.remote_length, self.log.length)
        elif pending.block is not None:
            # the remote does not hold it: give up on it for this session
            self._settled(pending)
            self._wanted_set.discard(pending.block)
            if pending.end is None:
                self.refused.add(pending.block)
        self._pump()

    def _requeue(self, i: int) -> None:
        if not self.log.has(i):
            self._wanted.appendleft(i)

    def update(self) -> None:
        """The log changed under us (an append, another session's download): resync."""
        if self.remote_opened and self.log.length != self._sent_length:
            self.sync()
        if self.remote_opened:
            self._announce_range()
        self._pump()

    def fail(self, reason: str) -> None:
        self.closed_reason = reason
        self._inflight.clear()
        self._expect.clear()
        self._upgrading = False


def _levels(block: int, length: int) -> int:
    """How many levels block ``block`` is below the root that covers it in a log of ``length``."""
    leaf = 2 * block
    for root in flat_tree.full_roots(2 * length):
        left, right = flat_tree.spans(root)
        if left <= leaf <= right:
            return flat_tree.depth(root)
    raise NotAvailableError(f"block {block} is outside length {length}")

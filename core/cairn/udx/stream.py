"""One UDX stream without I/O: reliable, ordered, congestion-controlled bytes over datagrams.

The verbs (aioquic's for datagram cores)::

    core.receive_data(datagram, now)   # a UDX packet the socket got for this stream's id
    core.next_event()                  # StreamData / StreamEnded / StreamMessage / StreamClosed
    core.data_to_send(now)             # datagrams to send to the peer now
    core.timer()                       # when to call on_timer(now) next (None: no timer)
    core.on_timer(now)                 # retransmission timeout, zero-window probe

and what this side says: :meth:`write`, :meth:`end`, :meth:`send_message`, :meth:`destroy`.
``now`` is seconds on any monotonic clock.

Sender: packets of up to ``mtu - 48`` bytes (IPv4 + UDP + UDX headers), at most ``cwnd`` in
flight (:class:`~cairn.udx.congestion.NewReno`) and no more bytes than the peer's window.
The peer acks every DATA/END packet at once, with SACK blocks for what it holds out of order.
A packet is lost when three later packets were sacked (first transmissions) or when a packet
sent after it was delivered more than a quarter RTT before it (retransmissions, RACK); it is
resent at once. The retransmission timeout follows RFC 6298 (1 s floor, 30 s cap, doubling);
the sixth timeout of one packet closes the stream: ``"peer gone"``. Path MTU: from 1200 up by
32 bytes to 1500, each step probed by padding a full data packet (the header's data offset),
three lost probes end the search, and a timeout falls back to 1200 for new packets.

Receiver: delivers in order, holds at most ``MAX_AHEAD`` packets and ``window`` bytes ahead of
the gap, and advertises ``window`` minus what it holds and what the reader has not taken.

Every packet that is malformed or wrong (DecodeError, a stream id not ours, an ack or SACK of
packets never sent, a seq beyond the receive window, data after END, anything after close) is
dropped and counted in :attr:`StreamCore.drops` by reason; nothing raises out of
:meth:`receive_data`.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass

from cairn.errors import DecodeError, LocalError
from cairn.udx.congestion import NewReno
from cairn.udx.events import StreamClosed, StreamData, StreamEnded, StreamEvent, StreamMessage
from cairn.udx.packet import (
    HEADER_SIZE,
    Packet,
    PacketType,
    decode,
    encode,
    encode_plain,
    seq_add,
    seq_diff,
)
from cairn.udx.receive import ReceiveBuffer

__all__ = [
    "DEFAULT_WINDOW",
    "MAX_AHEAD",
    "MAX_RTO_TIMEOUTS",
    "MTU_BASE",
    "MTU_MAX",
    "StreamCore",
]

DEFAULT_WINDOW = 4 << 20  # libudx's receive window
MAX_AHEAD = 4096  # packets held beyond the gap (4 MiB of 1152-byte packets fit)
MAX_WINDOW = 1024  # packets in flight at most (~1.2-1.5 MB)
MAX_BURST = 32  # new packets sent back to back at most: the rest go as acks come back
MTU_BASE = 1200
MTU_MAX = 1500
MTU_STEP = 32
MTU_PROBES = 3
IP_UDP_HEADERS = 28  # IPv4 + UDP; IPv6 is 48
RTO_MIN = 1.0
RTO_MAX = 30.0
RTO_INITIAL = 1.0
MAX_RTO_TIMEOUTS = 6
DUP_THRESHOLD = 3
MAX_MESSAGE = MTU_BASE - IP_UDP_HEADERS - HEADER_SIZE

# the type bits as plain ints (IntFlag arithmetic costs a function call per operation)
_ACK = int(PacketType.ACK)
_DATA = int(PacketType.DATA)
_END = int(PacketType.END)
_SACK = int(PacketType.SACK)
_MESSAGE = int(PacketType.MESSAGE)
_DESTROY = int(PacketType.DESTROY)
_HEARTBEAT = int(PacketType.HEARTBEAT)
_DATA_OR_END = _DATA | _END


@dataclass(slots=True)
class _Sent:
    seq: int
    kind: int  # the type bits as sent: DATA, END or both
    data: bytes
    sent_at: float = 0.0
    transmits: int = 0
    rto_timeouts: int = 0
    padding: int = 0  # > 0: a path-MTU probe
    probe_size: int = 0
    lost: bool = False
    sacked: bool = False
    in_flight: bool = False


class StreamCore:
    """A UDX stream between ``local_id`` (ours, what the peer writes in its headers) and
    ``remote_id`` (the peer's)."""

    def __init__(
        self,
        local_id: int,
        remote_id: int,
        *,
        seq: int = 0,
        ack: int = 0,
        window: int = DEFAULT_WINDOW,
        mtu: int = MTU_BASE,
        mtu_max: int = MTU_MAX,
        ip_overhead: int = IP_UDP_HEADERS,
    ) -> None:
        self.local_id = local_id
        self.remote_id = remote_id
        self.window = window
        self.read_buffered = 0  # bytes delivered that the reader has not taken (the driver sets)
        self.drops: Counter[str] = Counter()
        self.mtu = mtu
        self.mtu_max = max(mtu, mtu_max)
        self._ip_overhead = ip_overhead
        self._mtu_probe_size = 0  # 0: not searching (yet, or any more)
        self._mtu_probe_wanted = False
        self._mtu_probe_failures = 0
        self._mtu_started = False
        # sender
        self.seq = seq  # next seq to use
        self.remote_acked = seq  # the oldest seq not acked
        self._sent: dict[int, _Sent] = {}
        self._lost: deque[int] = deque()
        self._in_flight = 0  # packets sent, not acked, sacked or declared lost
        self._outstanding = 0  # payload bytes not acked or sacked
        self._pending = bytearray()
        self._end_queued = False
        self._end_sent = False
        self._ended = False  # our END was acked
        self._messages: deque[bytes] = deque()
        self._peer_window = DEFAULT_WINDOW
        self.congestion = NewReno(max_window=MAX_WINDOW)
        self.srtt: float | None = None
        self._rttvar = 0.0
        self.rto = RTO_INITIAL
        self._rto_at: float | None = None
        self._probe_at: float | None = None  # zero-window probe
        self._rack_sent_at = 0.0  # sent_at of the most recently sent packet delivered
        # receiver
        self._recv = ReceiveBuffer(ack=ack)
        self._events: deque[StreamEvent] = deque()
        self._out: list[bytes] = []
        self._ack_owed = False  # a DATA/END, HEARTBEAT or window change to answer with an ack
        self.closed = False
        self.error: str | None = None
        self.packets_sent = 0
        self.retransmits = 0

    # -- what this side says ---------------------------------------------------------------

    @property
    def max_payload(self) -> int:
        return self.mtu - self._ip_overhead - HEADER_SIZE

    @property
    def pending(self) -> int:
        """Bytes written and not yet sent."""
        return len(self._pending)

    @property
    def end_acked(self) -> bool:
        return self._ended

    @property
    def write_buffered(self) -> int:
        """Bytes written and not yet acked by the peer."""
        return len(self._pending) + self._outstanding

    def write(self, data: bytes) -> None:
        if self._end_queued or self.closed:
            raise LocalError("write on a udx stream that was ended or closed")
        self._pending += data

    def end(self) -> None:
        """Send END after everything written (the peer reads EOF there)."""
        if self.closed:
            raise LocalError("end on a closed udx stream")
        self._end_queued = True

    def send_message(self, data: bytes) -> None:
        """An unreliable datagram on the stream (one MESSAGE packet, never retransmitted)."""
        if len(data) > MAX_MESSAGE:
            raise LocalError(f"udx message of {len(data)} bytes, over {MAX_MESSAGE}")
        if not self.closed:
            self._messages.append(bytes(data))

    def destroy(self) -> None:
        """Close now: one DESTROY packet tells the peer, nothing is retransmitted."""
        if self.closed:
            return
        self._out.append(self._header(_DESTROY))
        self.seq = seq_add(self.seq, 1)
        self._close(None)

    def update_window(self) -> None:
        """Tell the peer our window now (the reader took what it held): one ACK."""
        if not self.closed:
            self._send_ack()

    # -- the verbs -------------------------------------------------------------------------

    def next_event(self) -> StreamEvent | None:
        return self._events.popleft() if self._events else None

    def data_to_send(self, now: float) -> list[bytes]:
        """The datagrams due now. Every DATA/END packet received is acked; the ack of the last
        one received rides on a packet that goes out now if there is one (every header carries
        ``ack`` and ``window``, and libudx reads them from any packet), else it goes as a pure
        ACK, also when there are SACK blocks to tell (first)."""
        if self._ack_owed and self._recv.starts:
            self._ack_owed = False
            self._out.append(self._ack_packet())
        before = self.packets_sent
        if not self.closed:
            self._send_retransmits(now)
            self._send_new(now)
            while self._messages:
                self._out.append(self._header(_MESSAGE, data=self._messages.popleft()))
            if self._in_flight and self._rto_at is None:
                self._rto_at = now + self.rto
            self._arm_window_probe(now)
        if self._ack_owed:
            self._ack_owed = False
            if self.packets_sent == before:  # nothing went out to carry it
                self._out.append(self._ack_packet())
        out, self._out = self._out, []
        return out

    def timer(self) -> float | None:
        times = [t for t in (self._rto_at, self._probe_at) if t is not None]
        return min(times) if times else None

    def on_timer(self, now: float) -> None:
        if self.closed:
            return
        if self._rto_at is not None and now >= self._rto_at:
            self._on_rto(now)
        if self._probe_at is not None and now >= self._probe_at and not self.closed:
            self._probe_at = None
            self._out.append(self._header(_HEARTBEAT))

    def receive_data(self, datagram: bytes, now: float) -> None:
        """One datagram from the socket; never raises: a bad one is counted in :attr:`drops`."""
        try:
            packet = decode(datagram)
        except DecodeError as exc:
            self.drops[f"malformed: {exc}"] += 1
            return
        if self.closed and self._lingering(packet):
            self.drops["retransmission after a clean close, acked again"] += 1
            self._send_ack()  # our last ack was lost: the peer would wait for it till "gone"
            return
        reason = self._check(packet)
        if reason is not None:
            self.drops[reason] += 1
            return
        if packet.type & _HEARTBEAT:
            self._send_ack()
            return
        kind = packet.type
        if kind & _DESTROY:
            if 0 <= seq_diff(packet.seq, self._recv.ack) < MAX_AHEAD:
                self._close("destroyed by the peer")
            else:
                self.drops["stale destroy"] += 1
            return
        if kind & (_DATA_OR_END):
            if self._ack_owed:  # every DATA/END is acked: the one owed goes now, as it was
                self._ack_owed = False
                self._out.append(self._ack_packet())
            self._receive_stream_data(packet)
        if kind & _MESSAGE:
            self._events.append(StreamMessage(packet.data))
        self._receive_ack(packet, now)
        if kind & (_DATA_OR_END) and not self.closed:
            self._send_ack()
        self._maybe_close()

    # -- receiving -------------------------------------------------------------------------

    def _lingering(self, packet: Packet) -> bool:
        """After both sides ended: a DATA/END we already took, for this stream."""
        return (self.error is None and self._recv.ended and packet.stream_id == self.local_id
                and bool(packet.type & _DATA_OR_END) and seq_diff(packet.seq, self._recv.ack) < 0)

    def _check(self, packet: Packet) -> str | None:
        """Why this packet must be dropped, or None."""
        if self.closed:
            return "packet after the stream closed"
        if packet.stream_id != self.local_id:
            return "wrong stream id"
        if seq_diff(packet.ack, self.seq) > 0:
            return "ack of unsent data"
        for start, end in packet.sacks:
            if seq_diff(end, self.seq) > 0:
                return "sack of unsent data"
            if seq_diff(start, end) >= 0:
                return "empty or reversed sack block"
        if packet.type & (_DATA_OR_END):
            ahead = seq_diff(packet.seq, self._recv.ack)
            if ahead >= MAX_AHEAD:
                return "seq beyond the receive window"
            if self._recv.ended and ahead >= 0:
                return "data after end"
        return None

    def _receive_stream_data(self, packet: Packet) -> None:
        recv = self._recv
        ahead = seq_diff(packet.seq, recv.ack)
        if ahead < 0 or packet.seq in recv.held:
            self.drops["duplicate data"] += 1  # (acked again: our earlier ack may be lost)
            return
        if ahead > 0:
            if recv.held_bytes + len(packet.data) > self.window:
                self.drops["receive buffer full"] += 1
                return
            recv.held[packet.seq] = (packet.type, packet.data)
            recv.held_bytes += len(packet.data)
            recv.hold(ahead)
            return
        if self.read_buffered + len(packet.data) > self.window + MTU_MAX:
            self.drops["receive window exceeded"] += 1  # (the reader is not keeping up)
            return
        chunks = [packet.data]
        kind = packet.type
        recv.ack = seq_add(recv.ack, 1)
        taken = 1
        while not kind & _END and recv.ack in recv.held:
            kind, data = recv.held.pop(recv.ack)
            recv.held_bytes -= len(data)
            chunks.append(data)
            recv.ack = seq_add(recv.ack, 1)
            taken += 1
        recv.advanced(taken)
        data = b"".join(chunks)
        if data:
            self._events.append(StreamData(data))
        if kind & _END:
            recv.ended = True
            recv.clear()
            self._events.append(StreamEnded())

    def _send_ack(self) -> None:
        """Owe the peer an ack: :meth:`data_to_send` sends it, alone or on a data packet."""
        self._ack_owed = True

    def _ack_packet(self) -> bytes:
        sacks = self._recv.sacks()
        return self._header(_SACK if sacks else _ACK, sacks=tuple(sacks))

    # -- acks of what we sent --------------------------------------------------------------

    def _receive_ack(self, packet: Packet, now: float) -> None:
        if seq_diff(packet.ack, self.remote_acked) >= 0:
            self._peer_window = packet.window
            if packet.window > 0:
                self._probe_at = None
        delivered = 0
        advanced = seq_diff(packet.ack, self.remote_acked) > 0
        while seq_diff(packet.ack, self.remote_acked) > 0:
            sent = self._sent.pop(self.remote_acked, None)
            if sent is not None:
                if not sent.sacked:
                    delivered += self._delivered(sent, now)
                if sent.kind & _END:
                    self._ended = True  # (acked, not just sacked: all before it arrived)
            self.remote_acked = seq_add(self.remote_acked, 1)
        highest: int | None = None
        for start, end in packet.sacks:
            if seq_diff(start, self.remote_acked) < 0:
                self.drops["stale sack block"] += 1
                continue
            seq = start
            while seq != end:
                sent = self._sent.get(seq)
                if sent is not None and not sent.sacked:
                    sent.sacked = True
                    delivered += self._delivered(sent, now)
                seq = seq_add(seq, 1)
            if highest is None or seq_diff(end, highest) > 0:
                highest = end
        if highest is not None and delivered:  # (a SACK telling nothing new costs no scan)
            self._detect_losses(seq_add(highest, -1))
        self.congestion.on_delivered(delivered, self.remote_acked)
        if advanced:
            self._rto_at = now + self.rto if self._in_flight or self._lost else None
            if not self._sent:
                self._rto_at = None

    def _delivered(self, sent: _Sent, now: float) -> int:
        if sent.in_flight:
            self._in_flight -= 1
            sent.in_flight = False
        if sent.lost:
            sent.lost = False  # (its seq stays in _lost; _send_retransmits skips it)
        self._outstanding -= len(sent.data)
        if sent.transmits == 1:
            self._rtt_sample(now - sent.sent_at)
        if sent.sent_at > self._rack_sent_at:
            self._rack_sent_at = sent.sent_at
        if sent.padding and sent.transmits == 1 and sent.probe_size > self.mtu:
            self._mtu_probe_acked(sent.probe_size)
        if not self._mtu_started:
            self._mtu_started = True
            self._mtu_next_probe(self.mtu)
        return 1

    def _rtt_sample(self, rtt: float) -> None:
        rtt = max(rtt, 0.0)
        if self.srtt is None:
            self.srtt, self._rttvar = rtt, rtt / 2
        else:
            self._rttvar = 0.75 * self._rttvar + 0.25 * abs(self.srtt - rtt)
            self.srtt = 0.875 * self.srtt + 0.125 * rtt
        self.rto = min(max(self.srtt + 4 * self._rttvar, RTO_MIN), RTO_MAX)

    def _detect_losses(self, highest_sacked: int) -> None:
        reorder = (self.srtt or 0.0) / 4
        found = False
        seq = self.remote_acked
        while seq_diff(highest_sacked, seq) > 0:
            sent = self._sent.get(seq)
            if sent is not None and not sent.sacked and not sent.lost:
                first = sent.transmits == 1
                if (first and seq_diff(highest_sacked, seq) >= DUP_THRESHOLD) or (
                    sent.sent_at + reorder < self._rack_sent_at
                ):
                    self._mark_lost(sent)
                    found = True
            seq = seq_add(seq, 1)
        if found:
            self.congestion.on_loss(self.remote_acked, self.seq)

    def _mark_lost(self, sent: _Sent) -> None:
        sent.lost = True
        if sent.in_flight:
            sent.in_flight = False
            self._in_flight -= 1
        if sent.padding:
            self._mtu_probe_lost(sent)
        self._lost.append(sent.seq)

    def _on_rto(self, now: float) -> None:
        head = self._sent.get(self.remote_acked)
        if head is None:
            self._rto_at = None
            return
        head.rto_timeouts += 1
        if head.rto_timeouts >= MAX_RTO_TIMEOUTS:
            self._close(
                f"peer gone: packet {head.seq} unacknowledged after {MAX_RTO_TIMEOUTS} "
                "retransmission timeouts"
            )
            return
        self.rto = min(self.rto * 2, RTO_MAX)
        self._rto_at = now + self.rto
        self.congestion.on_timeout(self.seq)
        if head.rto_timeouts >= 2 and self.mtu > MTU_BASE:
            self.mtu = MTU_BASE  # new packets only: those sent keep their seq and size
            self._mtu_probe_size = 0
        self._lost.clear()
        seq = self.remote_acked
        while seq != self.seq:
            sent = self._sent.get(seq)
            if sent is not None and not sent.sacked:
                if not sent.lost:
                    self._mark_lost(sent)
                elif sent.seq not in self._lost:
                    self._lost.append(sent.seq)
            seq = seq_add(seq, 1)

    # -- sending ---------------------------------------------------------------------------

    def _header(
        self,
        kind: int,
        *,
        seq: int | None = None,
        data: bytes = b"",
        sacks: tuple[tuple[int, int], ...] = (),
        padding: int = 0,
    ) -> bytes:
        window = max(0, self.window - self._recv.held_bytes - self.read_buffered)
        self.packets_sent += 1
        if not sacks and not padding:
            return encode_plain(kind, self.remote_id, window, self.seq if seq is None else seq,
                                self._recv.ack, data)
        return encode(Packet(kind, self.remote_id, window, self.seq if seq is None else seq,
                             self._recv.ack, sacks, data, padding))

    def _transmit(self, sent: _Sent, now: float) -> None:
        sent.sent_at = now
        sent.transmits += 1
        sent.in_flight = True
        self._in_flight += 1
        self._out.append(self._header(sent.kind, seq=sent.seq, data=sent.data,
                                      padding=sent.padding))

    def _send_retransmits(self, now: float) -> None:
        while self._lost and self._in_flight < self.congestion.window:
            sent = self._sent.get(self._lost.popleft())
            if sent is None or not sent.lost or sent.sacked:
                continue
            sent.lost = False
            self.retransmits += 1
            self._transmit(sent, now)

    def _send_new(self, now: float) -> None:
        burst = 0
        while self._in_flight < self.congestion.window and burst < MAX_BURST:
            burst += 1
            if seq_diff(self.seq, self.remote_acked) >= MAX_AHEAD:
                return
            size = min(len(self._pending), self.max_payload)
            last = self._end_queued and not self._end_sent and size == len(self._pending)
            if size == 0 and not last:
                return
            if self._outstanding + size > self._peer_window and (
                self._outstanding or self._peer_window == 0
            ):
                return  # (one packet may exceed a small window when nothing is out)
            data = bytes(self._pending[:size])
            del self._pending[:size]
            kind = _DATA if data else _ACK
            if last:
                kind |= _END
                self._end_sent = True
            sent = _Sent(self.seq, kind, data)
            if self._mtu_probe_wanted and size == self.max_payload:
                sent.padding = self._mtu_probe_size - self.mtu
                sent.probe_size = self._mtu_probe_size
                self._mtu_probe_wanted = False
            self._sent[self.seq] = sent
            self._outstanding += size
            self.seq = seq_add(self.seq, 1)
            self._transmit(sent, now)

    def _arm_window_probe(self, now: float) -> None:
        waiting = self._pending or (self._end_queued and not self._end_sent)
        if self._peer_window == 0 and waiting and not self._in_flight:
            if self._probe_at is None:
                self._probe_at = now + self.rto
        else:
            self._probe_at = None

    # -- path MTU --------------------------------------------------------------------------

    def _mtu_next_probe(self, mtu: int) -> None:
        if mtu >= self.mtu_max:
            self._mtu_probe_size = 0
            self._mtu_probe_wanted = False
            return
        self._mtu_probe_size = min(mtu + MTU_STEP, self.mtu_max)
        self._mtu_probe_wanted = True
        self._mtu_probe_failures = 0

    def _mtu_probe_acked(self, size: int) -> None:
        if size != self._mtu_probe_size:
            return
        self.mtu = size
        self._mtu_next_probe(size)

    def _mtu_probe_lost(self, sent: _Sent) -> None:
        sent.padding = 0  # the retransmission goes at the size that works
        if sent.probe_size != self._mtu_probe_size:
            return
        self._mtu_probe_failures += 1
        if self._mtu_probe_failures >= MTU_PROBES:
            self._mtu_probe_size = 0  # the search is over at self.mtu
            self._mtu_probe_wanted = False
        else:
            self._mtu_probe_wanted = True

    # -- closing ---------------------------------------------------------------------------

    def _maybe_close(self) -> None:
        if not self.closed and self._ended and self._recv.ended:
            self._close(None)

    def _close(self, error: str | None) -> None:
        self.closed = True
        self.error = error
        self._rto_at = self._probe_at = None
        self._sent.clear()
        self._lost.clear()
        self._pending.clear()
        self._messages.clear()
        self._in_flight = self._outstanding = 0
        self._recv.clear()
        self._events.append(StreamClosed(error))

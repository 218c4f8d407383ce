"""NewReno congestion control (RFC 5681, RFC 6582) counted in packets, as UDX counts them.

libudx runs BBR v1; the wire does not care which controller a sender runs (see
docs/decisions/0012-udx.md). Slow start from 10 packets, additive increase of one packet per
window, halving once per loss episode (the episode lasts until the packets in flight at the
loss are acked), and one packet after a retransmission timeout.
"""

from __future__ import annotations

from cairn.udx.packet import seq_diff

__all__ = ["INITIAL_WINDOW", "NewReno"]

INITIAL_WINDOW = 10
MIN_WINDOW = 2


class NewReno:
    def __init__(self, *, max_window: int) -> None:
        self.max_window = max_window
        self.cwnd = float(INITIAL_WINDOW)
        self.ssthresh = float(max_window)
        self._recovery_until: int | None = None  # seq: the episode ends when this is acked

    @property
    def window(self) -> int:
        return max(1, int(self.cwnd))

    def in_recovery(self, acked: int) -> bool:
        if self._recovery_until is None:
            return False
        if seq_diff(acked, self._recovery_until) >= 0:
            self._recovery_until = None
            return False
        return True

    def on_delivered(self, packets: int, acked: int) -> None:
        """``packets`` newly acked or sacked; ``acked`` is the peer's cumulative ack."""
        if packets <= 0 or self.in_recovery(acked):
            return
        for _ in range(packets):
            if self.cwnd < self.ssthresh:
                self.cwnd += 1
            else:
                self.cwnd += 1 / self.cwnd
        self.cwnd = min(self.cwnd, float(self.max_window))

    def on_loss(self, acked: int, next_seq: int) -> None:
        """Packets were found lost (fast retransmit): halve once per episode."""
        if self.in_recovery(acked):
            return
        self.ssthresh = max(self.cwnd / 2, float(MIN_WINDOW))
        self.cwnd = self.ssthresh
        self._recovery_until = next_seq

    def on_timeout(self, next_seq: int) -> None:
        self.ssthresh = max(self.cwnd / 2, float(MIN_WINDOW))
        self.cwnd = 1.0
        self._recovery_until = next_seq

"""The receiving side's buffer of a UDX stream: packets held beyond the next expected seq.

The held seqs are also kept as sorted runs ``[start, end)``, counted without wrap-around from the
stream's first ack, so the SACK blocks of every ack cost O(log n) whatever a peer sends (sorting
the held set for each ack let a reordering flood cost a sort per packet). A hypothesis test
(``tests/unit/test_udx.py``) holds the runs to "sort what is held".
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from cairn.udx.packet import MAX_SACKS

__all__ = ["ReceiveBuffer"]


@dataclass(slots=True)
class ReceiveBuffer:
    """What a stream holds beyond its next expected seq, and the SACK runs that say so."""

    ack: int  # the next seq expected
    held: dict[int, tuple[int, bytes]] = field(default_factory=dict)
    held_bytes: int = 0
    ended: bool = False  # the peer's END was delivered
    # the held seqs as sorted [start, end) runs, counted without wrap-around from the first
    # ack (``ack_count``): SACK blocks in O(log n) per packet, whatever a peer sends
    ack_count: int = 0
    starts: list[int] = field(default_factory=list)
    ends: list[int] = field(default_factory=list)

    def hold(self, ahead: int) -> None:
        x = self.ack_count + ahead
        i = bisect.bisect_right(self.starts, x) - 1
        left = i >= 0 and self.ends[i] == x
        right = i + 1 < len(self.starts) and self.starts[i + 1] == x + 1
        if left and right:
            self.ends[i] = self.ends[i + 1]
            del self.starts[i + 1], self.ends[i + 1]
        elif left:
            self.ends[i] = x + 1
        elif right:
            self.starts[i + 1] = x
        else:
            self.starts.insert(i + 1, x)
            self.ends.insert(i + 1, x + 1)

    def advanced(self, packets: int) -> None:
        self.ack_count += packets
        while self.starts and self.ends[0] <= self.ack_count:
            del self.starts[0], self.ends[0]

    def clear(self) -> None:
        self.held.clear()
        self.held_bytes = 0
        self.starts.clear()
        self.ends.clear()

    def sacks(self) -> list[tuple[int, int]]:
        base = self.ack - self.ack_count
        return [((start + base) & 0xFFFFFFFF, (end + base) & 0xFFFFFFFF)
                for start, end in zip(self.starts[:MAX_SACKS], self.ends[:MAX_SACKS],
                                      strict=True)]

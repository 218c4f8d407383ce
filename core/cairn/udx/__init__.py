"""UDX, the reliable datagram stream of the Holepunch stack (libudx / udx-native), in Python.

- :mod:`cairn.udx.packet`: the 20-byte header and SACK blocks (byte table there);
- :mod:`cairn.udx.stream`: :class:`StreamCore`, one stream without I/O (ordering, acks, SACK,
  retransmission, path-MTU probing, "peer gone"), with :mod:`cairn.udx.congestion` (NewReno)
  and :mod:`cairn.udx.receive` (what is held out of order, the SACK runs);
- :mod:`cairn.udx.aio`: :class:`UDXSocket` and :class:`UDXStream` on asyncio, and
  :func:`open_udx_connection` giving a reader/writer pair the secret-stream driver runs on.
"""

from cairn.udx.aio import (
    StreamClosedError,
    UDXReader,
    UDXSocket,
    UDXStream,
    UDXWriter,
    open_udx_connection,
)
from cairn.udx.events import StreamClosed, StreamData, StreamEnded, StreamEvent, StreamMessage
from cairn.udx.packet import Packet, PacketType, decode, encode, is_udx, seq_diff
from cairn.udx.stream import StreamCore

__all__ = [
    "Packet",
    "PacketType",
    "StreamClosed",
    "StreamClosedError",
    "StreamCore",
    "StreamData",
    "StreamEnded",
    "StreamEvent",
    "StreamMessage",
    "UDXReader",
    "UDXSocket",
    "UDXStream",
    "UDXWriter",
    "decode",
    "encode",
    "is_udx",
    "open_udx_connection",
    "seq_diff",
]

"""SQLite storage of logs: one log per file, or many logs in one shared file.

- :mod:`~cairn.storage.log`: :class:`LogStorage`, the tables of one log (meta, head,
  segments, nodes, fork evidence) and every read and write the log makes; its docstring
  has the storage layout.
- :mod:`~cairn.storage.segments`: :class:`Segment`, a decoded row of blocks, and the
  process-wide pool of decoded segments (:func:`limit_segment_cache`).
- :mod:`~cairn.storage.shared`: :class:`SharedDB`, many logs in one file under one
  transaction, and :class:`Participant`, the public protocol its logs take part by.
- :mod:`~cairn.storage.sqlite`: :class:`Conn` (a log's table names resolved) and the checks
  of a file's header.

:class:`cairn.log.Log` is the only writer; the apps name :class:`SharedDB` and
:func:`limit_segment_cache` and nothing else.
"""

from cairn.storage.log import FORMAT, Head, LogStorage, Meta
from cairn.storage.segments import NODE_STRUCT, Segment, limit_segment_cache, pack_nodes
from cairn.storage.shared import Participant, SharedDB
from cairn.storage.sqlite import Conn, JournalMode, SyncMode

__all__ = [
    "FORMAT",
    "NODE_STRUCT",
    "Conn",
    "Head",
    "JournalMode",
    "LogStorage",
    "Meta",
    "Participant",
    "Segment",
    "SharedDB",
    "SyncMode",
    "limit_segment_cache",
    "pack_nodes",
]

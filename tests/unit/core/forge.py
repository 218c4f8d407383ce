"""Test helper: rewrite a block inside a log file behind the log's back (to test detection)."""

from __future__ import annotations

import sqlite3
from array import array
from pathlib import Path

from cairn.crypto import leaf_hash


def forge_block(path: Path, index: int, data: bytes, *, fix_hash: bool) -> None:
    """Replace block ``index``'s bytes in its segment; with ``fix_hash`` its leaf hash too."""
    db = sqlite3.connect(path)
    start, sizes_raw, hashes, blob = db.execute(
        "SELECT start, sizes, hashes, data FROM segments WHERE start <= ? "
        "ORDER BY start DESC LIMIT 1",
        (index,),
    ).fetchone()
    sizes = array("I")
    sizes.frombytes(sizes_raw)
    j = index - start
    off = sum(sizes[:j])
    blob = blob[:off] + data + blob[off + sizes[j] :]
    sizes[j] = len(data)
    if fix_hash:
        hashes = hashes[: 32 * j] + leaf_hash(data) + hashes[32 * j + 32 :]
    db.execute(
        "UPDATE segments SET sizes = ?, hashes = ?, data = ? WHERE start = ?",
        (sizes.tobytes(), hashes, blob, start),
    )
    db.commit()
    db.close()

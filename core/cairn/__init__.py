"""Cairn: IoT sensor telemetry over signed sparse logs (Hypercore 11) and a DHT (hyperdht 6).

The shared library that the edge agent (`cairn_edge`), the gateway (`cairn_gateway`) and the
firmware simulator (`cairn_sim`) build on. Its public surface is the sorted `__all__` below,
pinned by `tests/unit/test_packaging.py`.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__: str = version("cairn")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.1.0"

from cairn.crypto import KeyPair, derive_stream_key_pair, key_pair, random_key_pair
from cairn.errors import (
    CairnError,
    DecodeError,
    ForkError,
    LocalError,
    NotAvailableError,
    ReadOnlyError,
    RemoteError,
    StorageError,
    VerificationError,
)
from cairn.frames import Frame, Sample, frame_at, seek_time
from cairn.log import Applied, Log, VerifyReport

__all__ = [
    "Applied",
    "CairnError",
    "DecodeError",
    "ForkError",
    "Frame",
    "KeyPair",
    "LocalError",
    "Log",
    "NotAvailableError",
    "ReadOnlyError",
    "RemoteError",
    "Sample",
    "StorageError",
    "VerificationError",
    "VerifyReport",
    "__version__",
    "derive_stream_key_pair",
    "frame_at",
    "key_pair",
    "random_key_pair",
    "seek_time",
]

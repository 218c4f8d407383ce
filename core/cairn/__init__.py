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

__all__ = ["__version__"]

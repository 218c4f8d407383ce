"""Cairn's tests: unit/ (no sockets), interop/ (the JS oracles), integration/ (sockets)."""

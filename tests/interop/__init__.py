"""Interop tests: Cairn against the npm packages it must speak to (run with node)."""

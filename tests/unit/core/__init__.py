"""Unit tests of the core library (core/cairn)."""

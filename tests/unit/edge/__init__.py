"""Unit tests of the edge agent (edge/cairn_edge)."""

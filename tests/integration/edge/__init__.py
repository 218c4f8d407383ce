"""Integration tests of the edge agent (edge/cairn_edge) with a real broker and processes."""

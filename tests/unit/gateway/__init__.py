"""Unit tests of the gateway (gateway/cairn_gateway)."""

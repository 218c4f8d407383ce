"""Integration tests of the gateway (gateway/cairn_gateway) against real edges and services."""

"""Integration tests of the whole system as the demo runs it (simulator, edges, gateway)."""

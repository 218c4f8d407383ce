"""Unit tests: no sockets, no sleeps, no subprocesses."""

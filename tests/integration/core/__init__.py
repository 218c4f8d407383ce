"""Integration tests of the core library (core/cairn): DHT, log and replication over sockets."""

"""Integration tests: real sockets on 127.0.0.1 and port 0, and real services such as mosquitto."""

"""Connect by key, the hyperdht way: codecs, Noise IK, relaying, server and client.

See docs/dht.md ("connect by key") and docs/decisions/0013-hyperdht-connect.md.
"""

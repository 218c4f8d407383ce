"""The Cairn edge agent: MQTT ingest, stream logs, DHT publishing and the replication server.

Installed with `pip install 'cairn[edge]'`; it never depends on the gateway's packages.
"""

__all__: list[str] = []

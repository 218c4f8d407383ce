"""The Cairn gateway: discovery, live view, selective download, sample store, HTTP API, Grafana.

Installed with `pip install 'cairn[gateway]'`.
"""

__all__: list[str] = []

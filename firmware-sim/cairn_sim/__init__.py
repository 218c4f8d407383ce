"""Simulated sensor firmware and fleets for Cairn, with fault injection.

Installed with `pip install 'cairn[sim]'`.
"""

__all__: list[str] = []

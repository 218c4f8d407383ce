"""``cairn demo``: every part of Cairn on one machine (broker, DHT, gateway, edges, simulator).

The one app allowed to drive the others (tests/unit/test_import_boundaries.py):

- :mod:`cairn_demo.system`: :class:`Demo`, the whole system started and stopped as one;
- :mod:`cairn_demo.configs`: the keys and config files, written through the apps' config
  modules;
- :mod:`cairn_demo.processes`: a ``cairn`` child process and its readiness line;
- :mod:`cairn_demo.proxy`: a TCP relay between the gateway and an edge that can be cut;
- :mod:`cairn_demo.view`: the live table and the summary;
- :mod:`cairn_demo.cli`: the ``cairn demo`` command.
"""

from __future__ import annotations

from cairn_demo.cli import demo, run_demo
from cairn_demo.processes import DemoDataError, DemoError
from cairn_demo.proxy import Proxy
from cairn_demo.system import DEFAULT_SCENARIO, Demo, Summary

__all__ = ["DEFAULT_SCENARIO", "Demo", "DemoDataError", "DemoError", "Proxy", "Summary", "demo",
           "run_demo"]

"""Fixtures of the gateway's unit tests.

``store_target`` makes the target of a new, empty store: an SQLite file here. The store tests
run again on PostgreSQL (tests/integration/gateway/test_store_postgres.py imports them and
overrides this fixture with databases of a real server), so a store test opens its stores
through it: ``Store(store_target("gw"))``; the same name gives the same store (a second
gateway process on it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture
def store_target(tmp_path: Path) -> Callable[[str], str]:
    def target(name: str = "gw") -> str:
        return str(tmp_path / f"{name}.db")
    return target

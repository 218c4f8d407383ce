"""``store_target`` for the store tests run on PostgreSQL: each store a database of its own on
this test process's server (``tests/pg.py``)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator

import pytest

from cairn_gateway.pgcluster import PostgresCluster

__all__ = ["store_target"]

_databases = itertools.count()


@pytest.fixture
def store_target(pg_cluster: PostgresCluster) -> Iterator[Callable[[str], str]]:
    """Each name a new database on the shared server, dropped after the test (the same name,
    the same database: a second gateway on one store)."""
    pg_cluster.start()
    made: dict[str, str] = {}

    def target(name: str = "gw") -> str:
        if name not in made:
            made[name] = f"store_{next(_databases)}_{name}"
            pg_cluster.create_database(made[name])
        return pg_cluster.url(made[name])

    yield target
    for db in made.values():
        pg_cluster.drop_database(db)

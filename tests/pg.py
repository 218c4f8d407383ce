"""PostgreSQL for the tests: one throwaway cluster per test process, a fresh database per test.

``pg_cluster`` (session scope) is a :class:`cairn_gateway.pgcluster.PostgresCluster` with the
fast settings (no fsync): under pytest-xdist every worker is its own process and so gets its
own cluster, on its own port, in its own temporary directory, removed at the end.

``pg_url`` (function scope) creates an empty database for one test and gives its URL; the
database is dropped after the test (sessions still connected are ended). ``pg_schema_url``
gives an empty schema instead, in a database the worker's tests share, selected by the URL
(``?options=-csearch_path%3D<schema>``), dropped after the test.

Which to use (``bench/pg_fixture.py``: create, connect, one table, drop): on a quiet machine a
database takes about 28 ms (``STRATEGY FILE_COPY``; 108 ms with the default WAL-logged copy)
and a schema about 5 ms; on a loaded one (load 6 on two cores) 470-580 ms against 20 ms, as a
database is a copy of the template's 7 MB and a checkpoint. A database isolates everything
(extensions, the ``public`` schema, advisory locks, settings of the database), so it is the
default; a schema suits code that names no schema (every table through ``search_path``, as the
store's does) in tests that make many stores.

A test that stops, restarts or kills a server starts its own ``PostgresCluster``: the shared one
stays up for the others.

When PostgreSQL or psycopg is missing, :func:`tests.conftest.missing` fails the test in CI and
skips it elsewhere, naming the package.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from cairn_gateway.pgcluster import PostgresCluster

_names = itertools.count()


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """This test process's PostgreSQL server (fast settings), stopped and removed at the end."""
    from tests.conftest import missing

    try:
        from cairn_gateway.pgcluster import PostgresCluster, find_bindir
    except ModuleNotFoundError as exc:  # psycopg, the gateway extra's
        missing(f"the Python package {exc.name}", "pip install -e '.[dev]' (psycopg[binary,pool])")
    if find_bindir() is None:
        missing("PostgreSQL (initdb, postgres)",
                "run `make test` as root (it installs it with apt-get), or "
                "`apt-get install postgresql`")
    with PostgresCluster(fast=True) as cluster:
        yield cluster


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    """The URL of a new, empty database for this test alone, dropped after it."""
    pg_cluster.start()  # a no-op unless a test stopped the shared server
    name = f"test_{next(_names)}"
    url = pg_cluster.create_database(name)
    yield url
    pg_cluster.drop_database(name)


#: the database the worker's ``pg_schema_url`` schemas live in
SCHEMAS_DB = "schemas"


@pytest.fixture
def pg_schema_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    """The URL of a new, empty schema for this test alone (first on its ``search_path``), in a
    database shared by the worker's tests; dropped after the test."""
    import psycopg

    pg_cluster.start()
    name = f"test_{next(_names)}"
    with psycopg.connect(pg_cluster.url(), autocommit=True) as admin:
        if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                         (SCHEMAS_DB,)).fetchone() is None:
            pg_cluster.create_database(SCHEMAS_DB)
    with psycopg.connect(pg_cluster.url(SCHEMAS_DB), autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}".encode())
    yield f"{pg_cluster.url(SCHEMAS_DB)}?options=-csearch_path%3D{name}"
    with psycopg.connect(pg_cluster.url(SCHEMAS_DB), autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {name} CASCADE".encode())

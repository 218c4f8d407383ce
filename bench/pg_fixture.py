"""What a throwaway PostgreSQL costs the tests (:mod:`cairn_gateway.pgcluster`,
``tests/pg.py``): a cluster made and started (``initdb`` included), a restart, a SIGKILL of the
postmaster then a start (crash recovery), and the three ways to give each test an empty place
of its own, side by side, each with a connection, one table created, then dropped: a database
copied from the template file by file (``STRATEGY FILE_COPY``, what ``pg_url`` does), a database
copied through the WAL (PostgreSQL 15's default), and a schema selected with
``options=-csearch_path=...``. Medians of ``--runs`` (fast settings: no fsync).

No JS anchor: this is test infrastructure.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench_table import Row, print_tables

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402

from cairn_gateway.pgcluster import PostgresCluster, find_bindir  # noqa: E402


def _median_ms(runs: int, once: Callable[[int], None]) -> float:
    took = []
    for i in range(runs):
        start = time.perf_counter()
        once(i)
        took.append((time.perf_counter() - start) * 1000)
    return statistics.median(took)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=30, help="repetitions of each measure")
    ap.add_argument("--markdown", action="store_true", help="the table again in Markdown")
    args = ap.parse_args()
    if find_bindir() is None:
        print("PostgreSQL is not installed (apt-get install postgresql): nothing measured")
        return
    rows: list[Row] = []
    clusters = max(3, args.runs // 10)

    def make_and_start(_: int) -> None:
        with PostgresCluster(fast=True):
            pass

    rows.append(Row("cluster made, started and removed", "ms",
                    _median_ms(clusters, make_and_start), None, None, "-", "-"))
    with PostgresCluster(fast=True) as pg:
        rows.append(Row("restart (fast shutdown, start)", "ms",
                        _median_ms(clusters, lambda _: pg.restart()), None, None, "-", "-"))

        def crash(_: int) -> None:
            pg.kill()
            pg.start()

        rows.append(Row("SIGKILL of the postmaster, then start (recovery)", "ms",
                        _median_ms(clusters, crash), None, None, "-", "-"))
        with psycopg.connect(pg.url(), autocommit=True) as admin:
            def database(strategy: str) -> Callable[[int], None]:
                def once(i: int) -> None:
                    name = f"b_{strategy.lower()}_{i}"
                    admin.execute(f'CREATE DATABASE "{name}" STRATEGY {strategy}'.encode())
                    with psycopg.connect(pg.url(name)) as conn:
                        conn.execute("CREATE TABLE t (n bigint PRIMARY KEY)")
                    admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)'.encode())
                return once

            def schema(i: int) -> None:
                admin.execute(f'CREATE SCHEMA "s_{i}"'.encode())
                with psycopg.connect(pg.url(), options=f"-csearch_path=s_{i}") as conn:
                    conn.execute("CREATE TABLE t (n bigint PRIMARY KEY)")
                admin.execute(f'DROP SCHEMA "s_{i}" CASCADE'.encode())

            for label, once in (
                    ("a database per test, FILE_COPY (pg_url)", database("FILE_COPY")),
                    ("a database per test, WAL_LOG (the default)", database("WAL_LOG")),
                    ("a schema per test (search_path)", schema)):
                rows.append(Row(label, "ms", _median_ms(args.runs, once), None, None, "-", "-"))
    print_tables(rows, args.markdown)


if __name__ == "__main__":
    main()

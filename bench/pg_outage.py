"""How long a gateway stays without its PostgreSQL store after the server comes back from an
outage: the store's pool as Cairn configures it (it gives up replacing a lost connection after
``RECONNECT_FOR`` seconds, so the next statement starts a fresh try) beside psycopg_pool's own
default (300 s of attempts, each delay twice the last), in the same run.

For each outage length, one throwaway cluster per setting (:class:`cairn_gateway.pgcluster.
PostgresCluster`, all at once, in threads): open a store, stop the server, ask the store every
0.5 s through the outage (as the API and the rounds do), start the server, then ask in a loop
until a statement succeeds; the time from the start to that success is the figure.

    .venv/bin/python bench/pg_outage.py [--outages 30 150]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import threading
import time
from typing import Any

from cairn_gateway.pgcluster import PostgresCluster
from cairn_gateway.store import StoreError
from cairn_gateway.store import postgres as engine

POOL_DEFAULT = 300.0  # psycopg_pool's reconnect_timeout


def recovery(outage: float, reconnect_for: float, out: dict[tuple[float, float], float]) -> None:
    with PostgresCluster(fast=True) as pg:
        store = engine.PostgresStore(pg.create_database("outage"))
        store.conn.pool.reconnect_timeout = reconnect_for  # (read at each reconnection)
        try:
            store.conn.execute("SELECT 1")
            pg.stop()
            gone = time.monotonic()
            while time.monotonic() - gone < outage:
                with contextlib.suppress(StoreError):
                    store.conn.execute("SELECT 1")
                time.sleep(0.5)
            pg.start()
            back = time.monotonic()
            while True:
                try:
                    store.conn.execute("SELECT 1")
                    break
                except StoreError:
                    time.sleep(0.05)
            out[(outage, reconnect_for)] = time.monotonic() - back
        finally:
            store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outages", type=float, nargs="+", default=[30.0, 150.0])
    args = parser.parse_args()
    logging.getLogger("psycopg.pool").setLevel(logging.CRITICAL)  # a line per failed try
    settings = (engine.RECONNECT_FOR, POOL_DEFAULT)
    out: dict[tuple[float, float], float] = {}
    threads: list[Any] = [threading.Thread(target=recovery, args=(o, r, out))
                          for o in args.outages for r in settings]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ours_label = f"Cairn (reconnect {engine.RECONNECT_FOR:g} s)"
    print(f"{'outage':>8}  {ours_label:>24}  {'psycopg_pool default (300 s)':>30}")
    for o in args.outages:
        ours, theirs = out.get((o, settings[0])), out.get((o, settings[1]))
        cell = [f"{v:.1f} s" if v is not None else "failed" for v in (ours, theirs)]
        print(f"{o:>6.0f} s  {cell[0]:>24}  {cell[1]:>30}")
    print("(seconds from the server's start to the first statement that succeeded)")


if __name__ == "__main__":
    main()

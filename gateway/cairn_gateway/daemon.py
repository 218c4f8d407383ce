"""The gateway's collection loop: a round every ``[collect].interval`` seconds until cancelled.

A round finds the devices (the fleet's topic and ``[collect].devices``), collects them
(:meth:`Collector.collect_round`: one device's trouble is that device's status), publishes the
watermark record and applies retention. Nothing a round raises stops the loop: the failed
round is logged in one line (its traceback at debug level) and the next one runs on time.
Rounds start every ``interval`` seconds (a round that takes longer is followed at once by the
next), so a slow device costs the others at most its time budget, not a whole extra interval.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from cairn.crypto import KeyPair
from cairn.dht.api import DHT
from cairn_gateway.collect import Collector, one_line
from cairn_gateway.config import GatewayConfig
from cairn_gateway.roster import Roster, discover
from cairn_gateway.schedule import Limits
from cairn_gateway.store import Store

__all__ = ["collect_rounds", "collection_round", "limits_of"]

log = logging.getLogger(__name__)


def limits_of(cfg: GatewayConfig) -> Limits:
    """The per-device, per-round limits of ``[collect]``."""
    return Limits(cfg.device_budget, cfg.max_samples_per_round, cfg.past_window,
                  cfg.future_window)


async def collection_round(cfg: GatewayConfig, collector: Collector, store: Store,
                           dht: DHT | None, marks: KeyPair, marks_seq: int) -> int:
    """One round; returns the watermark record's seq it used (``marks_seq`` if none)."""
    if dht is not None:
        # the enrolled devices (deny by default); the others on the fleet topic are pending
        keys = await discover(Roster(store.conn), collector, dht, cfg.fleet, cfg.devices)
        for r in await collector.collect_round(dht, keys, cfg.policy):
            # the schedule logs the unreachable ones, a stream is stopped with a log line
            if r.error and not r.unreachable and not r.stopped:
                log.warning("stream %s: %s", r.stream, r.error)
        marks_seq = max(marks_seq + 1, int(time.time() * 1000))
        try:
            await collector.publish_watermarks(dht, marks, marks_seq)
        except Exception as exc:  # a bad round must not stop us
            log.warning("could not publish the watermark record: %s", one_line(exc))
    if cfg.retention_days:
        store.prune(time.time() - cfg.retention_days * 86400)
    return marks_seq


async def collect_rounds(cfg: GatewayConfig, collector: Collector, store: Store,
                         dht: DHT | None, marks: KeyPair, *, rounds: int | None = None,
                         clock: Callable[[], float] = time.monotonic) -> int:
    """Rounds every ``cfg.interval`` seconds until cancelled (or ``rounds`` of them); a
    round that raises is logged and the next one runs. Returns how many rounds failed."""
    done = failed = 0
    marks_seq = 0  # milliseconds of the clock: grows across restarts without being stored
    while rounds is None or done < rounds:
        start = clock()
        try:
            marks_seq = await collection_round(cfg, collector, store, dht, marks, marks_seq)
        except Exception as exc:
            failed += 1
            log.warning("collection round failed: %s (the next one runs as usual)",
                        one_line(exc))
            log.debug("the failed collection round", exc_info=True)
        done += 1
        if rounds is None or done < rounds:
            await asyncio.sleep(max(0.0, cfg.interval - (clock() - start)))
    return failed

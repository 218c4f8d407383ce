"""Several gateways, one fleet: who collects which device, as leases in the shared store.

Gateways on one PostgreSQL store (``[store] url``) split the enrolled devices among themselves.
Each device is collected by one gateway at a time, the holder of its **lease** (a row of
``leases``: record key, holder, expires, since); each gateway says it is alive in ``gateways``
(its public key hex as id, a name, its last heartbeat, what it advertises).

Every ``lease_seconds / 3`` (:meth:`Leases.beat`) a gateway, in the database:

1. writes its heartbeat and renews its leases (``expires = now + lease_seconds - slack``, the
   slack (:func:`wake_slack`) being what a survivor needs to wake and claim, so a dead
   gateway's devices are taken over within ``lease_seconds``);
2. computes its **fair share**: ``ceil(enrolled devices / live gateways)``, live being a
   heartbeat within one lease period (less the slack);
3. while another live gateway holds fewer than ``floor(enrolled / live)`` (it is *short*),
   keeps no more than that floor: it releases the leases above it when no device is free for
   the short one to take, and claims none beyond it. Hysteresis: a gateway between the floor
   and the share never releases, so shares settle (forty devices on three gateways: 13, 13,
   14; four: 1, 1, 2) and stay;
4. claims free or expired leases up to its share (its floor while another is short), in its
   own order (rendezvous: a hash of its id and the device's key, so gateways that start
   together reach for different devices); a
   claim is one ``INSERT .. ON CONFLICT DO UPDATE .. WHERE expired`` with ``RETURNING``: of two
   gateways racing for one device exactly one gets a row back.

Every time is the **database's clock** (:func:`~cairn_gateway.store.now_sql`), never a
gateway's: gateways whose clocks disagree by hours agree on who holds what. A gateway trusts
its own leases only until ``lease_seconds`` (less a margin) after the start of its last
renewal that went through, measured on its monotonic clock (:meth:`Leases.holds`): a gateway
that cannot reach the database stops collecting before anyone may take over.

A dead gateway's leases expire one lease period after its last renewal, when its heartbeat is
no longer live either; the others wake just after the first of them expires (:meth:`beat`
returns when to run next) and take its devices over. A gateway that stops cleanly releases its
leases at once (:meth:`Leases.release_all`).

The SQL is the store's portable subset (:data:`~cairn_gateway.store.base.PORTABLE`) over
``store.conn``: the same on SQLite, where the daemon never needs it (one gateway holds every
device), and on PostgreSQL.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cairn.errors import ServiceError
from cairn_gateway.store import Conn, now_sql

__all__ = ["MAX_LEASE", "MIN_LEASE", "BeatResult", "GatewayRow", "LeaseLost", "Leases",
           "fair_share", "gateways", "holders"]

log = logging.getLogger(__name__)

MIN_LEASE = 3.0  # seconds: shorter, a heartbeat every second would load the database
MAX_LEASE = 3600.0  # seconds: longer, a dead gateway's devices wait more than an hour
WAKE = 0.05  # seconds after another's lease expires that a gateway beats again


def wake_slack(lease_seconds: float) -> float:
    """How much sooner than ``lease_seconds`` a lease expires in the database: the survivor's
    wake (WAKE) and its claim transaction fit in it, so takeover is within the lease period;
    half the trust margin (:attr:`Leases.margin`), so a holder stops trusting first."""
    return min(0.5, lease_seconds / 20)


class LeaseLost(ServiceError):
    """This gateway no longer holds (or can no longer prove) a device's lease: it stops
    collecting that device (another gateway does)."""


def fair_share(devices: int, live: int) -> int:
    """The devices one of ``live`` gateways holds at most: ``ceil(devices / live)``."""
    return math.ceil(devices / max(1, live))


@dataclass(frozen=True, slots=True)
class GatewayRow:
    """A gateway of the shared store, as ``cairn gateway gateways`` lists it."""

    id: str  # its public key, hex
    name: str
    heartbeat: float  # epoch seconds, the database's clock
    age: float  # seconds since that heartbeat, by the database's clock
    live: bool  # a heartbeat within one lease period, and not stopped
    leases: int  # leases it holds now (not expired)
    advertises: str  # what it said of itself (its API address)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "heartbeat": self.heartbeat,
                "age": round(self.age, 3), "live": self.live, "leases": self.leases,
                "advertises": self.advertises}


@dataclass(slots=True)
class BeatResult:
    """What one heartbeat did."""

    held: frozenset[bytes]  # the leases held after it
    gained: list[bytes] = field(default_factory=list)  # claimed by it
    lost: list[bytes] = field(default_factory=list)  # held before, not now (released, taken)
    taken_over: int = 0  # of the gained: expired leases of another gateway
    share: int = 0
    live: int = 0
    next_in: float = 0.0  # seconds to the next beat


def _enrolled(conn: Conn) -> set[bytes]:
    return {bytes(r[0]) for r in conn.execute(
        "SELECT record_key FROM devices WHERE enrolled IS NOT NULL AND removed IS NULL")}


class Leases:
    """One gateway's leases in the shared store (its id: its public key, hex)."""

    def __init__(self, conn: Conn, gateway_id: str, lease_seconds: float, *, name: str = "",
                 advertises: str = "", clock: Callable[[], float] = time.monotonic) -> None:
        if not MIN_LEASE <= lease_seconds <= MAX_LEASE:
            raise ValueError(f"lease_seconds must be in [{MIN_LEASE:g}, {MAX_LEASE:g}]")
        self.conn = conn
        self.id = gateway_id
        self.name = name
        self.advertises = advertises
        self.seconds = float(lease_seconds)
        #: what a lease and a heartbeat are good for in the database: the lease period less
        #: the slack a survivor needs to wake and claim, so a dead gateway's devices are taken
        #: over within ``lease_seconds`` of its death, not just after
        self.period = self.seconds - wake_slack(self.seconds)
        self.clock = clock
        self.held: frozenset[bytes] = frozenset()
        self.valid_until = -math.inf  # monotonic: the leases held are proven until then
        self.takeovers = 0  # expired leases of other gateways claimed, since start
        self._rank_cache: dict[bytes, bytes] = {}

    @property
    def margin(self) -> float:
        """Seconds before a lease's expiry a gateway stops trusting it (more than the wake
        slack, so the holder has stopped before a survivor may claim)."""
        return min(1.0, self.seconds / 10)

    def holds(self, record_key: bytes) -> bool:
        """Whether this gateway may collect the device now: it holds the lease and its last
        renewal is recent enough to prove it."""
        return record_key in self.held and self.clock() < self.valid_until

    def proven(self) -> frozenset[bytes]:
        """The leases held and still proven (empty once the last renewal is too old)."""
        return self.held if self.clock() < self.valid_until else frozenset()

    def _rank(self, record_key: bytes) -> bytes:
        """This gateway's preference for a device (lower first): rendezvous hashing."""
        r = self._rank_cache.get(record_key)
        if r is None:
            r = hashlib.blake2b(self.id.encode() + record_key, digest_size=16).digest()
            self._rank_cache[record_key] = r
        return r

    def beat(self) -> BeatResult:
        """Heartbeat, renew, release above the share, claim up to it (see the module
        docstring). Raises the store's error (StoreError) when the database fails: the leases
        held stay proven until their renewal is too old."""
        c = self.conn
        now = now_sql(c)
        started = self.clock()
        before = self.held
        with c.transaction():
            c.execute(f"INSERT INTO gateways (id, name, heartbeat, started, advertises, stopped) "  # noqa: S608
                      f"VALUES (?, ?, {now}, {now}, ?, NULL) ON CONFLICT (id) DO UPDATE SET "
                      "heartbeat = excluded.heartbeat, name = excluded.name, "
                      "advertises = excluded.advertises, stopped = NULL",
                      (self.id, self.name[:200], self.advertises[:500]))
            c.execute(f"UPDATE leases SET expires = {now} + ? WHERE holder = ?",  # noqa: S608
                      (self.period, self.id))
        renewed = started
        enrolled = _enrolled(c)
        leases = [(bytes(k), str(h), bool(valid), float(e)) for k, h, valid, e in c.execute(
            f"SELECT record_key, holder, expires > {now}, expires - {now} FROM leases")]  # noqa: S608
        live = [str(r[0]) for r in c.execute(
            f"SELECT id FROM gateways WHERE heartbeat > {now} - ? AND stopped IS NULL",  # noqa: S608
            (self.period,))]
        if self.id not in live:
            live.append(self.id)
        mine = {k for k, h, _v, _e in leases if h == self.id}
        gone = sorted(mine - enrolled)  # removed from the roster: let go
        share = fair_share(len(enrolled), len(live))
        counts: dict[str, int] = {}
        taken: dict[bytes, str] = {}  # held by others, not expired
        for k, h, valid, _e in leases:
            if valid and h != self.id and k in enrolled:
                counts[h] = counts.get(h, 0) + 1
                taken[k] = h
        mine &= enrolled
        free = [k for k in enrolled if k not in taken and k not in mine]
        floor = len(enrolled) // max(1, len(live))
        short = any(counts.get(g, 0) < floor for g in live if g != self.id)
        # while another is short, this one keeps (and takes) no more than the floor
        target = floor if short else share
        release: list[bytes] = []
        if len(mine) > target and short and not free:
            release = sorted(mine, key=self._rank)[target:]
        for k in gone + release:  # stop trusting them before anyone may take them
            mine.discard(k)
        self.held = frozenset(mine)
        if gone or release:
            c.executemany("DELETE FROM leases WHERE record_key = ? AND holder = ?",
                          [(k, self.id) for k in gone + release])
        self.valid_until = renewed + self.period - self.margin
        result = BeatResult(self.held, share=share, live=len(live))
        room = target - len(mine)
        previous = {k: h for k, h, _v, _e in leases}
        for k in sorted(free, key=self._rank):
            if room <= 0:
                break
            if self._claim(k):
                mine.add(k)
                room -= 1
                result.gained.append(k)
                if previous.get(k, self.id) != self.id:
                    result.taken_over += 1
        self.takeovers += result.taken_over
        self.held = result.held = frozenset(mine)
        result.lost = sorted(before - self.held)
        # the next beat: a third of the period, or just after another's lease expires
        expiring = [e for _k, h, valid, e in leases if valid and h != self.id]
        wake = self.seconds / 3
        if expiring:
            wake = min(wake, max(WAKE, min(expiring) + WAKE))
        result.next_in = wake
        return result

    def _claim(self, record_key: bytes) -> bool:
        """Take the lease of a device if it is free or expired: True if this gateway got it."""
        c = self.conn
        now = now_sql(c)
        row = c.execute(
            f"INSERT INTO leases (record_key, holder, expires, since) VALUES "  # noqa: S608
            f"(?, ?, {now} + ?, {now}) ON CONFLICT (record_key) DO UPDATE SET "
            "holder = excluded.holder, expires = excluded.expires, since = excluded.since "
            f"WHERE leases.expires <= {now} OR leases.holder = excluded.holder "
            "RETURNING holder", (record_key, self.id, self.period)).fetchall()
        return bool(row) and str(row[0][0]) == self.id

    def release(self, keys: Iterable[bytes]) -> None:
        """Give these leases back (they are no longer trusted at once)."""
        keys = sorted(set(keys) & self.held)
        self.held = self.held - set(keys)
        if keys:
            self.conn.executemany("DELETE FROM leases WHERE record_key = ? AND holder = ?",
                                  [(k, self.id) for k in keys])

    def release_all(self) -> None:
        """A clean stop: every lease given back, the gateway no longer counted live (the
        others take its devices at their next beat)."""
        self.held = frozenset()
        self.valid_until = -math.inf
        c = self.conn
        with c.transaction():
            c.execute("DELETE FROM leases WHERE holder = ?", (self.id,))
            c.execute(f"UPDATE gateways SET stopped = {now_sql(c)} WHERE id = ?",  # noqa: S608
                      (self.id,))


def holders(conn: Conn) -> dict[bytes, str]:
    """Who holds each device's lease now (record key -> gateway id); expired ones left out."""
    return {bytes(k): str(h) for k, h in conn.execute(
        f"SELECT record_key, holder FROM leases WHERE expires > {now_sql(conn)}")}  # noqa: S608


def gateways(conn: Conn, lease_seconds: float) -> list[GatewayRow]:
    """The gateways that ever beat on this store, by name then id: last heartbeat, whether
    live, how many leases each holds now."""
    now = now_sql(conn)
    counts = {str(h): int(n) for h, n in conn.execute(
        f"SELECT holder, count(*) FROM leases WHERE expires > {now} GROUP BY holder")}  # noqa: S608
    out = []
    for gid, name, beat, age, stopped, adv in conn.execute(
            f"SELECT id, name, heartbeat, {now} - heartbeat, stopped, advertises "  # noqa: S608
            "FROM gateways ORDER BY name, id"):
        out.append(GatewayRow(str(gid), str(name or ""), float(beat), float(age),
                              stopped is None
                              and float(age) < lease_seconds - wake_slack(lease_seconds),
                              counts.get(str(gid), 0), str(adv or "")))
    return out

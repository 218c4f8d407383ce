"""The gateway's CPU per pushed block, in one process, without sockets (issue 19, 1,000 edges).

    python bench/live_path.py [--edges N] [--ticks T] [--markdown]

N simulated edges (10 logs each) and one gateway, connected in memory: each pair of
secret streams (Noise handshake, encryption) and replicators is the one a TCP connection
carries, the gateway side is the live path of ``cairn gateway run`` (its replicas in one
``replicas.db``, the stream cursors, the store). Every tick each edge appends one block to each
of its logs and announces it; the gateway requests, verifies and stores everything. Only the
gateway side's CPU time is counted (``time.process_time`` around its calls), so the figure does
not depend on what else the machine runs, unlike bench/live.py's. What it leaves out: asyncio
and the socket calls (bench/live.py has them).

Targets: 1,000 edges x 10 streams at 1 Hz is 10,000 blocks/s; half a core is 50 us a block.
The floor row is one Ed25519 signature check (one per upgrade: one per block at 1 Hz).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_table import Row, print_tables
from cairn.crypto import Manifest, derive_stream_key_pair, manifest_hash
from cairn.frames import Frame, Sample
from cairn.log import Log
from cairn.replication.peer import Replicator
from cairn.replication.secret_stream import Handshaken, Message, SecretStream
from cairn.storage import SharedDB
from cairn_gateway.collect import Collector
from cairn_gateway.live import LiveDevice
from cairn_gateway.schedule import Limits
from cairn_gateway.store import Store

STREAMS = 10
T0 = time.time()


class Pair:
    """One edge and its connection to the gateway, in memory."""

    def __init__(self, i: int, edges: SharedDB, gw: Collector, store: Store,
                 ingestor: Any) -> None:
        seed = hashlib.sha256(f"path-edge-{i}".encode()).digest()
        self.logs = []
        keys = []
        for j in range(STREAMS):
            kp = derive_stream_key_pair(seed, f"s{j}")
            self.logs.append(Log.create_in(edges, f"e{i}/s{j}", kp))
            keys.append((f"e{i}/s{j}", manifest_hash(Manifest(kp.public_key))))
        rng = random.Random(i)
        self.es = SecretStream(True, derive_stream_key_pair(seed, "noise"), rng)
        self.gs = SecretStream(False, derive_stream_key_pair(b"\x42" * 32, "noise"),
                               random.Random(-i))
        self.es.start()
        self.gs.start()
        hs: dict[str, bytes] = {}
        for _ in range(10):
            self._carry(self.es, self.gs)
            self._carry(self.gs, self.es)
            for name, s in (("e", self.es), ("g", self.gs)):
                while (ev := s.next_event()) is not None:
                    if isinstance(ev, Handshaken):
                        hs[name] = ev.handshake_hash
        self.er = Replicator(is_initiator=True, handshake_hash=hs["e"])
        self.gr = Replicator(is_initiator=False, handshake_hash=hs["g"])
        for lg in self.logs:
            self.er.add_log(lg)
        dev = store.device(seed, f"edge-{i}", T0)
        plan = [(name, key) for name, key in keys]
        once: list[bool] = []

        def planned() -> list[tuple[str, bytes]] | None:
            if once:
                return None
            once.append(True)
            return plan

        args: list[Any] = [store, dev, Limits(), time.time, planned, gw.replica]
        if ingestor is not None:
            args.append(ingestor)
        self.live = LiveDevice(*args)
        self.replicas = self.live.replicas()
        self.pending = b""  # the edge's bytes the gateway has not read yet
        self.wanted = {}
        for lg in self.replicas:
            session = self.gr.open(lg)
            session.follow = True  # (no effect before the combined request)
            self.wanted[lg.discovery_key] = lg.contiguous_length

    @staticmethod
    def _carry(a: SecretStream, b: SecretStream) -> None:
        data = a.data_to_send()
        if data:
            b.receive_data(data)

    def edge_side(self, wire: bytes) -> bytes:
        """What the edge answers to the gateway's bytes (not timed)."""
        if wire:
            self.es.receive_data(wire)
        while (ev := self.es.next_event()) is not None:
            if isinstance(ev, Message):
                self.er.receive_data(ev.data)
        while self.er.next_event() is not None:
            pass
        for m in self.er.data_to_send():
            self.es.send(m)
        return self.es.data_to_send()

    def gateway_side(self, wire: bytes, batch: Callable[[], Any]) -> bytes:
        """What the gateway does with the edge's bytes, as ``follow_on`` does (timed)."""
        rep = self.gr
        if wire:
            self.gs.receive_data(wire)
        with batch():
            while (ev := self.gs.next_event()) is not None:
                if isinstance(ev, Message):
                    rep.receive_data(ev.data)
            while rep.next_event() is not None:
                pass
            for lg in self.replicas:
                s = rep.session(lg.discovery_key)
                assert s is not None
                w = self.wanted[lg.discovery_key]
                if s.synced and s.remote_length > w:
                    s.want(w, s.remote_length)
                    self.wanted[lg.discovery_key] = s.remote_length
                self.live.stored(lg)
            rep.flush()
            for m in rep.data_to_send():
                self.gs.send(m)
        return self.gs.data_to_send()


def run(n: int, ticks: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="cairn-bench-path-") as d:
        store = Store(Path(d) / "gw.db")
        gw = Collector(Path(d) / "gw", derive_stream_key_pair(b"\x42" * 32, "noise"), store)
        ingestor = getattr(gw, "ingestor", None)
        batch: Callable[[], Any] = getattr(gw, "replica_batch", contextlib.nullcontext)
        edges = SharedDB(Path(d) / "edges.db")
        pairs = [Pair(i, edges, gw, store, ingestor) for i in range(n)]
        gw_cpu = 0.0

        prof = None
        if os.environ.get("CAIRN_BENCH_PROFILE"):  # the gateway side only
            import cProfile

            prof = cProfile.Profile()

        def settle() -> None:
            nonlocal gw_cpu
            quiet = False
            while not quiet:
                quiet = True
                for p in pairs:
                    t = time.process_time()
                    if prof is not None:
                        prof.enable()
                    back = p.gateway_side(p.pending, batch)
                    if prof is not None:
                        prof.disable()
                    gw_cpu += time.process_time() - t
                    p.pending = p.edge_side(back)
                    if back or p.pending:
                        quiet = False
                t = time.process_time()
                if ingestor is not None:
                    ingestor.flush()
                gw_cpu += time.process_time() - t

        def stored() -> int:
            return int(store.conn.execute("SELECT sum(stored_blocks) FROM streams")
                       .fetchone()[0] or 0)

        settle()  # channels open, nothing to fetch yet
        for k in range(ticks + 1):
            if k == 1:  # the first append of each log is its first upgrade: not counted
                gw_cpu, before = 0.0, stored()
            now = time.time()
            for p in pairs:
                for j, lg in enumerate(p.logs):
                    lg.append([Frame((Sample(f"s{j}", "Cel", now, 20.0 + k),)).encode()])
                p.er.update()
            settle()
        got = stored() - before
        if prof is not None:
            prof.dump_stats(os.environ["CAIRN_BENCH_PROFILE"])
        gw.close()
        store.close()
        edges.close()
    return {"cpu": gw_cpu, "blocks": float(got)}


def verify_us() -> float:
    from cairn.crypto import sign, verify

    kp = derive_stream_key_pair(b"\x07" * 32, "floor")
    assert kp.secret_key is not None
    message = hashlib.sha256(b"tree").digest()
    sig = sign(message, kp.secret_key)
    t = time.process_time()
    for _ in range(2000):
        verify(message, sig, kp.public_key)
    return (time.process_time() - t) / 2000 * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--edges", type=int, default=100)
    ap.add_argument("--ticks", type=int, default=5)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()
    async def in_a_loop() -> dict[str, float]:  # (the ingestor's timer needs one; we flush)
        return run(args.edges, args.ticks)

    r = asyncio.run(in_a_loop())
    per = r["cpu"] / max(1.0, r["blocks"]) * 1e6
    v = verify_us()
    rows = [
        Row(f"{args.edges} edges x {STREAMS} logs, {args.ticks} appends each: blocks stored",
            "blocks", r["blocks"], None, None, f"= {args.edges * STREAMS * args.ticks:,}",
            "PASS" if r["blocks"] == args.edges * STREAMS * args.ticks else "FAIL"),
        Row("gateway CPU per pushed block (sans I/O)", "us", per, None, None, "<= 50", ""),
        Row("  at 10,000 blocks/s (1,000 edges)", "cores x1000", per * 10, None, None,
            "<= 500", "PASS" if per <= 50 else "FAIL"),
        Row("  of which one Ed25519 verify", "us", v, None, None, "floor", ""),
    ]
    print(f"bench/live_path.py: {sys.version.split()[0]}")
    print_tables(rows, args.markdown)


if __name__ == "__main__":
    main()

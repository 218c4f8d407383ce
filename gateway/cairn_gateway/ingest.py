"""The ingest worker: a second process that decodes verified frames and stores their samples.

A gateway downloading a long log spends about half its time verifying blocks (the replication
session, in the gateway's process) and half decoding frames and writing samples to SQLite
(issue 8). :class:`IngestWorker` moves the second half to a process of its own, so the two run
on two cores at once: the collector hands it runs of blocks the moment they are verified and
held in the replica, and goes on downloading.

What goes to the worker is only ever verified block data with its index and fork; the worker
writes through :meth:`Store.ingest`, which is exactly once, so a run stored twice (a retry, a
worker that died after storing) or never (a worker that died before) changes nothing: the
collector's pass after the download stores whatever the store still lacks, in its own process.
The worker is an accelerator, never the only way data gets stored.

The worker checks each block's data against the leaf hash its replica stored for it (the
collector reads them without checking, so the hash is computed once, here), then decodes.

Messages (pickled over a pipe): ``(job, stream_id, [(index, fork, data, hash), ...], window,
cap)`` in (``window``: the plausible time window of :meth:`Store.ingest`, or None; ``cap``: store
only the first blocks whose samples add up to at most this many, at least one; None: all), and
``(job, stored, None)`` or ``(job, 0, "ErrorType: message")`` out; ``None`` in stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import queue
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cairn.frames import Frame

__all__ = ["IngestWorker"]

log = logging.getLogger(__name__)

Blocks = list[tuple[int, int, bytes, bytes]]
READY_TIMEOUT = 60.0  # seconds for the worker to start and open the store


def within(frames: list[tuple[int, int, Frame]], cap: int) -> list[tuple[int, int, Frame]]:
    """The first frames whose samples add up to at most ``cap`` (the first one always)."""
    total = 0
    for n, (_i, _f, frame) in enumerate(frames):
        total += len(frame.samples)
        if total > cap and n:
            return frames[:n]
    return frames


def _serve(store_path: str, conn: Connection) -> None:  # pragma: no cover - runs in the child
    """The worker process: decode and store runs until told to stop or the pipe closes."""
    from cairn.crypto import leaf_hash
    from cairn.frames import Frame
    from cairn_gateway.store import Store

    try:
        store = Store(store_path)
    except Exception as exc:
        conn.send(("ready", 0, f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", 0, None))
    try:
        while True:
            try:
                msg = conn.recv()
            except (EOFError, OSError):
                return
            if msg is None:
                return
            job, stream_id, blocks, window, cap = msg
            try:
                frames = []
                for i, fork, data, digest in blocks:
                    if leaf_hash(data) != digest:
                        raise ValueError(f"block {i} does not match its hash in the replica")
                    frames.append((i, fork, Frame.decode(data)))
                if cap is not None:
                    frames = within(frames, cap)
                conn.send((job, store.ingest(stream_id, frames, window), None))
            except Exception as exc:  # reported; the collector's own pass will meet it too
                conn.send((job, 0, f"{type(exc).__name__}: {exc}"))
    finally:
        store.close()


class IngestWorker:
    """A process that stores runs of verified blocks into the store at ``store_path``."""

    def __init__(self, store_path: str | Path) -> None:
        ctx = multiprocessing.get_context("spawn")  # nothing inherited: no SQLite handles
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(str(store_path), child),
                                 name="cairn-ingest", daemon=True)
        self._proc.start()
        child.close()
        self._next = 0
        self._waiting: dict[int, asyncio.Future[int]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.failed: str | None = None  # why the worker is no longer used
        try:  # it has opened the store (or said why not) before any run is handed over
            ready = self._conn.recv() if self._conn.poll(READY_TIMEOUT) else None
        except (EOFError, OSError):
            ready = None
        if ready is None or ready[2] is not None:
            why = ready[2] if ready is not None else "did not start"
            self.failed = f"the ingest worker {why}"
            log.warning("%s: storing in the gateway's own process", self.failed)
        # runs go out from a thread: the event loop (and so the download) never waits on a
        # full pipe while the worker is busy, so the TCP stream from the edge never pauses
        self._outbox: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._sender = threading.Thread(target=self._send_all, name="cairn-ingest-send",
                                        daemon=True)
        self._sender.start()

    def _send_all(self) -> None:
        while True:
            msg = self._outbox.get()
            try:
                self._conn.send(msg)
            except (OSError, ValueError):
                return  # the worker is gone: the reader side sees EOF and says so
            if msg is None:
                return

    @property
    def alive(self) -> bool:
        return self.failed is None and self._proc.is_alive()

    def submit(self, stream_id: int, blocks: Blocks,
               window: tuple[float, float] | None = None,
               cap: int | None = None) -> asyncio.Future[int]:
        """Hand a run of verified blocks over; the future gives the samples newly stored, or
        raises :class:`RuntimeError` naming what went wrong in the worker. ``window``: samples
        timed outside it are refused and counted (:meth:`Store.ingest`); ``cap``: only the first
        blocks with at most this many samples in all are stored (the first one always)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._drop_reader()
            loop.add_reader(self._conn.fileno(), self._on_readable)
            self._loop = loop
        fut: asyncio.Future[int] = loop.create_future()
        if not self.alive:
            fut.set_exception(RuntimeError(self.failed or "the ingest worker has exited"))
            return fut
        job = self._next
        self._next += 1
        self._waiting[job] = fut
        self._outbox.put((job, stream_id, blocks, window, cap))
        return fut

    def _on_readable(self) -> None:
        try:
            while self._conn.poll():
                job, stored, error = self._conn.recv()
                fut = self._waiting.pop(job, None)
                if fut is None or fut.done():
                    continue
                if error is None:
                    fut.set_result(stored)
                else:
                    fut.set_exception(RuntimeError(error))
        except (EOFError, OSError) as exc:
            self._fail(f"the ingest worker exited ({type(exc).__name__})")

    def _drop_reader(self) -> None:
        """Stop watching the pipe from the event loop that watched it."""
        if self._loop is not None:
            with contextlib.suppress(Exception):
                self._loop.remove_reader(self._conn.fileno())
            self._loop = None

    def _fail(self, why: str) -> None:
        if self.failed is None:
            self.failed = why
            log.warning("%s: storing in the gateway's own process from now on", why)
        self._drop_reader()
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_exception(RuntimeError(why))
        self._waiting.clear()

    def close(self) -> None:
        """Stop the worker (it finishes the run in hand) and wait for it."""
        self._drop_reader()
        self._outbox.put(None)
        self._sender.join(10)
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._conn.close()
        for fut in self._waiting.values():
            if not fut.done():
                fut.cancel()
        self._waiting.clear()

"""A TCP relay the demo can cut: the network path between the gateway and one edge.

The edge advertises the proxy's port in its DHT record, so the gateway connects through it;
:meth:`Proxy.cut` is the path going down (every connection dropped, new ones refused),
:meth:`Proxy.restore` it coming back. The end-to-end test uses it; it runs on the demo's loop.
"""

from __future__ import annotations

import asyncio
from typing import Any

from cairn_demo.processes import WAIT

__all__ = ["Proxy"]


class Proxy:
    """A TCP relay on 127.0.0.1 between the gateway and one edge; :meth:`cut` drops every
    connection through it and refuses new ones until :meth:`restore` (a network path down)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, port: int, target: tuple[str, int]):
        self.loop = loop
        self.port = port
        self.target = target
        self.server: asyncio.Server | None = None
        self.conns: set[asyncio.StreamWriter] = set()
        self.relayed = 0  # bytes
        self._tasks: set[asyncio.Task[None]] = set()

    def _call(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(WAIT)

    def restore(self) -> None:
        self.server = self._call(asyncio.start_server(self._accept, "127.0.0.1", self.port,
                                                      reuse_address=True))

    def cut(self) -> None:
        async def down() -> None:
            server, self.server = self.server, None  # at once: see _serve
            if server is not None:
                server.close()
                await server.wait_closed()
            for w in list(self.conns):
                w.transport.abort()
            self.conns.clear()
            await asyncio.sleep(0)  # the aborted transports close their sockets

        self._call(down())

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Called as the connection is accepted (a plain function runs at once, in
        ``connection_made``): the connection is in ``conns`` before its task is even started,
        so a cut, or the loop's end cancelling a task that never ran, still closes it."""
        self.conns.add(writer)
        self._tasks.add(task := self.loop.create_task(self._serve(reader, writer)))
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_w: asyncio.StreamWriter | None = None
        try:
            if self.server is None:  # accepted as the path was cut: it is cut too
                return
            try:
                up_r, up_w = await asyncio.open_connection(*self.target)
            except OSError:  # the edge is down: so is this connection
                return
            if self.server is None or writer not in self.conns:  # cut while connecting
                return
            self.conns.add(up_w)

            async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
                try:
                    while data := await r.read(65536):
                        self.relayed += len(data)
                        w.write(data)
                        await w.drain()
                except (OSError, asyncio.IncompleteReadError):
                    pass
                finally:
                    w.transport.abort()  # the other direction ends too

            await asyncio.gather(pipe(reader, up_w), pipe(up_r, writer))
        finally:  # every way out (a cut, an error, the loop shutting down) closes both ends
            for w in (writer, up_w):
                if w is not None:
                    w.transport.abort()
                    self.conns.discard(w)

"""A thin asyncio adapter: a :class:`~cairn.replication.secret_stream.SecretStream` core over an
asyncio ``StreamReader`` / ``StreamWriter`` pair (TCP from ``asyncio.open_connection`` or
``asyncio.start_server``), or anything with the same few methods (:class:`ByteReader`,
:class:`ByteWriter`: a UDX stream's pair from :func:`cairn.udx.open_udx_connection`).

It feeds what it reads to the core, writes what the core has to send, and hands out decrypted
messages. It sets no timeouts of its own: neither JS secret-stream nor hypercore bounds a read, so
wrap calls in ``asyncio.timeout()``. Keepalives are the caller's to send
(:meth:`SecretStreamConnection.keepalive`), as JS sends one every few seconds.
"""

from __future__ import annotations

import contextlib
from types import TracebackType
from typing import Protocol

from cairn.crypto import KeyPair
from cairn.errors import RemoteError
from cairn.replication.noise import RandomSource
from cairn.replication.secret_stream import (
    MAX_FRAME_SIZE,
    Closed,
    Handshaken,
    Message,
    SecretStream,
    SecretStreamError,
)

__all__ = ["ByteReader", "ByteWriter", "SecretStreamConnection", "open_secret_stream"]

_READ_SIZE = 1 << 16


class ByteReader(Protocol):
    """What the adapter reads from: ``asyncio.StreamReader``, ``cairn.udx.UDXReader``."""

    async def read(self, n: int = -1) -> bytes: ...


class ByteWriter(Protocol):
    """What the adapter writes to: ``asyncio.StreamWriter``, ``cairn.udx.UDXWriter``."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...


class SecretStreamConnection:
    """An established secret stream: :meth:`send`, :meth:`receive`, :meth:`close`.

    Make one with :func:`open_secret_stream` (or :meth:`handshake`), which returns once the
    Noise handshake is complete; :attr:`handshaken` then says who the peer is.
    """

    def __init__(self, core: SecretStream, reader: ByteReader, writer: ByteWriter) -> None:
        self.core = core
        self._reader = reader
        self._writer = writer
        self._handshaken: Handshaken | None = None
        self._eof = False

    @property
    def handshaken(self) -> Handshaken:
        if self._handshaken is None:
            raise RuntimeError("the handshake has not completed")
        return self._handshaken

    @property
    def remote_public_key(self) -> bytes:
        return self.handshaken.remote_public_key

    @property
    def handshake_hash(self) -> bytes:
        return self.handshaken.handshake_hash

    async def handshake(self) -> Handshaken:
        """Start the core and run the Noise handshake to its end (a core started already from
        another handshake's keys, :meth:`SecretStream.start_established`, just sends its
        header)."""
        if not self.core.started:
            self.core.start()
        await self._flush()
        while self._handshaken is None:
            event = await self._next()
            if isinstance(event, Closed):
                raise SecretStreamError("the peer closed the connection during the handshake")
            if isinstance(event, Handshaken):
                self._handshaken = event
        await self._flush()
        return self._handshaken

    async def send(self, data: bytes) -> None:
        self.core.send(data)
        await self._flush()

    async def keepalive(self) -> None:
        """Send an empty message (the peer skips it)."""
        self._writer.write(self.core.keepalive())
        await self._writer.drain()

    async def receive(self) -> bytes | None:
        """The next message, or ``None`` once the peer ended the stream cleanly."""
        while True:
            event = await self._next()
            if isinstance(event, Message):
                return event.data
            if isinstance(event, Closed):
                return None

    async def close(self) -> None:
        self.core.close()
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self._flush()
        self._writer.close()
        with contextlib.suppress(ConnectionError):
            await self._writer.wait_closed()

    async def __aenter__(self) -> SecretStreamConnection:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _next(self) -> Handshaken | Message | Closed:
        while True:
            event = self.core.next_event()
            if event is not None:
                await self._flush()
                return event
            if self._eof:
                return Closed("the peer ended the stream")
            await self._flush()
            chunk = await self._reader.read(_READ_SIZE)
            if not chunk:
                self._eof = True
            self.core.receive_data(chunk)

    async def _flush(self) -> None:
        data = self.core.data_to_send()
        if data:
            self._writer.write(data)
            await self._writer.drain()


async def open_secret_stream(
    reader: ByteReader,
    writer: ByteWriter,
    *,
    is_initiator: bool,
    key_pair: KeyPair,
    rng: RandomSource,
    max_frame_size: int = MAX_FRAME_SIZE,
) -> SecretStreamConnection:
    """Run the handshake over ``reader``/``writer`` and return the established connection.

    Raises a :class:`~cairn.errors.RemoteError` when the peer fails the handshake (the writer
    is closed then).
    """
    core = SecretStream(is_initiator, key_pair, rng, max_frame_size=max_frame_size)
    connection = SecretStreamConnection(core, reader, writer)
    try:
        await connection.handshake()
    except (RemoteError, ConnectionError):
        writer.close()
        raise
    return connection

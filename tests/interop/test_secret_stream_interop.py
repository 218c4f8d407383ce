"""Cairn's secret-stream and Protomux cores against JS @hyperswarm/secret-stream and protomux,
over real TCP on 127.0.0.1, with Cairn as initiator (client) and as responder (server)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from cairn.crypto import key_pair
from cairn.replication import (
    ChannelClosed,
    ChannelMessage,
    ChannelOpened,
    ChannelRejected,
    Mux,
    MuxEvent,
)
from cairn.replication.aio import SecretStreamConnection, open_secret_stream
from cairn.testing import SeededRandom

pytestmark = pytest.mark.integration  # besides interop (its folder): it opens sockets

PEER_JS = Path(__file__).parent / "js" / "secret_stream_peer.js"
CAIRN_KEYS = key_pair(bytes([0x11]) * 32)
JS_SEED = bytes([0x22]) * 32
JS_PUBLIC_KEY = key_pair(JS_SEED).public_key
TIMEOUT = 8


class JSPeer:
    """The node process of secret_stream_peer.js, read one JSON line at a time."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def line(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        raw = await self.proc.stdout.readline()
        if not raw:
            err = await self.proc.stderr.read() if self.proc.stderr else b""
            raise RuntimeError(f"the JS peer exited: {err.decode()[-2000:]}")
        out: dict[str, Any] = json.loads(raw)
        if "error" in out:
            raise RuntimeError(f"the JS peer failed: {out['error']}")
        return out


@contextlib.asynccontextmanager
async def js_peer(node_path: Path, interop_dir: Path, **config: Any) -> AsyncIterator[JSPeer]:
    proc = await asyncio.create_subprocess_exec(
        str(node_path),
        str(PEER_JS),
        cwd=interop_dir,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write((json.dumps({"seed": JS_SEED.hex(), **config}) + "\n").encode())
        await proc.stdin.drain()
        yield JSPeer(proc)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
        await proc.wait()


Scenario = Callable[[SecretStreamConnection, JSPeer], Awaitable[None]]


async def run_as_initiator(
    node_path: Path, interop_dir: Path, scenario: str, check: Scenario
) -> None:
    """JS listens; Cairn connects and is the Noise initiator."""
    async with (
        asyncio.timeout(TIMEOUT),
        js_peer(node_path, interop_dir, role="server", scenario=scenario) as js,
    ):
        port = (await js.line())["listening"]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        connection = await open_secret_stream(
            reader, writer, is_initiator=True, key_pair=CAIRN_KEYS, rng=SeededRandom(1)
        )
        async with connection:
            await check_handshake(connection, js, cairn_is_initiator=True)
            await check(connection, js)


async def run_as_responder(
    node_path: Path, interop_dir: Path, scenario: str, check: Scenario
) -> None:
    """Cairn listens; JS connects and is the Noise initiator."""
    accepted: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await accepted.put((reader, writer))

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with (
        server,
        asyncio.timeout(TIMEOUT),
        js_peer(node_path, interop_dir, role="client", port=port, scenario=scenario) as js,
    ):
        reader, writer = await accepted.get()
        connection = await open_secret_stream(
            reader, writer, is_initiator=False, key_pair=CAIRN_KEYS, rng=SeededRandom(2)
        )
        async with connection:
            await check_handshake(connection, js, cairn_is_initiator=False)
            await check(connection, js)


async def check_handshake(
    connection: SecretStreamConnection, js: JSPeer, *, cairn_is_initiator: bool
) -> None:
    seen = (await js.line())["handshake"]
    assert seen["isInitiator"] is not cairn_is_initiator
    assert seen["hash"] == connection.handshake_hash.hex()
    assert len(connection.handshake_hash) == 64
    assert seen["publicKey"] == JS_PUBLIC_KEY.hex()
    assert seen["remotePublicKey"] == CAIRN_KEYS.public_key.hex()
    assert connection.remote_public_key == JS_PUBLIC_KEY


async def echo(connection: SecretStreamConnection, js: JSPeer) -> None:
    # JS sent a keepalive, then two messages, before it could have had our header
    assert await connection.receive() == b"hello from js"
    assert await connection.receive() == bytes([7]) * 200000

    await connection.send(b"one")
    assert (await js.line()) == {"data": b"one".hex()}
    assert await connection.receive() == b"echo:one"

    big = bytes(range(256)) * 1200  # many TCP reads for one frame, both ways
    await connection.send(big)
    assert (await js.line()) == {"size": len(big)}
    assert await connection.receive() == b"echo:" + big

    # a JS stream without keepAlive set hands our empty keepalive message to its reader
    await connection.keepalive()
    assert (await js.line()) == {"empty": True}

    await connection.send(b"bye")
    assert (await js.line()) == {"data": b"bye".hex()}
    assert await connection.receive() is None  # JS ended its side
    await connection.close()  # JS's stream closes once both sides ended
    assert (await js.line()) == {"done": True}


def drain(mux: Mux) -> list[MuxEvent]:
    """The events the mux holds, in order."""
    out: list[MuxEvent] = []
    while (event := mux.next_event()) is not None:
        out.append(event)
    return out


async def protomux(connection: SecretStreamConnection, js: JSPeer) -> None:
    mux = Mux()
    events: list[MuxEvent] = []

    async def flush() -> None:
        for message in mux.data_to_send():
            await connection.send(message)

    async def more() -> None:
        message = await connection.receive()
        assert message is not None, "the JS peer ended the stream"
        mux.receive_data(message)
        events.extend(drain(mux))

    # JS opened its channel and sent three messages (one plain, two batched) before we opened
    while len(events) < 1:
        await more()
    opened = events.pop(0)
    assert isinstance(opened, ChannelOpened)
    assert (opened.protocol, opened.id, opened.handshake) == (
        "cairn/interop",
        b"channel-id",
        b"js handshake",
    )
    assert opened.channel is None  # JS waits for us
    channel = mux.open_channel("cairn/interop", b"channel-id", b"cairn handshake")
    events.extend(drain(mux))
    while len(events) < 3:
        await more()
    assert events == [
        ChannelMessage(channel, 0, b"hello from js"),
        ChannelMessage(channel, 0, b"batch one"),
        ChannelMessage(channel, 0, b"batch two"),
    ]
    events.clear()

    mux.send(channel, 0, b"reply")
    mux.send_batch([(channel, 0, b"batched reply 1"), (channel, 0, b"batched reply 2")])
    unknown = mux.open_channel("cairn/never")
    await flush()
    assert (await js.line()) == {"opened": b"cairn handshake".hex()}
    for text in (b"reply", b"batched reply 1", b"batched reply 2"):
        assert (await js.line()) == {"message": text.hex()}
    while not events:
        await more()
    assert events.pop(0) == ChannelRejected(unknown)

    mux.send(channel, 0, b"bye")
    await flush()
    assert (await js.line()) == {"message": b"bye".hex()}
    assert (await js.line()) == {"closed": True}
    while not events:
        await more()
    assert events == [ChannelClosed(channel, opened.remote_id)]


@pytest.mark.parametrize("role", ["initiator", "responder"])
async def test_secret_stream_echo(node_path: Path, interop_dir: Path, role: str) -> None:
    run = run_as_initiator if role == "initiator" else run_as_responder
    await run(node_path, interop_dir, "echo", echo)


@pytest.mark.parametrize("role", ["initiator", "responder"])
async def test_protomux_channel(node_path: Path, interop_dir: Path, role: str) -> None:
    run = run_as_initiator if role == "initiator" else run_as_responder
    await run(node_path, interop_dir, "protomux", protomux)

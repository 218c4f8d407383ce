"""Hostile replication peers, each run as its own process (so that their CPU is not the honest
peer's): ``python -m tests.integration.attackers MODE HOST PORT AMOUNT [KEY]``.

- ``garbage``: connections that push seeded random bytes (no handshake) until AMOUNT bytes
  were written in all, reconnecting whenever the server drops one;
- ``bad-proofs``: connections that complete the Noise handshake and open the log's channel with
  a valid capability (KEY: the log's key, which is public), then send AMOUNT data messages in
  all whose proofs are wrong (unsolicited, or cut short so that they do not decode);
- ``mqtt-flood``: MQTT messages at AMOUNT a second for the given seconds (not replication);
- ``slow``: AMOUNT connections that announce a 100-byte handshake message and send it a byte
  every few seconds (never a whole message in time).

Prints one JSON line when done: what was sent, how many connections the server dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import sys
import tempfile
import time
from pathlib import Path

from cairn.crypto import random_key_pair
from cairn.log import Log
from cairn.messages import Data, DataBlock, MessageType, Node, encode_data
from cairn.replication.net import MAX_FRAME, _Link
from cairn.replication.session import Session


async def garbage(host: str, port: int, amount: int) -> dict[str, float]:
    rng = random.Random(11)
    chunk = rng.randbytes(1 << 20)
    sent = drops = 0
    while sent < amount:
        try:
            _reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        try:
            while sent < amount:
                writer.write(chunk)
                await asyncio.wait_for(writer.drain(), 10)
                sent += len(chunk)
        except (ConnectionError, TimeoutError):
            drops += 1
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
    return {"bytes": sent, "dropped": drops}


def _bad_data(rng: random.Random, k: int) -> bytes:
    proof = Data(request=rng.randrange(1, 1 << 30), fork=0,
                 block=DataBlock(rng.randrange(0, 1 << 20), rng.randbytes(100),
                                 (Node(rng.randrange(0, 1 << 21), 100, rng.randbytes(32)),)))
    body = encode_data(proof)
    return body if k % 10 else body[: len(body) // 2]  # one in ten does not even decode


async def bad_proofs(host: str, port: int, amount: int, key: bytes) -> dict[str, float]:
    rng = random.Random(12)
    sent = drops = 0
    with tempfile.TemporaryDirectory(prefix="cairn-attacker-") as d:
        while sent < amount:
            try:
                reader, writer = await asyncio.open_connection(host, port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            link = _Link(reader, writer, random_key_pair(), True, 20.0, MAX_FRAME)
            replica = Log.replica(Path(d) / f"r{drops}.db", key)
            try:
                await link.handshake()
                assert link.replicator is not None
                session = link.replicator.open(replica)

                def synced(s: Session = session) -> bool:
                    return s.remote_length > 0

                await asyncio.wait_for(link.run(done=synced), 10)
                while sent < amount:
                    session._send(MessageType.DATA, _bad_data(rng, sent))
                    sent += 1
                    if sent % 50 == 0:
                        for m in link.replicator.data_to_send():
                            link.stream.send(m)
                        await asyncio.wait_for(link._write(), 10)
            except Exception:  # the server dropped us (any way it does): count it
                drops += 1
            finally:
                replica.close()
                await link.close()
    return {"messages": sent, "dropped": drops}


async def slow(host: str, port: int, amount: int) -> dict[str, float]:
    conns = []
    for _ in range(amount):
        with contextlib.suppress(OSError):
            conns.append(await asyncio.open_connection(host, port))
    dropped = 0
    start = time.monotonic()
    for _, writer in conns:  # a frame header announcing 100 bytes: a message under way
        writer.write((100).to_bytes(3, "little"))
    alive = list(conns)
    while alive and time.monotonic() - start < 60:
        still = []
        for reader, writer in alive:
            try:
                writer.write(b"\x00")  # ...that comes a byte every few seconds
                await asyncio.wait_for(writer.drain(), 1)
                if reader.at_eof():
                    raise ConnectionError
                still.append((reader, writer))
            except (ConnectionError, TimeoutError, OSError):
                dropped += 1
        alive = still
        # wait a while (the server may drop the one we wait on: a reset is what we came for)
        with contextlib.suppress(TimeoutError, ConnectionError, OSError):
            await asyncio.wait_for(asyncio.gather(*(r.read(1) for r, _ in alive[:1])), 3)
    for _, writer in conns:
        writer.close()
    return {"connections": len(conns), "dropped": dropped,
            "seconds": round(time.monotonic() - start)}


def mqtt_flood(host: str, port: int, rate: int, seconds: float, name: str = "flood-1"
               ) -> dict[str, float]:
    """A device gone wrong: valid SenML readings on its own topic at ``rate`` messages a
    second (QoS 0), for ``seconds``."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-client",
                         protocol=mqtt.MQTTv311)
    client.max_queued_messages_set(0)
    client.connect(host, port)
    client.loop_start()
    sent = 0
    start = time.monotonic()
    t0 = time.time()
    try:
        while (now := time.monotonic() - start) < seconds:
            due = int(now * rate)
            while sent < due:
                body = json.dumps([{"bn": f"{name}/noise", "bt": t0 + sent / rate, "u": "Cel",
                                    "v": sent % 100}])
                client.publish(f"senml/{name}/noise", body, qos=0)
                sent += 1
            time.sleep(0.001)
        elapsed = time.monotonic() - start  # (the rate: paced time, not the disconnect)
    finally:
        client.loop_stop()
        client.disconnect()
    return {"messages": sent, "rate": sent / elapsed}


def main() -> None:
    mode, host, port, amount = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    out: dict[str, float]
    if mode == "mqtt-flood":
        out = mqtt_flood(host, port, amount, float(sys.argv[5]), sys.argv[6])
    elif mode == "garbage":
        out = asyncio.run(garbage(host, port, amount))
    elif mode == "bad-proofs":
        out = asyncio.run(bad_proofs(host, port, amount, bytes.fromhex(sys.argv[5])))
    elif mode == "slow":
        out = asyncio.run(slow(host, port, amount))
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps({"mode": mode, **out}), flush=True)


if __name__ == "__main__":
    main()

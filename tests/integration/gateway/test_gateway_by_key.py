"""Connect by key (issue 19 item 2, decision 0013) on a running gateway: a JS hyperdht client
(`dht.connect(gatewayKey)`, the npm package) finds the gateway by its Noise key on a DHT of
Cairn nodes on 127.0.0.1 and completes the Noise IK when its key is an enrolled device's; an
unenrolled key is refused by the gateway's firewall hook before any IK reply. The data phase
needs UDX (not in this build): the gateway drops the completed handshake with one info line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cairn.crypto import key_pair
from cairn.dht.api import DHT
from cairn_gateway.config import GatewayConfig
from cairn_gateway.daemon import by_key
from tests.integration.gateway.test_dialout import Edge, Gateway, until
from tests.scorecard import record

LAB_JS = Path(__file__).resolve().parents[2] / "lab" / "js" / "hyperdht_lab.js"


@contextlib.asynccontextmanager
async def cairn_dht(seed: int) -> AsyncIterator[tuple[str, int]]:
    """Six persistent Cairn DHT nodes on 127.0.0.1; yields the first's address."""
    rng = random.Random(seed)
    async with contextlib.AsyncExitStack() as stack:
        first = await stack.enter_async_context(
            DHT.start("127.0.0.1", 0, [], persistent=True, rng=random.Random(rng.random())))
        nodes = [first]
        for _ in range(5):
            nodes.append(await stack.enter_async_context(DHT.start(
                "127.0.0.1", 0, [first.address], persistent=True,
                rng=random.Random(rng.random()))))
        await asyncio.gather(*(d.ready() for d in nodes))
        yield first.address


async def js_open(node_path: Path, interop_dir: Path, boot: tuple[str, int], key: bytes,
                  seed: str, ms: int) -> dict[str, Any]:
    """`hyperdht_lab.js open`: connect by key as seed's key pair; its one JSON line."""
    proc = await asyncio.create_subprocess_exec(
        str(node_path), str(LAB_JS), "open", f"{boot[0]}:{boot[1]}", key.hex(), str(ms), seed,
        env={"NODE_PATH": str(interop_dir / "node_modules")}, cwd=interop_dir,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(ms / 1000 + 30):
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines = [ln for ln in out.decode().splitlines() if ln.startswith("{")]
    assert lines, f"the JS client printed nothing: {err.decode()[-2000:]}"
    got: dict[str, Any] = json.loads(lines[-1])
    return got


def test_a_js_client_with_an_enrolled_key_completes_the_ik_and_a_stranger_is_refused(
        node_path: Path, interop_dir: Path, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    enrolled_seed, stranger_seed = "23" * 32, "24" * 32
    js_key = key_pair(bytes.fromhex(enrolled_seed)).public_key

    async def main() -> tuple[dict[str, Any], dict[str, Any], Gateway]:
        gw = Gateway(tmp_path)
        edge = Edge(tmp_path, "js-peer", ("js-peer/x",))
        try:
            # the JS peer is an enrolled device whose signed record names its Noise key
            gw.enroll(edge, "js-peer", edge.device(noise_key=js_key))
            cfg = GatewayConfig(tmp_path / "data", tmp_path / "gateway.seed",
                                replication_by_key_address=("127.0.0.1", 0))
            async with cairn_dht(5) as boot, contextlib.AsyncExitStack() as stack:
                dht = await stack.enter_async_context(
                    DHT.start("127.0.0.1", 0, [boot], persistent=False, rng=random.Random(6)))
                await dht.ready()
                await by_key(cfg, dht, gw.listener, gw.key, stack)
                ok = await js_open(node_path, interop_dir, boot, gw.key.public_key,
                                   enrolled_seed, 20_000)
                await until(lambda: gw.listener.by_key_dropped >= 1)
                refused = await js_open(node_path, interop_dir, boot, gw.key.public_key,
                                        stranger_seed, 6_000)
            return ok, refused, gw
        finally:
            edge.close()
            gw.close()

    with caplog.at_level(logging.INFO):
        ok, refused, gw = asyncio.run(main())
    assert ok.get("ok") and ok.get("remotePublicKey") == gw.key.public_key.hex(), ok
    said = [r for r in caplog.records if "data phase needs UDX" in r.getMessage()]
    assert len(said) == 1
    record("replication", "an unenrolled key connects to the gateway by key (JS hyperdht)",
           gw.listener.by_key_refused, 0 if not refused.get("ok") else 1, "handshakes completed",
           detail=f"refused by the firewall hook before the IK reply; JS: {refused.get('error')}")
    assert not refused.get("ok"), refused
    assert gw.listener.by_key_refused >= 1

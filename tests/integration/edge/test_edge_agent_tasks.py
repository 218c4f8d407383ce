"""The edge agent's task group: its replication server failing (its port taken) stops the agent
at once with that error, instead of the agent waiting for an address that never comes."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path

import pytest

from cairn.fleet.identity import new_seed
from cairn_edge.agent import Agent
from cairn_edge.config import parse_config


async def test_a_replication_port_in_use_stops_the_agent_with_its_error(tmp_path: Path) -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    try:
        port = taken.getsockname()[1]
        new_seed(tmp_path / "device.seed")
        cfg = parse_config('data_dir = "data"\nseed_file = "device.seed"\n'
                           '[mqtt]\nbroker = "mqtt://127.0.0.1:1"\n'
                           f'[replication]\nhost = "127.0.0.1"\nport = {port}\n', tmp_path)
        agent = Agent(cfg)
        started = time.monotonic()
        with pytest.raises(OSError, match="in use") as info:  # the server's own, not a group
            async with asyncio.timeout(30):
                await agent.run()
        assert not isinstance(info.value, TimeoutError)
        assert time.monotonic() - started < 10  # not the 10-s wait for the address
    finally:
        taken.close()

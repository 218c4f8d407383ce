"""``cairn dht`` against a real testnet: ``cairn dht testnet`` runs in a subprocess on a port
picked here, the client commands run in-process through click's CliRunner."""

from __future__ import annotations

import asyncio
import json
import queue
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from click.testing import CliRunner, Result

from cairn.cli import main
from cairn.crypto import key_pair
from cairn.dht.api import DHT
from cairn.dht.records import MAX_VALUE_SIZE

CAIRN = [sys.executable, "-c", "from cairn.cli import main; main()"]
START_TIMEOUT = 30.0
SEED = "11" * 32
PUBLIC_KEY = key_pair(bytes.fromhex(SEED)).public_key.hex()


@dataclass
class Running:
    proc: subprocess.Popen[str]
    lines: queue.Queue[str | None]

    def wait_for(self, prefix: str) -> str:
        """The first line of output starting with ``prefix``; fails with the output so far."""
        seen: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=START_TIMEOUT)
            except queue.Empty:
                pytest.fail(f"no {prefix!r} line in {START_TIMEOUT} s; output: {seen}")
            if line is None:
                err = self.proc.stderr.read() if self.proc.stderr else ""
                pytest.fail(f"exited with {self.proc.wait()} before {prefix!r}: {seen} {err}")
            seen.append(line)
            if line.startswith(prefix):
                return line


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start(*args: str) -> Running:
    proc = subprocess.Popen([*CAIRN, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    return Running(proc, lines)


def stop(running: Running) -> int:
    """SIGTERM, then the exit code (killed if it does not stop in 10 s)."""
    if running.proc.poll() is None:
        running.proc.send_signal(signal.SIGTERM)
    try:
        return running.proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        running.proc.kill()
        running.proc.wait()
        raise
    finally:
        for pipe in (running.proc.stdout, running.proc.stderr):
            if pipe is not None:
                pipe.close()


@pytest.fixture(scope="module")
def bootstrap() -> Iterator[str]:
    """A 10-node testnet in a subprocess; its first node's HOST:PORT."""
    port = free_udp_port()
    running = start("dht", "testnet", "--nodes", "10", "--port", str(port))
    try:
        line = running.wait_for("testnet ready")
        assert line == f"testnet ready: 10 nodes, bootstrap 127.0.0.1:{port}"
        yield f"127.0.0.1:{port}"
    finally:
        assert stop(running) == 0


def cairn(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def ok(*args: str) -> str:
    result = cairn(*args)
    assert result.exit_code == 0, result.output
    return result.output


# -- put and get ----------------------------------------------------------------------------------


def test_put_then_get(bootstrap: str) -> None:
    out = ok("dht", "put", "--bootstrap", bootstrap, "--seed", SEED, "--seq", "1", "héllo, 21 °C")
    lines = out.splitlines()
    assert lines[0] == f"public key: {PUBLIC_KEY}"
    assert lines[1] == "seq: 1"
    stored = int(lines[2].removeprefix("stored on: ").removesuffix(" nodes"))
    assert 1 <= stored <= 10
    assert ok("dht", "get", "--bootstrap", bootstrap, PUBLIC_KEY) == "héllo, 21 °C\n"
    got = json.loads(ok("dht", "get", "--bootstrap", bootstrap, PUBLIC_KEY, "--json"))
    assert got == {"seq": 1, "value": "héllo, 21 °C".encode().hex()}


def test_min_seq_latest_and_a_lower_seq(bootstrap: str) -> None:
    seed = "22" * 32
    pk = key_pair(bytes.fromhex(seed)).public_key.hex()
    ok("dht", "put", "--bootstrap", bootstrap, "--seed", seed, "--seq", "4", "four")
    assert ok("dht", "get", "--bootstrap", bootstrap, pk, "--min-seq", "4", "--latest") == "four\n"
    result = cairn("dht", "get", "--bootstrap", bootstrap, pk, "--min-seq", "5")
    assert result.exit_code == 1
    assert f"no record with seq >= 5 found for {pk}" in result.output
    result = cairn("dht", "put", "--bootstrap", bootstrap, "--seed", seed, "--seq", "3", "three")
    assert result.exit_code == 1
    assert "seq 3 is too low: the DHT holds seq 4" in result.output


def test_get_of_a_key_nobody_put_exits_1(bootstrap: str) -> None:
    pk = key_pair(bytes(32)).public_key.hex()
    result = cairn("dht", "get", "--bootstrap", bootstrap, pk)
    assert result.exit_code == 1
    assert f"Error: no record found for {pk}" in result.output


def test_get_prints_hex_when_the_value_is_not_utf8(bootstrap: str) -> None:
    kp = key_pair(bytes([3]) * 32)
    host, port = bootstrap.split(":")

    async def put() -> None:
        async with DHT.start(bootstrap=[(host, int(port))], persistent=False) as node:
            await node.mutable_put(kp, b"\xff\x00\xfe", 1)

    asyncio.run(put())
    assert ok("dht", "get", "--bootstrap", bootstrap, kp.public_key.hex()) == "ff00fe\n"


# -- announce and lookup --------------------------------------------------------------------------


def test_announce_then_lookup(bootstrap: str) -> None:
    topic = "ab" * 32
    result = cairn("dht", "lookup", "--bootstrap", bootstrap, topic)
    assert result.exit_code == 1
    assert f"nobody announced on topic {topic}" in result.output
    out = ok("dht", "announce", "--bootstrap", bootstrap, "--seed", SEED, "--relay",
             "10.0.0.7:5000", topic)
    assert out.splitlines()[0] == f"public key: {PUBLIC_KEY}"
    assert ok("dht", "lookup", "--bootstrap", bootstrap, topic) == f"{PUBLIC_KEY} 10.0.0.7:5000\n"
    got = json.loads(ok("dht", "lookup", "--bootstrap", bootstrap, topic, "--json"))
    assert got == [{"public_key": PUBLIC_KEY, "relay_addresses": ["10.0.0.7:5000"]}]


# -- running nodes --------------------------------------------------------------------------------


def test_bootstrap_node_runs_until_sigterm() -> None:
    running = start("dht", "bootstrap", "--port", "0")
    try:
        line = running.wait_for("ready ")
        _, addr, _, node_id = line.split()
        assert addr.startswith("127.0.0.1:") and len(bytes.fromhex(node_id)) == 32
        # a lone bootstrap node is a DHT of one: it stores records
        ok("dht", "put", "--bootstrap", addr, "--seed", SEED, "--seq", "1", "alone")
        assert ok("dht", "get", "--bootstrap", addr, PUBLIC_KEY) == "alone\n"
    finally:
        assert stop(running) == 0


def test_a_taken_port_is_a_clear_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        result = cairn("dht", "bootstrap", "--port", str(port))
    assert result.exit_code == 1
    assert "cannot listen" in result.output


def test_no_answer_from_the_bootstrap_node_exits_1() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        addr = f"127.0.0.1:{silent.getsockname()[1]}"
        result = cairn("dht", "get", "--bootstrap", addr, PUBLIC_KEY, "--timeout", "0.3")
    assert result.exit_code == 1
    assert "did not finish in 0.3 s" in result.output


# -- argument checks ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["get", "--bootstrap", "127.0.0.1", PUBLIC_KEY], "is not HOST:PORT"),
        (["get", "--bootstrap", "127.0.0.1:0", PUBLIC_KEY], "not a number from 1 to 65535"),
        (["get", "--bootstrap", "127.0.0.1:65536", PUBLIC_KEY], "not a number from 1 to 65535"),
        (["get", "--bootstrap", "127.0.0.1:x", PUBLIC_KEY], "not a number from 1 to 65535"),
        (["get", "--bootstrap", "0.0.0.0:5", PUBLIC_KEY], "not an IPv4 address or host name"),
        (["get", "--bootstrap", "[::1]:5", PUBLIC_KEY], "not an IPv4 address or host name"),
        (["get", "--bootstrap", "127.0.0.1:5", "zz" * 32], "PUBLIC_KEY must be hex"),
        (["get", "--bootstrap", "127.0.0.1:5", "ab" * 31], "must be 32 bytes"),
        (["get", "--bootstrap", "127.0.0.1:5", PUBLIC_KEY, "--min-seq", "-1"], "--min-seq"),
        (["get", PUBLIC_KEY], "Missing option '--bootstrap'"),
        (["get", "--bootstrap", "127.0.0.1:5", PUBLIC_KEY, "--timeout", "0"], "--timeout"),
        (["put", "--bootstrap", "127.0.0.1:5", "--seed", "ab", "--seq", "1", "v"],
         "seed must be 32 bytes"),
        (["put", "--bootstrap", "127.0.0.1:5", "--seed", SEED, "--seq", "-1", "v"], "--seq"),
        (["put", "--bootstrap", "127.0.0.1:5", "--seed", SEED, "--seq", "1",
          "é" * (MAX_VALUE_SIZE // 2 + 1)], f"the most a DHT record holds is {MAX_VALUE_SIZE}"),
        (["announce", "--bootstrap", "127.0.0.1:5", "--seed", SEED, "--relay", "host:1",
          "ab" * 32], "'host' in 'host:1' is not an IPv4 address"),
        (["announce", "--bootstrap", "127.0.0.1:5", "--seed", SEED, "--relay", "1.1.1.1:1",
          "--relay", "1.1.1.1:2", "--relay", "1.1.1.1:3", "--relay", "1.1.1.1:4", "ab" * 32],
         "at most 3 relay addresses"),
        (["lookup", "--bootstrap", "127.0.0.1:5", "abc"], "TOPIC must be hex"),
        (["bootstrap", "--port", "70000"], "--port"),
        (["bootstrap", "--host", "localhost"], "'localhost' is not an IPv4 address"),
        (["bootstrap", "--host", "0.0.0.0"], "give --address"),
        (["testnet", "--nodes", "0"], "--nodes"),
    ],
)
def test_bad_arguments_are_refused_with_a_clear_message(args: list[str], message: str) -> None:
    result = cairn("dht", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output

"""Edges dial out (issue 19), without sockets: the record's Noise key (field 8), the gateway's
address record, the config keys on both sides, the dialer's backoff, admission by the record
binding, the reach a device without an address gets, and `cairn edge init --gateway`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from pathlib import Path

import cbor2
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from cairn.cli import main
from cairn.crypto import random_key_pair
from cairn.fleet.gateway_record import (
    GatewayRecordError,
    decode_gateway_record,
    encode_gateway_record,
)
from cairn.fleet.record import DeviceRecord, RecordError, decode_record, encode_record
from cairn.replication.net import PeerRefusedError
from cairn.settings import ConfigError
from cairn_edge.config import load_config as load_edge_config
from cairn_edge.config import parse_config as parse_edge_config
from cairn_edge.dialer import Dialer
from cairn_gateway.collect import Collector, Device
from cairn_gateway.config import parse_config
from cairn_gateway.roster import Roster, reach
from cairn_gateway.store import Store
from tests.unit.gateway.test_gateway_resilience import FakeDHT


def test_the_record_names_the_edges_noise_key() -> None:
    noise = random_key_pair().public_key
    rec = decode_record(encode_record(DeviceRecord(time=1, noise_key=noise), None))
    assert rec.noise_key == noise
    assert decode_record(encode_record(DeviceRecord(time=1), None)).noise_key is None


@pytest.mark.parametrize("bad", [b"short", 7, "text", b"\x00" * 33])
def test_a_bad_noise_key_in_a_record_is_refused(bad: object) -> None:
    value = cbor2.dumps({0: 1, 1: 5, 3: [], 8: bad})
    with pytest.raises(RecordError, match="Noise key"):
        decode_record(value)


def test_the_gateway_address_record_round_trips() -> None:
    addrs = [("203.0.113.7", 7420), ("gw.example", 443)]
    assert decode_gateway_record(encode_gateway_record(9, addrs)) == addrs


@given(st.binary(max_size=300))
def test_the_gateway_address_record_decoder_raises_only_its_error(data: bytes) -> None:
    with contextlib.suppress(GatewayRecordError):
        decode_gateway_record(data)


@pytest.mark.parametrize("doc", [{0: 2, 1: 1, 2: []}, {0: 1, 1: 1, 2: [["h", 0]]},
                                 {0: 1, 1: 1, 2: [["", 80]]}, {0: 1, 1: 1, 2: [["h"] * 2]},
                                 {0: 1, 1: 1, 2: [["h", 1]] * 17}, {0: 1, 2: []}])
def test_hostile_gateway_records_are_refused(doc: object) -> None:
    with pytest.raises(GatewayRecordError):
        decode_gateway_record(cbor2.dumps(doc))


def test_the_gateway_listens_for_edges_by_default_and_can_be_told_not_to(
        tmp_path: Path) -> None:
    cfg = parse_config("", tmp_path)
    assert cfg.replication_listen == ("0.0.0.0", 7420)
    assert parse_config('[replication]\nlisten = ""\n', tmp_path).replication_listen is None
    cfg = parse_config('[replication]\nlisten = "127.0.0.1:0"\nadvertise = ["1.2.3.4:7420"]\n'
                       "max_connections = 5\nper_source = 2\nhandshake_timeout = 1.5\n",
                       tmp_path)
    assert cfg.replication_listen == ("127.0.0.1", 0)
    assert cfg.replication_advertise == (("1.2.3.4", 7420),)
    assert (cfg.replication_max_connections, cfg.replication_per_source,
            cfg.replication_handshake_timeout) == (5, 2, 1.5)


@pytest.mark.parametrize(("text", "names"), [
    ("[replication]\nlisten = 7420\n", "[replication].listen"),
    ('[replication]\nlisten = "nohost"\n', "[replication].listen"),
    ('[replication]\nadvertise = ["x:0"]\n', "[replication].advertise"),
    ("[replication]\nmax_connections = 0\n", "max_connections"),
    ("[replication]\nport = 7420\n", "port"),
])
def test_bad_replication_keys_name_themselves(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names.replace("[", r"\[").replace("]", r"\]")):
        parse_config(text, tmp_path)


def test_the_edge_reads_where_to_dial(tmp_path: Path) -> None:
    key = random_key_pair().public_key.hex()
    cfg = parse_edge_config(f'[replication]\ngateways = ["{key}"]\n'
                            'dial = ["gw.example:7420", "10.0.0.1:7420"]\n', tmp_path)
    assert cfg.dial == (("gw.example", 7420), ("10.0.0.1", 7420))
    with pytest.raises(ConfigError, match=r"\[replication\]\.dial"):
        parse_edge_config('[replication]\ndial = ["nowhere"]\n', tmp_path)


def test_edge_init_with_the_gateways_key_makes_an_edge_that_dials(tmp_path: Path) -> None:
    key = random_key_pair().public_key.hex()
    got = CliRunner().invoke(main, ["edge", "init", str(tmp_path / "e"), "--gateway", key,
                                    "--dial", "192.0.2.1:7420"])
    assert got.exit_code == 0, got.output
    cfg = load_edge_config(tmp_path / "e" / "edge.toml")
    assert cfg.gateways == (bytes.fromhex(key),) and cfg.dial == (("192.0.2.1", 7420),)
    assert cfg.advertise is None
    bad = CliRunner().invoke(main, ["edge", "init", str(tmp_path / "f"), "--gateway", "zz"])
    assert bad.exit_code != 0 and "--gateway" in bad.output
    assert not (tmp_path / "f" / "device.seed").exists()


def test_the_dialers_backoff_is_jittered_and_capped() -> None:
    d = Dialer(random_key_pair(), [], [], rng=random.Random(3), backoff_initial=1.0,
               backoff_max=30.0)
    waits = [d.delay(n) for n in range(1, 12)]
    assert all(0.5 * min(30.0, 2.0 ** (n - 1)) <= w <= min(30.0, 2.0 ** (n - 1))
               for n, w in zip(range(1, 12), waits, strict=True))
    assert max(waits) <= 30.0 and len(set(waits)) == len(waits)


def test_a_dialer_with_no_address_says_why() -> None:
    gw = random_key_pair().public_key
    d = Dialer(random_key_pair(), [gw], [], rng=random.Random(1))
    assert asyncio.run(d._open(d.links[gw])) is None
    assert "no address to dial" in (d.links[gw].error or "")


def test_a_wildcard_listener_publishes_the_host_it_is_seen_at(tmp_path: Path) -> None:
    """`listen = "0.0.0.0:7420"` (the default) with no `advertise`: the address record names
    the host the DHT sees the gateway at (else none, never 0.0.0.0); `advertise` and a
    concrete listen host win."""
    from cairn_gateway.daemon import advertised

    cfg = parse_config("", tmp_path)
    assert advertised(cfg, ("0.0.0.0", 7420), "10.0.0.1") == [("10.0.0.1", 7420)]
    assert advertised(cfg, ("0.0.0.0", 7420), "0.0.0.0") == []
    assert advertised(cfg, ("0.0.0.0", 7420), None) == []
    assert advertised(cfg, ("10.9.9.9", 7421), "10.0.0.1") == [("10.9.9.9", 7421)]
    told = parse_config('[replication]\nadvertise = ["gw.example:7420"]\n', tmp_path)
    assert advertised(told, ("0.0.0.0", 7420), "10.0.0.1") == [("gw.example", 7420)]


def test_the_seen_host_falls_back_to_the_route_toward_the_bootstrap_node() -> None:
    from types import SimpleNamespace

    from cairn_gateway.daemon import seen_host

    assert seen_host(SimpleNamespace(address=("10.0.0.1", 5)), []) == "10.0.0.1"  # type: ignore[arg-type]
    unknown = SimpleNamespace(address=("0.0.0.0", 5))
    assert seen_host(unknown, [("127.0.0.1", 9)]) == "127.0.0.1"  # type: ignore[arg-type]
    assert seen_host(unknown, []) is None  # type: ignore[arg-type]


def test_a_gateway_that_refuses_the_edge_is_redialled_with_a_growing_backoff(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Connected, then closed at once (a gateway that has not read the edge's record yet, or
    refuses it): each such connection counts as a failure, so the waits double instead of
    hammering the gateway every second."""
    import cairn_edge.dialer as dialer

    gw = random_key_pair().public_key
    waits: list[int] = []

    class Refused:
        remote_key = gw
        keepalive = 0.0

        async def close(self) -> None:
            return None

    async def opener(*_: object) -> Refused:
        return Refused()

    async def closed(*_: object) -> None:
        raise ConnectionError("the peer closed the connection")

    monkeypatch.setattr(dialer, "serve_on", closed)

    async def main() -> None:
        enough = asyncio.Event()

        def delay(n: int) -> float:
            waits.append(n)
            if len(waits) >= 4:
                enough.set()
            return 0.0

        d = Dialer(random_key_pair(), [gw], [], dial=[("10.0.0.1", 7420)],
                   opener=opener, rng=random.Random(2))  # type: ignore[arg-type]
        d.delay = delay  # type: ignore[method-assign,assignment]
        task = asyncio.create_task(d._keep(gw))
        async with asyncio.timeout(5.0):
            await enough.wait()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    asyncio.run(main())
    assert waits[:4] == [1, 2, 3, 4]


def _device(noise: bytes, record_key: bytes, address: tuple[str, int] | None = None) -> Device:
    return Device(record_key, 1, DeviceRecord(time=1, address=address, noise_key=noise))


def test_admission_needs_an_enrolled_record_naming_the_key(tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.db")
    collector = Collector(tmp_path / "gw", random_key_pair(), store)
    try:
        a, b = b"a" * 32, b"b" * 32
        noise = random_key_pair().public_key
        with pytest.raises(PeerRefusedError, match="not enrolled"):
            collector.admit(noise, {a})
        collector.bind(_device(noise, a))
        with pytest.raises(PeerRefusedError, match="not enrolled"):
            collector.admit(noise, set())  # its record read, the device not enrolled
        assert collector.admit(noise, {a}).record_key == a
        collector.bind(_device(noise, b))  # a second record names the same key
        with pytest.raises(PeerRefusedError, match="2 enrolled devices"):
            collector.admit(noise, {a, b})
        collector.bind(_device(random_key_pair().public_key, b))  # b's newer record
        assert collector.admit(noise, {a, b}).record_key == a
    finally:
        collector.close()
        store.close()


def test_a_device_with_no_address_that_has_not_dialled_in_says_so(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    store = Store(tmp_path / "gw.db")
    collector = Collector(tmp_path / "gw", random_key_pair(), store)
    dht = FakeDHT()
    key = b"k" * 32
    dht.records[key] = encode_record(DeviceRecord(time=1, noise_key=b"n" * 32), None)
    Roster(store.conn).enroll(key, "board-1", 1.0)
    try:
        with caplog.at_level(logging.WARNING):
            assert asyncio.run(collector.collect_round(dht, [key])) == []  # type: ignore[arg-type]
        state = reach(store.conn)[key]
        assert state.startswith("no address and not connected")
        assert any("no address and not connected" in r.getMessage() for r in caplog.records)
        got = CliRunner().invoke(main, ["gateway", "devices", "list", "--config",
                                        str(_gateway_toml(tmp_path))])
        assert "reach: no address and not connected" in got.output, got.output
    finally:
        collector.close()
        store.close()


def _gateway_toml(tmp_path: Path) -> Path:
    p = tmp_path / "gateway.toml"
    p.write_text('data_dir = "."\n')
    (tmp_path / "gw.db").touch()
    return p

"""Connect by key on the gateway (decision 0013): its config keys and its firewall hook, which
applies the TCP listener's admission rule (a key an enrolled device's record names)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from cairn.crypto import random_key_pair
from cairn.fleet.record import DeviceRecord
from cairn.hyperdht.messages import NoisePayload
from cairn.settings import ConfigError
from cairn_gateway.collect import Collector, Device
from cairn_gateway.config import parse_config, render_config
from cairn_gateway.listener import EdgeListener
from cairn_gateway.roster import Roster
from cairn_gateway.store import Store
from tests.scorecard import record


def test_by_key_is_on_by_default_and_its_address_parses(tmp_path: Path) -> None:
    cfg = parse_config("", tmp_path)
    assert cfg.replication_by_key and cfg.replication_by_key_address is None
    cfg = parse_config('[replication]\nby_key = false\nby_key_address = "203.0.113.5:0"\n',
                       tmp_path)
    assert not cfg.replication_by_key
    assert cfg.replication_by_key_address == ("203.0.113.5", 0)
    assert parse_config(render_config(cfg, tmp_path), tmp_path) == cfg


@pytest.mark.parametrize(("text", "names"), [
    ('[replication]\nby_key = "yes"\n', "by_key"),
    ("[replication]\nby_key_address = 7420\n", r"\[replication\].by_key_address"),
    ('[replication]\nby_key_address = "nohost"\n', r"\[replication\].by_key_address"),
    ("[replication]\nbykey = true\n", "bykey"),
])
def test_bad_by_key_keys_name_themselves(tmp_path: Path, text: str, names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        parse_config(text, tmp_path)


def test_the_firewall_lets_in_only_keys_enrolled_records_name(tmp_path: Path) -> None:
    store = Store(tmp_path / "gw.db")
    key = random_key_pair()
    collector = Collector(tmp_path / "gw", key, store)
    try:
        roster = Roster(store.conn)
        listener = EdgeListener(collector, key, roster.enrolled_keys)
        member, stranger, read_not_enrolled = (random_key_pair() for _ in range(3))
        for rk, noise in ((b"\x01" * 32, member), (b"\x02" * 32, read_not_enrolled)):
            collector.bind(Device(rk, 1, DeviceRecord(time=1, noise_key=noise.public_key), {}))
        roster.enroll(b"\x01" * 32, "member", time.time())
        payload, addr = NoisePayload(), ("198.51.100.1", 4000)
        assert listener.by_key_firewall(member.public_key, payload, addr) is False
        tries = [stranger.public_key, read_not_enrolled.public_key, b"", b"\x00" * 31]
        let_in = sum(not listener.by_key_firewall(k, payload, addr) for k in tries)
        record("replication", "keys with no enrolled record try the gateway's by-key firewall",
               len(tries), let_in, "let in", detail="stranger, record read but not enrolled, "
               "empty, short")
        assert let_in == 0 and listener.by_key_refused == len(tries)
    finally:
        collector.close()
        store.close()

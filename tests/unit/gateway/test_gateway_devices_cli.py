"""`cairn gateway devices add|remove|list` and the enrollment string `cairn edge init` and
`cairn edge keys` print, with CliRunner over real files (seed, config, gw.db)."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from cairn.fleet.enrollment import Enrollment, parse_enrollment
from cairn.fleet.identity import load_seed, record_key_pair
from cairn_edge.cli import edge
from cairn_gateway.cli import gateway
from cairn_gateway.roster import Roster
from cairn_gateway.store import Store
from tests.scorecard import record


@pytest.fixture
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    runner = CliRunner()
    assert runner.invoke(gateway, ["init", str(tmp_path / "gw")]).exit_code == 0
    return tmp_path / "gw" / "gateway.toml", tmp_path / "board-7"


def devices(config: Path, *args: str) -> Result:
    return CliRunner().invoke(gateway, ["devices", *args, "--config", str(config)])


def enrollment_of(out: str) -> str:
    return next(w for line in out.splitlines() for w in line.split() if w.startswith("cairn1:"))


def test_edge_init_prints_a_string_gateway_devices_add_takes(dirs: tuple[Path, Path]) -> None:
    config, board = dirs
    init = CliRunner().invoke(edge, ["init", str(board)])
    assert init.exit_code == 0, init.output
    string = enrollment_of(init.output)
    key = bytes(record_key_pair(load_seed(board / "device.seed")).public_key)
    assert parse_enrollment(string).record_key == key
    assert parse_enrollment(string).name == "board-7"  # the directory's name, suggested
    added = devices(config, "add", string)
    assert added.exit_code == 0, added.output
    assert added.output == f"enrolled board-7 ({key.hex()}): collected from the next round\n"
    listed = devices(config, "list")
    assert listed.exit_code == 0
    [row] = [line for line in listed.output.splitlines() if key.hex() in line]
    assert row.split()[:2] == ["board-7", "enrolled"]
    # `edge keys`: the same key; the name from the config's one [[topic]] device when set
    edge_toml = board / "edge.toml"
    edge_toml.write_text(edge_toml.read_text() + '\n[[topic]]\nfilter = "senml/b/+"\n'
                         'format = "senml"\ndevice = "kitchen"\n')
    keys = CliRunner().invoke(edge, ["keys", "--config", str(edge_toml), "--json"])
    assert keys.exit_code == 0, keys.output
    out = json.loads(keys.output)
    assert parse_enrollment(out["enrollment"]).name == "kitchen"
    assert out["record_key"] == key.hex()
    renamed = CliRunner().invoke(edge, ["keys", "--config", str(edge_toml), "--name", "b 1"])
    assert renamed.exit_code == 2 and "device name 'b 1' is not valid" in renamed.output


def test_add_remove_rebind_and_list(dirs: tuple[Path, Path]) -> None:
    config, _ = dirs
    a, b = "aa" * 32, "bb" * 32
    assert devices(config, "add", a, "--name", "board-1").exit_code == 0
    again = devices(config, "add", a, "--name", "board-1")
    assert again.exit_code == 0  # the same enrollment again changes nothing
    assert devices(config, "remove", "board-1").exit_code == 0
    assert devices(config, "add", b, "--name", "board-1").exit_code == 0  # a new key
    store = Store(config.parent / "data" / "gw.db")
    Roster(store.conn).split([bytes.fromhex("cc" * 32)], 1.0)  # one seen, not enrolled
    store.close()
    rows = [json.loads(x) for x in devices(config, "list", "--json").output.splitlines()]
    assert [(r["name"], r["record_key"], r["status"]) for r in rows] == [
        ("board-1", b, "enrolled"), ("board-1", a, "removed"), (None, "cc" * 32, "pending")]
    text = devices(config, "list").output
    assert "pending" in text and "cc" * 32 in text


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["add", "cairn1:board-1:" + "aa" * 32 + ":00000000"], 2, "checksum does not match"),
        (["add", "hello"], 2, "not an enrollment string"),
        (["add", "aa" * 31], 2, "not an enrollment string"),
        (["add", "aa" * 32], 2, "a bare record key needs --name NAME"),
        (["add", "aa" * 32, "--name", "a/b"], 2, "device name 'a/b' is not valid"),
        (["add", "bb" * 32, "--name", "board-1"], 1,
         f"the name 'board-1' is bound to device {'aa' * 32}"),
        (["add", "aa" * 32, "--name", "board-2"], 1, "already enrolled as 'board-1'"),
        (["remove", "board-9"], 1, "no enrolled device is named 'board-9'"),
    ],
)
def test_bad_input_is_one_line_that_says_what_is_wrong(
        dirs: tuple[Path, Path], args: list[str], code: int, message: str) -> None:
    config, _ = dirs
    assert devices(config, "add", "aa" * 32, "--name", "board-1").exit_code == 0
    r = devices(config, *args)
    assert r.exit_code == code, r.output
    assert message in r.output and len(r.output.strip().splitlines()) == 1, r.output
    rows = [json.loads(x) for x in devices(config, "list", "--json").output.splitlines()]
    assert [(x["name"], x["status"]) for x in rows] == [("board-1", "enrolled")]  # unchanged


def test_bad_strings_are_never_enrolled(dirs: tuple[Path, Path]) -> None:
    """Scorecard: enrollment strings an operator might mangle, through the CLI."""
    config, _ = dirs
    good = str(Enrollment("board-1", bytes.fromhex("ab" * 32)))
    bad = [good[:-1], good[:-9], good.replace("ab", "ba", 1), good.replace(":", ";"),
           good + "0", good.replace("board-1", "board-2"), " " + good[1:], good.upper()]
    accepted = sum(devices(config, "add", s).exit_code == 0 for s in bad)
    record("fleet", "mangled enrollment strings to devices add", len(bad), accepted,
           "accepted", detail="truncated, swapped, wrong separator, renamed, upper-cased")
    assert accepted == 0
    assert devices(config, "list", "--json").output == ""
    assert devices(config, "add", good).exit_code == 0


def test_every_devices_command_is_documented() -> None:
    doc = (Path(__file__).parents[3] / "docs" / "gateway.md").read_text()
    group = gateway.commands["devices"]
    assert isinstance(group, click.Group)
    for name in group.commands:
        assert f"cairn gateway devices {name}" in doc, name
    assert "cairn1:NAME:KEY:CHECKSUM" in doc and "## Enrol a board" in doc
    assert "cairn edge keys" in (Path(__file__).parents[3] / "docs" / "edge.md").read_text()


def test_fetch_takes_only_an_enrolled_device(dirs: tuple[Path, Path]) -> None:
    config, _ = dirs
    assert devices(config, "add", "aa" * 32, "--name", "board-1").exit_code == 0
    assert devices(config, "remove", "board-1").exit_code == 0
    for who in ("nobody", "bb" * 32, "aa" * 32, "board-1"):  # unknown, or removed
        r = CliRunner().invoke(gateway, ["fetch", "--config", str(config), "--device", who,
                                         "--stream", "board-1/t", "--since", "0",
                                         "--until", "1"])
        assert r.exit_code == 2, r.output
        assert f"--device {who!r} is not an enrolled device" in r.output
        assert len(r.output.strip().splitlines()) == 1


def test_after_a_key_rotation_export_takes_the_enrolled_devices_stream(
        dirs: tuple[Path, Path]) -> None:
    from cairn.frames import Frame, Sample

    config, _ = dirs
    old, new = "aa" * 32, "bb" * 32
    assert devices(config, "add", old, "--name", "board-1").exit_code == 0
    store = Store(config.parent / "data" / "gw.db")
    try:
        for key, value in ((old, 1.0), (new, 2.0)):
            if key == new:
                Roster(store.conn).remove("board-1", 5.0)
                Roster(store.conn).enroll(bytes.fromhex(new), "board-1", 6.0)
            sid = store.stream(store.device(bytes.fromhex(key), None, 1.0), "board-1/t",
                               bytes.fromhex(key[:2] * 31 + "01"), "Cel")
            store.ingest(sid, [(0, 0, Frame((Sample("board-1/t", "Cel", 100.0, value),)))])
    finally:
        store.close()
    r = CliRunner().invoke(gateway, ["export", "--config", str(config), "--stream", "board-1/t",
                                     "--format", "jsonl"])
    assert r.exit_code == 0, r.output
    assert [json.loads(x)["value"] for x in r.output.splitlines()] == [2.0]

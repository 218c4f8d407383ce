"""`cairn keys` and `cairn log`, through click's runner, and their documentation."""

from __future__ import annotations

import json
from pathlib import Path

import click
from click.testing import CliRunner

from cairn.cli import main
from cairn.keys_cli import keys
from cairn.log_cli import log
from tests.unit.core.forge import forge_block

SEED = "07" * 32
DOCS = Path(__file__).resolve().parents[3] / "docs" / "log.md"


def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args), input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_keys_new() -> None:
    code, out, _ = run("keys", "new", "--seed", SEED)
    assert code == 0
    kp = json.loads(out)
    assert kp["public_key"] == "ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c"
    code, out, _ = run("keys", "new")
    assert code == 0 and len(json.loads(out)["seed"]) == 64
    code, out, _ = run("keys", "new", "--seed", SEED, "--stream", "temperature")
    assert code == 0 and json.loads(out)["public_key"] != kp["public_key"]


def test_bad_arguments_say_what_is_wrong(tmp_path: Path) -> None:
    code, _, err = run("keys", "new", "--seed", "xyz")
    assert code == 2 and "seed must be hex" in err
    code, _, err = run("keys", "new", "--seed", "00" * 31)
    assert code == 2 and "32 bytes" in err
    code, _, err = run("log", "info", str(tmp_path / "nope.db"))
    assert code == 2 and "no log at" in err  # a missing file named: a usage error
    (tmp_path / "junk.db").write_bytes(b"not a database at all" * 10)
    code, _, err = run("log", "verify", str(tmp_path / "junk.db"))
    assert code == 1 and "not an SQLite database" in err
    code, _, err = run("log", "get", str(tmp_path / "junk.db"), "-1")
    assert code == 2


def test_create_append_info_get_verify(tmp_path: Path) -> None:
    path = str(tmp_path / "a.db")
    code, out, _ = run("log", "create", path, "--seed", SEED)
    assert code == 0
    assert out.strip() == "04dc2c70d9b3954c86f4d0ffeae59b601b9739d285d5bb1849a9f93f45d95c18"
    code, _, err = run("log", "create", path, "--seed", SEED)
    assert code == 1 and "already exists" in err
    assert run("log", "append", path, "a", "bb", "ccc")[:2] == (0, "3\n")
    assert run("log", "append", path, "--stdin", stdin="dddd\neeeee\n")[:2] == (0, "5\n")
    code, out, _ = run("log", "info", path, "--json")
    info = json.loads(out)
    assert code == 0
    assert info["length"] == 5 and info["byte_length"] == 15 and info["fork"] == 0
    assert info["tree_hash"] == "8bd269686739ceaf0dd9b8cb911bcc004aaabc3f7986c5f18c0f2a9d1a293fc9"
    assert len(bytes.fromhex(info["signature"])) == 68 and info["compat"] is False
    assert info["discovery_key"].startswith("1a5b6c22")
    assert run("log", "get", path, "2")[:2] == (0, "ccc")
    code, _, err = run("log", "get", path, "5")
    assert code == 1 and "block 5 is not held" in err
    code, out, _ = run("log", "verify", path)
    assert code == 0 and out.startswith("ok: 5 blocks")
    code, _, err = run("log", "append", path)
    assert code == 2 and "nothing to append" in err


def test_compat_log(tmp_path: Path) -> None:
    path = str(tmp_path / "c.db")
    assert run("log", "create", path, "--seed", SEED, "--compat")[0] == 0
    run("log", "append", path, "a", "bb", "ccc", "dddd", "eeeee")
    info = json.loads(run("log", "info", path, "--json")[1])
    assert info["compat"] is True and len(bytes.fromhex(info["signature"])) == 64
    assert info["key"] == info["public_key"]


def test_verify_names_the_bad_block(tmp_path: Path) -> None:
    path = tmp_path / "v.db"
    run("log", "create", str(path), "--seed", SEED)
    run("log", "append", str(path), *[f"v{i}" for i in range(10)])
    forge_block(path, 6, b"\x00", fix_hash=False)
    code, _, err = run("log", "verify", str(path))
    assert code == 1 and "block 6" in err


def test_every_command_is_documented() -> None:
    text = DOCS.read_text()
    for group in (keys, log):
        assert isinstance(group, click.Group)
        for name in group.commands:
            assert f"cairn {group.name} {name}" in text, f"`cairn {group.name} {name}` not in docs"

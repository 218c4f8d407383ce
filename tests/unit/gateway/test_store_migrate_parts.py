"""The migration's parts that need no server: keys kept exactly in ``cairn_migrate``, the
checksum comparison's tolerance, the source's checks, and the command's refusals of a bad
``--to`` (before any connection)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from cairn_gateway.cli import gateway
from cairn_gateway.store import SQLiteStore
from cairn_gateway.store.migrate import (
    SourceStoreError,
    _key_text,
    _key_values,
    _unequal,
    check_source,
)

KEY = st.one_of(st.binary(max_size=40), st.floats(allow_nan=False),
                st.integers(-(2 ** 63), 2 ** 63 - 1), st.text(max_size=20))


@given(st.lists(KEY, min_size=1, max_size=4))
def test_a_key_comes_back_exactly(values: list[object]) -> None:
    back = _key_values(_key_text(values))
    assert back == values
    assert [type(v) for v in back] == [type(v) for v in values]


def test_float_sums_agree_within_rounding_and_nothing_else_does() -> None:
    sums = {1: 2, 2: 2}  # column 1: a sum, column 2: its magnitude
    n = 1000
    a = (n, 1e9 * n, 1e9 * n, 5)
    ulp_ish = (1e9 * n) * 1e-15
    assert _unequal(a, (n, 1e9 * n + ulp_ish, 1e9 * n, 5), sums) is None
    assert _unequal(a, (n, 1e9 * n + 1.0, 1e9 * n, 5), sums) == (1, 1e12, 1e12 + 1.0)
    assert _unequal(a, (n + 1, 1e9 * n, 1e9 * n, 5), sums) == (0, n, n + 1)
    assert _unequal(a, (n, 1e9 * n, 1e9 * n, 6), sums) == (3, 5, 6)
    assert _unequal((0, None, None, 0), (0, None, None, 0), sums) is None
    assert _unequal((1, None, None, 0), (1, 2.0, 2.0, 0), sums) == (1, None, 2.0)


def test_what_is_not_a_cairn_store_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "gw.db"
    with pytest.raises(SourceStoreError, match="no such file"):
        check_source(missing)
    assert not missing.parent.exists()
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as c:
        c.execute("CREATE TABLE t (x)")
    with pytest.raises(SourceStoreError, match="not a Cairn gateway store"):
        check_source(other)
    ours = tmp_path / "gw.db"
    SQLiteStore(ours).close()
    check_source(ours)


@pytest.mark.parametrize(("url", "needle"), [
    ("mysql://h/db", "is not a postgresql://"),
    ("postgresql://h:99999/db", "--to is not a URL"),
    ("postgresql://u:hunter2@h/db", "--to holds a password"),
    ("  ", "--to is empty"),
])
def test_a_bad_target_is_refused_in_one_line(tmp_path: Path, url: str, needle: str) -> None:
    db = tmp_path / "gw.db"
    SQLiteStore(db).close()
    got = CliRunner().invoke(gateway, ["store", "migrate", "--from", str(db), "--to", url])
    assert got.exit_code == 2 and needle in got.output, got.output
    assert "hunter2" not in got.output


def test_no_target_anywhere_is_a_usage_error(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    assert CliRunner().invoke(gateway, ["init", str(tmp_path)]).exit_code == 0
    got = CliRunner().invoke(gateway, ["store", "migrate", "--config", str(config)])
    assert got.exit_code == 2 and "no target: give --to URL, or set [store] url" in got.output


def test_the_migrator_knows_every_table_of_the_store(tmp_path: Path) -> None:
    """A migration that adds a table to the SQLite store must teach the migrator to copy it
    (TABLES), or `store migrate` refuses every store from then on."""
    from cairn_gateway.store.migrate import _NOT_DATA, TABLES

    SQLiteStore(tmp_path / "gw.db").close()
    with sqlite3.connect(tmp_path / "gw.db") as c:
        tables = {r[0] for r in c.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                          "AND name NOT LIKE 'sqlite%'")}
        keys = {t: [r[1] for r in c.execute(f"PRAGMA table_info({t})") if r[5]]
                for t in tables}
    assert tables == {t for t, _ in TABLES} | set(_NOT_DATA)
    for table, key in TABLES:  # each copied by its primary key (unique: a resume skips none)
        assert set(keys[table]) == set(key), table

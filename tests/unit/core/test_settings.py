"""The one config dialect (`cairn.settings.Table`): unknown keys refused by name, typed getters
that name the dotted key, for the edge's and the gateway's configs alike."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from cairn.errors import UsageError
from cairn.settings import ConfigError, Table, parse_toml


def test_unknown_keys_are_refused_with_the_allowed_ones() -> None:
    with pytest.raises(ConfigError, match=r"\[api\]: unknown key\(s\) lisen, tokn "
                                          r"\(allowed: listen, token\)"):
        Table({"lisen": 1, "tokn": 2}, "[api]", {"listen", "token"})


def test_a_table_that_is_not_one_names_the_file() -> None:
    with pytest.raises(ConfigError, match=r"gw.toml: \[api\] must be a table"):
        Table.of(parse_toml("api = 3", "gw.toml"), "api", {"listen"}, "gw.toml")
    with pytest.raises(ConfigError, match=r"gw\.toml: not valid TOML"):
        parse_toml("api = [", "gw.toml")


def test_getters_name_the_dotted_key_and_return_typed_values(tmp_path: Path) -> None:
    t = Table({"n": 2, "i": 3, "f": False, "s": "x", "a": [1], "p": "sub/file"}, "[t]",
              {"n", "i", "f", "s", "a", "p", "absent"})
    assert t.number("n", 0.0, 0, 10) == 2.0 and isinstance(t.number("n", 0.0, 0, 10), float)
    assert t.integer("i", 0, 0, 10) == 3 and t.flag("f", True) is False
    assert t.text("s") == "x" and t.text("absent") is None and t.array("a") == [1]
    assert t.path("p", None, tmp_path) == tmp_path / "sub" / "file"
    assert t.path("absent", None, tmp_path) is None
    assert t.number("absent", 1.5, 0, 10) == 1.5 and t.array("absent") == []
    checks: list[tuple[Callable[[], object], str]] = [
            (lambda: t.number("s", 0.0, 0, 10), r"\[t\]\.s: 'x' is not a number in \[0, 10\]"),
            (lambda: t.number("n", 0.0, 5, 10), r"\[t\]\.n: 2 is not a number in \[5, 10\]"),
            (lambda: t.integer("n", 0, 5, 10), r"\[t\]\.n: 2 is not an integer in \[5, 10\]"),
            (lambda: t.flag("i", False), r"\[t\]\.i: 3 is not true or false"),
            (lambda: t.text("i"), r"\[t\]\.i: expected text, got int"),
            (lambda: t.array("s"), r"\[t\]\.s: expected a list, got str"),
            (lambda: t.array("s", what="a list of names"), r"\[t\]\.s: a list of names"),
            (lambda: t.path("i", None, tmp_path), r"\[t\]\.i: expected a path")]
    for call, message in checks:
        with pytest.raises(ConfigError, match=message):
            call()


def test_the_edge_wording_of_numbers() -> None:
    class Outside(Table):
        __slots__ = ()
        says_outside = True

    t = Outside({"n": 2, "b": True, "s": "x"}, "[logs]", {"n", "b", "s"})
    for key, message in [("n", r"\[logs\]\.n: 2 is outside \[5, 10\]"),
                         ("b", "expected an integer or a number, got a boolean"),
                         ("s", "expected an integer or a number, got str")]:
        with pytest.raises(ConfigError, match=message):
            t.number(key, 0.0, 5, 10)


def test_top_level_keys_are_named_alone_and_errors_are_the_operators() -> None:
    top = Table({"data_dir": 3}, "gw.toml", {"data_dir"}, top=True)
    with pytest.raises(ConfigError, match=r"^data_dir: expected a path$") as info:
        top.path("data_dir", "data", Path())
    assert isinstance(info.value, UsageError) and isinstance(info.value, ValueError)

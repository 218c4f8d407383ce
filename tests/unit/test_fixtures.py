"""tests/conftest.py: the tool fixtures fail in CI and skip elsewhere when a tool is missing,
and its lists of slow and grouped tests name tests that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.conftest import GROUPS, SLOW, in_ci, missing

TESTS = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes"])
def test_ci_values(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert in_ci()


@pytest.mark.parametrize("value", ["", "false", "0"])
def test_not_ci_values(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("CI", value)
    assert not in_ci()


def test_missing_tool_fails_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"node is required in CI: install Node\.js 20"):
        missing("node", "install Node.js 20")


def test_missing_tool_skips_elsewhere(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"node is missing: install Node\.js 20"):
        missing("node", "install Node.js 20")


@pytest.mark.parametrize("listed", sorted({*SLOW, *(x for g in GROUPS.values() for x in g)}))
def test_every_listed_test_exists(listed: str) -> None:
    """A renamed or moved test would silently stop being slow or grouped: fail instead."""
    path, _, name = listed.partition("::")
    source = TESTS / path
    assert source.is_file(), f"{listed}: no file tests/{path}"
    function = re.sub(r"\[.*\]$", "", name)
    assert re.search(rf"^(async )?def {function}\(", source.read_text(), re.M), \
        f"{listed}: no test {function} in tests/{path}"

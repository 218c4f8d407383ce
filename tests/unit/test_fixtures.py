"""The tool fixtures of tests/conftest.py fail in CI and skip elsewhere when a tool is missing."""

from __future__ import annotations

import pytest

from tests.conftest import in_ci, missing


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

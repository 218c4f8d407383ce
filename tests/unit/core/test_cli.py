"""The `cairn` command: version, help, and the command groups registered as entry points."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points

import click
import pytest
from click.testing import CliRunner

import cairn
from cairn import cli
from cairn.cli import COMMAND_GROUP, SkippedCommand, load_commands, main


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """`main` configures the root logger; put it back as it was after each test."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _listed_commands(help_text: str) -> set[str]:
    """The command names in the `Commands:` section of click's help (none if no section)."""
    section = re.search(r"^Commands:\n((?:  .*\n?)*)", help_text, re.MULTILINE)
    if section is None:
        return set()
    return {line.split()[0] for line in section.group(1).splitlines() if line.strip()}


def _importable_entry_points() -> set[str]:
    names = set()
    for ep in entry_points(group=COMMAND_GROUP):
        try:
            ep.load()
        except ImportError:
            continue
        names.add(ep.name)
    return names


def test_version() -> None:
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output == f"cairn, version {cairn.__version__}\n"
    assert cairn.__version__ == "0.1.0"


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help(flag: str) -> None:
    result = CliRunner().invoke(main, [flag])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: cairn [OPTIONS] COMMAND [ARGS]...")
    for option in ("--version", "--log-format [text|json]", "-v, --verbose"):
        assert option in result.output


def test_help_lists_exactly_the_registered_groups_that_import() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0, result.output
    expected = _importable_entry_points()
    assert _listed_commands(result.output) == expected
    assert set(main.list_commands(click.Context(main))) == expected


def test_registered_groups_that_do_not_import_are_the_skipped_ones() -> None:
    registered = {ep.name for ep in entry_points(group=COMMAND_GROUP)}
    assert set(main.skipped) == registered - _importable_entry_points()


@dataclass
class _FakeEntryPoint:
    name: str
    value: str
    extras: list[str]
    error: BaseException | None = None
    command: object = None

    def load(self) -> object:
        if self.error is not None:
            raise self.error
        return self.command


def _with_entry_points(monkeypatch: pytest.MonkeyPatch, *eps: _FakeEntryPoint) -> None:
    def fake_entry_points(*, group: str) -> list[_FakeEntryPoint]:
        assert group == COMMAND_GROUP
        return list(eps)

    monkeypatch.setattr(cli, "entry_points", fake_entry_points)


def test_load_commands_adds_groups_and_skips_missing_extras(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    probe = click.Group("probe-group")
    _with_entry_points(
        monkeypatch,
        _FakeEntryPoint("probe", "tests:probe", [], command=probe),
        _FakeEntryPoint(
            "gateway",
            "cairn_gateway.cli:gateway",
            ["gateway"],
            error=ModuleNotFoundError("No module named 'sqlite_utils'", name="sqlite_utils"),
        ),
    )
    group = click.Group("cairn")
    skipped = load_commands(group)
    assert group.commands == {"probe": probe}  # added under the entry point's name
    assert skipped == [
        SkippedCommand(
            "gateway",
            "cairn_gateway.cli:gateway",
            "ModuleNotFoundError: No module named 'sqlite_utils'",
            ("gateway",),
        )
    ]


def test_load_commands_lets_other_errors_through(monkeypatch: pytest.MonkeyPatch) -> None:
    _with_entry_points(
        monkeypatch, _FakeEntryPoint("broken", "broken:cli", [], error=RuntimeError("bug"))
    )
    with pytest.raises(RuntimeError, match="bug"):
        load_commands(click.Group("cairn"))


def test_load_commands_rejects_what_is_not_a_click_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _with_entry_points(monkeypatch, _FakeEntryPoint("odd", "json:dumps", [], command=json.dumps))
    with pytest.raises(TypeError, match=r"'odd'.*not a click command"):
        load_commands(click.Group("cairn"))


def test_running_a_skipped_group_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    # a group registered but not importable here (its extra is not installed)
    skip = SkippedCommand(
        "widget", "cairn_widget.cli:widget", "ModuleNotFoundError: widgetlib", ("widget",)
    )
    monkeypatch.setitem(main.skipped, "widget", skip)
    result = CliRunner().invoke(main, ["widget", "run"])
    assert result.exit_code == 2
    assert "`cairn widget` is not available in this installation" in result.output
    assert "pip install 'cairn[widget]'" in result.output


def test_an_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["no-such-group"])
    assert result.exit_code == 2
    assert "No such command 'no-such-group'" in result.output


@click.command("probe")
def _probe() -> None:
    log = logging.getLogger("cairn.probe")
    log.debug("debug line")
    log.info("info line %d", 1)
    log.warning("warning line")


@pytest.mark.parametrize(
    ("flags", "levels"),
    [([], ["warning"]), (["-v"], ["info", "warning"]), (["-vv"], ["debug", "info", "warning"])],
)
def test_log_format_json_and_verbosity(
    monkeypatch: pytest.MonkeyPatch, flags: list[str], levels: list[str]
) -> None:
    monkeypatch.setitem(main.commands, "probe", _probe)
    monkeypatch.setattr(main, "skipped", {})
    result = CliRunner().invoke(main, ["--log-format", "json", *flags, "probe"])
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    records = [json.loads(line) for line in result.stderr.splitlines()]
    assert [r["level"] for r in records] == levels
    assert all(r["logger"] == "cairn.probe" for r in records)
    assert records[-1]["message"] == "warning line"


def test_log_format_text_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(main.commands, "probe", _probe)
    result = CliRunner().invoke(main, ["-v", "probe"])
    assert result.exit_code == 0, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(r"\d{4}-\d\d-\d\d [\d:,]+ INFO    cairn\.probe: info line 1", lines[0])
    assert lines[1].endswith("WARNING cairn.probe: warning line")

"""The entry wrapper (cairn.entry): each kind of failure ends in one line and its exit code;
-v adds the traceback; a message is never empty; the global --config reaches subcommands."""

from __future__ import annotations

import errno
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from cairn.entry import EntryGroup, apply_config, describe, exit_code, global_options, one_line
from cairn.errors import ServiceError, StorageError, UsageError


def _group(exc: BaseException) -> click.Group:
    @click.group("probe", cls=EntryGroup)
    @global_options("probe")
    @click.pass_context
    def probe(ctx: click.Context, log_format: str, verbosity: int,
              global_config: Path | None) -> None:
        apply_config(ctx, global_config)

    @probe.command("fail")
    def fail() -> None:
        raise exc

    @probe.command("show")
    @click.option("--config", "config_path", default="own.toml")
    def show(config_path: str) -> None:
        click.echo(f"config {config_path}")

    return probe


@pytest.mark.parametrize(("exc", "code", "line"), [
    (UsageError("[mqtt].broker: not a URL"), 2, "Error: [mqtt].broker: not a URL"),
    (ServiceError("no broker at mqtt://x"), 1, "Error: no broker at mqtt://x"),
    (StorageError("streams.db is damaged"), 1, "Error: streams.db is damaged"),
    (OSError(errno.EADDRINUSE, "address already in use"), 1,
     "Error: [Errno 98] address already in use: another process holds that port; stop it or "
     "give another port in the config"),
    (ServiceError(""), 1, "Error: ServiceError (no detail given)"),
    (ExceptionGroup("in a task group", [ServiceError("the DHT is down")]), 1,
     "Error: the DHT is down"),
    (RuntimeError("boom"), 1, "Error: internal error (RuntimeError: boom); this is a bug: run "
     "the command again with -v for the traceback and report it"),
])
def test_each_failure_is_one_line_with_its_exit_code(exc: BaseException, code: int,
                                                     line: str) -> None:
    result = CliRunner().invoke(_group(exc), ["fail"])
    assert result.exit_code == code
    assert result.output == line + "\n"


def test_verbose_adds_the_traceback() -> None:
    result = CliRunner().invoke(_group(RuntimeError("boom")), ["-v", "fail"])
    assert result.exit_code == 1
    assert "Traceback" in result.output and "RuntimeError: boom" in result.output
    assert result.output.splitlines()[-1].startswith("Error: internal error")


def test_a_click_exception_replacing_a_usage_error_exits_2() -> None:
    def config_error() -> None:
        try:
            raise UsageError("bad value")
        except UsageError as exc:
            raise click.ClickException(str(exc)) from None

    with pytest.raises(click.ClickException) as caught:
        config_error()
    assert exit_code(caught.value) == 2
    assert one_line(caught.value) == "Error: bad value"


def test_describe_is_never_empty() -> None:
    assert describe(OSError()) == "OSError (no detail given)"
    assert describe(TimeoutError()) == "timed out (TimeoutError, no detail given)"
    assert describe(ValueError("  two\nlines ")) == "two lines"


def test_the_global_config_is_every_subcommands_default() -> None:
    group = _group(RuntimeError())
    assert CliRunner().invoke(group, ["show"]).output == "config own.toml\n"
    assert CliRunner().invoke(group, ["--config", "g.toml", "show"]).output == "config g.toml\n"
    result = CliRunner().invoke(group, ["--config", "g.toml", "show", "--config", "s.toml"])
    assert result.output == "config s.toml\n"

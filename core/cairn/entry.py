"""The entry wrapper every command line shares (``cairn``, ``cairn-edge``, and through ``cairn``
the sim and the demo): the global flags, and one line per failure with its exit code.

What a failure prints and how the process exits::

    exception                                      exit   printed (one line on stderr)
    click usage error (bad flag, bad value)          2    click's usage hint, then ``Error: ...``
    cairn.errors.UsageError (config, key, file)      2    ``Error: <message>``
    cairn.errors.ServiceError (port, broker, DHT)    1    ``Error: <message>``
    any other CairnError, OSError                    1    ``Error: <message>``
    a port already in use (EADDRINUSE)               1    ``Error: <address> is in use ...``
    anything else (a bug)                            1    ``Error: internal error ...``
    Ctrl-C                                         130    ``Aborted.``

A click exception raised while handling a Cairn exception (``raise click.ClickException(...)
from None`` in a command) takes the exit code of the exception it replaced, so a bad config
value exits 2 wherever a command reports it. ``-v`` (any verbosity) prints the traceback
before the line, for developers. A message is never empty: an exception without text is
named by its type.
"""

from __future__ import annotations

import errno
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from cairn import __version__
from cairn.errors import CairnError, UsageError

__all__ = [
    "EXIT_RUNTIME",
    "EXIT_USAGE",
    "EntryGroup",
    "apply_config",
    "describe",
    "exit_code",
    "global_options",
    "one_line",
]

EXIT_USAGE = 2
"""A usage error: a bad flag, a bad config value, a missing or unreadable file the user named."""
EXIT_RUNTIME = 1
"""A runtime failure: a busy port, no broker, the DHT unreachable, a damaged file."""
EXIT_INTERRUPTED = 130

F = TypeVar("F", bound=Callable[..., Any])

_verbosity = 0  # set by the global -v of the running command; -v shows tracebacks


def _leaf(exc: BaseException) -> BaseException:
    """The exception that says what happened: the first real one inside exception groups
    (a task group's), skipping cancellations its failure caused."""
    while isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions
                 if not isinstance(e, (KeyboardInterrupt, SystemExit))
                 and type(e).__name__ != "CancelledError"]
        exc = (inner or list(exc.exceptions))[0]
    return exc


def describe(exc: BaseException) -> str:
    """The exception's text, or its type's name when it has none (never an empty string)."""
    exc = _leaf(exc)
    text = str(exc).strip()
    if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
        return (f"{text or 'address in use'}: another process holds that port; stop it or "
                "give another port in the config")
    if not text and isinstance(exc, TimeoutError):
        return "timed out (TimeoutError, no detail given)"
    if not text:
        return f"{type(exc).__name__} (no detail given)"
    return " ".join(text.split())


def exit_code(exc: BaseException) -> int:
    """2 for what the user gave (a usage error), 1 for everything else that failed."""
    exc = _leaf(exc)
    if isinstance(exc, click.ClickException):
        context = exc.__cause__ or exc.__context__
        if isinstance(context, UsageError) and exc.exit_code == EXIT_RUNTIME:
            return EXIT_USAGE
        return exc.exit_code
    if isinstance(exc, UsageError):
        return EXIT_USAGE
    return EXIT_RUNTIME


def one_line(exc: BaseException) -> str:
    """``Error: ...``: what happened and, for an unexpected one, what to do."""
    leaf = _leaf(exc)
    if isinstance(leaf, (CairnError, OSError, click.ClickException)):
        return f"Error: {describe(leaf)}"
    return (f"Error: internal error ({type(leaf).__name__}: {describe(leaf)}); this is a bug: "
            "run the command again with -v for the traceback and report it")


def _report(exc: BaseException) -> NoReturn:
    if _verbosity > 0:
        traceback.print_exception(exc)
    click.echo(one_line(exc), err=True)
    sys.exit(exit_code(exc))


class EntryGroup(click.Group):
    """A click group whose ``main`` (what a console script calls) ends every failure in one
    line and the exit code of its kind (see the module's table). Called with
    ``standalone_mode=False`` it leaves exceptions to the caller, as click does."""

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True,
             **extra: Any) -> Any:
        global _verbosity
        _verbosity = 0
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, False, **extra)
        except SystemExit:
            raise
        except click.ClickException as exc:
            if _verbosity > 0 and (exc.__cause__ or exc.__context__) is not None:
                traceback.print_exception(exc)
            exc.show()
            sys.exit(exit_code(exc))
        except (click.Abort, KeyboardInterrupt):
            click.echo("Aborted.", err=True)
            sys.exit(EXIT_INTERRUPTED)
        except Exception as exc:
            _report(exc)
        except BaseExceptionGroup as exc:
            _report(exc)
        sys.exit(code if isinstance(code, int) else 0)


def _set_verbosity(ctx: click.Context, param: click.Parameter, value: int) -> int:
    global _verbosity
    _verbosity = value
    return value


def _config_defaults(command: click.Command, ctx: click.Context,
                     config: Path) -> dict[str, Any]:
    """``default_map`` entries giving ``config`` to every subcommand's ``--config``."""
    out: dict[str, Any] = {}
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is not None:
                inner = _config_defaults(sub, ctx, config)
                if inner:
                    out[name] = inner
    elif any(p.name == "config_path" for p in command.params):
        out["config_path"] = config
    return out


def apply_config(ctx: click.Context, config: Path | None) -> None:
    """Make the global ``--config`` the default of every subcommand's ``--config`` (a
    subcommand's own ``--config`` still wins)."""
    if config is not None and isinstance(ctx.command, click.Group):
        ctx.default_map = _config_defaults(ctx.command, ctx, config)


def global_options(prog_name: str) -> Callable[[F], F]:
    """The flags ``cairn`` and ``cairn-edge`` share: ``--version``, ``--log-format``,
    ``-v/-vv``, ``--config`` (``--help``/``-h`` come from the group's context settings)."""

    def decorate(f: F) -> F:
        f = click.option(
            "--config", "global_config", default=None, metavar="FILE",
            type=click.Path(dir_okay=False, path_type=Path),
            help="The config file every subcommand uses (default: each command's own "
                 "--config default, e.g. edge.toml or gateway.toml in this directory).")(f)
        f = click.option(
            "-v", "--verbose", "verbosity", count=True, callback=_set_verbosity,
            is_eager=True,
            help="Log more: -v for info, -vv for debug (default: warnings and errors only); "
                 "-v also prints the traceback of an error.")(f)
        f = click.option(
            "--log-format", type=click.Choice(["text", "json"]), default="text",
            show_default=True,
            help="How log lines are written to stderr: readable text, or one JSON object per "
                 "line.")(f)
        return click.version_option(__version__, "--version", prog_name=prog_name)(f)

    return decorate

"""The `cairn` command: one click group that wires in the command groups of every package.

Each group (`cairn keys`, `cairn log`, ...) lives in its own package and registers itself in the
`cairn.commands` entry-point group of the distribution's metadata. This module loads every such
entry point and adds it under its entry-point name. A group whose module cannot be imported
(an `ImportError`, usually because its extra is not installed) is left out of the command and
logged at debug level; running it says why it is missing. Any other error while loading a group
is a bug and propagates.

This is the only module that configures logging: libraries log through
`logging.getLogger(__name__)` and `main` decides where it goes (human-readable text on stderr by
default, one JSON object per line with `--log-format json`) through `cairn.logs`, which keeps
credentials out of every line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import click

from cairn.entry import EntryGroup, apply_config, global_options
from cairn.logs import configure_logging

__all__ = ["COMMAND_GROUP", "SkippedCommand", "load_commands", "main"]

COMMAND_GROUP = "cairn.commands"
"""The entry-point group in which packages register their click command groups."""

_logger = logging.getLogger(__name__)



@dataclass(frozen=True, slots=True)
class SkippedCommand:
    """A registered command group that was left out because its module could not be imported."""

    name: str
    target: str
    reason: str
    extras: tuple[str, ...] = ()

    def message(self) -> str:
        """Why the group is missing and, when its entry point names an extra, how to get it."""
        text = f"`cairn {self.name}` is not available in this installation ({self.reason})"
        if self.extras:
            text += f"; install it with: pip install 'cairn[{','.join(self.extras)}]'"
        return text


class _CairnGroup(EntryGroup):
    """A click group that loads the registered command groups when first asked for one (so a
    process that only imports this module, as `cairn-edge` does for its logging, loads none)
    and knows which could not be loaded."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._skipped: dict[str, SkippedCommand] | None = None

    @property
    def skipped(self) -> dict[str, SkippedCommand]:
        """The registered groups left out (loading them all on first use)."""
        if self._skipped is None:
            self._skipped = {}
            self._skipped = {skip.name: skip for skip in load_commands(self)}
        return self._skipped

    @skipped.setter
    def skipped(self, value: dict[str, SkippedCommand]) -> None:
        self._skipped = value

    def list_commands(self, ctx: click.Context) -> list[str]:
        _ = self.skipped
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        skip = self.skipped.get(cmd_name)
        command = super().get_command(ctx, cmd_name)
        if command is None and skip is not None:
            raise click.UsageError(skip.message(), ctx)
        return command


def load_commands(group: click.Group) -> list[SkippedCommand]:
    """Add every command registered under `COMMAND_GROUP` to `group`.

    Returns the entries that were skipped because importing them raised `ImportError`.
    Raises `TypeError` when an entry point does not name a click command; any other error
    raised while importing an entry point's module propagates.
    """
    skipped: list[SkippedCommand] = []
    for ep in sorted(entry_points(group=COMMAND_GROUP), key=lambda ep: ep.name):
        try:
            command = ep.load()
        except ImportError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            skip = SkippedCommand(ep.name, ep.value, reason, tuple(ep.extras))
            _logger.debug("skipping command group %r (%s): %s", skip.name, skip.target, skip.reason)
            skipped.append(skip)
            continue
        if not isinstance(command, click.Command):
            raise TypeError(
                f"entry point {ep.name!r} in {COMMAND_GROUP!r} names {ep.value!r}, "
                f"which is a {type(command).__name__}, not a click command"
            )
        group.add_command(command, ep.name)
    return skipped


@click.group("cairn", cls=_CairnGroup, context_settings={"help_option_names": ["-h", "--help"]})
@global_options("cairn")
@click.pass_context
def main(ctx: click.Context, log_format: str, verbosity: int, global_config: Path | None) -> None:
    """Cairn: signed sensor telemetry for edge boards and the gateways that collect from them.

    Every reading is signed on the device that took it (a Hypercore 11 log per sensor stream),
    the latest readings are published in a DHT (hyperdht 6), and gateways download only the
    parts of the history they need. Run `cairn COMMAND --help` for the commands of a group.
    """
    configure_logging(log_format, verbosity)
    apply_config(ctx, global_config)
    for skip in main.skipped.values():
        _logger.debug(
            "command group %r (%s) is not available: %s", skip.name, skip.target, skip.reason
        )


if __name__ == "__main__":
    main()

"""``cairn gateway store``: the sample store's commands (``migrate``: SQLite into PostgreSQL,
:mod:`cairn_gateway.store.migrate`). Thin: options in, the library's report out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cairn.datalock import hold
from cairn_gateway.config import ConfigError, GatewayConfig

__all__ = ["store_group"]

_CONFIG = click.option("--config", "config_path", default="gateway.toml", show_default=True,
                       type=click.Path(dir_okay=False, path_type=Path),
                       help="The gateway's config file.")


@click.group("store")
def store_group() -> None:
    """The sample store: move it from SQLite into PostgreSQL."""


@store_group.command("migrate")
@_CONFIG
@click.option("--from", "source", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="The SQLite store to move (default: the config's "
              "data_dir/gw.db).")
@click.option("--to", "target", default=None, metavar="URL",
              help="The PostgreSQL database, postgresql://user@host[:port]/dbname (default: "
              "the config's [store] url, with its password_file). No password in it: use "
              "--password-file, PGPASSWORD or ~/.pgpass.")
@click.option("--password-file", type=click.Path(dir_okay=False, path_type=Path),
              default=None, help="A file holding the database user's password (mode 0600), "
              "for --to.")
@click.option("--chunk", type=click.IntRange(1, 1_000_000), default=10_000, show_default=True,
              help="Rows copied per transaction.")
@click.option("--dry-run", is_flag=True, help="Say what would be moved, write nothing.")
def store_migrate(config_path: Path, source: Path | None, target: str | None,
                  password_file: Path | None, chunk: int, dry_run: bool) -> None:
    """Move the gateway's SQLite store into a PostgreSQL database, without loss: every table,
    ids kept; resumable (run it again after an interruption: it goes on where it stopped);
    verified at the end (row counts, each stream's samples and rollups). Stop the gateway
    first. Exit 0 only when both sides are equal."""
    from cairn_gateway.store.migrate import check_source, migrate, plan

    src, url = _migrate_ends(config_path, source, target, password_file)
    check_source(src)  # (before the lock, which would make its directory)
    if dry_run:
        p = plan(src, url)
        click.echo(f"would move {src} into {p.target} ({p.target_state})")
        for table, n in p.rows.items():
            click.echo(f"  {table:<16} {n:>14,} rows")
        return
    with hold(src.parent, "cairn gateway store migrate"), _MigrateProgress() as progress:
        report = migrate(src, url, chunk=chunk, progress=progress)
    if report.finished_before:
        done = f"migrated before ({report.resumed:,} rows), verified again"
    else:
        done = f"{report.copied:,} rows copied" + (
            f" ({report.resumed:,} copied before, by an interrupted run)" if report.resumed
            else "")
    click.echo(f"{report.source} -> {report.target}: {done} in {report.seconds:.1f} s")
    click.echo(f"  {'table':<16} {'SQLite':>14} {'PostgreSQL':>14}")
    for c in report.counts:
        click.echo(f"  {c.table:<16} {c.source:>14,} {c.target:>14,}"
                   + ("" if c.equal else "  DIFFERENT"))
    if report.nul_replaced:
        click.echo(f"  {report.nul_replaced:,} strings held NUL characters: stored with U+FFFD "
                   "in their place (PostgreSQL's text cannot hold NUL)")
    for line in report.differ:
        click.echo(f"  differs: {line}")
    if not report.ok:
        raise click.ClickException("verification failed: the target is not equal to the "
                                   "source (see above); the source is unchanged")
    click.echo(f"verified: every table's rows, and the samples and rollups of "
               f"{report.streams:,} streams, equal on both sides")


def _migrate_ends(config_path: Path, source: Path | None, target: str | None,
                  password_file: Path | None) -> tuple[Path, str]:
    """The migration's source file and target URL, from the options or the config."""
    from cairn_gateway.cli import _config, _Usage
    from cairn_gateway.daemon import store_target
    from cairn_gateway.store import check_url

    cfg = None if source is not None and target is not None else _config(config_path)
    if source is None:
        assert cfg is not None
        source = cfg.data_dir / "gw.db"
    if target is None:
        assert cfg is not None
        if not cfg.store_url:
            raise _Usage(f"no target: give --to URL, or set [store] url in {config_path}")
    else:
        if not target.strip():
            raise _Usage("--to is empty: give a postgresql://user@host[:port]/dbname URL")
        check_url(target, "--to", _Usage, "the process list and the shell's history would "
                  "show it: use --password-file, PGPASSWORD or ~/.pgpass")
        cfg = GatewayConfig(data_dir=source.parent, key_file=source.parent / "gateway.seed",
                            store_url=target, store_password_file=password_file)
    try:
        return source, str(store_target(cfg))
    except ConfigError as exc:
        raise _Usage(str(exc)) from None


class _MigrateProgress:
    """A migration's progress on stderr: rich bars on a terminal, else a line per table (and
    one every tenth of a large one)."""

    def __init__(self) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.bars: Any = None
        self.tasks: dict[str, Any] = {}
        self.said: dict[str, int] = {}

    def __enter__(self) -> _MigrateProgress:
        if self.console.is_terminal:
            from rich.progress import Progress

            self.bars = Progress(console=self.console)
            self.bars.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bars is not None:
            self.bars.stop()

    def __call__(self, table: str, done: int, total: int) -> None:
        if self.bars is not None:
            if table not in self.tasks:
                self.tasks[table] = self.bars.add_task(table, total=max(total, 1))
            self.bars.update(self.tasks[table], completed=done if total else 1)
            return
        tenth = done * 10 // max(total, 1)
        if self.said.get(table, 0 if total else -1) < tenth:
            click.echo(f"{table}: {done:,} of {total:,} rows copied", err=True)
            self.said[table] = tenth

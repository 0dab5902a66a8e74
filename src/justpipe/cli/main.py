"""The ``justpipe`` console script: a click group with one sub-command per module.

Each handler imports its ``justpipe.cli.commands.<name>`` module only when run, opens
the registry through :func:`get_registry` and calls ``<name>_command(registry, ...)``
with positional arguments. The command's return value becomes the exit status.
Failures of the store itself (unusable storage directory, corrupt or locked database)
end as one ``Error: ...`` line on stderr with exit status 1, never as a traceback.
"""

from __future__ import annotations

import contextlib
import errno
import importlib
import io
import sys
from importlib import metadata
from typing import Any

from justpipe.cli import CLI_INSTALL_HINT, report_uncaught_cleanly

try:
    import click
except ImportError as _missing_click:
    _install_error = ImportError(CLI_INSTALL_HINT)
    report_uncaught_cleanly(_install_error)
    raise _install_error from _missing_click

from justpipe.cli.formatting import EXIT_FAILURE, printable, printable_output
from justpipe.cli.registry import PipelineRegistry, StoreError, open_registry
from justpipe.storage.persistence import resolve_storage_path
from justpipe.storage.status import RunStatus
from justpipe.storage.url import (
    STORAGE_PATH_ENV,
    PostgresLocation,
    StorageURLError,
    resolve_storage,
)
from justpipe.types import PipelineTerminalStatus

__all__ = ["cli", "get_registry", "main", "resolve_storage_path"]

PARTIAL_RESULT_COMMANDS = frozenset({"list", "pipelines", "stats", "cleanup"})
"""Commands whose output covers every store: a skipped store makes their result partial."""

# every status of the model (docs/statuses.md): how runs ended, and running, suspended...
_STATUS = click.Choice([status.value for status in RunStatus], case_sensitive=False)


def _version() -> str:
    try:
        return metadata.version("justpipe")
    except metadata.PackageNotFoundError:
        from justpipe import __version__

        return __version__


def get_registry(url: str | None = None) -> PipelineRegistry:
    """The registry of the runs the tools read: `url` (``--storage-url``) if given, else
    ``$JUSTPIPE_STORAGE_URL``, else the SQLite storage root. A root that cannot be
    created, e.g. on a read-only file system, just holds no runs (upstream creates it);
    nothing inside it is written. A PostgreSQL database is not connected to here."""
    try:
        location = resolve_storage(url)
    except StorageURLError as exc:
        raise click.ClickException(str(exc)) from None
    if isinstance(location, PostgresLocation):
        try:
            return open_registry(location)
        except ImportError as exc:
            raise click.ClickException(str(exc)) from None
    root = location.root if url is not None else resolve_storage_path()
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        if exc.errno != errno.EROFS:  # a read-only file system holds no store here
            reason = "not a directory" if root.exists() else exc.strerror or str(exc)
            raise click.ClickException(
                f"cannot use the storage directory {root}: {reason} "
                f"(set {STORAGE_PATH_ENV} to the directory your runs are stored in)"
            ) from exc
    return PipelineRegistry(root)


_URL_KEY = "justpipe.storage_url"


def _remember_url(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:  # ctx.meta is shared by the group's and the command's contexts
        ctx.meta[_URL_KEY] = value


storage_url_option = click.option(
    "--storage-url",
    metavar="URL",
    expose_value=False,
    callback=_remember_url,
    help="Read runs from this store instead of $JUSTPIPE_STORAGE_URL / "
    "$JUSTPIPE_STORAGE_PATH: postgresql://USER:PASSWORD@HOST:PORT/DBNAME or "
    "sqlite:///ABS/PATH (docs/storage.md).",
)


def _run_command(name: str, *args: Any, **options: Any) -> None:
    """Import ``commands.<name>``, call ``<name>_command(registry, *args)``, exit with it."""
    module = importlib.import_module(f"justpipe.cli.commands.{name}")
    command = getattr(module, f"{name}_command")
    registry = get_registry(click.get_current_context().meta.get(_URL_KEY))
    # what a store holds is printed, never obeyed (the dashboard's server logs are its own)
    output = contextlib.nullcontext() if name == "dashboard" else printable_output()
    try:
        with output:
            status = command(registry, *args, **options)
    except BrokenPipeError:
        raise
    except StoreError as exc:
        raise click.ClickException(printable(exc)) from exc
    finally:
        with printable_output():
            problems = _report_problems(registry)
        close = getattr(registry, "close", None)
        if callable(close):
            close()
    if not status and problems and name in PARTIAL_RESULT_COMMANDS:
        status = EXIT_FAILURE
    if status:
        raise click.exceptions.Exit(int(status))


def _report_problems(registry: object) -> bool:
    """Print the stores the command had to skip; return whether there were any."""
    problems = getattr(registry, "problems", None) or []
    for problem in problems:
        click.echo(f"Warning: {problem}", err=True)
    return bool(problems)


def _status(value: str | None) -> PipelineTerminalStatus | RunStatus | None:
    """The status a command gets: upstream's enum for how a run ended (as upstream's
    commands are called), the status model's for the others (running, suspended...)."""
    if value is None:
        return None
    try:
        return PipelineTerminalStatus(value.lower())
    except ValueError:
        return RunStatus(value.lower())


@click.group()
@click.version_option(version=_version(), prog_name="justpipe")
@storage_url_option
def cli() -> None:
    """justpipe - look into the runs your pipelines persisted.

    Runs are read from --storage-url, else $JUSTPIPE_STORAGE_URL (a PostgreSQL database,
    or sqlite:///PATH), else $JUSTPIPE_STORAGE_PATH (default ~/.justpipe). Commands that
    take a RUN_ID accept any unique prefix of it.
    """


@cli.command("list")
@storage_url_option
@click.option("--pipeline", "-p", help="Only runs of the pipeline with this name.")
@click.option(
    "--status",
    "-s",
    type=_STATUS,
    help="Only runs with this status: running, suspended or interrupted, how they "
    "ended, or damaged (see docs/statuses.md).",
)
@click.option(
    "--limit",
    "-n",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="Show at most this many runs.",
)
@click.option("--full", is_flag=True, help="Show full run IDs (32 characters).")
def list_cli(pipeline: str | None, status: str | None, limit: int, full: bool) -> None:
    """List stored pipeline runs, newest first."""
    _run_command("list", pipeline, _status(status), limit, full)


@cli.command("show")
@storage_url_option
@click.argument("run_id")
def show_cli(run_id: str) -> None:
    """Show the details of one run."""
    _run_command("show", run_id)


@cli.command("timeline")
@storage_url_option
@click.argument("run_id")
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(["ascii", "html", "mermaid"]),
    default="ascii",
    show_default=True,
    help="ascii prints; html and mermaid write timeline_<id>.<ext>.",
)
def timeline_cli(run_id: str, fmt: str) -> None:
    """Show when each step of a run ran."""
    _run_command("timeline", run_id, fmt)


@cli.command("compare")
@storage_url_option
@click.argument("run1_id")
@click.argument("run2_id")
def compare_cli(run1_id: str, run2_id: str) -> None:
    """Compare two runs: duration, status and per-step timing."""
    _run_command("compare", run1_id, run2_id)


@cli.command("export")
@storage_url_option
@click.argument("run_id")
@click.option("--output", "-o", help="File to write (default: run_<id>.json).")
@click.option(
    "--format",
    "-f",
    "fmt",
    type=click.Choice(["json"]),
    default="json",
    show_default=True,
    help="Export format.",
)
def export_cli(run_id: str, output: str | None, fmt: str) -> None:
    """Export a run and its events to a file."""
    _run_command("export", run_id, output, fmt)


@cli.command("cleanup")
@storage_url_option
@click.option(
    "--older-than",
    type=click.IntRange(min=0),
    metavar="DAYS",
    help="Only delete runs that started more than DAYS days ago.",
)
@click.option(
    "--status",
    type=_STATUS,
    help="Only delete runs with this status (suspended and interrupted also need "
    "--include-resumable; running runs are never deleted).",
)
@click.option(
    "--keep",
    type=click.IntRange(min=0),
    default=10,
    show_default=True,
    help="Never delete the N most recent runs.",
)
@click.option("--dry-run", is_flag=True, help="Show what would be deleted, delete nothing.")
@click.option("--yes", "-y", is_flag=True, help="Delete without asking for confirmation.")
@click.option(
    "--include-resumable",
    is_flag=True,
    help="Also delete suspended and interrupted durable runs (they can no longer be resumed).",
)
def cleanup_cli(
    older_than: int | None,
    status: str | None,
    keep: int,
    dry_run: bool,
    yes: bool,
    include_resumable: bool,
) -> None:
    """Delete old pipeline runs (asks before deleting; keeps what can be resumed)."""
    options: dict[str, bool] = {}
    if yes:
        options["assume_yes"] = True
    if include_resumable:
        options["include_resumable"] = True
    _run_command("cleanup", older_than, _status(status), keep, dry_run, **options)


@cli.command("stats")
@storage_url_option
@click.option("--pipeline", "-p", help="Only runs of the pipeline with this name.")
@click.option(
    "--days",
    type=click.IntRange(min=1),
    default=7,
    show_default=True,
    help="How many days back to look.",
)
def stats_cli(pipeline: str | None, days: int) -> None:
    """Show run statistics: outcomes, durations, activity, errors."""
    _run_command("stats", pipeline, days)


@cli.command("pipelines")
@storage_url_option
def pipelines_cli() -> None:
    """List every pipeline that has stored runs."""
    _run_command("pipelines")


@cli.command("dashboard")
@storage_url_option
@click.option(
    "--port",
    "-p",
    type=click.IntRange(0, 65535),
    default=8741,
    show_default=True,
    help="Port to serve on (0: any free port).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to bind; anything but loopback needs an access token (warns).",
)
@click.option(
    "--token",
    envvar="JUSTPIPE_DASHBOARD_TOKEN",
    help="Access token to require (default for non-loopback hosts: a random one).",
)
@click.option("--no-open", is_flag=True, help="Do not open a browser.")
def dashboard_cli(port: int, host: str, token: str | None, no_open: bool) -> None:
    """Serve the web dashboard and open it (needs the dashboard extra)."""
    _run_command("dashboard", port, no_open, host, token)


def _tolerate_unencodable_output() -> None:
    """Let a terminal that cannot show a character get '?' instead of a crash."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="replace")


def main() -> None:
    """Entry point of the ``justpipe`` console script."""
    _tolerate_unencodable_output()
    cli()

"""What every ``nbflow`` command shares: the click group, options, errors and output."""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from nbflow.cli.output import terminal_text
from nbflow.cli.target import absolute_store
from nbflow.errors import NbflowError, StepFailed

if TYPE_CHECKING:
    from nbflow.store.base import Store

__all__ = [
    "EXIT_FAILED",
    "EXIT_OK",
    "EXIT_USAGE",
    "debug_option",
    "echo",
    "format_option",
    "handle_errors",
    "main",
    "open_cli_store",
    "store_option",
    "trust_option",
]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Any])


class CommandError(click.ClickException):
    """An error already worded for the user, with the exit status it stands for."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


class _Group(click.Group):
    """A click group whose errors (its own usage errors too) are one line on stderr."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run the command line; exit with 0, 1 or 2 (see the module's docstring)."""
        try:
            result = super().main(args, prog_name, complete_var, False, **extra)
        except CommandError as exc:
            code = _fail(exc.format_message(), exc.code)
        except click.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx is not None else "nbflow"
            message = exc.format_message().rstrip(".")
            code = _fail(f"{message} (see `{command} --help`)", EXIT_USAGE)
        except click.ClickException as exc:
            code = _fail(exc.format_message(), exc.exit_code)
        except click.Abort:
            code = _fail("aborted", EXIT_FAILED)
        else:
            code = result if isinstance(result, int) else EXIT_OK
        if standalone_mode:
            sys.exit(code)
        return code


def echo(text: str, *, err: bool = False) -> None:
    """Print ``text`` (to stderr with ``err``), escaped for the terminal."""
    click.echo(terminal_text(text), err=err)


def _fail(message: str, code: int) -> int:
    echo(f"nbflow: error: {_one_line(message)}", err=True)
    return code


def _print_traceback() -> None:
    echo(traceback.format_exc().rstrip("\n"), err=True)


def _one_line(message: str) -> str:
    """A message on one line: its lines joined, caret lines (``^``) dropped."""
    lines = [line.strip() for line in message.splitlines()]
    return " ".join(line for line in lines if line and set(line) != {"^"})


def _debugging() -> bool:
    ctx = click.get_current_context(silent=True)
    if ctx is not None and ctx.meta.get(_DEBUG):
        return True
    return os.environ.get("NBFLOW_DEBUG", "") not in ("", "0")


_DEBUG = "nbflow.debug"


def _set_debug(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta[_DEBUG] = True  # ``meta`` is shared by a command and its subcommands


def debug_option(func: F) -> F:
    """Add ``--debug`` (show tracebacks) to a command."""
    return click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        callback=_set_debug,
        help="Show the traceback of an error.",
    )(func)


def handle_errors(func: F) -> F:
    """Turn nbflow's errors into one line on stderr and the right exit status."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except StepFailed as exc:
            if _debugging() and exc.traceback:
                echo(exc.traceback.rstrip("\n"), err=True)
            raise CommandError(str(exc), EXIT_FAILED) from None
        except NbflowError as exc:
            if _debugging():
                _print_traceback()
            raise CommandError(str(exc), EXIT_USAGE) from None
        except Exception as exc:
            if _debugging():
                _print_traceback()
                hint = ""
            else:
                hint = " (run with --debug for the traceback)"
            raise CommandError(f"{type(exc).__name__}: {exc}{hint}", EXIT_FAILED) from None

    return wrapper  # type: ignore[return-value]


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@debug_option
@click.version_option(package_name="nbflow", prog_name="nbflow")
def main() -> None:
    """nbflow: durable, explorable notebook workflows."""


def trust_option(func: F) -> F:
    """Add ``--trust/--no-trust`` (default: ``$NBFLOW_TRUST``, else trusted, as in Python)."""
    return click.option(
        "--trust/--no-trust",
        default=None,
        help=(
            "Whether pickled values may be loaded (unpickling runs code): --no-trust for a "
            "store someone else wrote. Default: $NBFLOW_TRUST, else trusted."
        ),
    )(func)


# -- nbflow run --------------------------------------------------------------------------


# -- reading and managing a store ---------------------------------------------------------


def store_option(func: F) -> F:
    """Add ``--store PATH`` (default: ``$NBFLOW_STORE``, else ./nbflow.duckdb) and
    ``--tenant NAME`` (default: ``$NBFLOW_TENANT``, else none: the owner's view)."""
    func = click.option(
        "--tenant",
        metavar="NAME",
        expose_value=False,
        callback=_remember_tenant,
        help=(
            "Open the store for this tenant: only its runs (and runs without a tenant) are "
            "seen, new runs are stamped with it (default: $NBFLOW_TENANT, else none)."
        ),
    )(func)
    return click.option(
        "--store",
        metavar="PATH",
        help="The store to use (default: $NBFLOW_STORE, else ./nbflow.duckdb).",
    )(func)


#: Where ``--tenant`` is kept for :func:`open_cli_store` (the click context's meta).
TENANT_KEY = "nbflow.tenant"


def _remember_tenant(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    from nbflow.errors import InvalidTenantError
    from nbflow.store.tenants import check_tenant

    if value is None:
        return
    try:
        ctx.meta[TENANT_KEY] = check_tenant(value)
    except InvalidTenantError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def given_tenant() -> str | None:
    """The tenant ``--tenant`` named for this command, or None."""
    ctx = click.get_current_context(silent=True)
    return None if ctx is None else ctx.meta.get(TENANT_KEY)


def format_option(func: F) -> F:
    """Add ``--format table|csv|json``."""
    from nbflow.cli.output import FORMATS

    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="How to print the rows.",
    )(func)


def open_cli_store(
    store: str | None,
    *,
    create: bool = False,
    option: str = "--store PATH or $NBFLOW_STORE",
    trust: bool | None = None,
) -> Store:
    """The store ``--store`` (or the ``option`` named) gives, opened with ``trust`` (None:
    ``$NBFLOW_TRUST``); unless ``create``, a missing file is a usage error (a typo must not
    leave an empty store behind)."""
    from nbflow.store.open import default_location, open_store

    location = store or default_location()
    if not create and "://" not in location and location != ":memory:":
        path = Path(location).expanduser()
        if not path.exists():
            raise CommandError(f"no nbflow store at {location}: give one with {option}.")
        if path.is_dir():
            raise CommandError(f"{location} is a folder, not an nbflow store file.")
    return open_store(absolute_store(location), trust=trust, tenant=given_tenant())

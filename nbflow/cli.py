"""The ``nbflow`` command line.

A click group with one function per command. Errors are one line on stderr
(``nbflow: error: ...``), with the traceback only under ``--debug``. Exit status: 0 ok,
1 a run failed or ``check`` found problems (or nbflow itself did), 2 bad usage or input
(a missing notebook, an unknown parameter, a bad ``%%step`` cell, an unknown run, a
missing store).

Commands: ``run``, ``runs``, ``show``, ``events``, ``diff``; ``gc`` and ``check`` in
:mod:`nbflow.cli_maintenance`; ``export``, ``import``, ``copy`` and ``trust`` in
:mod:`nbflow.cli_transfer`.

Everything printed goes through :func:`echo`, which escapes what a terminal would not
show as it is (a store may come from anyone: see :mod:`nbflow.cli_output`).

To add a command: ``@main.command()``, then ``@debug_option`` and ``@handle_errors``.
"""

from __future__ import annotations

import functools
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from nbflow.cli_output import printable, terminal_text
from nbflow.cli_target import absolute_store, load_target, running_from, with_trust
from nbflow.engine.executors import EXECUTORS
from nbflow.errors import NbflowError, StepFailed

if TYPE_CHECKING:
    from nbflow.definition.flow import Flow
    from nbflow.run import Run
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


@main.command("run")
@click.argument("target", metavar="NOTEBOOK_OR_MODULE")
@click.option(
    "-p",
    "--param",
    "params",
    multiple=True,
    metavar="NAME=VALUE",
    help="A run parameter (repeatable), typed like its default: -p window=7.",
)
@click.option(
    "--store",
    metavar="PATH",
    help="The store to record the run in (default: $NBFLOW_STORE, else the flow's own).",
)
@click.option(
    "--executor",
    type=click.Choice(EXECUTORS),
    default="inline",
    show_default=True,
    help="Where steps run (dask: the Dask scheduler at $DASK_SCHEDULER_ADDRESS).",
)
@click.option(
    "--max-workers", type=click.IntRange(min=1), help="Steps at once (threads/processes/dask)."
)
@click.option(
    "--target", "targets", multiple=True, metavar="STEP", help="Run only what STEP needs."
)
@click.option("--force", is_flag=True, help="Recompute every step (no cache).")
@trust_option
@debug_option
@handle_errors
def run_command(
    target: str,
    params: tuple[str, ...],
    store: str | None,
    executor: str,
    max_workers: int | None,
    targets: tuple[str, ...],
    force: bool,
    trust: bool | None,
) -> int:
    """Run a flow headlessly and record it in the store.

    NOTEBOOK_OR_MODULE is a notebook (analysis.ipynb, or analysis.ipynb:FLOW when it
    defines several flows), a module file (pipeline.py:flow) or an importable module
    (package.module:flow). A notebook is read without a kernel: its %%step cells, and from
    the other cells only imports, definitions and literal constants; its steps run from
    the notebook's folder.
    """
    from nbflow.definition.params import coerce_params, parse_assignments

    override = store or os.environ.get("NBFLOW_STORE") or None
    flow, folder = load_target(target, absolute_store(override))
    if not flow.steps:
        raise CommandError(f"flow {flow.name!r} in {target} has no steps to run.")
    values = coerce_params(parse_assignments(params, what="-p"), flow.params)
    with running_from(folder):
        flow = with_trust(flow, trust)  # (in the notebook's folder: its store is there)
        run = flow.run(
            executor=executor,
            max_workers=max_workers,
            targets=list(targets) or None,
            force=force,
            raise_on_error=False,
            **values,
        )
    _summarize(run, flow)
    if run.status != "completed":
        if _debugging():
            _print_tracebacks(run)
        raise CommandError(f"run {run.id} {run.status}: {run.error}", EXIT_FAILED)
    return EXIT_OK


def _summarize(run: Run, flow: Flow) -> None:
    record = run.record
    rows = run.steps.sort_values("seq").drop_duplicates("step", keep="last")
    counts = rows["status"].value_counts()
    tally = ", ".join(f"{n} {status}" for status, n in counts.items())
    took = f" in {record.duration_s:.2f} s" if record.duration_s is not None else ""
    echo(f"run {run.id} of flow {flow.name!r}: {record.status.value}{took} ({tally})")
    echo(f"store: {run.store.uri}")
    width = max((len(printable(s)) for s in rows["step"]), default=0)
    for step, status, duration, error in zip(
        rows["step"], rows["status"], rows["duration_ms"], rows["error"], strict=True
    ):
        line = f"  {printable(step):<{width}}  {status:<9}"
        if status == "completed" and duration == duration:  # not NaN
            line += f"  {duration:8.1f} ms"
        if status in ("failed", "skipped") and isinstance(error, str) and error:
            line += f"  {printable(_one_line(error))}"
        echo(line.rstrip())


def _print_tracebacks(run: Run) -> None:
    steps = run.steps
    for step, trace in zip(steps["step"], steps["traceback"], strict=True):
        if isinstance(trace, str) and trace and trace != "nan":
            echo(f"--- step {step!r} ---\n{trace.rstrip()}", err=True)


# -- reading and managing a store ---------------------------------------------------------


def store_option(func: F) -> F:
    """Add ``--store PATH`` (default: ``$NBFLOW_STORE``, else ./nbflow.duckdb)."""
    return click.option(
        "--store",
        metavar="PATH",
        help="The store to use (default: $NBFLOW_STORE, else ./nbflow.duckdb).",
    )(func)


def format_option(func: F) -> F:
    """Add ``--format table|csv|json``."""
    from nbflow.cli_output import FORMATS

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
    return open_store(absolute_store(location), trust=trust)


@main.command("runs")
@click.option("--flow", help="Only the runs of this flow.")
@click.option("--status", help="Only runs in this status (completed, failed, ...).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many (newest first).")
@format_option
@store_option
@debug_option
@handle_errors
def runs_command(
    flow: str | None, status: str | None, limit: int | None, fmt: str, store: str | None
) -> int:
    """List the runs in the store, newest first."""
    from nbflow.cli_output import render

    frame = open_cli_store(store).runs_frame(flow=flow, status=status, limit=limit)
    columns = ["run_id", "flow", "status", "created_at", "duration_s", "params", "error"]
    echo(render(frame, fmt, columns))
    return EXIT_OK


@main.command("show")
@click.argument("run_id", metavar="RUN")
@store_option
@debug_option
@handle_errors
def show_command(run_id: str, store: str | None) -> int:
    """Show a run: parameters, and each step with its state, timing and error."""
    from nbflow.cli_output import describe_run

    echo(describe_run(open_cli_store(store), run_id))
    return EXIT_OK


@main.command("events")
@click.argument("run_id", metavar="RUN")
@format_option
@store_option
@debug_option
@handle_errors
def events_command(run_id: str, fmt: str, store: str | None) -> int:
    """Print a run's event log, in order."""
    from nbflow.cli_output import render

    opened = open_cli_store(store)
    opened.get_run(run_id)  # an unknown run is an error, not an empty log
    frame = opened.events_frame(run_id)
    columns = ["seq", "ts", "type", "step", "attempt", "payload"]
    echo(render(frame, fmt, columns))
    return EXIT_OK


@main.command("diff")
@click.argument("run_a", metavar="A")
@click.argument("run_b", metavar="B")
@click.option("--step", help="Compare this step's outputs row by row.")
@format_option
@store_option
@trust_option
@debug_option
@handle_errors
def diff_command(
    run_a: str, run_b: str, step: str | None, fmt: str, store: str | None, trust: bool | None
) -> int:
    """What differs between runs A and B (per step, or one step's rows with --step).

    Loads the steps' outputs: a pickled one only from a trusted store (--trust/--no-trust).
    """
    from nbflow.api import get_run
    from nbflow.cli_output import render
    from nbflow.diff import diff

    opened = open_cli_store(store, trust=trust)
    frame = diff(get_run(run_a, opened), get_run(run_b, opened), step=step)
    changed = frame.attrs.get("params") or {}
    if fmt == "table" and changed:
        for name, (a, b) in changed.items():
            echo(f"param {printable(name)}: {a!r} -> {b!r}")
    echo(render(frame.reset_index(drop=step is None), fmt))
    return EXIT_OK


# The commands kept in modules of their own, registered on ``main`` when imported.
from nbflow import cli_maintenance, cli_transfer  # noqa: E402, F401

if __name__ == "__main__":  # pragma: no cover
    main()

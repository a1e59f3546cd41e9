"""The commands that move runs between stores: ``export``, ``import``, ``copy``, ``trust``.

Registered on :data:`nbflow.cli.main` when :mod:`nbflow.cli` is imported.
"""

from __future__ import annotations

from pathlib import Path

import click

from nbflow.cli.common import (
    EXIT_OK,
    debug_option,
    echo,
    given_tenant,
    handle_errors,
    main,
    open_cli_store,
    store_option,
)
from nbflow.cli.output import printable
from nbflow.store.records import Codec, ValueRef

__all__ = ["copy_command", "export_command", "import_command", "trust_command"]


@main.command("export")
@click.argument("run_id", metavar="RUN")
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@store_option
@debug_option
@handle_errors
def export_command(run_id: str, directory: Path, store: str | None) -> int:
    """Write a run (events, flow definition, outputs) to the new folder DIR.

    Pickles are copied as bytes, never unpickled. What an export killed midway left next
    to DIR (a .NAME.nbflow-export.* folder whose process is gone) is removed first.
    """
    from nbflow.transfer.archives import export_run, remove_export_leftovers

    opened = open_cli_store(store)
    opened.get_run(run_id)  # an unknown run fails before anything is removed
    if directory.parent.is_dir():
        for leftover in remove_export_leftovers(directory.parent):
            echo(f"removed {leftover}, left by an export whose process is gone")
    folder = export_run(opened, run_id, directory)
    echo(f"exported run {printable(run_id)} to {folder}")
    return EXIT_OK


@main.command("import")
@click.argument("directory", metavar="DIR", type=click.Path(path_type=Path))
@click.option(
    "--trust",
    is_flag=True,
    help=(
        "Trust whoever made the export: its pickles load like your own. Without it they "
        "are refused until `nbflow trust RUN`."
    ),
)
@store_option
@debug_option
@handle_errors
def import_command(directory: Path, trust: bool, store: str | None) -> int:
    """Load a run exported with `nbflow export` into the store (created if missing).

    Every value is hashed again and the whole export checked before anything is written:
    a refused import leaves the store as it was. Until you trust the run (`--trust` here,
    or `nbflow trust RUN` later), its outputs are no cache hits for your own runs, and its
    pickles (which unpickling would run as code) are refused when loaded.
    """
    from nbflow.transfer.archives import import_run, read_export

    exported = read_export(directory)  # all checked before the store is opened (or made)
    opened = open_cli_store(store, create=True)
    # (a run of another tenant is imported only when --tenant says whose it becomes)
    run_id = import_run(opened, exported, trust=trust, tenant=given_tenant())
    echo(f"imported run {printable(run_id)} into {opened.uri}")
    if not trust:
        pickled = sorted({e.step for e in opened.executions(run_id) if _pickled(e.output)})
        text = "until you trust whoever made the export, its outputs are no cache hits for "
        text += "your runs (they compute those steps themselves)"
        if pickled:
            text += f" and its pickled outputs ({', '.join(printable(s) for s in pickled)}) "
            text += "do not load"
        echo(f"{text}: nbflow trust {printable(run_id)} --store {opened.uri}")
    return EXIT_OK


def _pickled(ref: ValueRef | None) -> bool:
    return ref is not None and ref.codec is Codec.PICKLE


@main.command("trust")
@click.argument("run_id", metavar="RUN")
@store_option
@debug_option
@handle_errors
def trust_command(run_id: str, store: str | None) -> int:
    """Trust RUN, imported (or copied from an untrusted store) without trust: its outputs
    (and its forks') are cache hits for your runs and its pickled values load from then
    on. Only for runs from someone you trust: unpickling runs code."""
    from nbflow.transfer.archives import trust_run

    runs, pickles = trust_run(open_cli_store(store), run_id)
    if runs:
        names = ", ".join(printable(r) for r in runs)
        echo(f"trusted run(s) {names}: their outputs are cache hits for your runs from now on")
    if pickles:
        echo(f"marked {len(pickles)} pickled value(s) of run {printable(run_id)} trusted")
    if not runs and not pickles:
        echo(f"run {printable(run_id)} is not marked untrusted: nothing to do")
    return EXIT_OK


@main.command("copy")
@click.argument("run_ids", metavar="[RUN]...", nargs=-1)
@click.option("--from", "source", required=True, metavar="STORE", help="The store to copy from.")
@click.option(
    "--to",
    "target",
    required=True,
    metavar="STORE",
    help="The store to copy into (created if missing).",
)
@click.option(
    "--no-ancestors",
    is_flag=True,
    help="Copy only the runs named, not the runs they fork or reuse outputs from.",
)
@debug_option
@handle_errors
def copy_command(run_ids: tuple[str, ...], source: str, target: str, no_ancestors: bool) -> int:
    """Copy runs (default: all) with their values and flow definitions to another store.

    A fork's parents, and the runs a run reuses outputs from, are copied too unless
    --no-ancestors. Runs the target already holds are skipped, so copying again is safe.
    Every value is hashed again from its stored form, never decoded.
    """
    from nbflow.copying import copy_runs

    opened = open_cli_store(source, option="--from PATH")
    for run_id in run_ids:
        opened.get_run(run_id)  # an unknown run fails before the target is created
    report = copy_runs(
        opened,
        open_cli_store(target, create=True),
        list(run_ids) or None,
        include_ancestors=not no_ancestors,
    )
    for run in report.runs:
        echo(printable(str(run)))
    echo(printable(str(report)))
    return EXIT_OK

"""The ``nbflow`` command line.

A click group with one function per command. Errors are one line on stderr
(``nbflow: error: ...``), with the traceback only under ``--debug``. Exit status: 0 ok,
1 a run failed or ``check`` found problems (or nbflow itself did), 2 bad usage or input
(a missing notebook, an unknown parameter, a bad ``%%step`` cell, an unknown run, a
missing store).

Commands: ``run``, ``runs``, ``show``, ``events``, ``diff`` in :mod:`nbflow.cli.runs`;
``reproduce`` in :mod:`nbflow.cli.reproduce`; ``gc`` and ``check`` in
:mod:`nbflow.cli.maintenance`; ``approve``, ``reject`` and
``token`` in :mod:`nbflow.cli.gates`; ``export``, ``import``, ``copy``
and ``trust`` in :mod:`nbflow.cli.transfer`.

Everything printed goes through :func:`nbflow.cli.common.echo`, which escapes what a
terminal would not show as it is (a store may come from anyone: see
:mod:`nbflow.cli.output`).

To add a command: ``@main.command()`` (from :mod:`nbflow.cli.common`), then
``@debug_option`` and ``@handle_errors``, in a module imported here.

The top layer: it may import every layer below (the facades in :mod:`nbflow.api`,
transfer, diff, the store); nothing in nbflow imports it.
"""

from nbflow.cli import gates, maintenance, reproduce, runs, transfer  # noqa: F401 - each registers its commands
from nbflow.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE, main

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "main"]

"""The commands that look after a store: ``gc`` and ``check``.

Registered on :data:`nbflow.cli.main` when :mod:`nbflow.cli` is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from nbflow.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    debug_option,
    echo,
    handle_errors,
    main,
    open_cli_store,
    store_option,
)
from nbflow.cli.output import printable

__all__ = ["check_command", "gc_command"]


@main.command("gc")
@click.option("--keep-last", type=click.IntRange(min=0), help="Keep the newest N runs per flow.")
@click.option("--older-than", metavar="AGE", help="Delete runs older than AGE (7d, 12h, ...).")
@click.option("--flow", help="Apply the policy to this flow only.")
@click.option("--dry-run", is_flag=True, help="Only report what would be removed.")
@store_option
@debug_option
@handle_errors
def gc_command(
    keep_last: int | None,
    older_than: str | None,
    flow: str | None,
    dry_run: bool,
    store: str | None,
) -> int:
    """Delete runs outside a retention policy and the values no run references."""
    if keep_last is None and older_than is None:
        raise CommandError(
            "say which runs to delete: --keep-last N and/or --older-than AGE "
            "(values no run references are purged either way)."
        )
    report = open_cli_store(store).gc(
        keep_last=keep_last, older_than=older_than, flow=flow, dry_run=dry_run
    )
    echo(str(report))
    for run_id in report.runs:
        echo(f"  run {printable(run_id)}")
    return EXIT_OK


@main.command("check")
@click.option("--repair", is_flag=True, help="Rebuild damaged rows from the runs' events.")
@click.option(
    "--no-verify-values",
    "verify_values",
    is_flag=True,
    flag_value=False,
    default=True,
    help="Check that values are present with the right size, without reading them.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "json"]),
    default="table",
    show_default=True,
    help="One problem per line, or a JSON document.",
)
@store_option
@debug_option
@handle_errors
def check_command(repair: bool, verify_values: bool, fmt: str, store: str | None) -> int:
    """Check the store: events gap-free, rows as the events say, values whole.

    Prints one problem per line and a summary; exits with 1 while problems remain.
    --repair rebuilds the runs and step_executions rows from the events; lost or
    damaged values cannot be repaired (the problems name the steps to run again).
    """
    import json

    opened = open_cli_store(store)
    try:
        problems = opened.check(repair=repair, verify_values=verify_values)
    finally:
        opened.close()
    remaining = [p for p in problems if not p.repaired]
    if fmt == "json":
        document = {
            "store": opened.uri,
            "sound": not remaining,
            "problems": [p.to_json() for p in problems],
        }
        echo(json.dumps(document, indent=2))
    else:
        for problem in problems:
            echo(printable(str(problem)))
        echo(_check_summary(opened.uri, problems, remaining))
    return EXIT_FAILED if remaining else EXIT_OK


def _check_summary(uri: str, problems: Sequence[Any], remaining: Sequence[Any]) -> str:
    if not problems:
        return f"store {uri}: no problems found"
    repaired = len(problems) - len(remaining)
    text = f"store {uri}: {len(problems)} problem(s)"
    if repaired:
        text += f", {repaired} repaired"
    if remaining:
        fixable = sum(1 for p in remaining if p.repairable)
        text += f", {len(remaining)} remain"
        if fixable and fixable == len(remaining):
            text += " (nbflow check --repair fixes them)"
        elif fixable:
            text += f" ({fixable} fixed by nbflow check --repair)"
    return text

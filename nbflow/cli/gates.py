"""The commands of human gates: ``approve TOKEN``, ``reject TOKEN`` and ``token RUN GATE``.

Registered on :data:`nbflow.cli.main` when :mod:`nbflow.cli` is imported. A decision is
recorded in the store; the command cannot continue the run (the flow's code is not in
this process): ``run.resume()`` does that where the flow is defined, and ``run.approve``
there records the decision and continues at once. See docs/gates.md.
"""

from __future__ import annotations

import click

from nbflow.cli.common import (
    EXIT_OK,
    debug_option,
    echo,
    handle_errors,
    main,
    open_cli_store,
    store_option,
)
from nbflow.cli.output import printable

__all__ = ["approve_command", "reject_command", "token_command"]

_by = click.option("--by", help="Who decides (default: the user running the command).")
_comment = click.option("--comment", help="Why: recorded with the decision.")


@main.command("approve")
@click.argument("token")
@_by
@_comment
@store_option
@debug_option
@handle_errors
def approve_command(token: str, by: str | None, comment: str | None, store: str | None) -> int:
    """Approve the gate a token (from run.gate_token or `nbflow token`) names."""
    from nbflow.api.lookups import approve

    run = approve(token, by=by, comment=comment, store=open_cli_store(store), resume=False)
    _report(run.id, "approved", run.status)
    return EXIT_OK


@main.command("reject")
@click.argument("token")
@_by
@_comment
@store_option
@debug_option
@handle_errors
def reject_command(token: str, by: str | None, comment: str | None, store: str | None) -> int:
    """Reject the gate a token names: the run is cancelled."""
    from nbflow.api.lookups import reject

    run = reject(token, by=by, comment=comment, store=open_cli_store(store))
    _report(run.id, "rejected", run.status)
    return EXIT_OK


@main.command("token")
@click.argument("run_id", metavar="RUN")
@click.argument("gate")
@click.option(
    "--expires-in",
    type=click.FloatRange(min=0, min_open=True),
    metavar="HOURS",
    help="Hours until the token expires (default 168: 7 days).",
)
@store_option
@debug_option
@handle_errors
def token_command(run_id: str, gate: str, expires_in: float | None, store: str | None) -> int:
    """Print a signed, single-use token for the open gate GATE of run RUN."""
    import datetime as dt

    from nbflow.api.lookups import get_run

    run = get_run(run_id, open_cli_store(store))
    lifetime = None if expires_in is None else dt.timedelta(hours=expires_in)
    echo(run.gate_token(gate, expires_in=lifetime))
    return EXIT_OK


def _report(run_id: str, decision: str, status: str) -> None:
    echo(f"gate {decision}: run {printable(run_id)} is now {status}")
    if status == "waiting":
        echo(
            "  it continues with run.resume() (nbflow.get_run(id).resume()) where its flow "
            "is defined, or waits for its other gates"
        )

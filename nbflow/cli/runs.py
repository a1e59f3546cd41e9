"""The commands that run flows and read runs: ``run``, ``runs``, ``show``, ``events``, ``diff``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import click

from nbflow.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    _debugging,
    _one_line,
    debug_option,
    echo,
    format_option,
    handle_errors,
    main,
    open_cli_store,
    store_option,
    trust_option,
)
from nbflow.cli.output import printable
from nbflow.cli.target import (
    absolute_store,
    load_target,
    running_from,
    with_tenant,
    with_trust,
)
from nbflow.engine.executors import EXECUTORS

if TYPE_CHECKING:
    from nbflow.api.flow import Flow
    from nbflow.api.run import Run


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
@click.option(
    "--durability",
    type=click.Choice(["sync", "async", "exit"], case_sensitive=False),
    default=None,
    help="When checkpoints are committed: async (default: by a background writer while "
    "the next steps run), sync (each before its dependents start) or exit (once, at the "
    "end). Default: the flow's, else $NBFLOW_DURABILITY, else async.",
)
@trust_option
@click.option(
    "--tenant",
    metavar="NAME",
    help="Record the run for this tenant (default: $NBFLOW_TENANT, else none).",
)
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
    durability: str | None,
    trust: bool | None,
    tenant: str | None,
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
        flow = with_tenant(flow, tenant)
        run = flow.run(
            executor=executor,
            max_workers=max_workers,
            targets=list(targets) or None,
            force=force,
            raise_on_error=False,
            durability=durability,
            **values,
        )
    _summarize(run, flow)
    if run.status == "waiting":
        for gate in run.gates.query("status == 'open'")["gate"]:
            echo(f"waiting at gate {printable(gate)}; approve with:")
            echo(f"  nbflow approve {run.gate_token(gate)}")
        return EXIT_OK
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


@main.command("runs")
@click.option("--flow", help="Only the runs of this flow.")
@click.option("--status", help="Only runs in this status (completed, failed, waiting, ...).")
@click.option("--limit", type=click.IntRange(min=1), help="At most this many (newest first).")
@format_option
@store_option
@debug_option
@handle_errors
def runs_command(
    flow: str | None, status: str | None, limit: int | None, fmt: str, store: str | None
) -> int:
    """List the runs in the store, newest first."""
    from nbflow.cli.output import render

    frame = open_cli_store(store).runs_frame(flow=flow, status=status, limit=limit)
    columns = ["run_id", "flow", "status", "created_at", "duration_s", "params", "error"]
    if (frame["status"] == "waiting").any():  # where each waits, and for how long
        columns[3:3] = ["gate", "waited_s"]
    if frame["tenant"].notna().any():  # whose each run is (runs without one: blank)
        columns.insert(2, "tenant")
    echo(render(frame, fmt, columns))
    return EXIT_OK


@main.command("show")
@click.argument("run_id", metavar="RUN")
@click.option("--provenance", is_flag=True, help="Print the run's complete record.")
@click.option("--requirements", is_flag=True, help="Print its packages as requirements.txt.")
@store_option
@debug_option
@handle_errors
def show_command(run_id: str, provenance: bool, requirements: bool, store: str | None) -> int:
    """Show a run: parameters, and each step with its state, timing and error; or its
    record (--provenance: code, files, environment) or its packages (--requirements)."""
    from nbflow.cli.output import describe_run
    from nbflow.cli.reproduce import describe_provenance
    from nbflow.store.provenance import read_provenance

    opened = open_cli_store(store)
    if requirements:
        echo(read_provenance(opened, run_id).environment.requirements().rstrip("\n"))
    elif provenance:
        echo(describe_provenance(read_provenance(opened, run_id)))
    else:
        echo(describe_run(opened, run_id))
    return EXIT_OK


@main.command("events")
@click.argument("run_id", metavar="RUN")
@format_option
@store_option
@debug_option
@handle_errors
def events_command(run_id: str, fmt: str, store: str | None) -> int:
    """Print a run's event log, in order."""
    from nbflow.cli.output import render

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

    Per step, the columns of nf.diff: statuses, what changed (code, inputs, output,
    the parameters it read: params_changed) and why its cache key changed (why). The
    table format first lists the run parameters that differ and each step's reasons.
    Loads the steps' outputs: a pickled one only from a trusted store (--trust/--no-trust).
    """
    from nbflow.api.lookups import get_run
    from nbflow.cli.output import render
    from nbflow.diff import diff

    opened = open_cli_store(store, trust=trust)
    frame = diff(get_run(run_a, opened), get_run(run_b, opened), step=step)
    changed = frame.attrs.get("params") or {}
    if fmt == "table" and changed:
        for name, (a, b) in changed.items():
            echo(f"param {printable(name)}: {a!r} -> {b!r}")
    if fmt == "table" and step is None:
        for name, reasons in zip(frame["step"], frame["why"], strict=True):
            if isinstance(reasons, list) and reasons:
                echo(f"why {printable(name)}: {printable('; '.join(reasons))}")
    echo(render(frame.reset_index(drop=step is None), fmt))
    return EXIT_OK

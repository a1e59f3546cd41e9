"""``nbflow reproduce RUN``, and the record that ``nbflow show RUN --provenance`` and
``--requirements`` print."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import click

from nbflow.cli.common import (
    EXIT_FAILED,
    EXIT_OK,
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

if TYPE_CHECKING:
    from nbflow.store.provenance import Provenance

__all__ = ["describe_provenance", "reproduce_command"]


def describe_provenance(provenance: Provenance) -> str:
    """The record of a run as text: environment, then each step's code and reads."""
    env = provenance.environment
    lines = [f"run {provenance.run_id} of flow {provenance.flow}"]
    lines.append(f"params: {json.dumps(dict(provenance.params), default=str)}")
    lines.append(f"working folder: {provenance.cwd or '(not recorded)'}")
    if env.python:
        lines.append(f"python {env.python} ({env.implementation}) on {env.platform}")
        lines.append(f"environment {env.hash}:")
        lines += [f"  {name}=={version}" for name, version in env.packages.items()]
    for missing in provenance.missing:
        lines.append(f"missing from the record: {missing}")
    if provenance.error:
        lines.append(f"the record could not be made: {provenance.error}")
    for step in provenance.steps.values():
        lines.append("")
        lines.append(f"== step {step.name} ({step.status or 'not run'}) output {step.output_hash}")
        for name, entry in step.entries.items():
            kind = entry.get("kind")
            if kind in ("import", "from"):
                target = entry["module"] + (f".{entry['qualname']}" if kind == "from" else "")
                lines.append(f"  {name}: {kind} {target}")
            elif kind == "constant":
                lines.append(f"  {name} = {entry['literal']}")
            elif kind == "data":
                ref = step.data.get(name, {})
                lines.append(f"  {name}: data {entry.get('type')} stored as {ref.get('hash')}")
            elif kind == "alias":
                lines.append(f"  {name}: the same as {entry['of']}")
        for path, digest in step.files.items():
            lines.append(f"  reads file {path} ({digest or 'missing'})")
        for name, why in {**step.problems, **step.untracked}.items():
            lines.append(f"  not reproducible: {name}: {why}")
        lines.append((step.text or step.source).rstrip())
        for entry in step.entries.values():
            if entry.get("kind") in ("function", "class"):
                lines.append((entry.get("text") or entry["source"]).rstrip())
        for name, text in step.modules.items():
            lines.append(f"# module {name}")
            lines.append(text.rstrip())
    # (Each line escaped on its own: a source's newlines are lines, not text to escape.)
    return "\n".join(printable(line) for text in lines for line in text.split("\n"))


@main.command("reproduce")
@click.argument("run_id", metavar="RUN")
@click.option("--steps", help="Only these steps (comma-separated); the others are reused.")
@click.option("--executor", default="inline", show_default=True, help="How to run the steps.")
@click.option("--rtol", type=click.FloatRange(min=0), help="Relative tolerance for floats.")
@click.option("--atol", type=click.FloatRange(min=0), help="Absolute tolerance for floats.")
@click.option("--strict", is_flag=True, help="Refuse when the environment differs.")
@format_option
@store_option
@trust_option
@debug_option
@handle_errors
def reproduce_command(
    run_id: str,
    steps: str | None,
    executor: str,
    rtol: float | None,
    atol: float | None,
    strict: bool,
    fmt: str,
    store: str | None,
    trust: bool | None,
) -> int:
    """Execute RUN again in a fresh process from its record alone and compare each step.

    Exit 0 when every step is identical (or close, within a tolerance), 1 otherwise.
    """
    import warnings

    from nbflow.api.lookups import get_run
    from nbflow.cli.output import render

    opened = open_cli_store(store, trust=trust)
    chosen = [s.strip() for s in steps.split(",") if s.strip()] if steps else None
    with warnings.catch_warnings(record=True) as told:
        warnings.simplefilter("always")
        frame = get_run(run_id, opened).reproduce(
            steps=chosen, executor=executor, rtol=rtol, atol=atol, strict=strict
        )
    for warning in told:
        echo(f"nbflow: {warning.message}", err=True)
    if fmt == "json":
        echo(json.dumps({**frame.attrs, "steps": json.loads(render(frame, "json"))}, default=str))
    else:
        echo(f"reproduction {frame.attrs['reproduction']} of run {run_id}")
        echo(render(frame, fmt))
    ok = frame["status"].isin(["identical", "close"]).all()
    return EXIT_OK if ok else EXIT_FAILED

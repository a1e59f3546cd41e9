"""Which flow a ``%%step`` cell belongs to, and adding its step to that flow."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nbflow.api.flow import Flow
from nbflow.definition.step import Step
from nbflow.errors import CellError, DefinitionError, suggest


def find_flows(namespace: Mapping[str, Any]) -> dict[str, Flow]:
    """The Flows bound to public names in ``namespace`` (each object once, first name wins).

    Names starting with ``_`` are skipped: IPython keeps old outputs there (``_``, ``_3``).
    """
    found: dict[str, Flow] = {}
    seen: set[int] = set()
    for key, value in list(namespace.items()):
        if isinstance(value, Flow) and not key.startswith("_") and id(value) not in seen:
            seen.add(id(value))
            found[key] = value
    return found


def resolve_flow(namespace: Mapping[str, Any], wanted: str | None) -> Flow:
    """The flow a cell belongs to: the one named ``wanted`` (a variable or a flow's name),
    else the only Flow in ``namespace``; CellError when there is none or a choice to make."""
    flows = find_flows(namespace)
    if wanted is not None:
        value = namespace.get(wanted)
        if isinstance(value, Flow):
            return value
        named = {id(f): f for f in flows.values() if f.name == wanted}
        if len(named) == 1:
            return next(iter(named.values()))
        known = sorted({*flows, *(f.name for f in flows.values())})
        if named:
            variables = ", ".join(k for k, f in flows.items() if f.name == wanted)
            raise CellError(
                f"several Flows are named {wanted!r} (variables {variables}): pass the "
                "variable's name to --flow."
            )
        listed = ", ".join(known) or "none"
        raise CellError(
            f"there is no Flow {wanted!r} in the notebook (flows: {listed})."
            + suggest(wanted, known)
        )
    if len(flows) == 1:
        return next(iter(flows.values()))
    if not flows:
        raise CellError(
            "there is no Flow in the notebook to add this step to: create one first, e.g. "
            "`flow = nf.Flow('analysis')`, then run this cell again."
        )
    listed = ", ".join(f"{k} (flow {f.name!r})" for k, f in flows.items())
    raise CellError(
        f"the notebook defines several flows: {listed}. Say which one this step belongs to "
        "with --flow NAME."
    )


def add_cell_step(flow: Flow, step: Step) -> None:
    """Add (or replace) ``step`` in ``flow``, unless that makes the flow invalid (a cycle):
    then the flow is left as it was and CellError says why."""
    previous = flow.steps.get(step.name)
    flow.add_step(step)
    try:
        flow.graph()
    except DefinitionError as exc:
        if previous is not None:
            flow.add_step(previous)
        else:
            flow.remove_step(step.name)
        raise CellError(f"step {step.name!r} was not (re)defined: {exc}") from None

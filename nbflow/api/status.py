"""Which steps are fresh or stale, and why: ``flow.status()``.

Each step of the flow as defined now is compared with its execution in a run: the
flow's latest run that ran it (or the run given). A step is *fresh* when running it now
would find that execution's output in the cache: same fingerprint (code, the data
globals it reads, the packages it uses), same parameters, and every upstream step fresh
with the output it read then. Otherwise it is *stale* (with the reasons), *failed* (its
latest attempt there failed), *never_run*, or *untracked*: it reads a global nbflow
cannot hash, so a run runs it again whatever the store holds (the reason names it).

Parameters are those given to ``status``, else the value the compared run chose for
them when it chose one, else the current defaults; so a changed default counts as a
parameter change, and a run made with ``window=14`` is not called stale for it.
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from nbflow.engine.cache import cache_key
from nbflow.errors import RunError
from nbflow.store.records import RunRecord, StepDefinition, StepExecution, StepStatus

if TYPE_CHECKING:
    import pandas as pd

    from nbflow.api.protocols import FlowDefinition
    from nbflow.api.run import Run
    from nbflow.definition.step import Step
    from nbflow.engine.runner import StepPlan
    from nbflow.store.base import Store

__all__ = ["STATUS_COLUMNS", "StepFreshness", "StepState", "flow_status", "status_frame"]

#: Columns of ``flow.status()`` and their dtypes.
STATUS_COLUMNS: dict[str, str] = {"step": "str", "state": "str", "why": "str", "run_id": "str"}

# How many of the flow's newest runs are searched for a step's latest execution.
_SEARCHED_RUNS = 200


class StepState(StrEnum):
    """How a step's stored output relates to its current definition."""

    FRESH = "fresh"
    STALE = "stale"
    NEVER_RUN = "never_run"
    FAILED = "failed"
    UNTRACKED = "untracked"


@dataclass(frozen=True)
class StepFreshness:
    """One row of ``flow.status()``: a step's state, why, and the run it is compared with."""

    step: str
    state: StepState
    why: str
    run_id: str | None
    upstream: tuple[str, ...] = ()
    output_hash: str | None = None  # the compared output's content hash (fresh steps)


def flow_status(
    flow: FlowDefinition, run: Run | str | None = None, params: Mapping[str, Any] | None = None
) -> list[StepFreshness]:
    """The state of every step of ``flow``, in run order (see the module's docstring)."""
    from nbflow.engine.launch import plan_steps, resolve_params

    graph = flow.graph()
    explicit = dict(params or {})
    if explicit:
        resolve_params(graph, explicit, graph.params)  # refuses unknown names, non-JSON values
    plans = plan_steps(graph, graph.params)
    store = flow.store
    refs, searched = _references(flow, store, run, graph.order)
    definitions: dict[tuple[str, str], Any] = {}
    rows: dict[str, StepFreshness] = {}
    for name in graph.order:
        step = graph.steps[name]
        upstream = step.upstream
        found = refs.get(name)
        untracked = _untracked_reason(plans[name].reads.untracked)
        if found is None:
            why = _also(_never_run(run, searched), untracked)
            rows[name] = StepFreshness(name, StepState.NEVER_RUN, why, None, upstream)
            continue
        record, execution = found
        if execution.status is StepStatus.FAILED:
            why = f"failed in run {record.run_id}: {execution.error or 'unknown error'}"
            why = _also(why, untracked)
            rows[name] = StepFreshness(name, StepState.FAILED, why, record.run_id, upstream)
            continue
        if not execution.status.has_output or execution.output is None:
            if execution.status is StepStatus.SKIPPED:
                why = f"skipped in run {record.run_id}: {execution.error}"
            else:
                why = f"still {execution.status.value} in run {record.run_id}"
            why = _also(why, untracked)
            rows[name] = StepFreshness(name, StepState.NEVER_RUN, why, record.run_id, upstream)
            continue
        key = (record.flow, record.flow_fingerprint)
        if key not in definitions:
            definitions[key] = store.get_flow(*key)
        stored = definitions[key]
        definition = stored.step(name) if stored is not None else None
        values = _effective_params(step, record, definition, explicit)
        reasons = _reasons(step, plans[name], execution, record, definition, values)
        changed_upstream = [
            u
            for u in upstream
            if rows[u].state is not StepState.FRESH
            or rows[u].output_hash != execution.inputs.get(u)
        ]
        if changed_upstream or set(execution.inputs) != set(upstream):
            reasons.append(_upstream_reason(changed_upstream, rows))
        expected, changed_files = _files_now(step, execution)
        if changed_files:
            reasons.append(f"files changed ({', '.join(changed_files)})")
        fresh = not reasons and execution.cache_key == expected(
            cache_key(plans[name].fingerprint, execution.inputs, values, _declared(step))
        )
        if not fresh and not reasons:
            reasons.append("its cache key changed")
        state = StepState.FRESH if fresh else StepState.STALE
        if untracked:
            state, reasons = StepState.UNTRACKED, [untracked, *reasons]
        rows[name] = StepFreshness(
            name,
            state,
            "; ".join(reasons),
            record.run_id,
            upstream,
            execution.output.hash,
        )
    return [rows[n] for n in graph.order]


def status_frame(rows: list[StepFreshness]) -> pd.DataFrame:
    """``flow.status()`` as a DataFrame (columns :data:`STATUS_COLUMNS`)."""
    from nbflow.store import frames

    records = [
        {"step": r.step, "state": r.state.value, "why": r.why, "run_id": r.run_id} for r in rows
    ]
    return frames.conform(frames._frame(records, STATUS_COLUMNS), STATUS_COLUMNS)


# -- which executions are compared -----------------------------------------------------


def _references(
    flow: FlowDefinition, store: Store, run: Run | str | None, order: tuple[str, ...]
) -> tuple[dict[str, tuple[RunRecord, StepExecution]], list[RunRecord]]:
    """Each step's latest execution in ``run``, or in the newest run of the flow having
    one; and the runs searched."""
    if run is not None:
        run_id = run if isinstance(run, str) else run.id
        record = store.get_run(run_id)  # UnknownRunError names it
        if record.flow != flow.name:
            raise RunError(
                f"run {run_id} is a run of flow {record.flow!r}, not of {flow.name!r}: compare "
                "a flow with its own runs."
            )
        latest = _latest(store.executions(run_id))
        return {n: (record, latest[n]) for n in order if n in latest}, [record]
    refs: dict[str, tuple[RunRecord, StepExecution]] = {}
    runs = store.list_runs(flow=flow.name, limit=_SEARCHED_RUNS)
    # A run someone else made offers no cache hit until trusted: it makes nothing fresh.
    untrusted = store.untrusted_runs([r.run_id for r in runs]) if runs else {}
    runs = [r for r in runs if r.run_id not in untrusted]
    for record in runs:
        latest = _latest(store.executions(record.run_id))
        for name in order:
            if name not in refs and name in latest:
                refs[name] = (record, latest[name])
        if len(refs) == len(order):
            break
    return refs, runs


def _latest(executions: list[StepExecution]) -> dict[str, StepExecution]:
    out: dict[str, StepExecution] = {}
    for execution in sorted(executions, key=lambda x: x.seq):
        out[execution.step] = execution
    return out


def _never_run(run: Run | str | None, searched: list[RunRecord]) -> str:
    if run is not None:
        return f"not part of run {searched[0].run_id}"
    if not searched:
        return "the flow has not run yet"
    return "no run of the flow has run it yet"


# -- why a step is stale -----------------------------------------------------------------


def _effective_params(
    step: Step,
    record: RunRecord,
    definition: StepDefinition | None,
    explicit: Mapping[str, Any],
) -> dict[str, Any]:
    """The parameter values to compare with: given, else the run's choice, else default."""
    values = {}
    for param, default in step.params.items():
        if param in explicit:
            values[param] = explicit[param]
        elif param in record.params and _chosen(param, record, definition):
            values[param] = record.params[param]
        else:
            values[param] = default
    return values


def _chosen(param: str, record: RunRecord, definition: StepDefinition | None) -> bool:
    """Whether the run set ``param`` itself rather than taking its default then."""
    if definition is None or param not in definition.params:
        return True  # cannot tell: keep what the run used
    return not _same(record.params[param], definition.params[param])


def _untracked_reason(untracked: Mapping[str, str]) -> str:
    """Why a step runs on every run, or "" when it reads nothing nbflow cannot hash."""
    if not untracked:
        return ""
    names = ", ".join(f"{name} ({why})" for name, why in untracked.items())
    return (
        f"it reads {names}, which nbflow cannot hash, so every run runs it "
        "again; mark the value with nf.untracked(...) if the result does not depend on it, "
        "or pin the step with @flow.step(version=...)"
    )


def _also(why: str, note: str) -> str:
    return f"{why}; untracked: {note}" if note else why


def _reasons(
    step: Step,
    plan: StepPlan,
    execution: StepExecution,
    record: RunRecord,
    definition: StepDefinition | None,
    values: Mapping[str, Any],
) -> list[str]:
    reasons: list[str] = []
    fingerprint = plan.fingerprint
    then = {p: record.params[p] for p in step.params if p in record.params}
    if execution.fingerprint != fingerprint:
        reasons.extend(_code_reasons(step, plan, definition))
    changes = [
        f"{p}: {_show(then[p])} → {_show(v)}"
        for p, v in values.items()
        if p in then and not _same(then[p], v)
    ]
    if not changes and execution.fingerprint != fingerprint and definition is not None:
        # Only a default changed, and the run had set the parameter itself.
        changes = [
            f"default of {p}: {_show(definition.params[p])} → {_show(d)}"
            for p, d in step.params.items()
            if p in definition.params and not _same(definition.params[p], _jsonable(d))
        ]
    if changes:
        reasons.append(f"parameters changed ({', '.join(changes)})")
    if execution.fingerprint != fingerprint and not reasons:
        reasons.append("code changed")
    return reasons


def _code_reasons(step: Step, plan: StepPlan, definition: StepDefinition | None) -> list[str]:
    """What changed in the step's code, data and packages, from its definition as the
    run recorded it."""
    if definition is None:
        return ["code changed"]
    from nbflow.graph.fingerprint import normalized_source

    try:
        source = normalized_source(step.func, step.source)
    except Exception:
        source = ""
    reasons = []
    if _without_defaults(source) != _without_defaults(definition.source):
        reasons.append("code changed")
    if tuple(step.upstream) != tuple(definition.dependencies) and not reasons:
        reasons.append("code changed (its dependencies)")
    options = step.options.to_json()
    changed = [k for k, v in options.items() if definition.options.get(k) != v]
    if changed:
        reasons.append(f"options changed ({', '.join(changed)})")
    defaults_changed = any(
        p not in definition.params or not _same(definition.params[p], _jsonable(d))
        for p, d in step.params.items()
    )
    reads = plan.reads
    reasons.extend(_read_reasons(reads.globals, reads.packages, definition))
    known = definition.code_fingerprint is not None
    if (
        not any(r.startswith("code changed") for r in reasons)
        and not defaults_changed
        and ((known and definition.code_fingerprint != reads.code) or (not known and not reasons))
    ):
        reasons.append("code changed (a function or constant it uses)")
    return reasons


def _read_reasons(
    now: Mapping[str, str], packages: Mapping[str, str], definition: StepDefinition
) -> list[str]:
    """The data globals and packages that changed since the definition was recorded."""
    reasons = []
    if definition.code_fingerprint is None:
        return []  # recorded before nbflow kept them: nothing to compare with
    changed = sorted(
        n for n in {*now, *definition.globals} if now.get(n) != definition.globals.get(n)
    )
    if changed:
        noun = "a global it reads changed" if len(changed) == 1 else "globals it reads changed"
        reasons.append(f"{noun} ({', '.join(changed)})")
    moved = []
    for dist in sorted({*packages, *definition.packages}):
        before, after = definition.packages.get(dist), packages.get(dist)
        if before != after:
            moved.append(f"{dist} {before or 'not used'} → {after or 'not used'}")
    if moved:
        noun = "a package changed" if len(moved) == 1 else "packages changed"
        reasons.append(f"{noun} ({', '.join(moved)})")
    return reasons


def _without_defaults(source: str) -> str:
    """A step's normalized source with its parameter defaults blanked (they are compared
    as parameters)."""
    try:
        tree = ast.parse(source)
    except (SyntaxError, ValueError):
        return source
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            args.defaults = [ast.Constant(value=...) for _ in args.defaults]
            args.kw_defaults = [
                None if d is None else ast.Constant(value=...) for d in args.kw_defaults
            ]
    return ast.unparse(tree)


def _declared(step: Step) -> dict[str, str | None]:
    from nbflow.engine.files import declared_snapshot

    return declared_snapshot(step.options.inputs)


def _files_now(step: Step, execution: StepExecution) -> tuple[Callable[[str], str], list[str]]:
    """The execution's key from a key made now (with the files it read hashed now), and
    how its declared and read files differ from now (one phrase per file)."""
    from nbflow.engine.files import changed_files, file_hashes, reads_key

    files = execution.files
    if files is None:  # it declared and read none (a new declaration changed its code)
        return (lambda key: key), []
    read_now = file_hashes(files.read)
    changes = changed_files(files.declared, _declared(step)) if step.options.inputs else []
    changes += changed_files(files.read, read_now)
    return (lambda key: reads_key(key, read_now)), changes


def _upstream_reason(changed: list[str], rows: Mapping[str, StepFreshness]) -> str:
    if not changed:
        return "code changed (its dependencies)"
    failed = [u for u in changed if rows[u].state is StepState.FAILED]
    missing = [u for u in changed if rows[u].state is StepState.NEVER_RUN]
    untracked = [u for u in changed if rows[u].state is StepState.UNTRACKED]
    moved = [u for u in changed if u not in failed and u not in missing and u not in untracked]
    parts = []
    if untracked:
        names = ", ".join(untracked)
        parts.append(
            f"an upstream step is untracked ({names}): it runs again, and this step is "
            "reused only if its output comes out the same"
        )
    if moved:
        parts.append(f"an upstream step changed ({', '.join(moved)})")
    if failed:
        parts.append(f"an upstream step failed ({', '.join(failed)})")
    if missing:
        parts.append(f"an upstream step has not run ({', '.join(missing)})")
    return "; ".join(parts)


def _jsonable(value: Any) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        return repr(value)


def _same(a: Any, b: Any) -> bool:
    return json.dumps(_jsonable(a), sort_keys=True) == json.dumps(_jsonable(b), sort_keys=True)


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."

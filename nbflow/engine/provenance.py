"""Recording a run's provenance when it starts: its code and its environment, as values.

Each run's ``run_started`` event carries ``record``: a reference to its *code* (one JSON
value: every step's :func:`~nbflow.graph.record.step_record`), a reference to the stored
value of each data global a step reads, one to its *environment* (Python, platform, and
the version of each installed distribution the run's code uses), and the working folder
it ran in. The values are content-addressed: a run that changed nothing stores nothing
new, and runs in one environment share one environment value. Recording never fails a
run: what goes wrong is recorded as ``error`` instead.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

from nbflow.engine.plans import StepPlan
from nbflow.graph.dag import FlowGraph
from nbflow.graph.record import RECORD_SCHEME, step_record
from nbflow.values.codecs import encode
from nbflow.values.encoded import EncodedValue
from nbflow.values.refs import ValueRef

__all__ = ["RECORD_STEP", "environment", "nbflow_version", "run_record"]

#: The pseudo step name the runner stores record values under.
RECORD_STEP = "<record>"

_lock = threading.Lock()
# (step, id of its code object) -> (the code object, fingerprint, its record, its data)
_RECORDS: dict[tuple[str, int], tuple[Any, str, dict[str, Any], dict[str, Any]]] = {}
# the steps of a run -> (what the record was made from, the code objects, its code value,
# its environment value, its data globals): one entry per flow shape, replaced on change
_RUNS: dict[tuple[str, ...], tuple[Any, list[Any], EncodedValue, EncodedValue, list[Any]]] = {}
# a data global's content hash (as its fingerprint saw it) -> the ref it was stored under
_DATA_REFS: dict[str, ValueRef] = {}
_MAX_MEMO = 4096


def nbflow_version() -> str:
    """The installed nbflow's version (its distribution's metadata)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("nbflow")
    except importlib.metadata.PackageNotFoundError:  # run from a source tree
        return "unknown"


def environment(packages: Mapping[str, str]) -> dict[str, Any]:
    """The environment record: Python, platform, and ``packages`` (distribution ->
    version), with nbflow's own version (a reproduction runs on nbflow too)."""
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "system": platform.system(),
        "machine": platform.machine(),
        "packages": dict(sorted({**packages, "nbflow": nbflow_version()}.items())),
    }


def _step_record(plan: StepPlan, exclude: frozenset[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The step's record, memoized per code object and fingerprint (a re-run of an
    unchanged flow walks nothing again; an edit makes a new code object)."""
    func = plan.step.func
    owner = getattr(func, "__code__", func)
    # One entry per step and code object: a data global that changed replaces it, so the
    # memo never keeps old values alive.
    key = (plan.name, id(owner))
    with _lock:
        known = _RECORDS.get(key)
    if known is not None and known[0] is owner and known[1] == plan.fingerprint:
        return known[2], known[3]
    record, data = step_record(func, exclude=exclude, source=plan.step.source)
    with _lock:
        if len(_RECORDS) >= _MAX_MEMO:
            _RECORDS.clear()
        _RECORDS[key] = (owner, plan.fingerprint, record, data)
    return record, data


def _owner(plan: StepPlan) -> Any:
    func = plan.step.func
    return getattr(func, "__code__", func)


def _tolerances(plan: StepPlan) -> tuple[float | None, float | None]:
    return plan.step.options.reproduce_rtol, plan.step.options.reproduce_atol


def _encoded_record(
    graph: FlowGraph, plans: Mapping[str, StepPlan]
) -> tuple[EncodedValue, EncodedValue, list[tuple[str, str, Any]]]:
    """The run's code and environment values, encoded, and its data globals (each step,
    name and value). Memoized per run shape (a re-run of an unchanged flow encodes
    nothing again but its data)."""
    exclude = frozenset(graph.steps) | frozenset(graph.params)
    steps: dict[str, Any] = {}
    data: list[tuple[str, str, Any]] = []
    packages: dict[str, str] = {}
    for name in graph.order:
        plan = plans[name]
        record, found = _step_record(plan, exclude)
        record = dict(record, problems=dict(record["problems"]))
        for global_name, value in found.items():
            try:
                encode(value, step=name)
                data.append((name, global_name, value))
            except Exception as exc:  # it cannot be stored: the step is untracked anyway
                record["problems"][global_name] = f"its value cannot be stored ({exc})"
        record["untracked"] = dict(plan.reads.untracked)
        record["reproduce"] = dict(zip(("rtol", "atol"), _tolerances(plan), strict=True))
        packages.update(record["packages"])
        packages.update(plan.reads.packages)
        steps[name] = record
    code = _json_value({"scheme": RECORD_SCHEME, "steps": steps})
    return code, _json_value(environment(packages)), data


def _json_value(value: Any) -> EncodedValue:
    return encode(value, step=RECORD_STEP, inline_limit=0)


def run_record(
    graph: FlowGraph,
    plans: Mapping[str, StepPlan],
    put: Callable[[str, EncodedValue], ValueRef],
    has: Callable[[str], bool] = lambda _: False,
) -> dict[str, Any]:
    """The ``record`` of a run's ``run_started`` payload; ``put`` stores a value, ``has``
    tells whether the store holds a value's hash (a data global stored for an earlier run,
    with the same content, is then not encoded again)."""
    try:
        return _run_record(graph, plans, put, has)
    except Exception as exc:  # the record is for later: it must never fail the run itself
        return {"scheme": RECORD_SCHEME, "error": f"{type(exc).__name__}: {exc}"}


def _run_record(
    graph: FlowGraph,
    plans: Mapping[str, StepPlan],
    put: Callable[[str, EncodedValue], ValueRef],
    has: Callable[[str], bool],
) -> dict[str, Any]:
    shape = tuple(graph.order)
    made_of = tuple((plans[n].fingerprint, _tolerances(plans[n])) for n in shape)
    owners = [_owner(plans[n]) for n in shape]
    with _lock:
        known = _RUNS.get(shape)
    if (
        known is None
        or known[0] != made_of
        or any(a is not b for a, b in zip(known[1], owners, strict=True))
    ):
        known = (made_of, owners, *_encoded_record(graph, plans))
        with _lock:
            if len(_RUNS) >= _MAX_MEMO:
                _RUNS.clear()
            _RUNS[shape] = known
    code_value, env_value, data = known[2:]
    values: dict[str, dict[str, Any]] = {}  # step -> data global -> its stored value's ref
    for step, global_name, value in data:
        digest = plans[step].reads.globals.get(global_name)
        with _lock:
            known_ref = _DATA_REFS.get(digest) if digest else None
        with contextlib.suppress(Exception):  # (why it cannot be is in the code record)
            if known_ref is None or not has(known_ref.hash):
                known_ref = put(RECORD_STEP, encode(value, step=step))
                if digest:
                    with _lock:
                        if len(_DATA_REFS) >= _MAX_MEMO:
                            _DATA_REFS.clear()
                        _DATA_REFS[digest] = known_ref
            values.setdefault(step, {})[global_name] = known_ref.to_json()
    code = put(RECORD_STEP, code_value)
    env = put(RECORD_STEP, env_value)
    # The data values are referred to here, in the event, not inside the code value:
    # gc, export and copies find every value a run needs in its events.
    return {
        "scheme": RECORD_SCHEME,
        "code": code.to_json(),
        "environment": env.to_json(),
        "data": values,
        "cwd": os.getcwd(),
        "executable": sys.executable,
    }

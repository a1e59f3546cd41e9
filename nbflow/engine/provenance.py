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
# (id of the code object, fingerprint) -> (the code object, its step record, its data)
_RECORDS: dict[tuple[int, str], tuple[Any, dict[str, Any], dict[str, Any]]] = {}
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
    key = (id(owner), plan.fingerprint)
    with _lock:
        known = _RECORDS.get(key)
    if known is not None and known[0] is owner:
        return known[1], known[2]
    record, data = step_record(func, exclude=exclude, source=plan.step.source)
    with _lock:
        if len(_RECORDS) >= _MAX_MEMO:
            _RECORDS.clear()
        _RECORDS[key] = (owner, record, data)
    return record, data


def _json_value(value: Any) -> EncodedValue:
    return encode(value, step=RECORD_STEP, inline_limit=0)


def run_record(
    graph: FlowGraph,
    plans: Mapping[str, StepPlan],
    put: Callable[[str, EncodedValue], ValueRef],
) -> dict[str, Any]:
    """The ``record`` of a run's ``run_started`` payload; ``put`` stores a value."""
    try:
        return _run_record(graph, plans, put)
    except Exception as exc:  # the record is for later: it must never fail the run itself
        return {"scheme": RECORD_SCHEME, "error": f"{type(exc).__name__}: {exc}"}


def _run_record(
    graph: FlowGraph,
    plans: Mapping[str, StepPlan],
    put: Callable[[str, EncodedValue], ValueRef],
) -> dict[str, Any]:
    exclude = frozenset(graph.steps) | frozenset(graph.params)
    steps: dict[str, Any] = {}
    values: dict[str, dict[str, Any]] = {}  # step -> data global -> its stored value's ref
    packages: dict[str, str] = {}
    for name in graph.order:
        plan = plans[name]
        record, data = _step_record(plan, exclude)
        record = dict(record, problems=dict(record["problems"]))
        stored: dict[str, Any] = {}
        for global_name, value in data.items():
            try:
                stored[global_name] = put(RECORD_STEP, encode(value, step=name)).to_json()
            except Exception as exc:  # it cannot be stored: the step is untracked anyway
                record["problems"][global_name] = f"its value cannot be stored ({exc})"
        if stored:
            values[name] = stored
        record["untracked"] = dict(plan.reads.untracked)
        options = plan.step.options
        record["reproduce"] = {"rtol": options.reproduce_rtol, "atol": options.reproduce_atol}
        packages.update(record["packages"])
        packages.update(plan.reads.packages)
        steps[name] = record
    code = put(RECORD_STEP, _json_value({"scheme": RECORD_SCHEME, "steps": steps}))
    env = put(RECORD_STEP, _json_value(environment(packages)))
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

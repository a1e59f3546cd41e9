"""Each step's verdict in a reproduction: identical, close, differs, failed or not_run,
with the honest reason (files changed or gone, what the record could not define again,
untracked globals, environment differences)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from nbflow.store.provenance import Provenance, StepProvenance
from nbflow.store.records import StepExecution, StepStatus

if TYPE_CHECKING:
    from nbflow.api.environments import EnvironmentDifference
    from nbflow.store.base import Store

__all__ = ["judge", "values_close"]

IDENTICAL, CLOSE, DIFFERS, FAILED, NOT_RUN = "identical", "close", "differs", "failed", "not_run"


def values_close(a: Any, b: Any, rtol: float, atol: float) -> bool:
    """Whether ``a`` and ``b`` are equal but for float rounding within the tolerances:
    numbers, numpy arrays, pandas frames and series, and lists, tuples and dicts of them."""
    import numpy as np
    import pandas as pd

    if isinstance(a, pd.DataFrame | pd.Series) or isinstance(b, pd.DataFrame | pd.Series):
        if type(a) is not type(b) or a.shape != b.shape:
            return False
        if isinstance(a, pd.Series):
            a, b = a.to_frame(), b.to_frame()
        if list(a.columns) != list(b.columns) or not a.index.equals(b.index):
            return False
        return all(values_close(a[c].to_numpy(), b[c].to_numpy(), rtol, atol) for c in a.columns)
    if isinstance(a, np.ndarray | np.generic) or isinstance(b, np.ndarray | np.generic):
        x, y = np.asarray(a), np.asarray(b)
        if x.shape != y.shape:
            return False
        if x.dtype.kind in "fc" or y.dtype.kind in "fc":
            try:
                return bool(np.allclose(x, y, rtol=rtol, atol=atol, equal_nan=True))
            except TypeError:
                return False
        return bool(np.array_equal(x, y))
    if isinstance(a, float) or isinstance(b, float):
        if not isinstance(a, int | float) or not isinstance(b, int | float):
            return False
        if math.isnan(a) and math.isnan(b):
            return True
        return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(values_close(a[k], b[k], rtol, atol) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return (
            type(a) is type(b)
            and len(a) == len(b)
            and all(values_close(x, y, rtol, atol) for x, y in zip(a, b, strict=True))
        )
    try:
        return bool(a == b)
    except Exception:  # an __eq__ that raises or returns something without a truth value
        return False


def _file_notes(step: StepProvenance) -> list[str]:
    from nbflow.engine.files import file_hash

    notes = []
    for path, recorded in sorted(step.files.items()):
        now = file_hash(path)
        if recorded is not None and now is None:
            notes.append(f"file {path} is gone (recorded hash {recorded})")
        elif now != recorded:
            notes.append(f"file {path} changed since the run (recorded hash {recorded}, now {now})")
    return notes


def _notes(
    step: StepProvenance,
    problems: Mapping[str, str],
    differences: Sequence[EnvironmentDifference],
) -> list[str]:
    notes = _file_notes(step)
    if not step.recorded:
        notes.append(
            "recorded before nbflow kept a run's record: only the step's own source is known "
            "(not its helpers, constants, data or environment)"
        )
    for name, why in problems.items():
        notes.append(f"not in the record: {why}" if name == "<step>" else f"{name}: {why}")
    for name, why in step.untracked.items():
        notes.append(f"untracked: it reads {name!r}, {why}")
    used = {f"package {p}" for p in step.packages} | {"python", "platform"}
    notes += [f"environment: {d.describe()}" for d in differences if d.what in used]
    return notes


def _hash(row: StepExecution | None) -> str | None:
    return row.output.hash if row is not None and row.output is not None else None


def judge(
    store: Store,
    provenance: Provenance,
    run_id: str,
    new_id: str,
    original: Mapping[str, StepExecution],
    reproduced: Mapping[str, StepExecution],
    chosen: Sequence[str] | None,
    problems: Mapping[str, Mapping[str, str]],
    differences: Sequence[EnvironmentDifference],
    *,
    rtol: float | None,
    atol: float | None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """The verdict rows, and the steps worth executing once more (they differ, and every
    step they read came out the same): a second run tells randomness apart."""
    rows: list[dict[str, Any]] = []
    verdicts: dict[str, str] = {}
    again: list[str] = []
    for name, step in provenance.steps.items():
        rec, rep = original.get(name), reproduced.get(name)
        recorded, produced = _hash(rec), _hash(rep)
        notes = _notes(step, problems.get(name, {}), differences)
        if chosen is not None and name not in chosen:
            status, reason = NOT_RUN, "not asked for (steps=): the recorded output was reused"
            produced = None
        elif rep is None or rep.status is StepStatus.SKIPPED:
            status = NOT_RUN
            reason = (rep.error if rep is not None and rep.error else "it was not executed") + (
                "" if rep is None else " (skipped: a step it reads failed)"
            )
        elif rep.status is StepStatus.FAILED:
            status, reason = FAILED, rep.error or "failed"
        elif recorded is None:
            status = NOT_RUN
            was = rec.status.value if rec is not None else "not run"
            reason = f"the original run has no output for it ({was}): nothing to compare"
        elif produced == recorded:
            status, reason = IDENTICAL, ""
        else:
            status, reason = _compare(store, name, step, run_id, new_id, rec, rep, rtol, atol)
            upstream = [verdicts.get(d) for d in step.dependencies]
            if status == DIFFERS and all(v in (IDENTICAL, CLOSE, NOT_RUN) for v in upstream):
                again.append(name)
        verdicts[name] = status
        text = "; ".join([r for r in [reason, *notes] if r])
        rows.append(
            {
                "step": name,
                "status": status,
                "recorded_hash": recorded,
                "reproduced_hash": produced,
                "reason": text,
            }
        )
    return rows, again


def _compare(
    store: Store,
    name: str,
    step: StepProvenance,
    run_id: str,
    new_id: str,
    rec: StepExecution | None,
    rep: StepExecution,
    rtol: float | None,
    atol: float | None,
) -> tuple[str, str]:
    pointer = f"see nf.diff(nf.get_run({run_id!r}), nf.get_run({new_id!r}), step={name!r})"
    step_rtol = step.rtol if step.rtol is not None else rtol
    step_atol = step.atol if step.atol is not None else atol
    if (step_rtol is None and step_atol is None) or rec is None or rec.output is None:
        return DIFFERS, f"its output differs from the recorded one: {pointer}"
    assert rep.output is not None
    r, a = step_rtol or 0.0, step_atol or 0.0
    try:
        before = store.load_output(rec.output, step=name, run_id=run_id)
        after = store.load_output(rep.output, step=name, run_id=new_id)
    except Exception as exc:  # an untrusted pickle, a value that no longer loads
        return DIFFERS, f"its output differs and cannot be compared by value ({exc}): {pointer}"
    if values_close(before, after, r, a):
        return CLOSE, f"equal within rtol={r:g}, atol={a:g} (not bit for bit)"
    return DIFFERS, f"its output differs, beyond rtol={r:g}, atol={a:g}: {pointer}"

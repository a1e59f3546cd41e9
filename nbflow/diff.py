"""What differs between two runs: per step, and row by row for one step's DataFrames."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from nbflow import arguments
from nbflow.api.run import Run
from nbflow.errors import ParameterError, UnknownStepError, UntrustedStoreError
from nbflow.store.records import StepExecution

#: Columns of ``nf.diff(run_a, run_b)``.
DIFF_COLUMNS = [
    "step",
    "status_a",
    "status_b",
    "code_changed",
    "inputs_changed",
    "output_changed",
    "shape_a",
    "shape_b",
    "columns_added",
    "columns_removed",
    "rows_changed",
]

_FRAME = "pandas.DataFrame"


def diff(run_a: Run | str, run_b: Run | str, step: str | None = None) -> pd.DataFrame:
    """Compare two runs (Runs, or one Run and the id of a run in its store).

    Without ``step``: one row per step of either run — its status in each, and whether
    its code, inputs or output changed (NA where a step is missing from one run). For
    DataFrame outputs that changed, a summary: shapes, columns added or removed, rows
    changed (NA for a pickled frame of a store opened with ``trust=False``). Parameters
    that differ are in ``.attrs["params"]`` as ``{name: (a, b)}``.

    With ``step``: the row-level difference of that step's two outputs.
    """
    run_a, run_b = _runs(run_a, run_b)
    if step is not None:
        arguments.text(step, "diff's step", example="'features'")
        return diff_outputs(run_a, run_b, step)
    rows_a, rows_b = run_a._latest_rows(), run_b._latest_rows()
    order = list(run_a.step_names) + [s for s in run_b.step_names if s not in run_a.step_names]
    records = [_compare(run_a, run_b, name, rows_a.get(name), rows_b.get(name)) for name in order]
    frame = pd.DataFrame(records, columns=DIFF_COLUMNS)
    for column in ("code_changed", "inputs_changed", "output_changed"):
        frame[column] = frame[column].astype("boolean")
    frame["rows_changed"] = frame["rows_changed"].astype("Int64")
    frame.attrs["params"] = _param_changes(run_a.params, run_b.params)
    return frame


def _runs(run_a: object, run_b: object) -> tuple[Run, Run]:
    """The two runs to compare: a run id is looked up in the other run's store."""
    for which, value in (("run_a", run_a), ("run_b", run_b)):
        if not isinstance(value, Run | str):
            raise ParameterError(
                f"nf.diff compares two runs: {which} is a {type(value).__name__} "
                f"({value!r:.60}), not a Run or a run id."
            )
    if isinstance(run_a, str) and isinstance(run_b, str):
        raise ParameterError(
            "nf.diff needs at least one Run to know the store: "
            f"nf.diff(nf.get_run({run_a!r}), {run_b!r})."
        )
    if isinstance(run_a, str):
        assert isinstance(run_b, Run)
        run_b.store.get_run(run_a)  # UnknownRunError names it
        run_a = Run(run_b.store, run_a)
    if isinstance(run_b, str):
        assert isinstance(run_a, Run)
        run_a.store.get_run(run_b)
        run_b = Run(run_a.store, run_b)
    assert isinstance(run_a, Run) and isinstance(run_b, Run)
    return run_a, run_b


def _compare(
    run_a: Run, run_b: Run, name: str, a: StepExecution | None, b: StepExecution | None
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "step": name,
        "status_a": a.status.value if a else None,
        "status_b": b.status.value if b else None,
        "code_changed": None,
        "inputs_changed": None,
        "output_changed": None,
        "shape_a": None,
        "shape_b": None,
        "columns_added": None,
        "columns_removed": None,
        "rows_changed": None,
    }
    if a is None or b is None:
        return row
    if a.fingerprint and b.fingerprint:
        row["code_changed"] = a.fingerprint != b.fingerprint
    row["inputs_changed"] = dict(a.inputs) != dict(b.inputs)
    if a.output is None or b.output is None:
        return row
    row["output_changed"] = a.output.hash != b.output.hash
    if a.output.type_name == _FRAME and b.output.type_name == _FRAME:
        try:
            frame_a = run_a.store.load_output(a.output, step=name, run_id=run_a.id)
            frame_b = run_b.store.load_output(b.output, step=name, run_id=run_b.id)
        except UntrustedStoreError:
            # A frame Arrow could not hold was pickled, and this store may not unpickle:
            # the summary stays empty; `nf.diff(a, b, step=...)` says why.
            return row
        row["shape_a"], row["shape_b"] = frame_a.shape, frame_b.shape
        row["columns_added"] = [c for c in frame_b.columns if c not in frame_a.columns]
        row["columns_removed"] = [c for c in frame_a.columns if c not in frame_b.columns]
        if row["output_changed"]:
            changes = frame_changes(frame_a, frame_b)
            row["rows_changed"] = len(changes)
        else:
            row["rows_changed"] = 0
    return row


def _param_changes(a: dict[str, Any], b: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    names = list(a) + [n for n in b if n not in a]
    return {n: (a.get(n), b.get(n)) for n in names if a.get(n) != b.get(n)}


def diff_outputs(run_a: Run, run_b: Run, step: str) -> pd.DataFrame:
    """The difference between the outputs of ``step`` in two runs.

    DataFrames: the rows that were removed, added or changed (aligned on the index when
    it is unique in both, else by position), with a ``_change`` column; for changed rows,
    ``<column>_a`` holds the value in run A of each column that changed. Arrays and other
    values: one row with both values (or shapes) and whether they are equal.
    """
    for run in (run_a, run_b):
        if step not in run.step_names:
            raise UnknownStepError(step, run.step_names, where=f"run {run.id}")
    value_a, value_b = run_a[step], run_b[step]
    if isinstance(value_a, pd.DataFrame) and isinstance(value_b, pd.DataFrame):
        return frame_changes(value_a, value_b)
    if isinstance(value_a, np.ndarray) and isinstance(value_b, np.ndarray):
        same_shape = value_a.shape == value_b.shape
        changed = int(np.sum(value_a != value_b)) if same_shape else None
        return pd.DataFrame(
            [
                {
                    "step": step,
                    "shape_a": value_a.shape,
                    "shape_b": value_b.shape,
                    "dtype_a": str(value_a.dtype),
                    "dtype_b": str(value_b.dtype),
                    "elements_changed": changed,
                    "equal": same_shape and changed == 0,
                }
            ]
        )
    equal = run_a.ref(step).hash == run_b.ref(step).hash
    return pd.DataFrame([{"step": step, "value_a": value_a, "value_b": value_b, "equal": equal}])


def frame_changes(a: pd.DataFrame, b: pd.DataFrame) -> pd.DataFrame:
    """Rows of ``b`` added or changed relative to ``a`` (in a shared column), and rows of
    ``a`` removed, with a ``_change`` column saying which."""
    if not (a.index.is_unique and b.index.is_unique):
        a, b = a.reset_index(drop=True), b.reset_index(drop=True)
    common = a.index.intersection(b.index, sort=False)
    removed = a.loc[a.index.difference(b.index, sort=False)]
    added = b.loc[b.index.difference(a.index, sort=False)]
    shared_columns = [c for c in b.columns if c in a.columns]
    left = a.loc[common, shared_columns]
    right = b.loc[common, shared_columns]
    differs = ~((left == right) | (left.isna() & right.isna()))
    differs = differs.reindex(columns=shared_columns, fill_value=False)
    # Columns added or removed are reported apart; a row changed if a shared value did.
    row_changed = differs.any(axis=1)
    changed = b.loc[common[row_changed.to_numpy()]].copy()
    for column in shared_columns:
        mask = differs.loc[changed.index, column]
        if mask.any():
            changed[f"{column}_a"] = a.loc[changed.index, column].where(mask)
    parts = [
        changed.assign(_change="changed"),
        added.assign(_change="added"),
        removed.assign(_change="removed"),
    ]
    out = pd.concat([p for p in parts if len(p)] or [b.iloc[0:0].assign(_change="")])
    return out[["_change", *[c for c in out.columns if c != "_change"]]]

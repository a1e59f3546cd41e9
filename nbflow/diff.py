"""What differs between two runs: per step, and row by row for one step's DataFrames.

Per step, the diff also says why the step's cache key changed, as far as the two
executions' records tell: each component of the key that :data:`KEY_COMPONENTS` lists
compares the two records and names what changed in it (:class:`KeyChange`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from nbflow import arguments
from nbflow.api.run import Run
from nbflow.errors import ParameterError, UnknownStepError, UntrustedStoreError
from nbflow.store.records import FlowRecord, RunRecord, StepDefinition, StepExecution

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
    "params_changed",
    "key_changed",
    "why",
]

_FRAME = "pandas.DataFrame"


def diff(run_a: Run | str, run_b: Run | str, step: str | None = None) -> pd.DataFrame:
    """Compare two runs (Runs, or one Run and the id of a run in its store).

    Without ``step``: one row per step of either run (NA where a step is missing from
    one run), with the columns :data:`DIFF_COLUMNS`:

    - ``status_a``, ``status_b``: the step's status in each run;
    - ``code_changed``: its code fingerprint differs (its source, or a helper, class,
      constant or option it uses); ``inputs_changed``: an upstream output it read
      differs; ``output_changed``: its output's content differs;
    - for DataFrame outputs, ``shape_a``, ``shape_b``, ``columns_added``,
      ``columns_removed`` (B against A) and ``rows_changed`` (how many rows
      :func:`frame_changes` reports; NA for a pickled frame of a store opened with
      ``trust=False``);
    - ``params_changed``: the run parameters the step read whose values differ (the
      values each execution really used: a reused step's are those of its source);
    - ``key_changed``: its cache keys differ; ``why``: what changed in the key, one
      text per change, each starting with its kind (:data:`KEY_COMPONENTS`): ``code``
      (its own source), ``options``, ``helper`` (a function, class or constant it uses,
      from the notebook or your own modules), ``global`` (a data global it reads),
      ``package`` (an installed package's version), ``file`` (a file it declared or
      read), ``parameter``, ``input`` (an upstream output).

    ``.attrs["params"]`` holds the run parameters that differ, ``{name: (a, b)}``;
    ``.attrs["why"]`` the changes per step as :class:`KeyChange` records.

    With ``step``: the row-level difference of that step's two outputs
    (:func:`diff_outputs`).
    """
    run_a, run_b = _runs(run_a, run_b)
    if step is not None:
        arguments.text(step, "diff's step", example="'features'")
        return diff_outputs(run_a, run_b, step)
    rows_a, rows_b = run_a._latest_rows(), run_b._latest_rows()
    record_a, record_b = run_a.record, run_b.record
    order = list(record_a.steps) + [s for s in record_b.steps if s not in record_a.steps]
    records, why = [], {}
    flow_a = run_a.store.get_flow(record_a.flow, record_a.flow_fingerprint)
    flow_b = run_b.store.get_flow(record_b.flow, record_b.flow_fingerprint)
    for name in order:
        row = _compare(run_a, run_b, name, rows_a.get(name), rows_b.get(name))
        a, b = _side(record_a, flow_a, rows_a, name), _side(record_b, flow_b, rows_b, name)
        if a is not None and b is not None:
            changes = key_changes(a, b)
            row["params_changed"] = _params_changed(a, b)
            row["key_changed"] = _key_changed(a, b)
            row["why"] = [c.text for c in changes]
            why[name] = changes
        records.append(row)
    frame = pd.DataFrame(records, columns=DIFF_COLUMNS)
    for column in ("code_changed", "inputs_changed", "output_changed", "key_changed"):
        frame[column] = frame[column].astype("boolean")
    frame["rows_changed"] = frame["rows_changed"].astype("Int64")
    frame.attrs["params"] = _param_changes(record_a.params, record_b.params)
    frame.attrs["why"] = why
    return frame


# -- why a step's key changed -----------------------------------------------------------


@dataclass(frozen=True)
class StepSide:
    """One run's side of a step's comparison: what its records hold of the step."""

    run: RunRecord
    row: StepExecution  # its latest execution in that run
    definition: StepDefinition | None  # the step as that run's stored flow defines it
    params: Mapping[str, Any] | None  # the run parameters it read; None: not known


@dataclass(frozen=True)
class KeyChange:
    """One thing that changed in a step's cache key between two runs."""

    kind: str  # the component (a key of KEY_COMPONENTS)
    name: str | None = None  # what changed within it: a parameter, an upstream step, ...
    a: Any = None  # its value in run A, when it has one worth showing
    b: Any = None  # ... and in run B

    @property
    def text(self) -> str:
        """``kind``, then what changed: ``parameter min_amount: 40.0 -> 60.0``."""
        if self.name is None:
            return self.kind
        if self.a is None and self.b is None:
            return f"{self.kind} {self.name}"
        return f"{self.kind} {self.name}: {self.a!r} -> {self.b!r}"


#: A component of the cache key: the changes it finds between two sides (none: same).
KeyComponent = Callable[[StepSide, StepSide], list[KeyChange]]


def _code(a: StepSide, b: StepSide) -> list[KeyChange]:
    """The step's own (normalized) source."""
    if a.definition is None or b.definition is None or a.row.fingerprint == b.row.fingerprint:
        return []
    return [KeyChange("code")] if a.definition.source != b.definition.source else []


def _options(a: StepSide, b: StepSide) -> list[KeyChange]:
    """Its options (retries, timeout, cache, version: all in the fingerprint)."""
    if a.definition is None or b.definition is None or a.row.fingerprint == b.row.fingerprint:
        return []
    before, after = a.definition.options, b.definition.options
    names = list(before) + [n for n in after if n not in before]
    return [
        KeyChange("options", n, before.get(n), after.get(n))
        for n in names
        if before.get(n) != after.get(n)
    ]


def _helpers(a: StepSide, b: StepSide) -> list[KeyChange]:
    """What else the fingerprint covers of code (helpers, classes, constants it uses, in
    the notebook or your own modules): blamed when it changed and nothing above explains
    it. Definitions that record the code's own fingerprint tell it from data and
    packages; older ones cannot, and blame a helper for any change."""
    if a.row.fingerprint is None or b.row.fingerprint is None:
        return []
    if a.row.fingerprint == b.row.fingerprint or _code(a, b) or _options(a, b):
        return []
    if a.definition is None or b.definition is None:
        return [KeyChange("code")]  # a definition is missing: cannot tell which part
    code_a, code_b = a.definition.code_fingerprint, b.definition.code_fingerprint
    if code_a is not None and code_b is not None:
        return [KeyChange("helper")] if code_a != code_b else []
    if _globals(a, b) or _packages(a, b):
        return []
    return [KeyChange("helper")]


def _globals(a: StepSide, b: StepSide) -> list[KeyChange]:
    """The data globals it reads, by content hash (``LOOKUP``, a list of ids)."""
    if a.definition is None or b.definition is None:
        return []
    x, y = a.definition.globals, b.definition.globals
    names = list(x) + [n for n in y if n not in x]
    return [KeyChange("global", n) for n in names if x.get(n) != y.get(n)]


def _packages(a: StepSide, b: StepSide) -> list[KeyChange]:
    """The installed packages it uses, by distribution name and version."""
    if a.definition is None or b.definition is None:
        return []
    x, y = a.definition.packages, b.definition.packages
    names = list(x) + [n for n in y if n not in x]
    return [KeyChange("package", n, x.get(n), y.get(n)) for n in names if x.get(n) != y.get(n)]


def _files(a: StepSide, b: StepSide) -> list[KeyChange]:
    """The files it declared or read, by content hash."""
    x, y = _file_hashes(a.row), _file_hashes(b.row)
    names = list(x) + [n for n in y if n not in x]
    return [KeyChange("file", n) for n in names if x.get(n, "absent") != y.get(n, "absent")]


def _file_hashes(row: StepExecution) -> dict[str, str | None]:
    if row.files is None:
        return {}
    return {**row.files.declared, **row.files.read}


def _parameters(a: StepSide, b: StepSide) -> list[KeyChange]:
    """The run parameters it read."""
    if a.params is None or b.params is None:
        return []
    names = list(a.params) + [n for n in b.params if n not in a.params]
    return [
        KeyChange("parameter", n, a.params.get(n), b.params.get(n))
        for n in names
        if not _same(a.params.get(n), b.params.get(n))
    ]


def _inputs(a: StepSide, b: StepSide) -> list[KeyChange]:
    """The content of the upstream outputs it read."""
    x, y = dict(a.row.inputs), dict(b.row.inputs)
    names = list(x) + [n for n in y if n not in x]
    return [KeyChange("input", n) for n in names if x.get(n) != y.get(n)]


#: The components of a step's cache key that a diff tells apart, in the order ``why``
#: lists them. A new component of the key (a data global, a module, a file, an installed
#: package) is one more entry: a function of the two sides that reads what the
#: executions record of it and returns a KeyChange per thing that differs.
KEY_COMPONENTS: dict[str, KeyComponent] = {
    "code": _code,
    "options": _options,
    "helper": _helpers,
    "global": _globals,
    "package": _packages,
    "file": _files,
    "parameter": _parameters,
    "input": _inputs,
}


def key_changes(a: StepSide, b: StepSide) -> list[KeyChange]:
    """What changed in the step's cache key from ``a`` to ``b``, component by component;
    when the keys differ and no component can say why, one ``key`` change saying so."""
    changes = [change for component in KEY_COMPONENTS.values() for change in component(a, b)]
    if not changes and _key_changed(a, b):
        changes = [KeyChange("key", "(the records say no more)")]
    return changes


def _key_changed(a: StepSide, b: StepSide) -> bool | None:
    if a.row.cache_key is None or b.row.cache_key is None:
        return None
    return a.row.cache_key != b.row.cache_key


def _params_changed(a: StepSide, b: StepSide) -> list[str] | None:
    if a.params is None or b.params is None:
        return None
    return [c.name for c in _parameters(a, b) if c.name is not None]


def _side(
    record: RunRecord, stored: FlowRecord | None, rows: Mapping[str, StepExecution], name: str
) -> StepSide | None:
    row = rows.get(name)
    if row is None:
        return None
    definition = stored.step(name) if stored is not None else None
    params = row.params
    if params is None and definition is not None:
        # Recorded before executions kept their parameters: what the run claims.
        params = {p: record.params[p] for p in definition.params if p in record.params}
    return StepSide(record, row, definition, params)


def _same(a: Any, b: Any) -> bool:
    return a == b and type(a) is type(b)


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
        "params_changed": None,
        "key_changed": None,
        "why": None,
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


def _param_changes(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    names = list(a) + [n for n in b if n not in a]
    return {n: (a.get(n), b.get(n)) for n in names if a.get(n) != b.get(n)}


def diff_outputs(run_a: Run, run_b: Run, step: str) -> pd.DataFrame:
    """The difference between the outputs of ``step`` in two runs.

    DataFrames (:func:`frame_changes`): the rows that were removed, added or changed,
    aligned on the index when it is unique in both (else by position), with these
    columns:

    - ``_change``: ``"changed"``, ``"added"`` (in B only) or ``"removed"`` (in A only);
    - every column of the frame as it is in B (for removed rows: A's frame, so a column
      only one side has is NaN on the other side's rows);
    - ``<column>_a``, for each shared column that changed in some row: that column's
      value in run A, on the changed rows where it differs (NaN elsewhere; the column
      of the same name holds B's value).

    Arrays: one row with ``step``, ``shape_a``, ``shape_b``, ``dtype_a``, ``dtype_b``,
    ``elements_changed`` (NA when the shapes differ) and ``equal``. Other values: one
    row with ``step``, ``value_a``, ``value_b`` and ``equal`` (same content hash).
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

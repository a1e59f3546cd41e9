"""Names and text round-trip exactly, as a property: flow names, run ids, parameters,
thread ids, error messages and step names made of quotes, backslashes, semicolons, SQL
comments, SQL keywords and every kind of unicode go into each backend and come back
unchanged, through the records, the frames and ``store.sql``; and through the engine,
steps named by unicode identifiers and SQL keywords run, load and show as named.

Nothing is interpolated into SQL text, so no name can change a statement's meaning.
"""

from __future__ import annotations

import keyword
import re
import unicodedata
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from store_backends import BACKENDS, fresh_store

import nbflow as nf
from nbflow.store.base import Store
from nbflow.store.records import EventType, NewEvent, StepStatus
from nbflow.testing import Clock, attempt_events, make_flow, make_run

SETTINGS = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])

#: Pieces that break naive SQL, JSON or display code.
FRAGMENTS = [
    "'",
    '"',
    "`",
    "\\",
    ";",
    "--",
    "/*",
    "*/",
    "?",
    "$1",
    ":name",
    "%s",
    "\n",
    "\t",
    " ",
    "' OR '1'='1",
    '"; DROP TABLE runs; --',
    "SELECT",
    "DROP TABLE",
    "order",
    "table",
    "NULL",
    "🚀",
    "👩‍💻",  # a ZWJ sequence
    "数据",
    "東京",
    "é",
    "e\u0301",  # a combining mark
    "שלום",  # right to left
    "مرحبا",
    "\u202e",  # right-to-left override
    "\u0000",
]

text = st.lists(
    st.one_of(
        st.sampled_from(FRAGMENTS),
        st.text(st.characters(exclude_categories=["Cs"]), min_size=1, max_size=4),
    ),
    min_size=1,
    max_size=5,
).map("".join)

#: Python identifiers that are no keyword and survive NFKC (Python normalizes the
#: identifiers of source code, so a step named otherwise could never be a parameter).
IDENTIFIER_PIECES = ["select", "table", "order", "from", "données", "数据", "ñ", "Ω", "_", "x1"]


def _is_step_name(name: str) -> bool:
    return (
        name.isidentifier()
        and not keyword.iskeyword(name)
        and unicodedata.normalize("NFKC", name) == name
    )


identifier = st.one_of(
    st.lists(st.sampled_from(IDENTIFIER_PIECES), min_size=1, max_size=3).map("_".join),
    st.text(st.characters(categories=["L", "Nl", "Mn", "Nd"]), min_size=1, max_size=6),
).filter(_is_step_name)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("names")


# -- records, frames and SQL --------------------------------------------------------------


@pytest.mark.parametrize("backend", list(BACKENDS))
@SETTINGS
@given(
    flow=text,
    run_id=text,
    steps=st.lists(text, min_size=2, max_size=3, unique=True),
    params=st.dictionaries(text, st.one_of(text, st.integers(-5, 5)), max_size=3),
    thread=text,
    error=text,
    output=text,
)
def test_text_round_trips_through_the_records(
    backend: str,
    folder: Path,
    flow: str,
    run_id: str,
    steps: list[str],
    params: dict[str, Any],
    thread: str,
    error: str,
    output: str,
) -> None:
    with fresh_store(backend, folder) as store:
        check_records(store, flow, run_id, steps, params, thread, error, output)


def check_records(
    store: Store,
    flow: str,
    run_id: str,
    steps: list[str],
    params: dict[str, Any],
    thread: str,
    error: str,
    output: str,
) -> None:
    store.put_flow(make_flow(flow, fingerprint=error, steps=steps))
    stored_flow = store.get_flow(flow, error)
    assert stored_flow is not None and [s.name for s in stored_flow.steps] == steps

    store.create_run(make_run(run_id, flow=flow, params=params, thread_id=thread, steps=steps))
    clock = Clock()
    done, broken = steps[0], steps[1]
    events = [NewEvent(EventType.RUN_STARTED, ts=clock())]
    events += attempt_events(done, clock=clock, output=output)
    events += [
        NewEvent(EventType.STEP_STARTED, broken, 1, {"cache_key": error}, clock()),
        NewEvent(EventType.STEP_FAILED, broken, 1, {"error": error, "traceback": error}, clock()),
        NewEvent(EventType.RUN_FAILED, None, None, {"error": error}, clock()),
    ]
    store.append(run_id, 0, events)

    run = store.get_run(run_id)
    assert (run.flow, run.params, run.thread_id, run.steps, run.error) == (
        flow,
        params,
        thread,
        tuple(steps),
        error,
    )
    assert [r.run_id for r in store.list_runs(flow=flow, thread_id=thread)] == [run_id]
    logged = store.read_events(run_id)
    assert [e.step for e in logged] == [e.step for e in events]
    assert [e.payload for e in logged] == [e.payload for e in events]
    rows = {x.step: x for x in store.executions(run_id)}
    assert rows[broken].status is StepStatus.FAILED and rows[broken].error == error
    ref = rows[done].output
    assert ref is not None and store.load_value(ref) == output

    runs = store.runs_frame(flow=flow)
    assert runs[["run_id", "flow", "thread_id", "error"]].values.tolist() == [
        [run_id, flow, thread, error]
    ]
    assert list(store.events_frame(run_id)["step"].dropna().unique()) == [done, broken]
    assert set(store.steps_frame(run_id)["step"]) == {done, broken}

    found = store.sql(
        "SELECT run_id, flow, thread_id, error FROM runs WHERE flow = ? AND thread_id = ?",
        [flow, thread],
    )
    assert found.values.tolist() == [[run_id, flow, thread, error]]
    failed = store.sql(
        "SELECT step, error FROM step_executions WHERE run_id = ? AND step = ?",
        [run_id, broken],
    )
    assert failed.to_dict("records") == [{"step": broken, "error": error}]
    counted = store.sql("SELECT count(*) AS n FROM events WHERE run_id = ?", [run_id])
    assert int(counted["n"].iloc[0]) == len(events)


# -- the engine -----------------------------------------------------------------------------


def _step(name: str, inputs: list[str], body: str) -> Any:
    """A function whose parameters are named ``inputs`` (steps are wired by parameter
    names, and these names are drawn at random), plus a ``label`` run parameter."""
    namespace: dict[str, Any] = {"pd": pd, "np": np}
    parameters = ", ".join([*inputs, "label='x'"])
    exec(f"def {name}({parameters}):\n    return {body}\n", namespace)
    return namespace[name]


@pytest.mark.parametrize("backend", list(BACKENDS))
@SETTINGS
@given(
    flow_name=text.filter(str.strip),
    names=st.lists(identifier, min_size=3, max_size=3, unique=True),
    label=text,
    column=text,
)
def test_steps_with_unicode_and_keyword_names_run_load_and_show(
    backend: str, folder: Path, flow_name: str, names: list[str], label: str, column: str
) -> None:
    with fresh_store(backend, folder) as store:
        check_engine(store, flow_name, names, label, column)


def check_engine(store: Store, flow_name: str, names: list[str], label: str, column: str) -> None:
    first, second, third = names
    flow = nf.Flow(flow_name, store=store)
    frame_body = f"pd.DataFrame({{{column!r}: [label, 'b'], 'n': [1, 2]}})"
    flow.step(name=first)(_step("first", [], frame_body))
    flow.step(name=second)(_step("second", [first], f"{{'rows': len({first}), 'label': label}}"))
    flow.step(name=third)(_step("third", [first, second], f"np.arange(len({first}))"))

    run = flow.run(label=label, progress=False)
    assert run.status == "completed"
    assert run.params == {"label": label}
    expected = pd.DataFrame({column: [label, "b"], "n": [1, 2]})
    pd.testing.assert_frame_equal(run[first], expected)
    assert run[second] == {"rows": 2, "label": label}
    np.testing.assert_array_equal(run[third], np.arange(2))
    assert set(run.outputs) == set(names)

    steps = run.steps
    assert list(steps["step"]) == names
    assert set(steps["status"]) == {"completed"}
    assert set(run.events["step"].dropna()) == set(names)
    assert flow.runs()[["run_id", "flow"]].values.tolist() == [[run.id, flow_name]]
    found = store.sql(
        "SELECT step FROM step_executions WHERE run_id = ? AND step = ?", [run.id, second]
    )
    assert list(found["step"]) == [second]
    table = store.table_name(run.ref(first))
    if table is not None and column != "n":  # DataFrames are SQL tables where kept so
        stored = store.sql(f"SELECT * FROM {table}")
        assert list(stored.iloc[:, 0]) == [label, "b"]
        if not re.search(r"[\x00-\x1f\x7f]", column) and column.lower() != "n":
            # DuckDB keeps a name without control characters or a case-blind clash.
            assert stored.columns[0] == column

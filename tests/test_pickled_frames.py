"""Fallbacks are never silent: a frame that cannot be a table says which column and how to
fix it, and an open file returned from a step is refused (issue 15, point 8)."""

from __future__ import annotations

import decimal
import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from store_backends import BACKENDS, dispose

import nbflow as nf
from nbflow.errors import PickledOutputWarning, SerializationError, StepFailed
from nbflow.store.records import Codec
from nbflow.values import encode


def _refusing_duplicate_labels() -> pd.DataFrame:
    frame = pd.DataFrame({"a": [1, 2]})
    frame.flags.allows_duplicate_labels = False
    return frame


# name -> (the value a step returns, where, the column recorded, words of the reason)
CASES: dict[str, tuple[Callable[[], Any], str, Any, str]] = {
    "mixed": (
        lambda: pd.DataFrame({"a": [1, 2], "c": [1, "x"]}),
        "column 'c'",
        "c",
        "values of several types (int, str)",
    ),
    "decimal": (
        lambda: pd.DataFrame({"d": [decimal.Decimal("1.5"), decimal.Decimal("2.25")]}),
        "column 'd'",
        "d",
        "decimal.Decimal values",
    ),
    "lists": (
        lambda: pd.DataFrame({"n": [1, 2], "l": [[1], [2, 3]]}),
        "column 'l'",
        "l",
        "containers (list)",
    ),
    "tuple_labels": (
        lambda: pd.DataFrame({("a", "b"): [1], "c": [2]}),
        "the column labels",
        None,
        "containers (tuple, str)",
    ),
    "mixed_labels": (
        lambda: pd.DataFrame({0: [1], "c": [2]}),
        "the column labels",
        None,
        "values of several types (int, str)",
    ),
    "series": (
        lambda: pd.Series([1, "a"], name="x"),
        "the series",
        None,
        "values of several types (int, str)",
    ),
    "index": (
        lambda: pd.DataFrame({"a": [1, 2]}, index=[1, "b"]),
        "the index",
        None,
        "values of several types (int, str)",
    ),
    "numbers_as_objects": (
        lambda: pd.DataFrame({"a": pd.Series([1, 2], dtype=object)}),
        "column 'a'",
        "a",
        "numbers (int) in an object column",
    ),
    "two_missing_marks": (
        lambda: pd.DataFrame({"c": pd.Series(["x", None, float("nan")], dtype=object)}),
        "column 'c'",
        "c",
        "missing values marked in more than one way (NaN, None)",
    ),
    "flags": (_refusing_duplicate_labels, "the frame", None, "flags.allows_duplicate_labels=False"),
}


@pytest.fixture
def duckdb_flow(tmp_path: Path):
    store = BACKENDS["duckdb"](tmp_path)
    try:
        yield nf.Flow("pickled", store=store)
    finally:
        dispose(store)


@pytest.mark.parametrize("case", list(CASES))
def test_a_pickled_frame_says_which_column_and_the_fix(duckdb_flow: nf.Flow, case: str) -> None:
    make, where, column, reason = CASES[case]
    duckdb_flow.step(name="out")(make)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = duckdb_flow.run(progress=False)
    [warning] = [w.message for w in caught if isinstance(w.message, PickledOutputWarning)]
    assert isinstance(warning, PickledOutputWarning)
    because = warning.because
    assert (because["where"], because["column"]) == (where, column)
    assert reason in because["reason"]
    text = str(warning)
    assert f"step 'out' (a {type(make()).__module__.split('.')[0]}." in text
    assert f"because of {where}: " in text and f"`{because['fix']}`" in text
    # The execution records it: the event's payload, and the codec in run.steps.
    events = run.events
    [payload] = events[events["type"] == "step_output_recorded"]["payload"]
    assert payload["pickled_because"] == because
    assert payload["output"]["codec"] == "pickle"
    assert list(run.steps["output_codec"]) == ["pickle"]
    value = run["out"]
    if isinstance(value, pd.DataFrame):
        pd.testing.assert_frame_equal(value, make())
    else:
        pd.testing.assert_series_equal(value, make())
    # The fix it names is code that works: after it, the value is a table.
    fixed = _apply(because["fix"], make())
    assert encode(fixed, step="out").ref.codec in (Codec.ARROW, Codec.ARROW_IPC)


def _apply(fix: str, value: Any) -> Any:
    names = {"pd": pd, "json": json, "df" if isinstance(value, pd.DataFrame) else "s": value}
    exec(fix, names)
    return names.get("df", names.get("s"))


def test_a_frame_that_is_a_table_warns_nothing_and_records_no_reason(
    duckdb_flow: nf.Flow,
) -> None:
    duckdb_flow.step(name="out")(lambda: pd.DataFrame({"a": [1, 2], "b": ["x", None]}))
    with warnings.catch_warnings():
        warnings.simplefilter("error", PickledOutputWarning)
        run = duckdb_flow.run(progress=False)
    events = run.events
    [payload] = events[events["type"] == "step_output_recorded"]["payload"]
    assert "pickled_because" not in payload
    assert list(run.steps["output_codec"]) == ["arrow"]


def test_a_frame_that_cannot_be_pickled_either_says_both() -> None:
    import threading

    frame = pd.DataFrame({"lock": [threading.Lock()]})
    with pytest.raises(SerializationError) as info:
        encode(frame, step="locks")
    message = str(info.value)
    assert "it cannot be stored as a table (column 'lock': " in message
    assert "it cannot be pickled (TypeError" in message


# -- open files -------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["r", "rb", "w"])
def test_an_open_file_returned_from_a_step_is_refused(tmp_path: Path, mode: str) -> None:
    path = tmp_path / "data.txt"
    path.write_text("hello\n")
    flow = nf.Flow("files", store="memory://")
    handles: list[Any] = []

    @flow.step
    def handle():
        handles.append(open(path, mode))  # noqa: SIM115  # the point: returned open
        return handles[-1]

    try:
        with pytest.raises(StepFailed) as info:
            flow.run(progress=False)
    finally:
        for opened in handles:
            opened.close()
    cause = info.value.__cause__
    assert isinstance(cause, SerializationError)
    message = str(cause)
    assert f"it is an open file ({str(path)!r}, mode {mode!r})" in message
    assert "return what the step read from it (f.read(), a DataFrame) or its path" in message


def test_an_open_file_inside_a_value_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_text("hello\n")
    with open(path) as opened, pytest.raises(SerializationError, match="it holds an open file"):
        encode({"name": "x", "file": opened}, step="nested")
    with pytest.raises(SerializationError, match="closed"):
        encode(opened, step="closed")  # closed by now: still a file, not its text


def test_in_memory_buffers_are_still_stored() -> None:
    import io

    from nbflow.values import decode

    buffer = io.StringIO("text")
    encoded = encode(buffer, step="buffer")
    assert encoded.ref.codec is Codec.PICKLE
    assert decode(encoded.ref, data=encoded.data).getvalue() == "text"

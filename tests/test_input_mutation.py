"""A step cannot corrupt its inputs: one that changes an input in place fails with
InputMutatedError (so the steps sharing the input see it as it was), or, with
``@flow.step(copy_inputs=True)``, works on copies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import nbflow as nf
from nbflow.errors import InputMutatedError, StepFailed


def shared_frame_flow(store, *, copy_inputs: bool = False, retries: int = 0) -> nf.Flow:
    """The issue's case: ``zeroed`` and ``total`` share ``frame``; ``zeroed`` changes it."""
    flow = nf.Flow("shared", store=store)

    @flow.step
    def frame():
        return pd.DataFrame({"x": [1, 2, 3]})

    @flow.step(copy_inputs=copy_inputs, retries=retries)
    def zeroed(frame):
        frame["x"] = 0  # in place: the frame `total` reads too
        return int(frame["x"].sum())

    @flow.step
    def total(frame):
        return int(frame["x"].sum())

    return flow


def failure(run: nf.Run, step: str) -> str:
    rows = run.steps
    return str(rows.loc[rows["step"] == step, "error"].iloc[-1])


@pytest.mark.parametrize("executor", ["inline", "processes"])
def test_a_step_that_changes_its_input_fails_naming_step_and_input(store, executor):
    flow = shared_frame_flow(store)
    run = flow.run(executor=executor, raise_on_error=False, progress=False)
    assert run.status == "failed"
    error = failure(run, "zeroed")
    assert error.startswith("InputMutatedError: step 'zeroed' changed its input 'frame'")
    assert "frame = frame.copy()" in error and "copy_inputs=True" in error
    # The other reader of the frame sees it as it was: the same as when it runs alone.
    assert run["total"] == 6
    assert flow.run(targets=["total"], force=True, progress=False)["total"] == 6
    pd.testing.assert_frame_equal(run["frame"], pd.DataFrame({"x": [1, 2, 3]}))


def test_on_threads_a_change_is_never_passed_on_and_the_message_names_who_may_have(store):
    # Both readers of the frame may run at once, on the same object: whichever finds it
    # changed fails, naming the other as a step that may have changed it.
    flow = shared_frame_flow(store)
    run = flow.run(executor="threads", raise_on_error=False, progress=False)
    assert run.status == "failed"
    assert "'zeroed'" in failure(run, "zeroed") and "'frame'" in failure(run, "zeroed")
    statuses = dict(zip(run.steps["step"], run.steps["status"], strict=True))
    if statuses["total"] == "completed":
        assert run["total"] == 6  # never a total of a zeroed frame
    else:
        error = failure(run, "total")
        assert "found its input 'frame' changed in place after it ran" in error
        assert "it, or step 'zeroed' reading the same object at the same time" in error
    assert flow.run(targets=["total"], force=True, progress=False)["total"] == 6


def test_the_error_is_raised_as_the_cause_of_step_failed(store):
    with pytest.raises(StepFailed, match="changed its input 'frame' in place") as info:
        shared_frame_flow(store).run(progress=False)
    assert isinstance(info.value.__cause__, InputMutatedError)
    assert (info.value.__cause__.step, info.value.__cause__.input) == ("zeroed", "frame")


def test_a_step_that_changes_its_input_is_not_retried(store):
    run = shared_frame_flow(store, retries=2).run(raise_on_error=False, progress=False)
    attempts = run.steps.loc[run.steps["step"] == "zeroed", "attempt"]
    assert list(attempts) == [1]


def test_copy_inputs_gives_the_step_copies_it_may_change(store):
    flow = shared_frame_flow(store, copy_inputs=True)
    run = flow.run(progress=False)
    assert (run["zeroed"], run["total"]) == (0, 6)
    pd.testing.assert_frame_equal(run["frame"], pd.DataFrame({"x": [1, 2, 3]}))
    # The option is part of the step's definition: the same flow again is all cached.
    again = flow.run(progress=False)
    assert set(again.steps["status"]) == {"cached"}


@pytest.mark.parametrize(
    ("make", "change"),
    [
        (lambda: np.arange(4.0), lambda a: a.__setitem__(0, 99.0)),
        (lambda: [1, 2, 3], lambda items: items.append(4)),
        (lambda: {"a": 1}, lambda d: d.update(b=2)),
        (lambda: pd.Series([1, 2], name="s"), lambda s: s.__setitem__(0, 5)),
        (lambda: pd.DataFrame({"x": [1]}), lambda f: setattr(f, "columns", ["y"])),
        (lambda: pd.DataFrame({"x": [1, 2]}), lambda f: setattr(f, "index", [5, 6])),
        (lambda: pd.DataFrame({"x": [{"n": 1}]}), lambda f: f["x"].iloc[0].update(n=2)),
    ],
    ids=["array", "list", "dict", "series", "columns", "index", "object-cell"],
)
def test_every_kind_of_change_to_every_kind_of_value_is_seen(store, make, change):
    flow = nf.Flow("kinds", store=store)
    flow.step(make, name="source")

    @flow.step
    def changer(source):
        change(source)
        return 1

    run = flow.run(raise_on_error=False, progress=False)
    assert "changed its input 'source' in place" in failure(run, "changer")


def test_a_failing_step_that_changed_its_input_leaves_the_others_the_original(store):
    flow = nf.Flow("raises", store=store)

    @flow.step
    def items():
        return [1, 2, 3]

    @flow.step
    def broken(items):
        items.clear()
        raise ValueError("gave up")

    @flow.step
    def count(items):
        return len(items)

    run = flow.run(raise_on_error=False, progress=False)
    assert failure(run, "broken") == "ValueError: gave up"  # its own error first
    assert run["count"] == 3


def test_reading_an_input_without_changing_it_passes(store):
    flow = nf.Flow("reads", store=store)

    @flow.step
    def frame():
        return pd.DataFrame({"x": [3, 1, 2], "s": ["a", "b", None]})

    @flow.step
    def ordered(frame):
        return frame.sort_values("x").reset_index(drop=True)  # new frames, not in place

    @flow.step
    def described(frame, ordered):
        return {"n": len(frame), "first": int(ordered["x"].iloc[0])}

    assert flow.run(executor="threads", progress=False)["described"] == {"n": 3, "first": 1}


@pytest.mark.parametrize(
    "make",
    [
        lambda: pd.DataFrame({"x": np.arange(5), "s": list("abcde")}),
        lambda: pd.DataFrame({"c": pd.Categorical(list("abab")), "n": [1.0, None, 2.0, 3.0]}),
        lambda: pd.DataFrame(
            {"t": pd.date_range("2024-01-01", periods=3, tz="Europe/Paris")},
            index=pd.MultiIndex.from_tuples([(1, "a"), (1, "b"), (2, "a")]),
        ),
        lambda: pd.DataFrame({"o": [{"a": 1}, [1, 2], None]}),
        lambda: pd.Series([1, 2], index=["a", "b"], name=("tuple", "name")),
        lambda: np.ones((3, 4), order="F")[:, ::2],
        lambda: {"nested": [1, {"x": (1, 2)}]},
    ],
    ids=["frame", "categorical", "tz-multiindex", "objects", "series", "strided", "json"],
)
def test_an_input_read_by_several_steps_is_never_taken_as_changed(store, make):
    flow = nf.Flow("readers", store=store)
    flow.step(make, name="source")
    for name in ("one", "two", "three"):
        flow.step(lambda source: repr(source)[:10], name=name)
    run = flow.run(progress=False)
    assert run.status == "completed"

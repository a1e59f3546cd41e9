"""Builders for the store conformance suite: records, event sequences and a populated
store, public so that backend-specific tests can reuse them."""

from __future__ import annotations

import dataclasses
import datetime as dt
import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from nbflow.errors import (
    InvalidTransitionError,
)
from nbflow.store.base import Store
from nbflow.store.records import (
    Codec,
    Event,
    EventType,
    FlowRecord,
    NewEvent,
    RunRecord,
    RunStatus,
    StepDefinition,
    StepExecution,
    ValueRef,
)

__all__ = [
    "T0",
    "Clock",
    "Snapshot",
    "append_each",
    "assert_refused",
    "assert_same_value",
    "attempt_events",
    "cached_event",
    "make_flow",
    "make_run",
    "output_ref",
    "populate",
    "retry_events",
    "skipped_event",
    "snapshot",
    "start_run",
    "typical_events",
]


#: The first timestamp the helpers hand out (tz-aware UTC).
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=dt.UTC)

#: A step name and a payload that exercise quoting and unicode in every backend.
TRICKY_STEP = 'l\'étape "spéciale" ; -- 数据'
TRICKY_PAYLOAD: dict[str, Any] = {
    "text": "quotes ' \" and \\ backslash; -- not a comment",
    "unicode": "naïve café — 東京 🚀",
    "nested": {"list": [1, 2.5, None, True, "x"], "empty": {}},
}


class Clock:
    """Hands out increasing tz-aware UTC timestamps, ``step`` apart, from ``start``."""

    def __init__(self, start: dt.datetime = T0, step: dt.timedelta = dt.timedelta(seconds=1)):
        self._next = start
        self._step = step

    def __call__(self) -> dt.datetime:
        """The next timestamp."""
        now = self._next
        self._next = now + self._step
        return now


_ids = itertools.count(1)


def make_flow(
    name: str = "flow",
    fingerprint: str = "flow-fp-1",
    steps: Sequence[str] = ("load", "clean"),
    *,
    created_at: dt.datetime = T0,
) -> FlowRecord:
    """A flow definition whose steps depend on each other in a chain."""
    defs = tuple(
        StepDefinition(
            name=step,
            fingerprint=f"{step}-fp",
            dependencies=(steps[i - 1],) if i else (),
            params={"n": i, "label": f"step {step}"},
            param_types={"n": "int", "label": "str"},
            source=f"def {step}():\n    return {i!r}\n",
            options={"retries": i, "cache": True},
        )
        for i, step in enumerate(steps)
    )
    return FlowRecord(name, fingerprint, defs, created_at)


def make_run(
    run_id: str | None = None,
    *,
    flow: str = "flow",
    flow_fingerprint: str = "flow-fp-1",
    created_at: dt.datetime | None = None,
    params: Mapping[str, Any] | None = None,
    thread_id: str | None = None,
    steps: Sequence[str] = ("load", "clean"),
    **fields: Any,
) -> RunRecord:
    """A new run record (pending, version 0); ids and creation times are unique by default."""
    n = next(_ids)
    return RunRecord(
        run_id=run_id if run_id is not None else f"run-{n:05d}",
        flow=flow,
        flow_fingerprint=flow_fingerprint,
        status=RunStatus.PENDING,
        version=0,
        params=dict(params) if params is not None else {"n": 3, "name": "x"},
        created_at=created_at if created_at is not None else T0 + dt.timedelta(minutes=n),
        thread_id=thread_id,
        steps=tuple(steps),
        **fields,
    )


def output_ref(value: Any = 42, hash: str | None = None) -> dict[str, Any]:
    """The JSON form of an inline ValueRef for ``value`` (what an output event carries)."""
    ref = ValueRef(
        codec=Codec.JSON,
        hash=hash if hash is not None else f"hash-{value!r}",
        size=len(repr(value)),
        type_name=type(value).__name__,
        inline=value,
    )
    return ref.to_json()


def attempt_events(
    step: str,
    attempt: int = 1,
    *,
    clock: Clock | None = None,
    output: Any = 42,
    fingerprint: str | None = None,
    cache_key: str | None = None,
    inputs: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> list[NewEvent]:
    """One successful attempt of ``step``: started (reading ``params``, if given), input,
    output, completed."""
    clock = clock or Clock()
    started: dict[str, Any] = {
        "cache_key": cache_key if cache_key is not None else f"ck-{step}",
        "fingerprint": fingerprint if fingerprint is not None else f"{step}-fp",
    }
    if params is not None:
        started["params"] = dict(params)
    return [
        NewEvent(EventType.STEP_STARTED, step, attempt, started, clock()),
        NewEvent(
            EventType.STEP_INPUT_RECORDED,
            step,
            attempt,
            {"inputs": dict(inputs) if inputs is not None else {"n": "hash-n"}},
            clock(),
        ),
        NewEvent(
            EventType.STEP_OUTPUT_RECORDED, step, attempt, {"output": output_ref(output)}, clock()
        ),
        NewEvent(EventType.STEP_COMPLETED, step, attempt, {}, clock()),
    ]


def retry_events(
    step: str, *, clock: Clock | None = None, output: Any = 7, error: str = "boom"
) -> list[NewEvent]:
    """Attempt 1 of ``step`` fails and is retried; attempt 2 completes."""
    clock = clock or Clock()
    first = NewEvent(
        EventType.STEP_STARTED,
        step,
        1,
        {"cache_key": f"ck-{step}", "fingerprint": f"{step}-fp"},
        clock(),
    )
    retried = NewEvent(
        EventType.STEP_RETRIED,
        step,
        1,
        {"error": error, "traceback": "Traceback (most recent call last): ..."},
        clock(),
    )
    return [first, retried, *attempt_events(step, 2, clock=clock, output=output)]


def cached_event(
    step: str,
    *,
    clock: Clock | None = None,
    source_run_id: str = "run-source",
    output: Any = 42,
    fingerprint: str | None = None,
    cache_key: str | None = None,
    params: Mapping[str, Any] | None = None,
) -> NewEvent:
    """``step`` is answered from the cache (an execution row with attempt 0), its source
    having read ``params`` (if given)."""
    clock = clock or Clock()
    payload: dict[str, Any] = {
        "cache_key": cache_key if cache_key is not None else f"ck-{step}",
        "fingerprint": fingerprint if fingerprint is not None else f"{step}-fp",
        "output": output_ref(output),
        "inputs": {"n": "hash-n"},
        "source_run_id": source_run_id,
    }
    if params is not None:
        payload["params"] = dict(params)
    return NewEvent(EventType.STEP_CACHED, step, None, payload, clock())


def skipped_event(
    step: str, *, clock: Clock | None = None, reason: str = "upstream failed"
) -> NewEvent:
    """``step`` is skipped (an execution row with attempt 0)."""
    clock = clock or Clock()
    return NewEvent(EventType.STEP_SKIPPED, step, None, {"reason": reason}, clock())


def typical_events(
    steps: Sequence[str] = ("load", "clean"),
    *,
    clock: Clock | None = None,
    finish: bool = True,
) -> list[NewEvent]:
    """A run that starts, schedules and completes each step in turn, then completes."""
    clock = clock or Clock()
    events = [NewEvent(EventType.RUN_STARTED, None, None, {}, clock())]
    for i, step in enumerate(steps):
        events.append(NewEvent(EventType.STEP_SCHEDULED, step, None, {}, clock()))
        events += attempt_events(step, 1, clock=clock, output=i)
    if finish:
        events.append(NewEvent(EventType.RUN_COMPLETED, None, None, {}, clock()))
    return events


def start_run(
    store: Store, run: RunRecord | None = None, *, clock: Clock | None = None
) -> RunRecord:
    """Create ``run`` (default: :func:`make_run`) and append ``run_started``."""
    run = run or make_run()
    store.create_run(run)
    clock = clock or Clock()
    return store.append(run.run_id, 0, [NewEvent(EventType.RUN_STARTED, ts=clock())])


def append_each(store: Store, run_id: str, events: Sequence[NewEvent]) -> list[RunRecord]:
    """Append ``events`` one at a time; return the run record after each."""
    records = []
    version = store.get_run(run_id).version
    for event in events:
        record = store.append(run_id, version, [event])
        version = record.version
        records.append(record)
    return records


@dataclasses.dataclass(frozen=True)
class Snapshot:
    """Everything a store holds about one run, to show that a write changed nothing."""

    run: RunRecord
    events: list[Event]
    executions: list[StepExecution]
    all_runs: list[RunRecord]


def snapshot(store: Store, run_id: str) -> Snapshot:
    """What ``store`` holds about ``run_id`` (and the list of runs), now."""
    return Snapshot(
        store.get_run(run_id),
        store.read_events(run_id),
        store.executions(run_id),
        store.list_runs(),
    )


def assert_refused(
    store: Store, run_id: str, events: Sequence[NewEvent], *, match: str | None = None
) -> InvalidTransitionError:
    """Append ``events`` at the run's version; check it is refused and nothing changed."""
    before = snapshot(store, run_id)
    with pytest.raises(InvalidTransitionError, match=match) as info:
        store.append(run_id, before.run.version, events)
    assert "Nothing was written" in str(info.value) or "gap-free" in str(info.value)
    assert snapshot(store, run_id) == before
    return info.value


def populate(store: Store) -> list[str]:
    """Fill ``store`` with a small, fully deterministic history; return the run ids.

    Two flows, several threads, runs in every kind of state: completed, completed with a
    retry, failed with a skipped step, cached, a fork (left running mid-step, under this
    store object's lease), pending and cancelled.
    """
    store.put_flow(make_flow("flow"))
    store.put_flow(make_flow("other", "other-fp", ("only",)))
    clock = Clock()
    ids: list[str] = []

    def new(run_id: str, minute: int, **kw: Any) -> str:
        store.create_run(make_run(run_id, created_at=T0 + dt.timedelta(minutes=minute), **kw))
        ids.append(run_id)
        return run_id

    done = new("r-done", 1, thread_id="t1")
    append_each(store, done, typical_events(clock=clock))

    retried = new("r-retried", 2, thread_id="t1", params={"n": 5, "name": "ü"})
    store.append(
        retried,
        0,
        [
            NewEvent(EventType.RUN_STARTED, ts=clock()),
            *retry_events("load", clock=clock),
            *attempt_events("clean", clock=clock, output={"rows": 3}),
            NewEvent(EventType.RUN_COMPLETED, ts=clock()),
        ],
    )

    failed = new("r-failed", 3, thread_id="t2")
    store.append(
        failed,
        0,
        [
            NewEvent(EventType.RUN_STARTED, ts=clock()),
            NewEvent(EventType.STEP_STARTED, "load", 1, {"fingerprint": "load-fp"}, clock()),
            NewEvent(
                EventType.STEP_FAILED,
                "load",
                1,
                {"error": "ValueError: bad", "traceback": "tb"},
                clock(),
            ),
            skipped_event("clean", clock=clock),
            NewEvent(EventType.RUN_FAILED, payload={"error": "step 'load' failed"}, ts=clock()),
        ],
    )

    cached = new("r-cached", 4, thread_id="t2")
    store.append(
        cached,
        0,
        [
            NewEvent(EventType.RUN_STARTED, ts=clock()),
            cached_event("load", clock=clock, source_run_id=done, output=0),
            *attempt_events("clean", clock=clock, output=1, cache_key="ck-clean-2"),
            NewEvent(EventType.RUN_COMPLETED, ts=clock()),
        ],
    )

    fork = new(
        "r-fork",
        5,
        parent_run_id=done,
        fork_from_step="clean",
        fork_from_version=7,
        params={"n": 4},
    )
    store.claim(fork)  # as its runner would: a run is only ever running under a lease
    store.append(
        fork,
        0,
        [
            NewEvent(EventType.RUN_FORKED, payload={"parent_run_id": done}, ts=clock()),
            NewEvent(EventType.RUN_STARTED, ts=clock()),
            NewEvent(EventType.STEP_STARTED, TRICKY_STEP, 1, {"cache_key": "ck-t"}, clock()),
            NewEvent(
                EventType.STEP_OUTPUT_RECORDED, TRICKY_STEP, 1, {"output": output_ref("é")}, clock()
            ),
        ],
    )

    new("r-pending", 6, flow="other", flow_fingerprint="other-fp", steps=("only",))
    cancelled = new("r-cancelled", 7, flow="other", flow_fingerprint="other-fp", steps=("only",))
    store.append(
        cancelled, 0, [NewEvent(EventType.RUN_CANCELLED, payload={"error": "by user"}, ts=clock())]
    )
    return ids


def executions_of(
    state_executions: Mapping[tuple[str, int], StepExecution],
) -> list[StepExecution]:
    return sorted(state_executions.values(), key=lambda x: (x.seq, x.attempt))


def assert_same_value(got: Any, expected: Any, what: str = "") -> None:
    """``got`` is ``expected`` brought back from a store: same type, and equal exactly
    (frames and arrays compared as pandas and numpy do, dtypes included)."""
    import numpy as np
    import pandas as pd

    assert type(got) is type(expected), what
    if isinstance(expected, pd.DataFrame):
        pd.testing.assert_frame_equal(got, expected, check_exact=True, obj=what or "DataFrame")
    elif isinstance(expected, np.ndarray):
        np.testing.assert_array_equal(got, expected, err_msg=what)
        assert got.dtype == expected.dtype, what
    else:
        assert got == expected, what


def is_utc(ts: dt.datetime | None) -> bool:
    return ts is not None and ts.tzinfo is not None and ts.utcoffset() == dt.timedelta(0)


@dataclasses.dataclass(frozen=True)
class Opaque:
    """A value that is neither JSON, a DataFrame nor an array: stored as a pickle."""

    name: str
    numbers: tuple[int, ...]

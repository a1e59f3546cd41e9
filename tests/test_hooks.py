"""Event hooks: flow.on_event callbacks and process-wide sinks."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from waiting import GENEROUS

import nbflow as nf
from nbflow.api import hooks
from nbflow.store.records import Event


def small_flow(store: nf.Store, name: str = "hooked") -> nf.Flow:
    flow = nf.Flow(name, store=store)

    @flow.step
    def a(n: int = 2):
        return n

    @flow.step
    def b(a):
        return a * 2

    return flow


@pytest.fixture
def collected() -> Iterator[list[Event]]:
    seen: list[Event] = []
    nf.add_sink(seen.append)
    yield seen
    nf.remove_sink(seen.append)
    nf.flush_sinks(GENEROUS)


def test_sinks_get_every_committed_event_in_order(store: nf.Store, collected) -> None:
    run = small_flow(store).run(progress=False)
    assert nf.flush_sinks(GENEROUS)
    mine = [e for e in collected if e.run_id == run.id]
    assert mine == store.read_events(run.id)
    assert [e.seq for e in mine] == list(range(1, run.version + 1))


def test_on_event_is_per_flow(store: nf.Store) -> None:
    seen: list[Event] = []
    other: list[Event] = []
    flow = small_flow(store)
    flow.on_event(seen.append)
    small_flow(store, "other").on_event(other.append)
    run = flow.run(progress=False)
    assert nf.flush_sinks(GENEROUS)
    assert seen == store.read_events(run.id)
    assert other == []
    forked = run.fork(from_step="b")
    assert nf.flush_sinks(GENEROUS)
    assert [e for e in seen if e.run_id == forked.id] == store.read_events(forked.id)


def test_a_failing_or_slow_sink_never_fails_or_blocks_a_run(store: nf.Store) -> None:
    gate = threading.Event()

    def failing(event: Event) -> None:
        raise RuntimeError("sink is down")

    def slow(event: Event) -> None:
        gate.wait(GENEROUS)

    before = nf.sink_stats()
    nf.add_sink(failing)
    nf.add_sink(slow)
    try:
        run = small_flow(store).run(progress=False)  # returns while the sink is stuck
        assert run.status == "completed"
    finally:
        gate.set()
        nf.remove_sink(failing)
        nf.remove_sink(slow)
    assert nf.flush_sinks(GENEROUS)
    after = nf.sink_stats()
    assert after.errors - before.errors == run.version
    assert after.delivered - before.delivered >= run.version


def test_a_full_queue_drops_and_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    dispatcher = hooks._Dispatcher(maxsize=2)
    gate = threading.Event()
    dispatcher.add(lambda event: gate.wait(GENEROUS))
    event = Event("r", 1, None, None, None, None, {})  # type: ignore[arg-type]
    dispatcher.submit([event] * 6, dispatcher.global_sinks())
    stats = dispatcher.stats()
    assert stats.dropped >= 3  # one may be taken by the thread, two queued
    assert not dispatcher.flush(timeout=0.05)
    gate.set()
    assert dispatcher.flush(timeout=GENEROUS)
    assert dispatcher.stats().delivered + dispatcher.stats().dropped == 6


def test_jsonl_sink_writes_one_line_per_event(store: nf.Store, tmp_path: Path) -> None:
    sink = nf.JSONLSink(tmp_path / "events.jsonl")
    nf.add_sink(sink)
    try:
        run = small_flow(store).run(progress=False)
    finally:
        nf.remove_sink(sink)
    assert nf.flush_sinks(GENEROUS)
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    mine = [line for line in lines if line["run_id"] == run.id]
    assert [line["seq"] for line in mine] == list(range(1, run.version + 1))
    assert mine[0]["type"] == "run_started"
    assert mine[-1]["type"] == "run_completed"

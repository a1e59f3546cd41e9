"""Durability modes: ``sync``, ``async`` (the default) and ``exit``, on every backend.

What each mode promises (docs/durability.md): a returned run is fully committed in every
mode; in async, dependents start before their upstream's completion is committed, the
background writer joins many steps into one commit, its queue is bounded in bytes (the
producing step waits), a listener hears only what is committed, and a write that fails
fails the run naming the step, keeping what was committed; exit commits once, at the end.
Crashes (kill -9) in each mode are in tests/test_crash.py.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from waiting import GENEROUS, wait_for

import nbflow as nf
from nbflow.api.progress import progress_view
from nbflow.engine.writer import writer_for
from nbflow.errors import ParameterError, StepFailed, StoreFullError
from nbflow.store.base import Store
from nbflow.store.records import EventType, NewEvent, RunRecord, RunStatus

MODES = ("sync", "async", "exit")


class Ran:
    """The steps that ran, in order (instrumentation: part of no step's cache key)."""

    def __init__(self) -> None:
        self.names: list[Any] = []
        nf.untracked(self)

    def append(self, name: Any) -> None:
        self.names.append(name)

    def clear(self) -> None:
        self.names.clear()

    def __contains__(self, name: object) -> bool:
        return name in self.names

    def __len__(self) -> int:
        return len(self.names)


def diamond(store: Store, ran: Ran | None = None, **flow_options: Any) -> nf.Flow:
    """a -> b -> c, and a -> d."""
    flow = nf.Flow("diamond", store=store, **flow_options)
    ran = Ran() if ran is None else ran

    @flow.step
    def a():
        ran.append("a")
        return 1

    @flow.step
    def b(a):
        ran.append("b")
        return b"B" * 5000

    @flow.step
    def c(b):
        ran.append("c")
        return len(b)

    @flow.step
    def d(a):
        ran.append("d")
        return a + 1

    return flow


def statuses(store: Store, run_id: str) -> dict[str, str]:
    return {x.step: x.status.value for x in store.executions(run_id)}


def started_mode(store: Store, run_id: str) -> str:
    (started,) = [e for e in store.read_events(run_id) if e.type is EventType.RUN_STARTED]
    return str(started.payload["durability"])


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event a patched store method waits on; set at the end so nothing hangs."""
    event = threading.Event()
    yield event
    event.set()


def patch(store: Store, name: str, before: Callable[..., None]) -> list[Any]:
    """Call ``before(*args)`` ahead of each call of ``store.<name>``; return the calls."""
    original = getattr(store, name)
    calls: list[Any] = []

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        calls.append(args)
        before(*args)
        return original(*args, **kwargs)

    setattr(store, name, wrapper)
    return calls


# -- choosing the mode ------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_each_mode_records_the_same_run(store: Store, mode: str) -> None:
    flow = diamond(store)
    run = flow.run(durability=mode, progress=False)
    assert run.status == "completed"
    assert run["c"] == 5000
    assert statuses(store, run.id) == dict.fromkeys("abcd", "completed")
    assert started_mode(store, run.id) == mode
    again = flow.run(durability=mode, progress=False)
    assert statuses(store, again.id) == dict.fromkeys("abcd", "cached")
    assert store.check() == []


def test_the_default_is_async_then_the_flow_then_the_environment(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NBFLOW_DURABILITY", raising=False)
    run = diamond(store).run(progress=False, force=True)
    assert started_mode(store, run.id) == "async"
    monkeypatch.setenv("NBFLOW_DURABILITY", "exit")
    run = diamond(store).run(progress=False, force=True)
    assert started_mode(store, run.id) == "exit"
    flow = diamond(store, durability="sync")
    assert flow.durability == "sync"
    run = flow.run(progress=False, force=True)
    assert started_mode(store, run.id) == "sync"
    run = flow.run(progress=False, force=True, durability="ASYNC")
    assert started_mode(store, run.id) == "async"


def test_a_bad_mode_is_refused_before_anything_is_recorded(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    flow = diamond(store)
    with pytest.raises(ParameterError, match="durability must be one of 'sync', 'async'"):
        flow.run(durability="fast", progress=False)
    with pytest.raises(ParameterError, match="durability must be one of"):
        nf.Flow("x", store=store, durability=3)  # type: ignore[arg-type]
    monkeypatch.setenv("NBFLOW_DURABILITY", "eventually")
    with pytest.raises(ParameterError, match=r"\$NBFLOW_DURABILITY must be one of"):
        flow.run(progress=False)
    monkeypatch.setenv("NBFLOW_DURABILITY", "sync")
    monkeypatch.setenv("NBFLOW_WRITE_QUEUE_BYTES", "lots")
    with pytest.raises(ParameterError, match="NBFLOW_WRITE_QUEUE_BYTES='lots'"):
        flow.run(progress=False, durability="async")
    assert store.list_runs() == []


def test_fork_and_resume_take_a_mode(store: Store) -> None:
    flow = diamond(store)
    run = flow.run(progress=False, durability="sync")
    fork = run.fork(from_step="b", durability="exit", progress=False)
    assert started_mode(store, fork.id) == "exit"
    with pytest.raises(ParameterError, match="durability must be one of"):
        run.fork(from_step="b", durability="later", progress=False)


# -- async ------------------------------------------------------------------------------


def test_async_dependents_start_before_their_upstream_is_committed(
    store: Store, gate: threading.Event
) -> None:
    """While the writer is held, ``b`` still runs: it reads ``a`` from memory."""
    seen: dict[str, str] = {}
    release = nf.untracked(gate)
    reader = nf.untracked(store)

    def hold(run_id: str, version: int, events: list[NewEvent]) -> None:
        if any(e.type is EventType.STEP_COMPLETED and e.step == "a" for e in events):
            assert gate.wait(GENEROUS), "b never ran while a's commit was held"

    flow = nf.Flow("f", store=store)

    @flow.step
    def a():
        return 1

    @flow.step
    def b(a):
        run_id = reader.list_runs(flow="f", limit=1)[0].run_id
        seen.update(statuses(reader, run_id))
        release.set()
        return a + 1

    patch(store, "append", hold)
    run = flow.run(progress=False)
    assert seen.get("a") != "completed"  # b ran before a's completion was committed
    assert run.status == "completed"  # ...and the returned run is committed in full
    assert statuses(store, run.id) == {"a": "completed", "b": "completed"}
    assert run["b"] == 2


def test_sync_commits_a_completion_before_a_dependent_starts(store: Store) -> None:
    flow = nf.Flow("f", store=store)
    seen: dict[str, str] = {}
    reader = nf.untracked(store)

    @flow.step
    def first():
        return 1

    @flow.step
    def second(first):
        run_id = reader.list_runs(flow="f", limit=1)[0].run_id
        seen.update(statuses(reader, run_id))
        return first

    flow.run(progress=False, durability="sync")
    assert seen["first"] == "completed"


def test_async_joins_the_steps_waiting_for_the_writer_into_one_commit(
    store: Store, gate: threading.Event
) -> None:
    """Held on its first commit, the writer then commits all the queued steps at once."""
    steps = 12
    flow = nf.Flow("chain", store=store)
    release = nf.untracked(gate)

    def make(i: int) -> Callable[[], int]:
        def step() -> int:
            if i == steps - 1:
                release.set()
            return i

        return step

    for i in range(steps):
        flow.step(name=f"s{i}", depends_on=[f"s{i - 1}"] if i else [])(make(i))
    appends = patch(store, "append", lambda *a: gate.wait(GENEROUS))
    run = flow.run(progress=False, durability="async")
    assert run.status == "completed"
    assert run[f"s{steps - 1}"] == steps - 1
    # The first commit (held), then everything queued meanwhile, and at most the end.
    assert 1 <= len(appends) <= 3, [len(events) for _, _, events in appends]
    events = store.read_events(run.id)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert sum(e.type is EventType.STEP_COMPLETED for e in events) == steps


def test_the_writer_queue_is_bounded_in_bytes(
    store: Store, gate: threading.Event, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With room for one 600 kB output, a held writer stops the run at the next one."""
    monkeypatch.setenv("NBFLOW_WRITE_QUEUE_BYTES", "1000000")
    ran = Ran()
    flow = nf.Flow("big", store=store)

    def make(i: int) -> Callable[[], bytes]:
        def step() -> bytes:
            ran.append(i)
            return bytes([i]) * 600_000

        return step

    for i in range(6):
        flow.step(name=f"s{i}", depends_on=[f"s{i - 1}"] if i else [])(make(i))

    def hold(encoded: Any) -> None:
        # The steps' outputs wait; the run's record (JSON, written as it starts) does not.
        if not encoded.ref.is_inline and encoded.ref.codec.value != "json_blob":
            gate.wait(GENEROUS)

    patch(store, "put_value", hold)
    done = threading.Event()
    result: list[Any] = []

    def go() -> None:
        result.append(flow.run(progress=False, durability="async"))
        done.set()

    threading.Thread(target=go, daemon=True).start()
    writer = wait_for(lambda: writer_for(store), "the store's writer")
    wait_for(lambda: writer.waiting == 1, "the run waiting for room in the writer's queue")
    assert len(ran) <= 3, ran.names  # not all six: the run waits instead of holding them all
    assert writer.held_bytes <= 1_000_000 + 600_000 * 1.1
    gate.set()
    assert done.wait(GENEROUS)
    (run,) = result
    assert run.status == "completed"
    assert ran.names == list(range(6))
    assert statuses(store, run.id) == {f"s{i}": "completed" for i in range(6)}


def test_a_listener_hears_only_what_is_committed(store: Store) -> None:
    """The live view (a store reader) never shows a step done before the store has it."""
    heard: list[tuple[str, str, str]] = []

    def factory(handle: Any, graph: Any, done: int) -> Callable[[RunRecord, list[NewEvent]], None]:
        def listener(run: RunRecord, events: list[NewEvent]) -> None:
            now = statuses(store, run.run_id)
            for e in events:
                if e.type is EventType.STEP_COMPLETED:
                    heard.append((e.step or "", now.get(e.step or ""), run.status.value))

        return listener

    flow = diamond(store)
    with progress_view(factory):
        run = flow.run(durability="async")
    assert sorted(step for step, _, _ in heard) == ["a", "b", "c", "d"]
    assert all(status == "completed" for _, status, _ in heard), heard
    assert run.status == "completed"


def test_a_background_run_is_committed_when_it_is_done(store: Store) -> None:
    run = diamond(store).run(background=True, progress=False, durability="async")
    run.wait(timeout=GENEROUS)
    assert run.status == "completed"
    assert statuses(store, run.id) == dict.fromkeys("abcd", "completed")


# -- a write that fails -----------------------------------------------------------------


@pytest.mark.parametrize("mode", ["async", "exit"])
def test_a_checkpoint_the_writer_cannot_store_fails_the_run_naming_the_step(
    store: Store, mode: str
) -> None:
    ran = Ran()
    flow = diamond(store, ran)
    original = store.put_value
    full = [True]

    def put_value(encoded: Any) -> Any:
        if full[0] and not encoded.ref.is_inline:  # b's output: the only large one
            raise StoreFullError("the disk is full (a test)")
        return original(encoded)

    store.put_value = put_value  # type: ignore[method-assign]
    with pytest.raises(StepFailed) as info:
        flow.run(progress=False, durability=mode)
    assert info.value.step == "b"
    assert isinstance(info.value.__cause__, StoreFullError)
    (record,) = store.list_runs()
    assert record.status is RunStatus.FAILED
    assert "step 'b'" in (record.error or "") and "could not be written" in (record.error or "")
    rows = statuses(store, record.run_id)
    assert rows["a"] == "completed"
    assert rows["b"] == "failed"
    assert rows.get("c", "skipped") in ("skipped", "scheduled")
    assert store.check() == []
    (failed,) = [x for x in store.executions(record.run_id) if x.step == "b"]
    assert "the disk is full" in (failed.error or "")

    full[0] = False  # space again: the resumed run does what is missing, not `a`
    ran.clear()
    run = nf.get_run(record.run_id, store=store)
    flow = diamond(store, ran)
    run = run.resume(progress=False, durability=mode)
    assert run.status == "completed"
    assert "a" not in ran and "b" in ran and "c" in ran
    assert run["c"] == 5000
    assert store.check() == []


@pytest.mark.parametrize("mode", ["async", "exit"])
def test_a_commit_that_keeps_failing_fails_the_run_and_keeps_the_rest(
    store: Store, mode: str
) -> None:
    """The commit of ``c``'s completion fails every time: the steps joined with it in one
    commit are written again without it, and the run fails naming ``c``. A commit that
    fails once only (a joined one, say) is simply made again, batch by batch."""
    ran = Ran()
    flow = diamond(store, ran)
    original = store.append
    refuse = [True]

    def append(run_id: str, version: int, events: list[NewEvent]) -> RunRecord:
        if refuse[0] and any(e.type is EventType.STEP_COMPLETED and e.step == "c" for e in events):
            raise StoreFullError("the disk is full (a test)")
        return original(run_id, version, events)

    store.append = append  # type: ignore[method-assign]
    with pytest.raises(StepFailed) as info:
        flow.run(progress=False, durability=mode)
    assert info.value.step == "c"
    (record,) = store.list_runs()
    assert record.status is RunStatus.FAILED
    assert "step 'c'" in (record.error or "")
    rows = statuses(store, record.run_id)
    assert rows["a"] == rows["b"] == "completed"
    assert rows["c"] == "failed"
    assert store.check() == []

    refuse[0] = False
    ran.clear()
    run = nf.get_run(record.run_id, store=store)
    flow = diamond(store, ran)
    run = run.resume(progress=False, durability=mode)
    assert run.status == "completed"
    assert "a" not in ran and "b" not in ran and "c" in ran


# -- exit -------------------------------------------------------------------------------


def test_exit_commits_once_at_the_end(store: Store) -> None:
    seen: dict[str, str] = {}
    flow = diamond(store)
    reader = nf.untracked(store)

    @flow.step
    def e(c, d):
        record = reader.list_runs(limit=1)[0]
        seen.update(statuses(reader, record.run_id), run=record.status.value)
        return c + d

    appends = patch(store, "append", lambda *a: None)
    run = flow.run(progress=False, durability="exit")
    # While it ran, the run was seen running (so a crash reads interrupted), with no steps.
    assert seen == {"run": "running"}
    assert len(appends) == 2  # its start, then all of it at the end
    assert [e.type for e in appends[0][2]] == [EventType.RUN_STARTED]
    assert statuses(store, run.id) == dict.fromkeys("abcde", "completed")
    assert run["e"] == 5002


def test_exit_records_a_failing_step_at_the_end(store: Store) -> None:
    flow = diamond(store)

    @flow.step
    def e(c, d):
        raise RuntimeError("no")

    run = flow.run(progress=False, durability="exit", raise_on_error=False)
    assert run.status == "failed"
    assert statuses(store, run.id)["e"] == "failed"
    assert statuses(store, run.id)["c"] == "completed"


@pytest.mark.parametrize("mode", MODES)
def test_a_step_changing_its_input_never_changes_the_checkpoint_it_read(
    store: Store, mode: str
) -> None:
    """A stored array's bytes may be the array's own memory: it is written before a step
    that gets the very object starts, so the step changing it (refused) changes no
    checkpoint."""
    import numpy as np

    flow = nf.Flow("mutates", store=store)

    @flow.step
    def numbers():
        return np.arange(100_000.0)

    @flow.step
    def zeroed(numbers):
        numbers[:] = 0.0
        return 1

    run = flow.run(durability=mode, progress=False, raise_on_error=False)
    assert statuses(store, run.id) == {"numbers": "completed", "zeroed": "failed"}
    fresh = nf.get_run(run.id, store=store)
    np.testing.assert_array_equal(fresh["numbers"], np.arange(100_000.0))
    assert store.check() == []

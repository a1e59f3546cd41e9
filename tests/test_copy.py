"""Copying runs between stores: ``nf.copy_runs`` between every pair of backends (and
DuckDB in memory), and the ``nbflow copy`` command."""

from __future__ import annotations

import dataclasses
import datetime as dt
import pickle
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import cloudpickle
import duckdb
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner, Result
from store_backends import BACKENDS, dispose

import nbflow as nf
import nbflow.values
import nbflow.values.codecs
from nbflow.api.run import Run
from nbflow.cli import main
from nbflow.errors import TransferError, UnknownRunError, UntrustedImportError
from nbflow.store.duckdb.store import DuckDBStore
from nbflow.store.gc import referenced_hashes
from nbflow.store.records import Codec, EventType, NewEvent
from nbflow.testing import (
    Clock,
    assert_same_value,
    cached_event,
    make_run,
    start_run,
    typical_events,
)
from nbflow.values import encode

#: Every backend of conftest.py, and DuckDB in memory.
KINDS: dict[str, Callable[[Path], nf.Store]] = {
    **BACKENDS,
    "duckdb-memory": lambda tmp: DuckDBStore(":memory:"),
}
#: (source, target): every pair of backends, each way and each with itself.
PAIRS = [(a, b) for a in BACKENDS for b in BACKENDS] + [
    ("memory", "duckdb-memory"),
    ("duckdb-memory", "duckdb"),
]


@pytest.fixture
def make_store(tmp_path: Path) -> Iterator[Callable[[str], nf.Store]]:
    """Makes fresh stores of a kind (each its own file or schema); closes them after."""
    opened: list[nf.Store] = []

    def make(kind: str) -> nf.Store:
        folder = tmp_path / f"{kind}-{len(opened)}"
        folder.mkdir()
        opened.append(KINDS[kind](folder))
        return opened[-1]

    yield make
    for store in opened:
        dispose(store)


class Calls:
    """Counts step executions (marked untracked: its counts are not part of any key)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        nf.untracked(self)  # instrumentation, not an input: part of no step's key

    def hit(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1


def make_flow(store: nf.Store, calls: Calls) -> nf.Flow:
    """A flow whose outputs take every codec: Arrow, numpy, inline JSON, JSON blob, pickle."""
    flow = nf.Flow("copied", store=store)

    @flow.step
    def frame(n: int = 5):
        calls.hit("frame")
        return pd.DataFrame(
            {
                "x": np.arange(n),
                "kind": pd.Categorical(["a", "b"] * (n // 2) + ["a"] * (n % 2)),
                "when": pd.date_range("2024-01-01", periods=n, tz="Europe/Paris"),
            },
            index=pd.Index([f"r{i}" for i in range(n)], name="row"),
        )

    @flow.step
    def array(frame, scale: float = 2.0):
        calls.hit("array")
        return frame["x"].to_numpy() * scale

    @flow.step
    def summary(array):
        calls.hit("summary")
        return {"total": float(array.sum()), "items": [float(v) for v in array]}

    @flow.step
    def rows(summary):
        calls.hit("rows")
        return {"rows": [summary] * 200}  # too big to be inline: a JSON blob

    @flow.step
    def tags(summary):
        calls.hit("tags")
        return {("total", round(summary["total"])), ("size", len(summary["items"]))}

    @flow.step
    def check(summary, fail: bool = False):
        calls.hit("check")
        if fail:
            raise ValueError("asked to fail")
        return summary["total"] >= 0

    return flow


@dataclasses.dataclass
class History:
    """A store's runs: completed, cached, failed, a fork, a fork of it, and an unrelated run."""

    flow: nf.Flow
    first: nf.Run
    cached: nf.Run
    failed: nf.Run
    fork: nf.Run
    fork2: nf.Run
    other: nf.Run

    @property
    def ids(self) -> list[str]:
        runs = (self.first, self.cached, self.failed, self.fork, self.fork2, self.other)
        return [r.id for r in runs]


def make_history(store: nf.Store) -> History:
    flow = make_flow(store, Calls())
    first = flow.run(progress=False)
    cached = flow.run(progress=False)
    failed = flow.run(fail=True, progress=False, raise_on_error=False)
    fork = first.fork(from_step="array", scale=3.0).wait()
    fork2 = fork.fork(from_step="array", scale=4.0).wait()
    other = flow.run(n=3, progress=False)
    assert set(cached.step_states().values()) == {"cached"}
    assert failed.status == "failed"
    assert (fork2.parent_id, fork.parent_id) == (fork.id, first.id)
    return History(flow, first, cached, failed, fork, fork2, other)


def assert_same_run(source: nf.Store, target: nf.Store, run_id: str) -> None:
    """The target holds the run exactly as the source does, outputs included."""
    assert target.get_run(run_id) == source.get_run(run_id)
    assert target.read_events(run_id) == source.read_events(run_id)
    assert target.executions(run_id) == source.executions(run_id)
    pd.testing.assert_frame_equal(target.events_frame(run_id), source.events_frame(run_id))
    pd.testing.assert_frame_equal(target.steps_frame(run_id), source.steps_frame(run_id))
    original, copied = Run(source, run_id), Run(target, run_id)
    assert list(copied.outputs) == list(original.outputs)
    for step in original.outputs:
        assert_same_value(copied[step], original[step], f"{run_id} {step}")


def hashes(store: nf.Store) -> set[str]:
    return {b.hash for b in store.list_blobs()}


# -- copying between backends ---------------------------------------------------------------


@pytest.mark.parametrize(("source_kind", "target_kind"), PAIRS)
def test_a_copy_holds_every_run_as_the_source_does(
    make_store: Callable[[str], nf.Store], source_kind: str, target_kind: str
) -> None:
    source, target = make_store(source_kind), make_store(target_kind)
    history = make_history(source)

    report = nf.copy_runs(source, target)

    assert sorted(report.copied) == sorted(history.ids)
    assert report.skipped == ()
    assert report.values == len(source.list_blobs())
    assert report.bytes == sum(b.size for b in source.list_blobs())
    assert hashes(target) == hashes(source)
    pd.testing.assert_frame_equal(target.runs_frame(), source.runs_frame())
    for run_id in history.ids:
        assert_same_run(source, target, run_id)
    flow = history.first.record
    assert target.get_flow(flow.flow, flow.flow_fingerprint) == source.get_flow(
        flow.flow, flow.flow_fingerprint
    )

    again = nf.copy_runs(source, target)
    assert again.copied == () and sorted(again.skipped) == sorted(history.ids)
    assert (again.values, again.bytes) == (0, 0)
    pd.testing.assert_frame_equal(target.events_frame(), source.events_frame())

    # The copy is a working store: lineage, fully cached re-runs and forks.
    calls = Calls()
    here = make_flow(target, calls)
    pd.testing.assert_frame_equal(
        here.lineage(history.fork2.id), history.flow.lineage(history.fork2.id)
    )
    rerun = here.run(progress=False)
    assert set(rerun.step_states().values()) == {"cached"}
    forked = Run(target, history.fork2.id, flow=here).fork(from_step="array", scale=5.0).wait()
    assert forked.status == "completed"
    assert calls.counts == {"array": 1, "summary": 1, "rows": 1, "tags": 1, "check": 1}
    np.testing.assert_array_equal(forked["array"], np.arange(5) * 5.0)
    assert here.lineage(forked.id)["run_id"].tolist()[-1] == forked.id


def test_only_the_requested_runs_and_their_ancestors_are_copied(
    make_store: Callable[[str], nf.Store],
) -> None:
    source, target = make_store("memory"), make_store("duckdb")
    history = make_history(source)
    chain = [history.first.id, history.fork.id, history.fork2.id]

    report = nf.copy_runs(source, target, [history.fork2.id])

    assert [r.run_id for r in report.runs] == chain  # parents first
    assert [r.ancestor for r in report.runs] == [True, True, False]
    assert [r.action for r in report.runs] == ["copied"] * 3
    assert {r.run_id for r in target.list_runs()} == set(chain)
    assert hashes(target) == referenced_hashes(source, chain)
    for run_id in chain:
        assert_same_run(source, target, run_id)

    # A cached run brings the run its outputs came from (already there: skipped).
    report = nf.copy_runs(source, target, history.cached.id)
    assert (report.skipped, report.copied) == ((history.first.id,), (history.cached.id,))
    assert report.values == 0
    assert {r.run_id for r in target.list_runs()} == {*chain, history.cached.id}


def test_without_ancestors_only_the_named_runs_are_copied_with_all_their_values(
    make_store: Callable[[str], nf.Store],
) -> None:
    source, target = make_store("duckdb"), make_store("duckdb-memory")
    history = make_history(source)

    report = nf.copy_runs(source, target, [history.fork2.id], include_ancestors=False)

    assert report.copied == (history.fork2.id,)
    assert [r.run_id for r in target.list_runs()] == [history.fork2.id]
    assert_same_run(source, target, history.fork2.id)  # reused outputs load too
    assert target.get_run(history.fork2.id).parent_run_id == history.fork.id


def test_a_run_resumed_in_the_source_is_brought_up_to_date(
    make_store: Callable[[str], nf.Store],
) -> None:
    source, target = make_store("memory"), make_store("duckdb")
    flow = make_flow(source, Calls())
    failed = flow.run(fail=True, progress=False, raise_on_error=False)
    nf.copy_runs(source, target, [failed.id])
    copied_version = target.get_run(failed.id).version

    @flow.step
    def check(summary, fail: bool = False):
        return summary["total"] >= 0

    failed.resume(progress=False)
    assert failed.status == "completed"

    report = nf.copy_runs(source, target, [failed.id])

    (run,) = report.runs
    assert (run.action, run.status) == ("updated", "completed")
    assert run.events == source.get_run(failed.id).version - copied_version
    assert_same_run(source, target, failed.id)


def test_runs_that_reuse_each_others_outputs_are_each_copied_once(
    make_store: Callable[[str], nf.Store],
) -> None:
    source, target = make_store("memory"), make_store("duckdb")
    a, b = make_run(), make_run()
    for run, other in ((a, b), (b, a)):  # concurrent runs may cache from each other
        clock = Clock()
        source.create_run(run)
        events = [
            NewEvent(EventType.RUN_STARTED, ts=clock()),
            cached_event("load", clock=clock, source_run_id=other.run_id),
            NewEvent(EventType.RUN_COMPLETED, ts=clock()),
        ]
        source.append(run.run_id, 0, events)

    report = nf.copy_runs(source, target, [b.run_id])

    assert sorted(report.copied) == sorted([a.run_id, b.run_id])
    assert len(report.runs) == 2
    for run in (a, b):
        assert_same_run(source, target, run.run_id)


def test_a_copy_stopped_midway_is_finished_by_copying_again(
    make_store: Callable[[str], nf.Store],
) -> None:
    source, target = make_store("duckdb"), make_store("memory")
    run = make_flow(source, Calls()).run(progress=False)
    frame = next(x.output for x in source.executions(run.id) if x.step == "frame")
    assert frame is not None and frame.codec is Codec.ARROW
    # What a crash after the first value and the run's row, before its log, leaves behind.
    target.put_value(source.read_encoded(frame))
    target.create_run(source.get_run(run.id))

    report = nf.copy_runs(source, target, [run.id])

    (copied,) = report.runs
    assert copied.action == "copied"
    assert copied.events == source.get_run(run.id).version
    assert copied.values == len(source.list_blobs()) - 1
    assert_same_run(source, target, run.id)


# -- what is refused, before anything is written -------------------------------------------------


def _other_params(source: nf.Store, target: nf.Store, run_id: str) -> None:
    target.create_run(dataclasses.replace(source.get_run(run_id), params={"n": 99}))


def _other_event(source: nf.Store, target: nf.Store, run_id: str) -> None:
    target.create_run(source.get_run(run_id))
    started = source.read_events(run_id)[0]
    later = started.ts + dt.timedelta(seconds=1)
    target.append(run_id, 0, [NewEvent(started.type, payload=started.payload, ts=later)])


def _more_events(source: nf.Store, target: nf.Store, run_id: str) -> None:
    nf.copy_runs(source, target, [run_id])
    version = target.get_run(run_id).version
    target.append(run_id, version, [NewEvent(EventType.RUN_STARTED)])  # resumed there


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_other_params, "another flow, parameters, creation time or fork point"),
        (_other_event, "its event 1 differs"),
        (_more_events, "events, the source"),
    ],
)
def test_a_run_the_target_holds_with_other_content_is_refused(
    make_store: Callable[[str], nf.Store], tamper, reason: str
) -> None:
    source, target = make_store("memory"), make_store("duckdb")
    flow = make_flow(source, Calls())
    failed = flow.run(fail=True, progress=False, raise_on_error=False)
    fork = failed.fork(from_step="check", fail=False).wait()
    tamper(source, target, failed.id)
    runs_before, blobs_before = target.list_runs(), hashes(target)

    with pytest.raises(TransferError) as caught:
        nf.copy_runs(source, target, [fork.id])

    message = str(caught.value)
    assert f"run {failed.id} already exists in {target} with other content" in message
    assert reason in message and "Nothing was copied" in message
    assert target.list_runs() == runs_before
    assert hashes(target) == blobs_before


def test_a_running_run_is_refused_unless_interrupted(
    make_store: Callable[[str], nf.Store],
) -> None:
    source, target = make_store("memory"), make_store("duckdb")
    done = make_run()
    source.create_run(done)
    source.append(done.run_id, 0, typical_events())
    running = start_run(source)
    fork = make_run(parent_run_id=running.run_id, thread_id=running.run_id)
    source.create_run(fork)

    with pytest.raises(TransferError, match=f"run {running.run_id} is still running in"):
        nf.copy_runs(source, target)
    with pytest.raises(TransferError, match="it is an ancestor of a run to copy"):
        nf.copy_runs(source, target, [fork.run_id])
    assert target.list_runs() == []

    report = nf.copy_runs(source, target, [fork.run_id, done.run_id], include_ancestors=False)
    assert set(report.copied) == {fork.run_id, done.run_id}
    assert report.runs[-1].status == "pending"  # a pending run is copied as it stands

    source.append(running.run_id, running.version, [NewEvent(EventType.RUN_INTERRUPTED)])
    report = nf.copy_runs(source, target)
    assert report.copied == (running.run_id,)
    assert set(report.skipped) == {fork.run_id, done.run_id}
    assert_same_run(source, target, running.run_id)


def test_an_unknown_run_is_refused_before_anything_is_written(
    make_store: Callable[[str], nf.Store],
) -> None:
    source, target = make_store("duckdb"), make_store("memory")
    run = make_flow(source, Calls()).run(progress=False)

    with pytest.raises(UnknownRunError, match="'nope'"):
        nf.copy_runs(source, target, [run.id, "nope"])

    assert target.list_runs() == [] and hashes(target) == set()


def test_a_value_missing_from_the_source_is_refused(
    make_store: Callable[[str], nf.Store],
) -> None:
    source, target = make_store("memory"), make_store("duckdb")
    run = make_flow(source, Calls()).run(progress=False)
    array = next(x.output for x in source.executions(run.id) if x.step == "array")
    assert array is not None
    source._delete([], [array.hash])

    with pytest.raises(TransferError, match=f"refers to value.*{array.hash}, missing from"):
        nf.copy_runs(source, target)

    assert target.list_runs() == [] and hashes(target) == set()


@pytest.mark.parametrize("step", ["tags", "frame", "array"])
def test_a_tampered_source_value_is_refused_before_anything_is_written(
    make_store: Callable[[str], nf.Store], tmp_path: Path, step: str
) -> None:
    path = tmp_path / "source.duckdb"
    with DuckDBStore(path) as writer:
        writer.compact_frame_bytes = 0  # the frame in a table of its own, as big ones are
        run = make_flow(writer, Calls()).run(progress=False)
        ref = run.ref(step)
        table = writer.table_name(ref)
    con = duckdb.connect(str(path))
    if step == "frame":  # a row of the frame's table changed behind nbflow's back
        assert table is not None
        con.execute(f"UPDATE {table} SET x = x + 100 WHERE x = 0")
    else:  # other bytes under the value's hash (a pickle: what would run on load)
        other = encode({"evil"} if step == "tags" else np.arange(3.0), step=step)
        con.execute("UPDATE blobs SET data = ? WHERE hash = ?", [other.data, ref.hash])
    con.close()
    target = make_store("memory")
    # (a frame's table is found changed as it is read; other bytes, once hashed again)
    says = "which cannot be read" if step == "frame" else "whose content hashes"
    refused = pytest.raises(TransferError, match=f"the value {ref.hash}, {says}")
    with DuckDBStore(path) as source, refused:
        nf.copy_runs(source, target)
    assert target.list_runs() == [] and hashes(target) == set()


def test_a_store_is_not_copied_into_itself(tmp_path: Path) -> None:
    path = tmp_path / "one.duckdb"
    store = nf.open_store(path)
    with pytest.raises(TransferError, match="the same store"):
        nf.copy_runs(store, store)
    with DuckDBStore(path, trust=False) as other, pytest.raises(TransferError, match="same store"):
        nf.copy_runs(str(path), other)  # two objects on one file
    store.close()


def test_an_ancestor_gone_from_the_source_is_reported_not_needed(
    make_store: Callable[[str], nf.Store],
) -> None:
    source, target = make_store("memory"), make_store("duckdb")
    history = make_history(source)
    source._delete([history.first.id], [])  # as gc does: reused values stay

    report = nf.copy_runs(source, target, [history.fork.id])

    assert report.copied == (history.fork.id,)
    assert report.missing == (history.first.id,)
    assert "are no longer in the source" in str(report)
    assert_same_run(source, target, history.fork.id)


def test_copy_never_decodes_a_value(
    make_store: Callable[[str], nf.Store], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "source.duckdb"
    with DuckDBStore(path) as writer:
        history = make_history(writer)
    source = DuckDBStore(path, trust=False)  # a store whose pickles must not be loaded
    middle, target = make_store("memory"), make_store("duckdb")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a value was decoded")

    for module, name in [
        (pickle, "loads"),
        (pickle, "load"),
        (cloudpickle, "loads"),
        (nbflow.values, "decode"),
        (nbflow.values.codecs, "decode"),
    ]:
        monkeypatch.setattr(module, name, refuse)
    try:
        nf.copy_runs(source, middle)
        nf.copy_runs(middle, target)
        with pytest.raises(AssertionError, match="decoded"):  # the guard works
            Run(middle, history.first.id)["frame"]
    finally:
        monkeypatch.undo()
        source.close()

    # Copied out of a store opened with trust=False, through a trusted one: still marked.
    with pytest.raises(UntrustedImportError, match=f"copied from {re.escape(str(path))}"):
        Run(target, history.first.id)["tags"]
    for run_id in history.ids:
        nf.mark_trusted(target, run_id)
    with DuckDBStore(path) as trusted:
        for run_id in history.ids:
            assert_same_run(trusted, target, run_id)
    assert Run(target, history.first.id)["tags"] == {("total", 20), ("size", 5)}


# -- the command line ---------------------------------------------------------------------------


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), env={"NBFLOW_STORE": None})


def one_line_error(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nbflow: error: ") and "Traceback" not in result.stderr
    return lines[0]


def test_the_copy_command_copies_and_reports(tmp_path: Path) -> None:
    a, b, c = (str(tmp_path / f"{name}.duckdb") for name in "abc")
    history = make_history(nf.open_store(a))
    first, fork, fork2 = history.first.id, history.fork.id, history.fork2.id

    result = invoke("copy", "--from", a, "--to", b, fork2)

    assert result.exit_code == 0, result.stderr
    lines = result.stdout.splitlines()
    assert [line.split()[:3] for line in lines[:3]] == [
        ["copied", "run", first],
        ["copied", "run", fork],
        ["copied", "run", fork2],
    ]
    assert lines[0].endswith(", an ancestor)") and not lines[2].endswith(", an ancestor)")
    assert re.fullmatch(
        rf"copied 3 run\(s\) from {re.escape(a)} to {re.escape(b)}, skipped 0 already there; "
        r"wrote \d+ value\(s\), [\d.]+ (B|KB)",
        lines[3],
    )
    assert len(lines) == 4
    assert {r.run_id for r in nf.open_store(b).list_runs()} == {first, fork, fork2}

    again = invoke("copy", "--from", a, "--to", b, fork2)
    assert again.exit_code == 0, again.stderr
    assert [line.split()[0] for line in again.stdout.splitlines()[:3]] == ["skipped"] * 3
    assert "already in the target" in again.stdout
    assert again.stdout.splitlines()[-1].startswith("copied 0 run(s)")

    every = invoke("copy", "--from", a, "--to", b)
    assert every.exit_code == 0, every.stderr
    assert {r.run_id for r in nf.open_store(b).list_runs()} == set(history.ids)

    alone = invoke("copy", "--no-ancestors", "--from", a, "--to", c, fork2)
    assert alone.exit_code == 0, alone.stderr
    assert [r.run_id for r in nf.open_store(c).list_runs()] == [fork2]


def test_the_copy_command_errors_exit_2_with_one_line(tmp_path: Path) -> None:
    a, b = str(tmp_path / "a.duckdb"), str(tmp_path / "b.duckdb")
    source = nf.open_store(a)
    run = make_run()
    source.create_run(run)
    source.append(run.run_id, 0, typical_events())

    cases = [
        (["copy", "--from", a, "--to", b, "nope"], "no run with id 'nope'"),
        (["copy", "--from", a], "Missing option '--to'"),
        (["copy", "--to", b], "Missing option '--from'"),
        (
            ["copy", "--from", str(tmp_path / "none.duckdb"), "--to", b],
            "give one with --from PATH",
        ),
        (["copy", "--from", a, "--to", a], "the same store"),
    ]
    for args, message in cases:
        result = invoke(*args)
        assert result.exit_code == 2, (args, result.stderr)
        assert message in one_line_error(result), args
    assert not Path(b).exists()  # no empty store left behind by a failed copy

    target = nf.open_store(b)
    target.create_run(dataclasses.replace(run, params={"n": 99}))
    result = invoke("copy", "--from", a, "--to", b)
    assert result.exit_code == 2
    assert f"run {run.run_id} already exists" in one_line_error(result)

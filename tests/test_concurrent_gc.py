"""gc beside other users of one DuckDB file: nothing committed is ever lost.

gc gives space back by copying the file and renaming the copy over it; a process that
had the old file open would go on writing into a file nobody reads again. These tests
start real processes writing runs while gc loops, hold the file from another process
while gc wants it alone, and check what each store object of one process remembers
after another one deleted values.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import textwrap
import time
import warnings
from pathlib import Path

import pytest

import nbflow as nf
from nbflow.errors import StoreBusyError, StoreMaintenanceWarning
from nbflow.store.duckdb.file_guard import LOCK_SUFFIX
from nbflow.store.duckdb.store import DuckDBStore
from nbflow.store.records import RunStatus, StepStatus
from nbflow.values.codecs import encode

STEPS = 30

WORKER = textwrap.dedent(
    f"""
    import json, os, sys
    import nbflow as nf

    flow = nf.Flow("worker", store=os.environ["STORE"])
    previous = None
    for i in range({STEPS}):
        if previous is None:
            def step(tag: str = ""):
                return [tag] * 20
        else:
            exec(f"def step({{previous}}):\\n    return [x + '.' for x in {{previous}}]")
        flow.step(name=f"s{{i}}", cache=False)(step)
        previous = f"s{{i}}"
    run = flow.run(tag=sys.argv[1], background=True, progress=False)
    run.wait()
    print(json.dumps({{"run": run.id, "status": str(run.status)}}), flush=True)
    """
)

GC_LOOP = textwrap.dedent(
    """
    import json, os
    from pathlib import Path
    import nbflow as nf

    flow = nf.Flow("junk", store=os.environ["STORE"])

    @flow.step(cache=False)
    def filler(i: int = 0):
        return bytes(100_000) + str(i).encode()  # something for each gc to delete

    stop, loops, compacted = Path(os.environ["STOP"]), 0, 0
    while not stop.exists() or loops == 0:
        flow.run(i=loops, progress=False)
        report = flow.store.gc(keep_last=1, flow="junk")
        loops += 1
        compacted += "compaction_skipped" not in report.details
    print(json.dumps({"loops": loops, "compacted": compacted}), flush=True)
    """
)


def _start(code: str, tmp_path: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, STORE=str(tmp_path / "store.duckdb"), STOP=str(tmp_path / "stop"))
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finish(proc: subprocess.Popen[str]) -> dict:
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    # No raw DuckDB error, no damaged file, no traceback of any kind.
    assert "Traceback" not in err and "Error" not in err, err
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_gc_looping_beside_three_writing_processes_loses_no_completed_run(tmp_path: Path):
    reported: list[str] = []
    for round_ in range(3):
        (tmp_path / "stop").unlink(missing_ok=True)
        gc = _start(GC_LOOP, tmp_path)
        workers = [_start(WORKER, tmp_path, f"r{round_}w{w}") for w in range(3)]
        results = [_finish(w) for w in workers]
        (tmp_path / "stop").touch()
        loops = _finish(gc)
        assert loops["loops"] >= 1 and loops["compacted"] >= 1, loops
        assert all(r["status"] == "completed" for r in results), results
        reported += [r["run"] for r in results]

    store = DuckDBStore(tmp_path / "store.duckdb")
    try:
        assert store.check() == []
        for run_id in reported:
            run = store.get_run(run_id)
            assert run.status is RunStatus.COMPLETED, run
            done = [x for x in store.executions(run_id) if x.status is StepStatus.COMPLETED]
            assert len(done) == STEPS
            seqs = [e.seq for e in store.read_events(run_id)]
            assert seqs == list(range(1, run.version + 1))
        last = nf.get_run(reported[-1], store=store)
        assert last[f"s{STEPS - 1}"] == ["r2w2" + "." * (STEPS - 1)] * 20
    finally:
        store.close()


# A process about to open the store: it holds the file shared (no gc may replace it) and
# is waiting for its turn on it (the one holding the file is the test's own store).
HOLD_SHARED = textwrap.dedent(
    """
    import fcntl, sys
    fd = open(sys.argv[1] + ".nbflow-lock", "a")
    fcntl.flock(fd, fcntl.LOCK_SH)
    print("holding", flush=True)
    sys.stdin.read()  # until the test closes our stdin
    """
)


def _holder(code: str, path: Path) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "holding", proc.stderr.read()  # type: ignore[union-attr]
    return proc


def _let_go(proc: subprocess.Popen[str]) -> None:
    proc.communicate("", timeout=60)
    assert proc.returncode == 0


def _two_runs(path: Path) -> tuple[DuckDBStore, nf.Flow]:
    store = DuckDBStore(path, busy_timeout=0.5)
    flow = nf.Flow("held", store=store)

    @flow.step(cache=False)
    def value(i: int = 0):
        return bytes(50_000) + bytes([i])

    flow.run(i=1, progress=False)
    flow.run(i=2, progress=False)
    return store, flow


def test_gc_does_not_compact_a_file_another_process_uses_and_says_so(tmp_path: Path):
    path = tmp_path / "store.duckdb"
    store, flow = _two_runs(path)
    inode = path.stat().st_ino
    holder = _holder(HOLD_SHARED, path.resolve())
    try:
        report = store.gc(keep_last=1)
    finally:
        _let_go(holder)
    assert len(report.runs) == 1 and len(report.blobs) == 1  # deleted all the same
    assert "another process kept the store open" in report.details["compaction_skipped"]
    assert "the file was not compacted" in str(report)
    assert path.stat().st_ino == inode  # not replaced
    (kept,) = store.list_runs()
    assert nf.get_run(kept.run_id, store=store)["value"] == bytes(50_000) + bytes([2])
    assert store.check() == []
    # Once nobody else uses the file, the next gc compacts it.
    flow.run(i=3, progress=False)
    report = store.gc(keep_last=1)
    assert "compaction_skipped" not in report.details
    assert path.stat().st_ino != inode
    store.close()


HOLD_EXCLUSIVE = textwrap.dedent(
    """
    import fcntl, sys
    fd = open(sys.argv[1] + ".nbflow-lock", "a")
    fcntl.flock(fd, fcntl.LOCK_EX)
    print("holding", flush=True)
    sys.stdin.read()
    """
)


def test_a_store_waits_while_another_process_compacts_and_says_why(tmp_path: Path):
    path = tmp_path / "store.duckdb"
    DuckDBStore(path).close()
    holder = _holder(HOLD_EXCLUSIVE, path.resolve())
    try:
        began = time.monotonic()
        with pytest.raises(StoreBusyError, match="being compacted by gc"):
            DuckDBStore(path, busy_timeout=0.3)
        assert time.monotonic() - began >= 0.3
    finally:
        _let_go(holder)
    DuckDBStore(path, busy_timeout=5).close()  # free again


def test_gc_takes_the_file_from_other_stores_of_this_process(tmp_path: Path):
    path = tmp_path / "store.duckdb"
    store, _ = _two_runs(path)
    other = DuckDBStore(path, idle_release=None)  # connected, and never idle-released
    assert other.connected
    inode = path.stat().st_ino
    report = store.gc(keep_last=1)
    assert "compaction_skipped" not in report.details
    assert path.stat().st_ino != inode
    # The other store writes into the new file, where a third store reads it.
    moved_on = nf.Flow("held", store=other)

    @moved_on.step(cache=False)
    def value(i: int = 0):
        return bytes([i])

    run = moved_on.run(i=9, progress=False)
    other.close()
    store.close()
    third = DuckDBStore(path)
    assert nf.get_run(run.id, store=third)["value"] == bytes([9])
    assert third.check() == []
    third.close()


def test_a_store_object_writes_again_a_value_another_one_deleted(tmp_path: Path):
    path = tmp_path / "store.duckdb"
    first = DuckDBStore(path, idle_release=None)
    second = DuckDBStore(path, idle_release=None)
    encoded = encode(bytes(20_000), step="value")
    ref = first.put_value(encoded)
    assert first.has_blob(ref.hash)  # first remembers it is stored
    report = second.gc()  # nothing references it: deleted
    assert report.blobs == (ref.hash,)
    assert not first.has_blob(ref.hash)
    first.put_value(encoded)
    assert second.has_blob(ref.hash)
    assert second.load_value(ref) == bytes(20_000)
    first.close()
    second.close()


def test_the_copy_a_killed_gc_left_is_removed_at_the_next_open(tmp_path: Path):
    path = tmp_path / "store.duckdb"
    DuckDBStore(path).close()
    leftover = tmp_path / "store.duckdb.compact"
    leftover.write_bytes(b"x" * 4096)
    (tmp_path / "store.duckdb.compact.wal").write_bytes(b"y")
    with pytest.warns(StoreMaintenanceWarning, match=r"store\.duckdb\.compact \(4,096 bytes\)"):
        store = DuckDBStore(path)
    assert not leftover.exists() and not (tmp_path / "store.duckdb.compact.wal").exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.release_connection()
        store.list_runs()  # reopening finds nothing left to remove: no warning
    store.close()


def test_a_killed_gc_mid_compaction_leaves_a_store_that_opens_clean(tmp_path: Path):
    """The compaction copy is written under the exclusive lock; killed there, the
    process takes its lock with it, and the next user removes the copy."""
    path = tmp_path / "store.duckdb"
    store, _ = _two_runs(path)
    store.close()
    code = textwrap.dedent(
        f"""
        import os, signal
        import nbflow.store.duckdb.compaction as c
        from nbflow.store.duckdb.store import DuckDBStore
        real = c._fsync
        def die(p):
            if str(p).endswith(".compact"):
                os.kill(os.getpid(), signal.SIGKILL)
            real(p)
        c._fsync = die
        DuckDBStore({str(path)!r}).gc(keep_last=1)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    assert (tmp_path / "store.duckdb.compact").exists()
    with pytest.warns(StoreMaintenanceWarning):
        store = DuckDBStore(path, busy_timeout=5)
    assert not (tmp_path / "store.duckdb.compact").exists()
    assert store.check() == []
    assert len(store.list_runs()) == 1  # the deletion committed before the copy
    store.close()


def test_the_lock_file_is_shared_while_a_store_is_open(tmp_path: Path):
    path = tmp_path / "store.duckdb"
    store = DuckDBStore(path, idle_release=None)
    lock = tmp_path / ("store.duckdb" + LOCK_SUFFIX)
    with open(lock) as fh:
        with pytest.raises(BlockingIOError):
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)  # readers share it
        fcntl.flock(fh, fcntl.LOCK_UN)
        store.release_connection()
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)  # given back with the file
        fcntl.flock(fh, fcntl.LOCK_UN)
    store.close()


class _CopyThatMisses:
    """A DuckDB connection whose ``COPY FROM DATABASE`` loses the ``kept`` flow's run
    (as a copy made from a state that lacks a commit would), or whose file gets one more
    run as it closes (as a commit reaching the file beside the copy would)."""

    def __init__(self, con, *, lose: bool):
        self._con, self._lose = con, lose

    def execute(self, query, params=None):
        result = self._con.execute(query, params)
        if self._lose and query.startswith("COPY FROM DATABASE"):
            self._con.execute("DELETE FROM nbflow_compact.run_records WHERE flow = 'kept'")
        return result

    def close(self):
        if not self._lose:
            self._con.execute(
                "INSERT INTO run_records SELECT * REPLACE ('late-' || run_id AS run_id) "
                "FROM run_records WHERE flow = 'kept'"
            )
        self._con.close()

    def __getattr__(self, name):
        return getattr(self._con, name)


@pytest.mark.parametrize(
    ("lose", "reason"),
    [(True, "the copy did not hold every row"), (False, "the store changed on disk")],
)
def test_gc_never_swaps_in_a_copy_that_lacks_a_committed_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lose: bool, reason: str
):
    path = tmp_path / "store.duckdb"
    store, held = _two_runs(path)
    kept_flow = nf.Flow("kept", store=store)

    @kept_flow.step(cache=False)
    def one():
        return 1

    kept = kept_flow.run(progress=False)
    inode = path.stat().st_ino
    connect = store._connect
    monkeypatch.setattr(store, "_connect", lambda: _CopyThatMisses(connect(), lose=lose))
    report = store.gc(keep_last=1, flow="held")
    monkeypatch.undo()
    assert len(report.runs) == 1  # the deletion is committed all the same
    assert reason in report.details["compaction_skipped"], report.details
    assert path.stat().st_ino == inode  # the store was not replaced
    assert store.get_run(kept.id).status is RunStatus.COMPLETED
    late = [r.run_id for r in store.list_runs(flow="kept") if r.run_id.startswith("late-")]
    assert late == ([] if lose else ["late-" + kept.id])
    assert not any(tmp_path.glob("store.duckdb.compact*"))
    # Once the copy is whole, the next gc compacts.
    held.run(i=3, progress=False)
    assert "compaction_skipped" not in store.gc(keep_last=1, flow="held").details
    assert path.stat().st_ino != inode
    assert store.get_run(kept.id).status is RunStatus.COMPLETED
    store.close()


PROBE = textwrap.dedent(
    """
    import sys, duckdb
    try:
        duckdb.connect(sys.argv[1]).close()
    except duckdb.IOException as exc:
        print("refused" if "lock" in str(exc).lower() else f"other: {exc}")
    else:
        print("opened")
    """
)


def test_opening_a_second_store_object_keeps_other_processes_out_of_the_file(tmp_path: Path):
    """DuckDB's lock on its file is a POSIX lock, which the process loses when it closes
    any descriptor of the file: a second store object reading the file's header would
    let another process open it beside the first (two writers of one file)."""
    path = tmp_path / "store.duckdb"
    first = DuckDBStore(path, idle_release=3600)  # holds the file throughout
    second = DuckDBStore(path, idle_release=3600)
    probe = subprocess.run(
        [sys.executable, "-c", PROBE, str(path)], capture_output=True, text=True, timeout=120
    )
    assert probe.stdout.strip() == "refused", probe.stdout + probe.stderr
    second.close()
    first.close()

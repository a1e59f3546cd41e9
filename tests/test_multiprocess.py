"""Several processes on one DuckDB file: waiting for it, giving it back, dead runners.

DuckDB lets one process at a time open a file. These tests start real processes: one
holding the file, one killed with SIGKILL in the middle of a step, four writing runs at
once. No raw DuckDB lock error may reach the user.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from waiting import GENEROUS, wait_for

import nbflow as nf
from nbflow.errors import RunLockedError, StoreBusyError
from nbflow.store.duckdb.connection import (
    ask_for_file,
    connect_waiting,
    someone_waits,
    stop_asking,
    waiter_ahead,
)
from nbflow.store.duckdb.store import DuckDBStore
from nbflow.store.records import EventType, RunStatus

FLOW_MODULE = textwrap.dedent(
    """
    import os, sys, time
    from pathlib import Path
    import nbflow as nf

    MARKS = Path(os.environ["MARKS"])
    flow = nf.Flow("multi", store=os.environ["STORE"])

    def mark(name):
        with open(MARKS / f"{name}.{os.getpid()}", "a") as fh:
            fh.write("x")

    @flow.step
    def first(n: int = 3):
        mark("first")
        return list(range(n))

    @flow.step
    def second(first):
        mark("second")
        if os.environ.get("HANG") == "second":
            (MARKS / "hanging").write_text(str(os.getpid()))
            time.sleep(600)
        return [x * 2 for x in first]

    @flow.step
    def third(second):
        mark("third")
        return sum(second)
    """
)


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "marks").mkdir()
    (tmp_path / "multi_flow.py").write_text(FLOW_MODULE)
    yield tmp_path


def _env(workdir: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        STORE=str(workdir / "store.duckdb"),
        MARKS=str(workdir / "marks"),
        PYTHONPATH=str(workdir) + os.pathsep + env.get("PYTHONPATH", ""),
        **extra,
    )
    return env


def _python(code: str, workdir: Path, **extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=_env(workdir, **extra),
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(path: Path) -> None:
    wait_for(path.exists, f"{path} written")


def _marks(workdir: Path, step: str) -> int:
    return sum(len(p.read_text()) for p in (workdir / "marks").glob(f"{step}.*"))


def _hold_file(path: Path, workdir: Path, seconds: float) -> subprocess.Popen[str]:
    """A process that holds the DuckDB file open for ``seconds`` (then lets go)."""
    ready = workdir / "holding"
    proc = _python(
        f"""
        import time, duckdb
        from pathlib import Path
        con = duckdb.connect({str(path)!r})
        Path({str(ready)!r}).write_text("1")
        time.sleep({seconds})
        con.close()
        """,
        workdir,
    )
    _wait_for(ready)
    return proc


def test_a_busy_file_times_out_naming_the_holder(workdir: Path) -> None:
    path = workdir / "store.duckdb"
    DuckDBStore(path).close()
    holder = _hold_file(path, workdir, 30)
    try:
        with pytest.raises(StoreBusyError) as info:
            DuckDBStore(path, busy_timeout=0.3)
        assert info.value.pid == holder.pid
        assert f"process {holder.pid}" in str(info.value)
        assert str(path) in str(info.value)
        assert "NBFLOW_BUSY_TIMEOUT" in str(info.value)
    finally:
        holder.kill()
        holder.wait()


def test_a_store_waits_for_a_busy_file(workdir: Path) -> None:
    path = workdir / "store.duckdb"
    DuckDBStore(path).close()
    holder = _hold_file(path, workdir, 1.0)
    try:
        with DuckDBStore(path, busy_timeout=60) as store:  # waits ~1 s, then opens
            assert store.list_runs() == []
    finally:
        holder.wait()
    assert holder.returncode == 0


def test_a_busy_timeout_from_the_environment(
    workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = workdir / "store.duckdb"
    DuckDBStore(path).close()
    monkeypatch.setenv("NBFLOW_BUSY_TIMEOUT", "0.2")
    holder = _hold_file(path, workdir, 30)
    try:
        with pytest.raises(StoreBusyError, match="0.2 s"):
            DuckDBStore(path)
    finally:
        holder.kill()
        holder.wait()


def test_a_bad_busy_timeout_is_named(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBFLOW_BUSY_TIMEOUT", "soon")
    with pytest.raises(nf.errors.ParameterError, match="NBFLOW_BUSY_TIMEOUT='soon'"):
        DuckDBStore(workdir / "store.duckdb")


def test_an_idle_store_gives_the_file_back(workdir: Path) -> None:
    path = workdir / "store.duckdb"
    with DuckDBStore(path, idle_release=0.2) as store:
        store.list_runs()
        assert store.connected
        wait_for(lambda: not store.connected, "the idle store closing its connection")
        # Another process can now open the file at once, and write to it.
        other = _python(
            f"""
            import nbflow as nf
            flow = nf.Flow("other", store={str(path)!r})
            @flow.step
            def one():
                return 1
            flow.run(progress=False)
            """,
            workdir,
            NBFLOW_BUSY_TIMEOUT="0",
        )
        _, err = other.communicate(timeout=120)
        assert other.returncode == 0, err
        # ... and this store, used again, sees what it wrote.
        assert [r.flow for r in store.list_runs()] == ["other"]


def test_a_killed_runner_leaves_an_interrupted_run_that_resumes(workdir: Path) -> None:
    runner = _python(
        """
        import multi_flow
        multi_flow.flow.run(progress=False)
        """,
        workdir,
        HANG="second",
    )
    try:
        _wait_for(workdir / "marks" / "hanging")  # `second` runs: its start is committed
        with DuckDBStore(workdir / "store.duckdb") as store:
            (running,) = store.list_runs()
            # Alive: still running, and nobody else may advance it.
            assert running.status is RunStatus.RUNNING
            with pytest.raises(RunLockedError, match=f"pid {runner.pid}"):
                store.claim(running.run_id)
            store.release_connection()
        os.kill(runner.pid, signal.SIGKILL)
        runner.wait()
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait()

    sys.path.insert(0, str(workdir))
    os.environ["MARKS"] = str(workdir / "marks")
    os.environ["STORE"] = str(workdir / "store.duckdb")
    try:
        import multi_flow  # type: ignore[import-not-found]

        run = nf.get_run(running.run_id, store=workdir / "store.duckdb")
        assert run.status == "interrupted"
        assert f"pid {runner.pid}" in (run.error or "")
        assert run.events["type"].iloc[-1] == EventType.RUN_INTERRUPTED.value
        assert _marks(workdir, "first") == 1
        assert run._flow_for("resume") is multi_flow.flow
        resumed = run.resume(progress=False)
        assert resumed.status == "completed"
        assert resumed["third"] == 6
        # "first" was committed before the kill: it did not run again.
        assert _marks(workdir, "first") == 1
        assert _marks(workdir, "second") == 2
    finally:
        sys.path.remove(str(workdir))
        sys.modules.pop("multi_flow", None)
        for name in ("MARKS", "STORE"):
            os.environ.pop(name, None)


WORKER = """
import os, sys
import multi_flow
runs = []
for i in range(int(os.environ["RUNS"])):
    run = multi_flow.flow.run(n=int(os.environ["WORKER"]) * 100 + i, progress=False)
    runs.append(run.id)
print(" ".join(runs))
"""


@pytest.mark.slow
def test_four_processes_write_runs_to_one_file(workdir: Path) -> None:
    workers = [
        _python(WORKER, workdir, WORKER=str(w), RUNS="25", NBFLOW_BUSY_TIMEOUT="300")
        for w in range(4)
    ]
    outputs = [w.communicate(timeout=900) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err
        assert "IOException" not in err and "Conflicting lock" not in err
    run_ids = [r for out, _ in outputs for r in out.split()]
    assert len(run_ids) == len(set(run_ids)) == 100
    with DuckDBStore(workdir / "store.duckdb") as store:
        runs = store.list_runs()
        assert sorted(r.run_id for r in runs) == sorted(run_ids)
        assert {r.status for r in runs} == {RunStatus.COMPLETED}
        events = store.events_frame()
        for run in runs:
            seqs = events.loc[events["run_id"] == run.run_id, "seq"].tolist()
            assert seqs == list(range(1, run.version + 1))
            assert store.load_value(store.executions(run.run_id)[-1].output) == sum(
                2 * x for x in range(run.params["n"])
            )
        assert store.sql("SELECT count(*) AS n FROM leases")["n"][0] == 0


def test_a_process_exits_cleanly_with_an_idle_store(workdir: Path) -> None:
    """The thread giving idle files back keeps no store alive at exit (DuckDB reports
    objects still alive at interpreter exit as leaks on stderr)."""
    script = _python(
        """
        import threading
        import nbflow as nf
        from nbflow.store.duckdb.store import DuckDBStore

        # Seen from the outside: the closer thread asks each store whether it is idle.
        looked = threading.Event()
        ask = DuckDBStore.release_if_idle

        def observed(self):
            looked.set()
            return ask(self)

        DuckDBStore.release_if_idle = observed
        flow = nf.Flow("exit", store="exit.duckdb")
        @flow.step
        def one():
            return 1
        flow.run(progress=False)
        looked.clear()
        assert looked.wait(60), "the closer thread never looked at the store"
        """,
        workdir,
    )
    _, err = script.communicate(timeout=120)
    assert script.returncode == 0, err
    assert "leaked" not in err, err


def test_a_store_in_use_gives_the_file_to_a_process_that_asks(workdir: Path) -> None:
    """A run of many quick steps does not keep a reader elsewhere waiting until it ends."""
    path = workdir / "store.duckdb"
    started, read = workdir / "started", workdir / "read"
    # Each step works 50 ms (a commit every 50 ms: never idle long enough to give the file
    # back on its own) until the reader has read: the run lasts 20 s at least unless the
    # writer hands the file over when asked, and then it cannot end before the reader reads.
    writer = _python(
        f"""
        import time
        from pathlib import Path
        import nbflow as nf
        READ = Path({str(read)!r})
        flow = nf.Flow("long", store={str(path)!r})
        @flow.step
        def s0():
            Path({str(started)!r}).write_text("1")
            return 0
        for i in range(1, 400):
            exec(
                f"def s{{i}}(s{{i - 1}}):\\n"
                "    if not READ.exists():\\n"
                "        time.sleep(0.05)\\n"
                f"    return s{{i - 1}} + 1"
            )
            flow.step(globals()[f"s{{i}}"])
        run = flow.run(progress=False)
        print(run.status, run["s399"])
        """,
        workdir,
    )
    try:
        _wait_for(started)
        with DuckDBStore(path, busy_timeout=GENEROUS) as reader:
            (run,) = reader.list_runs()
            steps = len(reader.executions(run.run_id))
        read.write_text("1")
        # It read while the run ran: the writer gave the file over between two steps.
        assert run.status.value == "running" and 0 < steps < 400, (run.status, steps)
        out, err = writer.communicate(timeout=300)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == 0, err
    assert out.split() == ["completed", "399"]
    # The writer asked for the file back while the reader had it, and took its ask back.
    assert not list(workdir.glob("store.duckdb.nbflow-wait*"))


def test_asking_for_the_file_marks_it_until_taken_back(workdir: Path) -> None:
    path = workdir / "store.duckdb"
    with DuckDBStore(path, idle_release=60) as store:
        store.list_runs()
        assert store.connected and not someone_waits(store.uri)
        store.release_if_idle()
        assert store.connected  # not idle, nobody asked: kept
        assert ask_for_file(store.uri)
        assert someone_waits(store.uri)
        store.release_if_idle()
        assert not store.connected  # asked for: given back though not idle
        stop_asking(store.uri)
        assert not someone_waits(store.uri)
        assert not list(workdir.glob("store.duckdb.nbflow-wait*"))
        assert store.list_runs() == []  # used again: opened again


def _wait_marker(path: Path, pid: int, began: float) -> Path:
    """A marker as another waiting process ``pid`` leaves it (see ask_for_file)."""
    marker = Path(f"{path}.nbflow-wait.{pid}")
    marker.write_text(repr(began))
    return marker


def test_waiters_take_the_file_in_the_order_they_began_to_wait(workdir: Path) -> None:
    path = workdir / "store.duckdb"
    uri = str(path)
    assert not waiter_ahead(uri)  # this process does not wait: nobody is ahead of it
    assert ask_for_file(uri)
    mine = float(Path(f"{uri}.nbflow-wait.{os.getpid()}").read_text())
    later = _wait_marker(path, 999_999_1, mine + 5)
    assert not waiter_ahead(uri)  # one that came later waits behind this one
    earlier = _wait_marker(path, 999_999_2, mine - 5)
    assert waiter_ahead(uri)  # one that came first takes the file first
    # A waiter that stopped touching its marker (killed) no longer holds its place.
    stale = time.time() - 10
    os.utime(earlier, (stale, stale))
    assert not waiter_ahead(uri)
    earlier.write_text("")  # a marker being written is not a place either
    assert not waiter_ahead(uri)
    stop_asking(uri)
    assert not Path(f"{uri}.nbflow-wait.{os.getpid()}").exists()
    assert later.exists()  # another process's marker is its own to remove


def test_a_newcomer_waits_behind_those_already_waiting(workdir: Path) -> None:
    path = workdir / "store.duckdb"
    uri = str(path)
    ahead = _wait_marker(path, 999_999_3, time.time() - 1)
    Path(f"{uri}.nbflow-wait").touch()  # the shared marker: someone waits
    tries: list[int] = []

    def connect() -> duckdb.DuckDBPyConnection:
        tries.append(1)
        return duckdb.connect(uri)

    # The file is free, but a process that began to wait earlier goes first: this one
    # does not even try until that one stops waiting (here: its marker goes away).
    done: list[duckdb.DuckDBPyConnection] = []
    thread = threading.Thread(target=lambda: done.append(connect_waiting(connect, uri, GENEROUS)))
    thread.start()
    try:
        _wait_for(Path(f"{uri}.nbflow-wait.{os.getpid()}"))
        assert not tries and not done
        ahead.unlink()
        thread.join(GENEROUS)
        assert done and len(tries) == 1
    finally:
        thread.join(GENEROUS)
        for con in done:
            con.close()
    assert not list(workdir.glob("store.duckdb.nbflow-wait*"))


# -- who holds the file: nbflow's flock, not DuckDB's POSIX lock alone ----------------------

HOLDER = """
import fcntl, os, sys
fd = os.open(sys.argv[1] + ".nbflow-hold", os.O_RDWR | os.O_CREAT, 0o666)
fcntl.flock(fd, fcntl.LOCK_EX)
os.ftruncate(fd, 0)
os.pwrite(fd, str(os.getpid()).encode(), 0)
print("held", flush=True)
sys.stdin.read()  # until the test closes our stdin
"""


def test_the_process_holding_the_file_keeps_others_out_without_duckdbs_lock(
    tmp_path: Path,
) -> None:
    """DuckDB's own lock is a POSIX lock, which a process drops when it closes any
    descriptor of the file; with four processes taking turns, two of them could have the
    file open at once and commits were lost. The holder's flock decides instead: here
    nobody has the DuckDB file open at all, and the store still waits for the holder."""
    path = str(tmp_path / "store.duckdb")
    DuckDBStore(path).close()
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, path],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StoreBusyError, match=f"process {holder.pid}") as info:
            DuckDBStore(path, busy_timeout=0.3)
        assert info.value.pid == holder.pid
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=GENEROUS)
    with DuckDBStore(path, busy_timeout=GENEROUS) as store:  # let go: the file is free
        assert store.list_runs() == []


TRY_HOLD = """
import fcntl, os, sys
fd = os.open(sys.argv[1] + ".nbflow-hold", os.O_RDWR | os.O_CREAT, 0o666)
try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print("free")
except BlockingIOError:
    print("held")
"""


def test_a_store_holds_the_file_from_its_open_to_its_close(tmp_path: Path) -> None:
    path = str(tmp_path / "store.duckdb")

    def seen_from_outside() -> str:
        done = subprocess.run(
            [sys.executable, "-c", TRY_HOLD, path],
            capture_output=True,
            text=True,
            timeout=GENEROUS,
            check=True,
        )
        return done.stdout.strip()

    store = DuckDBStore(path, idle_release=3600)
    try:
        assert store.connected and seen_from_outside() == "held"
        # Reading the file through another descriptor (what drops a POSIX lock) changes
        # nothing: the flock belongs to the store's own open file.
        os.close(os.open(path, os.O_RDONLY))
        assert seen_from_outside() == "held"
        store.release_connection()
        assert seen_from_outside() == "free"
        store.list_runs()  # opens the file again: held again
        assert seen_from_outside() == "held"
    finally:
        store.close()
    assert seen_from_outside() == "free"

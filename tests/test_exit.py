"""A process using nbflow exits cleanly, whatever its threads are doing in DuckDB then.

Python stops daemon threads at shutdown where they stand; one inside DuckDB then aborts
the whole process (``FATAL: exception not rethrown``, status 134). nbflow closes its
stores from the main thread before that, and records the runs it leaves unfinished.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import nbflow as nf
from nbflow.store.duckdb.store import DuckDBStore
from nbflow.store.records import EventType, RunStatus


def _python(code: str, cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        cwd=cwd,
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )


CLOSE_ON_A_THREAD = """
    import sys, threading, time
    from nbflow.store import sql_guard
    from nbflow.store.duckdb.store import DuckDBStore

    # (The store locks DuckDB's settings but for its own: let this one through.)
    sql_guard.STORE_SETTINGS += ("checkpoint_threshold",)
    store = DuckDBStore("exit.duckdb", idle_release=None)
    con = store._con
    # A big uncheckpointed log, so that closing the connection takes a while.
    con.execute("SET checkpoint_threshold = '10GB'")
    con.execute("CREATE TABLE filler AS SELECT i, random() AS r FROM range(20000000) t(i)")
    threading.Thread(target=store.release_connection, daemon=True).start()
    time.sleep(float(sys.argv[1]))  # exit while the thread is (likely) inside DuckDB
"""


@pytest.mark.slow
@pytest.mark.parametrize("delay", ["0.0", "0.02", "0.05", "0.1"])
def test_a_connection_closing_on_a_daemon_thread_at_exit_does_not_abort(tmp_path, delay):
    done = _python(CLOSE_ON_A_THREAD, tmp_path, delay)
    assert done.returncode == 0, done.stderr
    assert "FATAL" not in done.stderr and "terminate" not in done.stderr
    store = DuckDBStore(tmp_path / "exit.duckdb")
    assert store.check() == []
    store.close()


def test_the_idle_closer_at_work_when_the_process_exits_does_not_abort(tmp_path):
    """The exit a script reaches just as its store's idle time runs out."""
    for idle in ("0", "0.001", "0.01"):
        done = _python(
            """
            import nbflow as nf
            from nbflow.store.duckdb.connection import IDLE_CLOSER
            flow = nf.Flow("exit", store="exit.duckdb")
            @flow.step
            def one():
                return list(range(1000))
            flow.run(progress=False)
            rounds = IDLE_CLOSER.checks
            while IDLE_CLOSER.checks < rounds + 2:  # the closer is at work
                pass
            """,
            tmp_path,
            NBFLOW_IDLE_RELEASE=idle,
        )
        assert done.returncode == 0, done.stderr
        assert "leaked" not in done.stderr, done.stderr


BACKGROUND_AT_EXIT = """
    import os, time
    from pathlib import Path
    import nbflow as nf

    flow = nf.Flow("left", store="exit.duckdb")

    @flow.step
    def first():
        return 1

    @flow.step
    def slow(first):
        if not os.environ.get("FAST"):
            Path("started").write_text("1")
            time.sleep(600)
        return first + 1

    if __name__ == "__main__":
        run = flow.run(background=True, progress=False)
        deadline = time.monotonic() + 120  # wait for the state, generously
        while not Path("started").exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        print(run.id, flush=True)
        # the script ends here, its background run still in the slow step
"""


def test_a_background_run_left_at_exit_is_recorded_interrupted_and_resumes(tmp_path, monkeypatch):
    (tmp_path / "left_flow.py").write_text(textwrap.dedent(BACKGROUND_AT_EXIT))
    done = subprocess.run(
        [sys.executable, "left_flow.py"], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    run_id = done.stdout.strip()
    store = DuckDBStore(tmp_path / "exit.duckdb")
    record = store._get_run(run_id)  # as stored: not reaped by this reader
    assert record.status is RunStatus.INTERRUPTED
    last = store.read_events(run_id)[-1]
    assert last.type is EventType.RUN_INTERRUPTED
    assert "exited before it finished" in last.payload["error"]
    assert store.lease(run_id) is None
    assert store.check() == []
    sys.path.insert(0, str(tmp_path))
    monkeypatch.chdir(tmp_path)  # the script's store path is relative to its folder
    try:
        os.environ["FAST"] = "1"
        import left_flow  # the script's flow, on this store

        left_flow.flow.store.close()
        flow = nf.Flow("left", store=store)
        flow.step(left_flow.first)
        flow.step(left_flow.slow)
        resumed = nf.get_run(run_id, store=store).resume(progress=False)
        assert resumed.status == "completed" and resumed["slow"] == 2
    finally:
        os.environ.pop("FAST", None)
        sys.path.remove(str(tmp_path))
        sys.modules.pop("left_flow", None)
    store.close()


STRESS_WRITER = """
    import json, os, sys
    import nbflow as nf

    flow = nf.Flow("stress", store=os.environ["STORE"])

    @flow.step(cache=False)
    def a(i: int = 0):
        return list(range(i, i + 50))

    @flow.step(cache=False)
    def b(a):
        return [x * 2 for x in a]

    @flow.step(cache=False)
    def c(a):
        return sum(a)

    @flow.step(cache=False)
    def d(b, c):
        return {"n": len(b), "total": c}

    ids = {}
    for i in range(int(sys.argv[2])):
        run = flow.run(i=int(sys.argv[1]) * 1000 + i, progress=False)
        ids[run.id] = run.version
    print(json.dumps(ids), flush=True)
"""


@pytest.mark.slow
def test_many_processes_writing_runs_to_one_file_all_exit_cleanly(tmp_path):
    processes, runs_each = 4, 8
    env = dict(os.environ, STORE=str(tmp_path / "stress.duckdb"))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(STRESS_WRITER), str(p), str(runs_each)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(processes)
    ]
    written: dict[str, int] = {}
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
        assert "FATAL" not in err and "Traceback" not in err, err
        written.update(json.loads(out))
    assert len(written) == processes * runs_each
    store = DuckDBStore(tmp_path / "stress.duckdb")
    for run_id, version in written.items():
        events = store.read_events(run_id)
        assert [e.seq for e in events] == list(range(1, version + 1))
        assert events[-1].type is EventType.RUN_COMPLETED
        assert sum(e.type is EventType.STEP_COMPLETED for e in events) == 4
    assert store.check() == []
    store.close()

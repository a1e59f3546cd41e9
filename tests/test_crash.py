"""Crash safety: a runner killed with SIGKILL at any instant loses nothing committed.

Each trial runs a flow in a fresh process on a fresh DuckDB file, in one of the three
durability modes, and kills it — at a random time, inside a step, while a large DataFrame
is being checkpointed, or around a commit (the background writer's, in the async mode).
Then, in this process: the store opens, ``store.check()`` finds nothing wrong, the run
reads as interrupted, and ``resume()`` completes it to outputs identical to an
uninterrupted run's, without executing again any step whose completion was committed.
In the exit mode a killed run has committed nothing of its steps, or everything.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

import nbflow as nf
from nbflow.store.duckdb.store import DuckDBStore
from nbflow.store.records import EventType, RunStatus

pytestmark = pytest.mark.slow

TRIALS = int(os.environ.get("NBFLOW_CRASH_TRIALS", "60"))
MODES = ("timer", "step", "frame", "commit")
DURABILITIES = ("async", "sync", "exit")

#: What each trial found before resuming: (mode, durability, status or "no run", steps
#: committed).
OUTCOMES: list[tuple[str, str, str, int]] = []

CRASH_FLOW = textwrap.dedent(
    '''
    import os
    import signal
    import time
    from pathlib import Path

    import numpy as np
    import pandas as pd

    import nbflow as nf

    ROWS = 400_000


    def mark(step):
        """Count each execution of a step in a file, and die inside it if told to."""
        with open(Path(os.environ["MARKS"]) / step, "a") as fh:
            fh.write("x")
        if os.environ.get("CRASH_MODE") == "step" and os.environ.get("CRASH_AT") == step:
            os.kill(os.getpid(), signal.SIGKILL)


    def make_flow(store):
        flow = nf.Flow("crash", store=store)

        @flow.step
        def load(rows: int = ROWS):
            mark("load")
            rng = np.random.default_rng(7)
            return pd.DataFrame(
                {
                    "a": rng.integers(0, 1000, rows),
                    "b": rng.random(rows),
                    "c": pd.Categorical(rng.choice(["x", "y", "z"], rows)),
                }
            )

        @flow.step
        def summary(load):
            mark("summary")
            time.sleep(0.02)
            sums = load.groupby("c", observed=True)["b"].sum()
            return {k: round(float(v), 6) for k, v in sums.items()}

        @flow.step
        def doubled(load):
            mark("doubled")
            return load.assign(b=load["b"] * 2)

        @flow.step
        def counts(doubled):
            mark("counts")
            return np.bincount(doubled["a"].to_numpy() % 97)

        @flow.step
        def final(summary, counts):
            mark("final")
            return {"summary": summary, "total": int(counts.sum())}

        return flow
    '''
)

CHILD = textwrap.dedent(
    """
    import os, random, signal, threading, time
    import crash_flow
    from nbflow.store.duckdb import values as duckdb_values
    from nbflow.store.duckdb import store as duckdb_store

    mode = os.environ["CRASH_MODE"]
    rng = random.Random(int(os.environ["CRASH_SEED"]))


    def die_in(seconds):
        timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGKILL))
        timer.daemon = True
        timer.start()


    def kill_on_call(owner, name, nth, within):
        # Die `within` seconds after the nth call begins: inside it, or just after.
        original = getattr(owner, name)
        calls = [0]

        def wrapper(*args, **kwargs):
            calls[0] += 1
            if calls[0] == nth:
                die_in(rng.uniform(0, within))
            return original(*args, **kwargs)

        setattr(owner, name, wrapper)


    if mode == "frame":
        kill_on_call(duckdb_values, "write_value_table", int(os.environ["CRASH_AT"]), 0.05)
    elif mode == "commit":
        kill_on_call(duckdb_store.DuckDBStore, "_write_events", int(os.environ["CRASH_AT"]), 0.004)
    if mode == "timer":
        # Timed from the run's start (once it is in the store), not the process's: on a
        # busy machine the imports and the planning alone may take longer than the window.
        # And as a fraction of how long a whole run takes here and now, measured by one
        # uninterrupted run first (on a scratch store): a fixed window would, on a loaded
        # machine, end before the first step's commit in every trial.
        from nbflow.engine import runner

        execute = runner.Runner._execute
        took = []

        def measured(self, *args, **kwargs):
            began = time.monotonic()
            try:
                return execute(self, *args, **kwargs)
            finally:
                took.append(time.monotonic() - began)

        runner.Runner._execute = measured
        marks = os.environ["MARKS"]
        os.environ["MARKS"] = os.environ["SCRATCH_MARKS"]
        scratch = crash_flow.make_flow(os.environ["STORE"] + ".scratch.duckdb")
        scratch.run(progress=False, durability=os.environ["DURABILITY"])
        scratch.store.close()
        os.environ["MARKS"] = marks

        def timed(self, *args, **kwargs):
            die_in(float(os.environ["CRASH_AT"]) * took[0])
            return execute(self, *args, **kwargs)

        runner.Runner._execute = timed
    flow = crash_flow.make_flow(os.environ["STORE"])
    flow.run(progress=False, durability=os.environ["DURABILITY"])
    print("finished")
    """
)


@pytest.fixture(scope="module")
def crash_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    folder = tmp_path_factory.mktemp("crash")
    (folder / "crash_flow.py").write_text(CRASH_FLOW)
    sys.path.insert(0, str(folder))
    try:
        yield folder
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("crash_flow", None)


def _outputs(store: DuckDBStore, run_id: str) -> dict[str, str]:
    """Each step's output content hash: equal hashes mean equal outputs."""
    return {
        x.step: x.output.hash
        for x in store.executions(run_id)
        if x.status.has_output and x.output is not None
    }


def _committed(store: DuckDBStore, run_id: str) -> set[str]:
    return {
        e.step
        for e in store.read_events(run_id)
        if e.type in (EventType.STEP_COMPLETED, EventType.STEP_CACHED) and e.step
    }


def _marks(folder: Path) -> Counter[str]:
    return Counter({p.name: len(p.read_text()) for p in folder.iterdir()})


@pytest.fixture(scope="module")
def reference(crash_dir: Path) -> dict[str, str]:
    """The outputs of an uninterrupted run."""
    import crash_flow  # type: ignore[import-not-found]

    marks = crash_dir / "reference-marks"
    marks.mkdir()
    os.environ["MARKS"] = str(marks)
    try:
        with DuckDBStore(crash_dir / "reference.duckdb") as store:
            run = crash_flow.make_flow(store).run(progress=False)
            assert run.status == "completed"
            return _outputs(store, run.id)
    finally:
        os.environ.pop("MARKS", None)


def _plan(trial: int) -> tuple[str, str, str]:
    """The kill of one trial: a mode, where in it, and the run's durability mode (seeded
    by the trial number; every pair of modes in turn)."""
    rng = random.Random(trial)
    mode = MODES[trial % len(MODES)]
    durability = DURABILITIES[(trial // len(MODES)) % len(DURABILITIES)]
    if mode == "timer":
        # A fraction of the run's duration (see CHILD): mostly mid-run, a few past its end.
        return mode, f"{rng.uniform(0.0, 1.1):.3f}", durability
    if mode == "step":
        return mode, rng.choice(["load", "summary", "doubled", "counts", "final"]), durability
    if mode == "frame":
        return mode, str(rng.choice([1, 2])), durability  # load's or doubled's table
    # The nth transaction of events: a sync run makes about 7, an async one fewer (its
    # writer joins steps), an exit one a single one.
    last = {"sync": 7, "async": 3, "exit": 1}[durability]
    return mode, str(rng.randint(1, last)), durability


@pytest.mark.parametrize("trial", range(TRIALS))
def test_a_killed_run_resumes_to_the_same_outputs(
    trial: int, crash_dir: Path, reference: dict[str, str], tmp_path: Path
) -> None:
    import crash_flow

    mode, at, durability = _plan(trial)
    path = tmp_path / "store.duckdb"
    marks = tmp_path / "marks"
    marks.mkdir()
    (tmp_path / "scratch-marks").mkdir()
    env = dict(
        os.environ,
        STORE=str(path),
        MARKS=str(marks),
        SCRATCH_MARKS=str(tmp_path / "scratch-marks"),
        CRASH_MODE=mode,
        CRASH_AT=at,
        CRASH_SEED=str(trial),
        DURABILITY=durability,
        PYTHONPATH=str(crash_dir) + os.pathsep + os.environ.get("PYTHONPATH", ""),
    )
    child = subprocess.run(
        [sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, timeout=300
    )
    killed = child.returncode == -signal.SIGKILL
    assert killed or (child.returncode == 0 and "finished" in child.stdout), child.stderr

    with DuckDBStore(path) as store:
        assert store.check() == [], f"{mode} at {at}, {durability}"
        runs = store.list_runs()
        if not runs:  # killed before the run was recorded: nothing to resume
            assert killed
            OUTCOMES.append((mode, durability, "no run", 0))
            return
        (record,) = runs
        if not killed:
            assert record.status is RunStatus.COMPLETED
            assert _outputs(store, record.run_id) == reference
            OUTCOMES.append((mode, durability, "not killed", 5))
            return
        assert record.status in (RunStatus.INTERRUPTED, RunStatus.PENDING, RunStatus.COMPLETED)
        if record.status is RunStatus.INTERRUPTED:
            assert "is gone" in (record.error or "")
        committed = _committed(store, record.run_id)
        before = _marks(marks)
        OUTCOMES.append((mode, durability, record.status.value, len(committed)))
        if durability == "exit":  # one commit: all of the steps or none
            assert len(committed) in (0, 5), committed

        os.environ["MARKS"] = str(marks)
        try:
            flow = crash_flow.make_flow(store)  # defined (and alive) for resume()
            run = nf.get_run(record.run_id, store=flow.store)
            if record.status is not RunStatus.COMPLETED:
                run = run.resume(progress=False)
        finally:
            os.environ.pop("MARKS", None)
        assert run.status == "completed"
        assert _outputs(store, run.id) == reference
        after = _marks(marks)
        for step in committed:
            assert after[step] == before[step], f"{step} ran again after its commit"
        assert store.check() == []


def test_the_kills_hit_runs_in_every_phase() -> None:
    """The trials above (when all ran) killed runs mid-way in every mode: not before they
    began nor after they ended; in the sync and async modes, with some steps committed."""
    if len(OUTCOMES) < TRIALS:
        pytest.skip("runs after the trials, when all of them ran")
    interrupted = [o for o in OUTCOMES if o[2] == "interrupted"]
    assert len(interrupted) >= TRIALS // 3, OUTCOMES
    for durability in DURABILITIES:
        assert any(d == durability for _, d, _, _ in interrupted), (durability, OUTCOMES)
    stepwise = [o for o in interrupted if o[1] != "exit"]
    for mode in MODES:
        assert any(m == mode and 0 < n < 5 for m, _, _, n in stepwise), (mode, OUTCOMES)
    for durability in ("sync", "async"):
        assert any(d == durability and 0 < n < 5 for _, d, _, n in stepwise), OUTCOMES
    # Some runs died before any step committed, some with all but the last.
    assert any(n == 0 for _, _, _, n in interrupted)
    assert any(n == 4 for _, _, _, n in stepwise)

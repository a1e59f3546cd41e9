"""executor="processes": steps shipped to worker processes with cloudpickle.

Steps here are defined the way a notebook defines them: by exec in a ``__main__``
namespace (no source file a worker could import), or compiled from a %%step cell.
"""

from __future__ import annotations

import os
import textwrap
import threading
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from waiting import GENEROUS

import nbflow as nf
from nbflow.definition.cells import compile_cell, parse_step_line
from nbflow.engine.choice import make_executor
from nbflow.engine.processes import ProcessExecutor
from nbflow.errors import ParameterError, StepFailed

NOTEBOOK = """
import os
import pandas as pd

SCALE = 3

def helper(x):
    return x * SCALE

def frame(n=6):
    return pd.DataFrame({
        "x": range(n),
        "y": [helper(i) for i in range(n)],
        "g": pd.Categorical(["a", "b"] * (n // 2)),
        "t": pd.date_range("2024-01-01", periods=n, tz="Europe/Paris"),
    })

def pid_left():
    return os.getpid()

def pid_right():
    return os.getpid()

def total(frame, pid_left, pid_right):
    return {"sum": int(frame["y"].sum()), "pids": [pid_left, pid_right], "here": os.getpid()}
"""


def notebook_namespace(src: str = NOTEBOOK) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(textwrap.dedent(src), "<notebook cell>", "exec"), namespace)
    return namespace


def test_notebook_steps_run_in_worker_processes_and_frames_round_trip(store):
    ns = notebook_namespace()
    flow = nf.Flow("procs", store=store)
    for name in ("frame", "pid_left", "pid_right", "total"):
        flow.step(ns[name])
    run = flow.run(executor="processes", max_workers=2)
    assert run.status == "completed"
    out = run["total"]
    assert out["sum"] == 3 * sum(range(6))
    assert os.getpid() not in out["pids"]
    assert out["here"] != os.getpid()
    expected = ns["frame"]()
    pd.testing.assert_frame_equal(run["frame"], expected)  # dtypes, categories, time zone
    # The driver checkpointed everything; a re-run is all cached, without workers.
    again = flow.run(executor="processes")
    assert set(again.steps["status"]) == {"cached"}


def test_cell_defined_steps_run_in_processes() -> None:
    ns = notebook_namespace("OFFSET = 100\ndef shift(v):\n    return v + OFFSET\n")
    flow = nf.Flow("cells-procs", store="memory://")
    ns["flow"] = flow
    for line, body in [
        ("raw --params n=4", "raw = list(range(n))"),
        ("shifted", "[shift(v) for v in raw]"),
        ("report", "import os\n(sum(shifted), os.getpid())"),
    ]:
        spec = parse_step_line(line)
        flow.add_step(compile_cell(spec, body, steps=flow.steps, namespace=ns, flow_name="c"))
    run = flow.run(executor="processes", n=3)
    total, pid = run["report"]
    assert total == 303
    assert pid != os.getpid()


def test_a_step_failing_in_a_worker_fails_the_run_with_its_traceback() -> None:
    ns = notebook_namespace("def broken():\n    return 1 / 0\n\ndef after(broken):\n    return 1\n")
    flow = nf.Flow("procs-fail", store="memory://")
    flow.step(ns["broken"])
    flow.step(ns["after"])
    with pytest.raises(StepFailed) as info:
        flow.run(executor="processes")
    assert "ZeroDivisionError: division by zero" in str(info.value)
    assert "in broken" in info.value.traceback
    run = nf.get_run(info.value.run_id, flow.store)
    statuses = dict(zip(run.steps["step"], run.steps["status"], strict=True))
    assert statuses == {"broken": "failed", "after": "skipped"}


def test_a_step_that_cannot_be_pickled_fails_clearly() -> None:
    lock = threading.Lock()
    flow = nf.Flow("procs-lock", store="memory://")

    @flow.step
    def holds_a_lock():
        with lock:
            return 1

    with pytest.raises(StepFailed, match="cannot be sent to a worker process.*'inline' or"):
        flow.run(executor="processes")


def test_make_executor_knows_processes() -> None:
    executor = make_executor("processes", 1)
    try:
        assert isinstance(executor, ProcessExecutor)
        assert executor.parallel
    finally:
        executor.shutdown()
    with pytest.raises(ParameterError, match="max_workers must be at least 1"):
        make_executor("processes", 0)
    with pytest.raises(ParameterError, match="'processes'"):
        make_executor("gpu", None)


def test_a_background_process_run_can_be_cancelled(tmp_path: Path) -> None:
    gate = tmp_path / "cancelled"
    ns = notebook_namespace(
        "import time\nfrom pathlib import Path\n"
        "def slow():\n"  # it ends only once the run was told to cancel
        "    deadline = time.time() + 120\n"
        f"    while not Path({str(gate)!r}).exists() and time.time() < deadline:\n"
        "        time.sleep(0.01)\n"
        "    return 1\n\n"
        "def after(slow):\n    return slow + 1\n"
    )
    flow = nf.Flow("procs-cancel", store="memory://")
    flow.step(ns["slow"])
    flow.step(ns["after"])
    run = flow.run(executor="processes", background=True)
    try:
        run.cancel()
    finally:
        gate.touch()
    assert run.wait(GENEROUS).status == "cancelled"
    assert "after" not in set(run.steps["step"])

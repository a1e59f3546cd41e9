"""The Dask executor: steps run on the workers of a LocalCluster of 2 worker processes.

The cluster is shared by the module (it takes about a second to start). Steps are defined
the way a notebook defines them (exec in a ``__main__`` namespace, or in a module that
no worker can import), so they reach the workers by value, through cloudpickle.
"""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import distributed
import pandas as pd
import pytest
from waiting import GENEROUS, wait_for

import nbflow as nf
from nbflow.engine import dask_executor
from nbflow.engine.choice import make_executor
from nbflow.engine.dask_executor import DaskExecutor
from nbflow.errors import ParameterError, RunError, StepFailed


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """A LocalCluster of 2 single-threaded worker processes, for the whole module.

    Its scheduler gives up on a task the first time a worker dies running it (by default
    Dask tries 3 more workers first: same outcome, several worker restarts later).
    """
    import dask

    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        distributed.LocalCluster(
            n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None
        ) as local,
    ):
        yield local


@pytest.fixture
def client(cluster: Any) -> Iterator[Any]:
    """A client of the cluster that is not the default one (tests choose when it is), with
    both workers up (a test may have killed one)."""
    with distributed.Client(cluster, set_as_default=False) as connected:
        connected.wait_for_workers(2, timeout=30)
        yield connected


@pytest.fixture
def no_default_dask(monkeypatch: pytest.MonkeyPatch) -> None:
    """No current client and no scheduler address from the environment or Dask's config."""
    import dask

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    monkeypatch.setitem(dask.config.config, "scheduler-address", None)
    monkeypatch.setattr(distributed.client, "_global_clients", {})


def notebook(src: str) -> dict[str, Any]:
    """The names a notebook cell defines: exec'd in a ``__main__`` namespace."""
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(compile(textwrap.dedent(src), "<notebook cell>", "exec"), namespace)
    return namespace


FAN_OUT = """
import os
import pandas as pd

SCALE = 3

def frame():
    n = 6
    return pd.DataFrame({
        "x": range(n),
        "y": [i * SCALE for i in range(n)],
        "g": pd.Categorical(["a", "b"] * (n // 2)),
        "t": pd.date_range("2024-01-01", periods=n, tz="Europe/Paris"),
    })

def left(frame):
    return int(frame["y"].sum())

def right(frame):
    return frame.assign(z=frame["x"] * 2)

def middle(frame):
    return sorted(frame["g"].astype(str).unique())

def total(left, right, middle):
    return {"left": left, "right": int(right["z"].sum()), "middle": middle}
"""


def fan_out(store: Any, name: str = "fan") -> nf.Flow:
    ns = notebook(FAN_OUT)
    flow = nf.Flow(name, store=store)
    for step in ("frame", "left", "right", "middle", "total"):
        flow.step(ns[step])
    return flow


def history(run: nf.Run) -> dict[str, list[tuple[str, int]]]:
    """Each step's events (type, attempt), in order; the run's own events under ''."""
    events = run.events
    out: dict[str, list[tuple[str, int]]] = {}
    for step, kind, attempt in zip(events["step"], events["type"], events["attempt"], strict=True):
        key = "" if pd.isna(step) else step
        out.setdefault(key, []).append((kind, 0 if pd.isna(attempt) else int(attempt)))
    return out


def as_queued(
    steps: dict[str, list[tuple[str, int]]],
) -> dict[str, list[tuple[str, int]]]:
    """An inline run's history as a parallel executor records it: each attempt is queued
    (with its inputs) before it starts."""
    out: dict[str, list[tuple[str, int]]] = {}
    for step, events in steps.items():
        seen: list[tuple[str, int]] = []
        for kind, attempt in events:
            if kind == "step_started":
                seen.append(("step_queued", attempt))
            elif kind == "step_input_recorded":
                seen += [(kind, attempt), ("step_started", attempt)]
                continue
            if kind != "step_started":
                seen.append((kind, attempt))
        out[step] = seen
    return out


def statuses(run: nf.Run) -> dict[str, str]:
    latest = run.steps.sort_values("seq").drop_duplicates("step", keep="last")
    return dict(zip(latest["step"], latest["status"], strict=True))


def scheduler_clients(cluster: Any) -> int:
    return len(cluster.scheduler.clients)


# -- running on the cluster ----------------------------------------------------------------


def test_a_fan_out_on_the_cluster_records_what_an_inline_run_records(store, client, monkeypatch):
    flow = fan_out(store)
    inline = flow.run(progress=False)
    monkeypatch.setattr(dask_executor, "SCATTER_BYTES", 0)  # inputs go ahead of the tasks
    on_dask = flow.run(executor=client, force=True, progress=False)
    monkeypatch.undo()
    assert on_dask.status == inline.status == "completed"
    for step in flow.steps:
        value, expected = on_dask[step], inline[step]
        if isinstance(expected, pd.DataFrame):
            pd.testing.assert_frame_equal(value, expected)  # dtypes, categories, time zone
        else:
            assert value == expected
    # The same, but each attempt queued until a worker really started it.
    assert history(on_dask) == as_queued(history(inline))
    assert statuses(on_dask) == statuses(inline) == dict.fromkeys(flow.steps, "completed")
    # The driver checkpointed every output: a re-run on the cluster executes nothing.
    again = flow.run(executor=client, progress=False)
    assert set(again.steps["status"]) == {"cached"}
    pd.testing.assert_frame_equal(again["right"], inline["right"])
    assert client.status == "running"  # the user's client stays open


def test_independent_steps_run_at_once_in_the_worker_processes(client, tmp_path: Path):
    ns = notebook(
        f"""
        import os, time
        from pathlib import Path
        MARKS = Path({str(tmp_path)!r})
        def span(me, other, meet):
            began = time.time()
            (MARKS / me).touch()
            if meet:  # wait for the other step: it arrives only if both run at once
                deadline = time.time() + 60
                while not (MARKS / other).exists() and time.time() < deadline:
                    time.sleep(0.01)
            else:
                time.sleep(0.2)  # work, long enough for the other step to overlap it
            met = (MARKS / other).exists()
            return {{"pid": os.getpid(), "began": began, "ended": time.time(), "met": met}}
        def one(meet: bool = True):
            return span("one", "two", meet)
        def two(meet: bool = True):
            return span("two", "one", meet)
        """
    )
    flow = nf.Flow("spans", store="memory://")
    flow.step(ns["one"])
    flow.step(ns["two"])
    run = flow.run(executor=client, progress=False)
    one, two = run["one"], run["two"]
    assert os.getpid() not in (one["pid"], two["pid"])
    assert one["pid"] != two["pid"]
    assert one["met"] and two["met"]  # each saw the other running
    # max_workers caps the steps on the cluster at once: now one runs after the other.
    capped = flow.run(executor=client, max_workers=1, meet=False, progress=False)
    first, second = sorted((capped["one"], capped["two"]), key=lambda s: s["began"])
    assert first["ended"] <= second["began"]


def test_steps_of_a_module_no_worker_can_import_are_shipped_by_value(client):
    module = types.ModuleType("nbflow_dynamic_steps")  # not in sys.modules, no file
    exec("OFFSET = 100\ndef shift(v):\n    return v + OFFSET\n", module.__dict__)
    exec("def raw(n=4):\n    return list(range(n))\n", module.__dict__)
    exec("def shifted(raw):\n    return [shift(v) for v in raw]\n", module.__dict__)
    flow = nf.Flow("dynamic", store="memory://")
    flow.step(module.raw)
    flow.step(module.shifted)
    assert flow.run(executor=client, n=3, progress=False)["shifted"] == [100, 101, 102]


def test_the_files_a_step_reads_on_a_worker_are_shipped_back_with_its_outcome(
    client, tmp_path: Path
):
    """The worker records and hashes what the step opened; a changed file recomputes it."""
    data = tmp_path / "config.json"
    data.write_text('{"k": 1}')
    module = types.ModuleType("nbflow_dynamic_reads")
    exec(
        f"import json\ndef config():\n    with open({str(data)!r}) as f:\n"
        "        return json.load(f)['k']\n",
        module.__dict__,
    )
    flow = nf.Flow("reads", store="memory://")
    flow.step(module.config)
    first = flow.run(executor=client, progress=False)
    (execution,) = flow.store.executions(first.id)
    assert execution.files is not None and list(execution.files.read) == [str(data)]
    assert list(flow.run(executor=client, progress=False).steps["status"]) == ["cached"]
    data.write_text('{"k": 2}')
    assert flow.run(executor=client, progress=False)["config"] == 2


# -- failures, retries, timeouts -------------------------------------------------------------


def test_a_failing_step_brings_back_its_traceback_and_skips_its_descendants(client):
    ns = notebook(
        """
        def broken():
            return helper()
        def helper():
            return 1 / 0
        def after(broken):
            return 1
        def side():
            return 2
        """
    )
    flow = nf.Flow("dask-fail", store="memory://")
    for step in ("broken", "after", "side"):
        flow.step(ns[step])
    with pytest.raises(StepFailed) as info:
        flow.run(executor=client, progress=False)
    assert "ZeroDivisionError: division by zero" in str(info.value)
    assert "in helper" in info.value.traceback
    assert isinstance(info.value.__cause__, ZeroDivisionError)
    run = nf.get_run(info.value.run_id, flow.store)
    assert statuses(run) == {"broken": "failed", "after": "skipped", "side": "completed"}
    assert run.status == "failed"


def test_retries_wait_their_delay_and_timeouts_stop_a_step(client, tmp_path: Path):
    ns = notebook(
        f"""
        import time
        from pathlib import Path
        LOG = Path({str(tmp_path / "attempts")!r})
        def flaky():
            with LOG.open("a") as log:
                log.write(f"{{time.time()}}\\n")
            if len(LOG.read_text().splitlines()) < 3:
                raise ValueError("not yet")
            return "ok"
        def slow():
            time.sleep(5)
            return 1
        """
    )
    flow = nf.Flow("dask-retry", store="memory://")
    flow.step(retries=2, retry_delay=0.3)(ns["flaky"])
    flow.step(timeout=0.3, retries=1)(ns["slow"])
    run = flow.run(executor=client, raise_on_error=False, progress=False)
    assert run["flaky"] == "ok"
    starts = [float(line) for line in (tmp_path / "attempts").read_text().splitlines()]
    assert len(starts) == 3
    assert all(b - a >= 0.3 for a, b in itertools.pairwise(starts))
    kinds = [k for k, _ in history(run)["flaky"]]
    assert kinds.count("step_retried") == 2 and kinds[-1] == "step_completed"
    assert statuses(run)["slow"] == "failed"
    slow = run.steps[run.steps["step"] == "slow"]
    assert list(slow["attempt"]) == [1, 2]
    assert "did not finish within its timeout of 0.3 s" in slow["error"].iloc[-1]
    assert run.status == "failed"


def test_a_worker_dying_mid_step_fails_the_step_clearly(client, cluster):
    ns = notebook(
        """
        import os
        def dies():
            os._exit(3)
        def after(dies):
            return 1
        def fine():
            return 2
        """
    )
    flow = nf.Flow("dask-kill", store="memory://")
    for step in ("dies", "after", "fine"):
        flow.step(ns[step])
    try:
        run = flow.run(executor=client, raise_on_error=False, progress=False)
    finally:
        client.wait_for_workers(2, timeout=30)  # the nanny restarts the dead workers
    assert run.status == "failed"
    assert statuses(run) == {"dies": "failed", "after": "skipped", "fine": "completed"}
    error = run.steps.set_index("step").loc["dies", "error"]
    assert "the Dask worker running step 'dies' died" in error
    assert "KilledWorker" in error
    assert "step 'dies' failed" in run.error


def test_cancelling_a_background_run_cancels_its_dask_tasks(client, tmp_path: Path):
    gate = tmp_path / "gate"
    ns = notebook(
        f"""
        import time
        from pathlib import Path
        def waits():
            deadline = time.time() + 120
            while not Path({str(gate)!r}).exists() and time.time() < deadline:
                time.sleep(0.02)
            return 1
        def after(waits):
            return waits + 1
        """
    )
    flow = nf.Flow("dask-cancel", store="memory://")
    flow.step(ns["waits"])
    flow.step(ns["after"])
    run = flow.run(executor=client, background=True, progress=False)
    try:
        wait_for(lambda: any(client.processing().values()), "the task on a worker")
        run.cancel()
        assert run.wait(GENEROUS).status == "cancelled"
        wait_for(lambda: not any(client.processing().values()), "the task released")
    finally:
        gate.touch()  # the worker's thread cannot be stopped: let it return
    assert "after" not in set(run.steps["step"])


# -- choosing the cluster ---------------------------------------------------------------------


def test_dask_uses_the_current_client_then_the_environment(client, cluster, monkeypatch):
    flow = nf.Flow("dask-default", store="memory://")

    @flow.step
    def where():
        import os

        return os.getpid()

    with client.as_current():
        assert flow.run(executor="dask", progress=False)["where"] != os.getpid()
    assert client.status == "running"

    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    before = scheduler_clients(cluster)
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", cluster.scheduler_address)
    assert flow.run(executor="dask", force=True, progress=False)["where"] != os.getpid()
    address = cluster.scheduler_address.replace("tcp://", "dask://")
    assert flow.run(executor=address, force=True, progress=False).status == "completed"
    wait_for(lambda: scheduler_clients(cluster) == before, "nbflow closing its clients")


def test_dask_without_a_cluster_is_refused_before_a_run_is_recorded(no_default_dask):
    flow = nf.Flow("dask-none", store="memory://")
    flow.step(lambda: 1, name="one")
    with pytest.raises(ParameterError, match=r"no Dask cluster.*DASK_SCHEDULER_ADDRESS.*Client"):
        flow.run(executor="dask")
    assert flow.runs().empty


def test_an_unreachable_scheduler_is_named_quickly(monkeypatch):
    monkeypatch.setattr(dask_executor, "CONNECT_TIMEOUT", 1.0)
    flow = nf.Flow("dask-down", store="memory://")
    flow.step(lambda: 1, name="one")
    with pytest.raises(
        RunError, match=r"cannot connect to the Dask scheduler at tcp://127\.0\.0\.1:1 within 1 s"
    ):
        flow.run(executor="tcp://127.0.0.1:1")
    assert flow.runs().empty


def test_make_executor_accepts_a_client_and_refuses_bad_values(client, monkeypatch):
    executor = make_executor(client, None)
    assert isinstance(executor, DaskExecutor) and executor.parallel
    executor.shutdown()
    assert client.status == "running"
    with pytest.raises(ParameterError, match="max_workers must be at least 1"):
        make_executor(client, 0)
    with pytest.raises(ParameterError, match="'dask'.*scheduler address"):
        make_executor("dusk", None)
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if Dask were not installed
    with pytest.raises(ParameterError, match=r'pip install "nbflow\[dask\]"'):
        make_executor("dask", None)


def test_importing_nbflow_does_not_import_dask():
    code = (
        "import sys, nbflow\n"
        "from nbflow.engine.choice import make_executor\n"
        "make_executor('threads', 1).shutdown()\n"
        "print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"

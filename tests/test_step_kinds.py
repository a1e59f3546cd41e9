"""Every kind of step works or is refused at definition: ``async def`` steps are awaited
(also where an event loop already runs, as in a notebook, and concurrently on threads);
generators are refused; a lambda is told to take a ``name=``."""

from __future__ import annotations

import asyncio
import functools
import threading

import nbformat
import pytest
from waiting import GENEROUS

import nbflow as nf
from nbflow.errors import DefinitionError, StepFailed


def async_flow(store) -> nf.Flow:
    flow = nf.Flow("awaits", store=store)

    @flow.step
    async def fetched():
        await asyncio.sleep(0)
        return {"rows": 3}

    @flow.step
    async def doubled(fetched, factor: int = 2):
        await asyncio.sleep(0)
        return fetched["rows"] * factor

    @flow.step
    def plain(doubled):
        return doubled + 1

    return flow


@pytest.mark.parametrize("executor", ["inline", "threads", "processes"])
def test_async_steps_are_awaited_and_their_values_stored(store, executor):
    flow = async_flow(store)
    run = flow.run(executor=executor, progress=False)
    assert (run["fetched"], run["doubled"], run["plain"]) == ({"rows": 3}, 6, 7)
    assert set(run.steps["status"]) == {"completed"}
    # An async step is cached like any other.
    assert set(flow.run(progress=False).steps["status"]) == {"cached"}


def test_an_async_step_runs_where_an_event_loop_already_runs(store):
    flow = async_flow(store)

    async def inside_a_loop():  # as a notebook cell runs, inside the kernel's loop
        asyncio.get_running_loop()
        return flow.run(progress=False)

    # (In a thread of its own: whatever loop state earlier tests left in this one.)
    box: dict[str, object] = {}

    def cell() -> None:
        try:
            box["run"] = asyncio.run(inside_a_loop())
        except BaseException as exc:
            box["error"] = exc

    thread = threading.Thread(target=cell)
    thread.start()
    thread.join(GENEROUS)
    assert not thread.is_alive(), f"the run did not end within {GENEROUS} s"
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    assert box["run"]["plain"] == 7  # type: ignore[index]


def test_async_steps_run_concurrently_on_threads(store):
    # Neither step can finish unless the other runs at the same time.
    both = threading.Barrier(2, timeout=GENEROUS)
    flow = nf.Flow("together", store=store)

    @flow.step
    async def left():
        await asyncio.to_thread(both.wait)
        return "left"

    @flow.step
    async def right():
        await asyncio.to_thread(both.wait)
        return "right"

    run = flow.run(executor="threads", max_workers=2, progress=False)
    assert (run["left"], run["right"]) == ("left", "right")


def test_an_async_step_past_its_timeout_is_cancelled(store):
    cancelled = threading.Event()
    flow = nf.Flow("late", store=store)

    @flow.step(timeout=0.05)
    async def slow():
        try:
            await asyncio.sleep(GENEROUS)
        finally:
            cancelled.set()

    with pytest.raises(StepFailed, match="did not finish within its timeout of 0.05 s"):
        flow.run(progress=False)
    assert cancelled.is_set()  # stopped, not left running


def test_a_failing_async_step_fails_with_its_own_error(store):
    flow = nf.Flow("fails", store=store)

    @flow.step
    async def broken():
        await asyncio.sleep(0)
        raise ValueError("no data")

    with pytest.raises(StepFailed, match="ValueError: no data") as info:
        flow.run(progress=False)
    assert isinstance(info.value.__cause__, ValueError)


def test_a_function_that_returns_a_coroutine_is_awaited_too(store):
    async def fetch(n):
        await asyncio.sleep(0)
        return n * 10

    flow = nf.Flow("wrapped", store=store)

    @flow.step
    def wrapped(n: int = 4):
        return fetch(n)  # a coroutine, awaited by nbflow

    assert flow.run(progress=False)["wrapped"] == 40


def test_generator_steps_are_refused_at_definition():
    flow = nf.Flow("gen", store=":memory:")
    with pytest.raises(DefinitionError, match="is a generator function") as info:

        @flow.step
        def numbers():
            yield 1

    assert "return list(...)" in str(info.value)
    with pytest.raises(DefinitionError, match="async generator"):

        @flow.step
        async def stream():
            yield 1

    assert flow.steps == {}


def test_a_lambda_step_is_told_to_take_a_name():
    flow = nf.Flow("lambdas", store=":memory:")
    with pytest.raises(DefinitionError, match="a lambda needs a name") as info:
        flow.step(lambda: 1)
    assert "name='double'" in str(info.value)
    with pytest.raises(DefinitionError, match="a functools.partial needs a name|needs a name"):
        flow.step(functools.partial(lambda n: n, 1))
    flow.step(name="one")(lambda: 1)
    assert flow.run(progress=False)["one"] == 1


NOTEBOOK_CELLS = [
    "import asyncio, threading\nimport nbflow as nf\nflow = nf.Flow('nb_async')",
    # A cell runs inside the kernel's event loop: asyncio.run() alone would be refused.
    "asyncio.get_running_loop()\n"
    "@flow.step\n"
    "async def fetched():\n"
    "    await asyncio.sleep(0)\n"
    "    return [1, 2, 3]\n"
    "@flow.step\n"
    "async def total(fetched):\n"
    "    await asyncio.sleep(0)\n"
    "    return sum(fetched)\n"
    "run = flow.run(progress=False)\n"
    "assert run['total'] == 6, run['total']\n"
    "print('inline', run.status, run['total'])",
    "both = threading.Barrier(2, timeout=120)\n"
    "@flow.step\n"
    "async def left():\n"
    "    await asyncio.to_thread(both.wait)\n"
    "    return 'left'\n"
    "@flow.step\n"
    "async def right():\n"
    "    await asyncio.to_thread(both.wait)\n"
    "    return 'right'\n"
    "together = flow.run(executor='threads', max_workers=2, targets=['left', 'right'], "
    "progress=False)\n"
    "print('threads', together.status, together['left'], together['right'])",
]


@pytest.mark.slow
def test_async_steps_in_a_notebook(jupyter_env, tmp_path, monkeypatch):
    pytest.importorskip("nbclient")
    from nbclient import NotebookClient

    notebook = nbformat.v4.new_notebook(
        cells=[nbformat.v4.new_code_cell(source) for source in NOTEBOOK_CELLS]
    )
    for key, value in jupyter_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NBFLOW_STORE", str(tmp_path / "store.duckdb"))
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    ).execute()
    printed = [
        "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")
        for cell in notebook.cells
    ]
    assert "inline completed 6" in printed[1]
    assert "threads completed left right" in printed[2]
    runs = nf.runs(str(tmp_path / "store.duckdb"))
    assert set(runs["status"]) == {"completed"}

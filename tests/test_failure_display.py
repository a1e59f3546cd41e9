"""A failing run as a notebook shows it (issue 17, point 6): ``run = flow.run()`` raises
StepFailed and never assigns ``run``, so the error carries the Run and says code that
resumes it; the traceback shows the user's cells, not nbflow's frames; the recorded
traceback names the cell, not ``/tmp/ipykernel_…/….py``."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import nbformat
import pytest

import nbflow as nf
from nbflow.api.failures import resume_code, user_frames
from nbflow.engine.tracebacks import clean_trace
from nbflow.errors import StepFailed

ANSI = re.compile(r"\x1b\[[0-9;]*m")

DEFINE = """
import nbflow as nf
flow = nf.Flow("fails")
BROKEN = True

@flow.step
def numbers():
    return 1

@flow.step
def checked(numbers):
    return check(numbers)

def check(x):
    if BROKEN:
        raise ValueError("no data today")
    return x + 1
"""


def client_for(nb: Any, folder: Path) -> Any:
    from nbclient import NotebookClient

    return NotebookClient(
        nb,
        timeout=180,
        kernel_name="python3",
        allow_errors=True,
        resources={"metadata": {"path": str(folder)}},
    )


def run_cell(client: Any, nb: Any, source: str) -> Any:
    cell = nbformat.v4.new_code_cell(textwrap.dedent(source).strip())
    nb.cells.append(cell)
    client.execute_cell(cell, len(nb.cells) - 1)
    return cell


def stdout(cell: Any) -> str:
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_in_a_notebook_the_error_shows_the_users_cells_and_resumes_when_pasted(
    jupyter_env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key, value in jupyter_env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NBFLOW_STORE", str(tmp_path / "nbflow.duckdb"))
    nb = nbformat.v4.new_notebook()
    client = client_for(nb, tmp_path)
    with client.setup_kernel():
        run_cell(client, nb, DEFINE)
        failing = run_cell(client, nb, "run = flow.run(progress=False)")
        [error] = [o for o in failing.outputs if o.output_type == "error"]
        shown = ANSI.sub("", "\n".join(error.traceback))
        assert error.ename == "StepFailed"
        # The user's frames, named as cells: the step and its helper, then the cell's line.
        assert "Cell In[1]" in shown and 'raise ValueError("no data today")' in shown
        assert "Cell In[2]" in shown and "run = flow.run(progress=False)" in shown
        assert "ValueError: no data today" in shown
        # ... and none of nbflow's own frames, nor the kernel's temporary file names.
        assert "/nbflow/" not in shown and "ipykernel_" not in shown
        assert "skipping hidden" not in shown

        # The error carries the run; the recorded traceback names the cell too.
        facts = run_cell(
            client,
            nb,
            """
            import sys
            err = sys.last_value
            print(err.run.id == err.run_id, err.run.status)
            print(err.run.steps.set_index("step").loc["checked", "traceback"])
            """,
        )
        out = stdout(facts)
        assert out.startswith("True failed")
        assert "Cell In[1]" in out and "ipykernel_" not in out and "/nbflow/" not in out

        # The command the message suggests works when pasted (once the step is fixed).
        command = re.search(r"with `([^`]+)`", error.evalue)
        assert command is not None
        run_id = re.search(r"failed in run (\S+):", error.evalue)
        assert run_id is not None
        assert command.group(1) == f"nf.get_run({run_id.group(1)!r}).resume()"
        resumed = run_cell(
            client,
            nb,
            f"BROKEN = False\nresumed = {command.group(1)}\n"
            "print(resumed.status, resumed['checked'])",
        )
        assert stdout(resumed).strip() == "completed 2", resumed.outputs


def failing_flow(store: Any) -> nf.Flow:
    flow = nf.Flow("fails", store=store)

    @flow.step
    def numbers() -> int:
        return 1

    @flow.step
    def checked(numbers: int) -> int:
        raise ValueError("no data today")

    return flow


def test_the_error_carries_the_run_and_says_how_to_resume_it(tmp_path: Path) -> None:
    flow = failing_flow(tmp_path / "elsewhere.duckdb")
    with pytest.raises(StepFailed) as caught:
        flow.run(progress=False)
    err = caught.value
    assert err.run is not None and err.run.id == err.run_id and err.run.status == "failed"
    # Not the default store: the command names it, so it finds the run when pasted.
    store = str((tmp_path / "elsewhere.duckdb").resolve())
    expected = f"nf.get_run({err.run_id!r}, store={store!r}).resume()"
    assert f"`{expected}`" in str(err) and "`run.resume()`" not in str(err)
    assert nf.get_run(err.run_id, store=store).id == err.run_id
    assert isinstance(err.__cause__, ValueError)


def test_an_in_memory_store_is_resumed_through_the_flow() -> None:
    flow = failing_flow("memory://")
    with pytest.raises(StepFailed) as caught:
        flow.run(progress=False)
    assert "`flow.latest_run().resume()`" in str(caught.value)
    assert flow.latest_run() == caught.value.run


def test_a_background_run_raises_with_its_run_from_wait() -> None:
    flow = failing_flow("memory://")
    run = flow.run(progress=False, background=True)
    with pytest.raises(StepFailed) as caught:
        run.wait(timeout=60)
    assert caught.value.run is run


def test_a_password_is_never_printed_in_the_hint() -> None:
    uri = "postgresql://me:secret@db.example/analytics"
    run = SimpleNamespace(id="r1", flow_name="fails", store=SimpleNamespace(uri=uri))
    assert resume_code(run) == "flow.latest_run().resume()"  # type: ignore[arg-type]
    run.store.uri = "postgresql://me@db.example/analytics"
    assert resume_code(run) == f"nf.get_run('r1', store={run.store.uri!r}).resume()"  # type: ignore[arg-type]


def test_the_recorded_traceback_drops_nbflows_frames() -> None:
    own = str(Path(nf.__file__).parent / "engine" / "executors.py")
    trace = (
        "Traceback (most recent call last):\n"
        f'  File "{own}", line 163, in __call__\n'
        "    value = call_with_timeout(self.name, self.func, args, self.timeout)\n"
        "            ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^\n"
        '  File "/home/me/analysis/steps.py", line 8, in checked\n'
        "    raise ValueError('no data today')\n"
        "ValueError: no data today\n"
    )
    cleaned = clean_trace(trace)
    assert own not in cleaned and "call_with_timeout" not in cleaned
    assert cleaned.startswith("Traceback (most recent call last):\n")
    assert '  File "/home/me/analysis/steps.py", line 8, in checked\n' in cleaned
    assert cleaned.endswith("ValueError: no data today\n")


def test_user_frames_keep_only_the_callers_code() -> None:
    flow = failing_flow("memory://")
    try:
        flow.run(progress=False)
    except StepFailed as exc:
        frames = user_frames(exc.__traceback__)
    names = []
    while frames is not None:
        names.append(frames.tb_frame.f_code.co_name)
        frames = frames.tb_next
    assert names == ["test_user_frames_keep_only_the_callers_code"]

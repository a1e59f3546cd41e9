"""The magics in a real Jupyter kernel: ``%load_ext nbflow``, ``%%step``, ``%nbflow``.

One kernel (this venv's ipykernel, every Jupyter directory in a temp dir) serves the
module; each test starts from a reset namespace and uses its own flow names.
"""

from __future__ import annotations

import json
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("jupyter_client")
pytest.importorskip("ipykernel")

ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass
class Result:
    """What a cell produced: its outputs (by kind) and its error, if any."""

    outputs: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None

    @property
    def stdout(self) -> str:
        return "".join(o["text"] for o in self.outputs if o["kind"] == "stream")

    def texts(self, kind: str) -> list[str]:
        return [o["data"].get("text/plain", "") for o in self.outputs if o["kind"] == kind]

    @property
    def traceback(self) -> str:
        assert self.error is not None
        return ANSI.sub("", "\n".join(self.error["traceback"]))

    def json(self) -> Any:
        return json.loads(self.stdout.strip().splitlines()[-1])


class Kernel:
    """Runs cells in a kernel and collects what they output."""

    def __init__(self, client: Any) -> None:
        self.client = client

    def run(self, code: str, timeout: float = 120) -> Result:
        result = Result()

        def hook(msg: dict[str, Any]) -> None:
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                result.outputs.append({"kind": "stream", "text": content["text"]})
            elif kind in ("display_data", "execute_result"):
                result.outputs.append({"kind": kind, "data": content["data"]})

        reply = self.client.execute_interactive(
            textwrap.dedent(code).strip("\n"), output_hook=hook, timeout=timeout
        )
        if reply["content"]["status"] == "error":
            result.error = reply["content"]
        return result

    def ok(self, code: str, timeout: float = 120) -> Result:
        result = self.run(code, timeout)
        assert result.error is None, result.traceback
        return result


@pytest.fixture(scope="module")
def kernel(
    jupyter_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Kernel]:
    from jupyter_client.manager import start_new_kernel

    work = tmp_path_factory.mktemp("kernel")
    with pytest.MonkeyPatch.context() as patch:
        for name, value in jupyter_env.items():
            patch.setenv(name, value)
        patch.setenv("NBFLOW_STORE", str(work / "store.duckdb"))
        manager, client = start_new_kernel(kernel_name="python3", cwd=str(work))
        try:
            kernel = Kernel(client)
            kernel.ok("%load_ext nbflow")
            yield kernel
        finally:
            client.stop_channels()
            manager.shutdown_kernel(now=True)


@pytest.fixture
def nb(kernel: Kernel) -> Kernel:
    """The kernel with a fresh namespace: nbflow, pandas and json imported."""
    kernel.ok("%reset -f\nimport json\nimport pandas as pd\nimport nbflow as nf")
    return kernel


def test_load_ext_registers_the_magics(nb: Kernel) -> None:
    out = nb.ok("ip = get_ipython()\nprint(json.dumps(['step' in ip.magics_manager.magics['cell'],"
                " 'nbflow' in ip.magics_manager.magics['line']]))")  # fmt: skip
    assert out.json() == [True, True]


def test_a_step_cell_defines_the_step_and_shows_the_dag(nb: Kernel) -> None:
    nb.ok('flow = nf.Flow("m_define")')
    out = nb.ok("%%step raw --params n=3\nraw = list(range(n))")
    shown = out.texts("display_data")
    assert len(shown) == 1
    assert "flow 'm_define': 1 step" in shown[0]
    assert "▶" in shown[0] and "raw" in shown[0] and "never run" in shown[0]
    assert out.texts("execute_result") == []  # nothing ran, no value
    out = nb.ok("%%step total\nsum(raw)")
    assert "total" in out.texts("display_data")[0] and "← raw" in out.texts("display_data")[0]
    info = nb.ok(
        "print(json.dumps([list(flow.steps), flow.steps['total'].inputs, 'raw' in dir()]))"
    )
    assert info.json() == [["raw", "total"], ["raw"], False]


def test_run_binds_the_value_and_shows_it_reusing_cached_upstream(nb: Kernel) -> None:
    # Marked untracked: the step appends to it, and a global's content is part of its key.
    nb.ok('flow = nf.Flow("m_run")\nimport types')
    nb.ok("calls = nf.untracked(types.SimpleNamespace(names=[]))")
    nb.ok("%%step raw\ncalls.names.append('raw')\nraw = pd.DataFrame({'x': [1, 2, 3]})")
    out = nb.ok("%%step doubled --run\ndoubled = raw.assign(y=raw['x'] * 2)")
    assert "y" in out.texts("execute_result")[0]  # the value is the cell's result
    assert "fresh" in out.texts("display_data")[-1]
    check = nb.ok("print(json.dumps([doubled['y'].tolist(), calls.names]))")
    assert check.json() == [[2, 4, 6], ["raw"]]
    out = nb.ok("%%step total --run\nint(doubled['y'].sum())")
    assert out.texts("execute_result") == ["12"]
    steps = nb.ok(
        "r = flow.latest_run()\nprint(json.dumps(dict(zip(r.steps['step'], r.steps['status']))))"
    )
    assert steps.json() == {"raw": "cached", "doubled": "cached", "total": "completed"}
    assert nb.ok("print(json.dumps([total, calls.names]))").json() == [12, ["raw"]]


def test_run_draws_the_dag_once(nb: Kernel) -> None:
    nb.ok('flow = nf.Flow("m_once")')
    nb.ok("%%step base\nbase = 2")
    out = nb.ok("%%step twice --run\ntwice = base * 2")
    views = [
        o["data"] for o in out.outputs if "application/vnd.jupyter.widget-view+json" in o["data"]
    ]
    # The run's live view draws the DAG; the table of steps below it draws none.
    assert len(views) == 1
    assert "m_once" in views[0]["text/plain"] and "twice" in views[0]["text/plain"]
    assert "fresh" in out.texts("display_data")[-1]


def test_nbflow_run_and_status_line_magics(nb: Kernel) -> None:
    nb.ok('flow = nf.Flow("m_line")')
    nb.ok("%%step base --params k=2,label=x\n[k] * 3")
    out = nb.ok(
        "r = %nbflow run k=5 label=hello\nprint(json.dumps([r.status, r.params, r['base']]))"
    )
    assert out.json() == ["completed", {"k": 5, "label": "hello"}, [5, 5, 5]]
    status = nb.ok("%nbflow status")
    assert "fresh" in status.texts("execute_result")[0]
    bad = nb.run("%nbflow frobnicate")
    assert bad.error is not None and bad.error["ename"] == "CellError"
    assert "unknown %nbflow command 'frobnicate'" in bad.traceback


def test_editing_a_cell_makes_it_and_its_descendants_stale_and_nothing_else(nb: Kernel) -> None:
    nb.ok('flow = nf.Flow("m_stale")\nOFFSET = 1\ndef shift(v):\n    return v + OFFSET')
    nb.ok("%%step a\na = [1, 2, 3]")
    nb.ok("%%step b\nb = [shift(v) for v in a]")
    nb.ok("%%step c\nc = sum(b)")
    nb.ok("%%step side\nside = len(a)")
    nb.ok("%nbflow run")
    state = "s = flow.status()\nprint(json.dumps(dict(zip(s['step'], s['state']))))"
    assert set(nb.ok(state).json().values()) == {"fresh"}
    nb.ok("%%step b\n# reformatted, same code\nb = [ shift(v)  for v in a ]")
    assert set(nb.ok(state).json().values()) == {"fresh"}
    out = nb.ok("%%step b\nb = [shift(v) * 10 for v in a]")
    assert "stale" in out.texts("display_data")[0]
    assert nb.ok(state).json() == {"a": "fresh", "b": "stale", "c": "stale", "side": "fresh"}
    nb.ok("%nbflow run")
    nb.ok("OFFSET = 2")  # editing a helper cell
    assert nb.ok(state).json() == {"a": "fresh", "b": "stale", "c": "stale", "side": "fresh"}
    why = nb.ok("print(json.dumps(list(flow.status()['why'])))").json()
    assert why[1] == "code changed (a function or constant it uses)"
    assert why[2] == "an upstream step changed (b)"


def test_cell_steps_run_in_worker_processes(nb: Kernel) -> None:
    nb.ok('flow = nf.Flow("m_procs")\nimport os\nSCALE = 7\ndef scale(v):\n    return v * SCALE')
    nb.ok("%%step left\nleft = (scale(1), os.getpid())")
    nb.ok("%%step right\nright = (scale(2), os.getpid())")
    nb.ok("%%step both\nboth = (left, right, os.getpid())")
    out = nb.ok(
        "r = %nbflow run --executor processes --max-workers 2\n"
        "print(json.dumps([r.status, r['both'], os.getpid()]))",
        timeout=180,
    )
    status, both, kernel_pid = out.json()
    assert status == "completed"
    (left, left_pid), (right, right_pid), both_pid = both
    assert (left, right) == (7, 14)
    assert kernel_pid not in (left_pid, right_pid, both_pid)


def test_a_background_run_leaves_the_notebook_usable(nb: Kernel) -> None:
    nb.ok('flow = nf.Flow("m_bg")\nimport threading\ngate = nf.untracked(threading.Event())')
    nb.ok("%%step waits\ngate.wait(120)\nwaits = 42")
    nb.ok("run = flow.run(background=True)")
    out = nb.ok(  # the kernel answers this cell while the run is still going
        "import time\n"
        "deadline = time.monotonic() + 60\n"  # generous: wait for the state, not a time
        "while run.status != 'running' and time.monotonic() < deadline:\n"
        "    time.sleep(0.01)\n"
        "print(json.dumps([run.status, run.id in set(nf.runs(status='running')['run_id'])]))"
    )
    assert out.json() == ["running", True]
    done = nb.ok("gate.set()\nprint(json.dumps([run.wait(120).status, run['waits']]))")
    assert done.json() == ["completed", 42]
    again = nb.run("run.cancel()")
    assert again.error is not None and "already finished (completed)" in again.error["evalue"]


# -- bad input: one clear message, no traceback through nbflow's internals -------------------


def brief(result: Result) -> str:
    assert result.error is not None, "the cell should have failed"
    assert "nbflow/definition" not in result.traceback, result.traceback
    return result.traceback


def test_a_syntax_error_points_at_the_cell_line(nb: Kernel) -> None:
    nb.ok('flow = nf.Flow("m_syntax")')
    result = nb.run("%%step broken\nx = 1\ny = (x +\nz = 2")
    assert result.error is not None and result.error["ename"] == "CellError"
    text = brief(result)
    assert "syntax error in %%step cell 'broken', line 3" in text
    assert "y = (x +" in text
    assert "broken" not in nb.ok("print(json.dumps(list(flow.steps)))").json()


def test_a_cell_without_a_value_says_what_the_value_should_be(nb: Kernel) -> None:
    nb.ok('flow = nf.Flow("m_novalue")')
    text = brief(nb.run("%%step summary\nx = 1\nprint(x)\ndel x"))
    assert "has no value" in text and "`summary = ...`" in text and "line 4" in text


def test_a_name_defined_nowhere_is_named(nb: Kernel) -> None:
    nb.ok('flow = nf.Flow("m_undefined")')
    nb.ok("%%step raw\nraw = 1")
    text = brief(nb.run("%%step total\nrw + 1"))
    assert "reads 'rw' (line 2)" in text and "Did you mean 'raw'?" in text


def test_several_flows_and_no_flow_option(nb: Kernel) -> None:
    nb.ok('one = nf.Flow("m_one")\ntwo = nf.Flow("m_two")')
    text = brief(nb.run("%%step raw\nraw = 1"))
    assert "several flows: one (flow 'm_one'), two (flow 'm_two')" in text
    assert "--flow NAME" in text
    nb.ok("%%step raw --flow m_two\nraw = 1")
    assert nb.ok("print(json.dumps([list(one.steps), list(two.steps)]))").json() == [[], ["raw"]]


def test_a_failing_step_shows_its_own_traceback(nb: Kernel) -> None:
    nb.ok('flow = nf.Flow("m_fail")')
    result = nb.run("%%step bad --run\nx = 1\ny = x / 0\ny")
    assert result.error is not None and result.error["ename"] == "StepFailed"
    text = result.traceback
    assert "line 3, in bad" in text and "y = x / 0" in text
    assert "ZeroDivisionError: division by zero" in text
    assert "runner.py" not in text  # the magic's own frames are not shown


def test_the_store_is_the_one_the_environment_names(nb: Kernel, tmp_path: Path) -> None:
    out = nb.ok('import os\nprint(json.dumps(nf.Flow("m_store").store.uri))')
    assert out.json().endswith("store.duckdb")


def test_files_a_cell_reads_or_declares_make_it_stale_when_they_change(nb: Kernel) -> None:
    """In a notebook: a %%step cell reading a CSV with pandas (recorded) and one reading
    a file through DuckDB, declared with --inputs; changing either file makes its step
    stale, naming the file, and the next run recomputes it."""
    nb.ok(
        'flow = nf.Flow("m_files")\nfrom pathlib import Path\n'
        'Path("m_read.csv").write_text("a\\n1\\n2\\n")\nPath("m_native.csv").write_text("a\\n5\\n")'
    )
    nb.ok("%%step table\ntable = int(pd.read_csv('m_read.csv')['a'].sum())")
    nb.ok(
        "%%step native --inputs m_native.csv\nimport duckdb\n"
        "native = int(duckdb.sql(\"SELECT sum(a) FROM 'm_native.csv'\").fetchall()[0][0])"
    )
    first = nb.ok("r = flow.run(progress=False)\nprint(json.dumps([r['table'], r['native']]))")
    assert first.json() == [3, 5]
    nb.ok(
        'Path("m_read.csv").write_text("a\\n1\\n9\\n")\nPath("m_native.csv").write_text("a\\n7\\n")'
    )
    status = nb.ok("print(json.dumps(flow.status()[['state', 'why']].values.tolist()))")
    (table_state, table_why), (native_state, native_why) = status.json()
    assert (table_state, native_state) == ("stale", "stale")
    assert table_why.endswith("m_read.csv changed)") and "files changed" in table_why
    assert native_why == "files changed (m_native.csv changed)"
    again = nb.ok("r = flow.run(progress=False)\nprint(json.dumps([r['table'], r['native']]))")
    assert again.json() == [10, 7]

"""Reproducing a run from its record alone: ``run.reproduce()`` and ``nbflow reproduce``.

Every flow here is written to a file in a temp folder and run in a process of its own, as
a user runs a notebook; the file (and the helper module) is deleted before reproducing,
so nothing but the record can define the steps again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import nbformat
import pytest

import nbflow as nf
from nbflow.errors import (
    NbflowWarning,
    ReproductionError,
    RunError,
    UnknownRunError,
    UnknownStepError,
)

NBFLOW = str(Path(sys.executable).with_name("nbflow"))
COLUMNS = ["step", "status", "recorded_hash", "reproduced_hash", "reason"]

# The example: a helper cell, a module-level constant, a CSV read, a seeded fit.
CELLS = [
    "import numpy as np\nimport pandas as pd\nimport nbflow as nf\n\n"
    "flow = nf.Flow('churn', store='store.duckdb')",
    "SEED = 7  # a module-level constant\nFEATURES = ['tenure', 'spend']",
    "def standardize(frame, columns):\n"
    "    # a helper cell: steps call it\n"
    "    out = frame.copy()\n"
    "    for c in columns:\n"
    "        out[c] = (out[c] - out[c].mean()) / out[c].std()\n"
    "    return out",
    "@flow.step\ndef raw():\n    return pd.read_csv('churn.csv')",
    "@flow.step\ndef features(raw):\n    return standardize(raw, FEATURES)",
    "@flow.step\n"
    "def model(features, ridge: float = 0.1):\n"
    "    rng = np.random.default_rng(SEED)\n"
    "    x = features[FEATURES].to_numpy()\n"
    "    x = x + rng.normal(scale=1e-3, size=x.shape)  # seeded jitter\n"
    "    y = features['churned'].to_numpy(dtype=float)\n"
    "    w = np.linalg.solve(x.T @ x + ridge * np.eye(x.shape[1]), x.T @ y)\n"
    "    return {'weights': w.tolist(), 'score': float(((x @ w > 0.5) == y).mean())}",
]

CSV = "tenure,spend,churned\n1,20.5,1\n24,80.0,0\n3,35.2,1\n48,99.9,0\n12,50.0,0\n2,15.0,1\n"


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NBFLOW, *args], cwd=cwd, capture_output=True, text=True, timeout=600, check=False
    )


def run_script(folder: Path, code: str, **files: str) -> str:
    """Write ``code`` (and ``files``) into ``folder``, run it there in a fresh process,
    delete them all again; return the id it prints last."""
    for name, text in files.items():
        (folder / name).write_text(textwrap.dedent(text))
    script = folder / "analysis.py"
    script.write_text(textwrap.dedent(code))
    done = subprocess.run(
        [sys.executable, str(script)], cwd=folder, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    script.unlink()
    for name in files:
        if name.endswith(".py"):
            (folder / name).unlink()
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture
def example(tmp_path: Path) -> tuple[Path, str]:
    """The example notebook run with ``nbflow run``, then deleted: (folder, run id)."""
    (tmp_path / "churn.csv").write_text(CSV)
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(c) for c in CELLS]
    path = tmp_path / "churn.ipynb"
    nbformat.write(notebook, path)
    done = cli("run", str(path), "--store", "store.duckdb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    path.unlink()
    store = nf.open_store(tmp_path / "store.duckdb")
    try:
        run_id = str(store.runs_frame()["run_id"].iloc[0])
    finally:
        store.close()
    return tmp_path, run_id


def test_the_example_reproduces_identically_in_a_fresh_process(
    example: tuple[Path, str],
) -> None:
    folder, run_id = example
    done = cli("reproduce", run_id, "--store", "store.duckdb", "--format", "json", cwd=folder)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(done.stdout)
    assert [s["status"] for s in result["steps"]] == ["identical"] * 3
    assert [s["step"] for s in result["steps"]] == ["raw", "features", "model"]
    assert all(s["recorded_hash"] == s["reproduced_hash"] for s in result["steps"])
    table = cli("reproduce", run_id, "--store", "store.duckdb", cwd=folder)
    assert table.returncode == 0
    assert "identical" in table.stdout and "differs" not in table.stdout


def test_the_record_holds_sources_constants_files_and_environment(
    example: tuple[Path, str],
) -> None:
    folder, run_id = example
    with nf.open_store(folder / "store.duckdb") as store:
        run = nf.get_run(run_id, store)
        record = run.provenance()
        as_dict = record.to_dict()
    assert record.complete and record.missing == ()
    features = record.steps["features"]
    assert features.entries["standardize"]["kind"] == "function"
    assert "# a helper cell" in features.entries["standardize"]["text"]
    assert features.entries["FEATURES"] == {"kind": "constant", "literal": "['tenure', 'spend']"}
    model = record.steps["model"]
    assert model.entries["SEED"]["literal"] == "7"
    assert model.entries["np"] == {"kind": "import", "module": "numpy"}
    assert str(folder / "churn.csv") in record.steps["raw"].files
    assert record.environment.python == ".".join(map(str, sys.version_info[:3]))
    assert {"numpy", "pandas", "nbflow"} <= set(record.environment.packages)
    assert json.dumps(as_dict)  # to_dict() is JSON-able
    shown = cli("show", run_id, "--store", "store.duckdb", "--provenance", cwd=folder)
    assert shown.returncode == 0 and "def standardize(frame, columns):" in shown.stdout
    requirements = cli("show", run_id, "--store", "store.duckdb", "--requirements", cwd=folder)
    assert f"numpy=={record.environment.packages['numpy']}" in requirements.stdout.splitlines()


def test_runs_in_one_environment_share_its_record(example: tuple[Path, str]) -> None:
    folder, run_id = example
    with nf.open_store(folder / "store.duckdb") as store:
        first = nf.get_run(run_id, store)
        second = first.reproduce(check_determinism=False).attrs["reproduction"]
        a, b = first.provenance(), nf.get_run(second, store).provenance()
    assert a.environment.hash == b.environment.hash != ""
    assert (
        b.steps["features"].entries["standardize"]["source"]
        == (a.steps["features"].entries["standardize"]["source"])
    )


def test_an_exported_run_reproduces_in_a_fresh_store_elsewhere(
    example: tuple[Path, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    folder, run_id = example
    out = tmp_path_factory.mktemp("export")
    done = cli("export", run_id, str(out / "run"), "--store", "store.duckdb", cwd=folder)
    assert done.returncode == 0, done.stderr
    (folder / "store.duckdb").unlink()
    other = tmp_path_factory.mktemp("elsewhere")
    done = cli("import", str(out / "run"), "--store", "fresh.duckdb", cwd=other)
    assert done.returncode == 0, done.stderr
    done = cli("reproduce", run_id, "--store", "fresh.duckdb", "--format", "json", cwd=other)
    assert done.returncode == 0, done.stdout + done.stderr
    assert {s["status"] for s in json.loads(done.stdout)["steps"]} == {"identical"}


def test_a_reproduction_is_a_child_run_that_says_so(example: tuple[Path, str]) -> None:
    folder, run_id = example
    with nf.open_store(folder / "store.duckdb") as store:
        frame = nf.get_run(run_id, store).reproduce(steps=["model"])
        child = nf.get_run(frame.attrs["reproduction"], store)
        assert child.parent_id == run_id and child.params == {"ridge": 0.1}
        first = child.events.iloc[0]
        assert first["type"] == "run_forked" and first["payload"]["reproduces"] == run_id
    assert list(frame.columns) == COLUMNS
    assert frame.set_index("step")["status"].to_dict() == {
        "raw": "not_run",
        "features": "not_run",
        "model": "identical",
    }
    assert "not asked for" in frame.set_index("step").loc["raw", "reason"]


def test_changed_and_missing_files_are_named_with_their_recorded_hash(
    example: tuple[Path, str],
) -> None:
    folder, run_id = example
    with nf.open_store(folder / "store.duckdb") as store:
        recorded = nf.get_run(run_id, store).provenance().steps["raw"].files
        digest = recorded[str(folder / "churn.csv")]
        (folder / "churn.csv").write_text(CSV.replace("20.5", "21.5"))
        changed = nf.get_run(run_id, store).reproduce().set_index("step")
        assert changed.loc["raw", "status"] == "differs"
        assert (
            f"churn.csv changed since the run (recorded hash {digest}"
            in (changed.loc["raw", "reason"])
        )
        (folder / "churn.csv").unlink()
        gone = nf.get_run(run_id, store).reproduce().set_index("step")
    assert gone.loc["raw", "status"] == "failed"
    assert f"churn.csv is gone (recorded hash {digest})" in gone.loc["raw", "reason"]
    assert gone.loc["model", "status"] == "not_run"


def test_tolerances_tell_close_from_differs(tmp_path: Path) -> None:
    code = """
        import nbflow as nf
        flow = nf.Flow("tol", store="store.duckdb")

        @flow.step
        def level():
            return float(open("level.txt").read())

        @flow.step(reproduce_rtol=1e-3)
        def loose(level):
            return [level * 2, level * 3]

        flow.run(progress=False)
        print(flow.latest_run().id)
    """
    (tmp_path / "level.txt").write_text("1.0")
    run_id = run_script(tmp_path, code)
    (tmp_path / "level.txt").write_text("1.0000001")
    with nf.open_store(tmp_path / "store.duckdb") as store:
        run = nf.get_run(run_id, store)
        plain = run.reproduce(check_determinism=False).set_index("step")["status"]
        wide = run.reproduce(atol=1e-3, check_determinism=False).set_index("step")
    assert plain.to_dict() == {"level": "differs", "loose": "close"}
    assert wide.loc["level", "status"] == "close"
    assert "within rtol=0, atol=0.001" in wide.loc["level", "reason"]


def test_a_reproduce_tolerance_is_not_part_of_the_cache_key() -> None:
    from nbflow.definition.step import StepOptions

    assert StepOptions(reproduce_rtol=1e-6).to_json() == StepOptions().to_json()
    with pytest.raises(nf.errors.DefinitionError, match="reproduce_rtol"):
        StepOptions(reproduce_rtol=-1)


def test_unseeded_randomness_is_told_from_two_reproductions(tmp_path: Path) -> None:
    code = """
        import numpy as np
        import nbflow as nf
        flow = nf.Flow("noise", store="store.duckdb")

        @flow.step
        def sample():
            return np.random.default_rng().normal(size=3)

        @flow.step
        def seeded():
            return np.random.default_rng(1).normal(size=3)

        flow.run(progress=False)
        print(flow.latest_run().id)
    """
    run_id = run_script(tmp_path, code)
    with nf.open_store(tmp_path / "store.duckdb") as store:
        frame = nf.get_run(run_id, store).reproduce().set_index("step")
    assert frame.loc["seeded", "status"] == "identical"
    assert frame.loc["sample", "status"] == "differs"
    assert "not deterministic: two reproductions differ" in frame.loc["sample", "reason"]
    assert frame.attrs["second_reproduction"] is not None


def test_untracked_globals_and_lost_modules_get_their_reasons(tmp_path: Path) -> None:
    code = """
        import threading
        import nbflow as nf
        import shapes
        flow = nf.Flow("reasons", store="store.duckdb")
        LOCK = threading.Lock()
        SQUARE = shapes.Square(3)

        @flow.step
        def locked():
            with LOCK:
                return 1

        @flow.step
        def area():
            return SQUARE.side ** 2

        flow.run(progress=False)
        print(flow.latest_run().id)
    """
    shapes = """
        class Square:
            def __init__(self, side):
                self.side = side
    """
    run_id = run_script(tmp_path, code, **{"shapes.py": shapes})
    with nf.open_store(tmp_path / "store.duckdb") as store:
        frame = nf.get_run(run_id, store).reproduce().set_index("step")
    assert frame.loc["locked", "status"] == "failed"
    assert "untracked: it reads 'LOCK'" in frame.loc["locked", "reason"]
    assert frame.loc["area", "status"] == "failed"
    assert "pickled object whose code is no longer importable" in frame.loc["area", "reason"]


def test_a_pickled_value_in_an_untrusted_store_is_named(tmp_path: Path) -> None:
    code = """
        import nbflow as nf
        from fractions import Fraction
        flow = nf.Flow("trust", store="store.duckdb")
        HALF = Fraction(1, 2)

        @flow.step
        def half():
            return float(HALF)

        flow.run(progress=False)
        print(flow.latest_run().id)
    """
    run_id = run_script(tmp_path, code)
    with nf.open_store(tmp_path / "store.duckdb", trust=False) as store:
        frame = nf.get_run(run_id, store).reproduce().set_index("step")
    assert frame.loc["half", "status"] == "failed"
    assert (
        "pickled and the store is not trusted (opened with trust=False)"
        in (frame.loc["half", "reason"])
    )


def test_a_run_recorded_before_records_reproduces_what_it_can(tmp_path: Path) -> None:
    code = """
        import nbflow as nf
        import nbflow.engine.provenance as provenance
        provenance.run_record = lambda *args: None  # as nbflow wrote runs before records
        flow = nf.Flow("old", store="store.duckdb")
        OFFSET = 10

        @flow.step
        def plain():
            return 41 + 1

        @flow.step
        def shifted(plain):
            return plain + OFFSET

        flow.run(progress=False)
        print(flow.latest_run().id)
    """
    run_id = run_script(tmp_path, code)
    with nf.open_store(tmp_path / "store.duckdb") as store:
        run = nf.get_run(run_id, store)
        record = run.provenance()
        frame = run.reproduce().set_index("step")
    assert not record.complete
    assert any("Python version" in m for m in record.missing)
    assert frame.loc["plain", "status"] == "identical"
    assert frame.loc["shifted", "status"] == "failed"
    assert "recorded before nbflow kept a run's record" in frame.loc["shifted", "reason"]


def test_environment_differences_are_told_and_strict_refuses(tmp_path: Path) -> None:
    code = """
        import numpy as np
        import nbflow as nf
        import nbflow.engine.provenance as provenance
        real = provenance.environment
        provenance.environment = lambda packages: real({**packages, "numpy": "0.0.1"})
        flow = nf.Flow("env", store="store.duckdb")

        @flow.step
        def total():
            return float(np.arange(4).sum())

        flow.run(progress=False)
        print(flow.latest_run().id)
    """
    run_id = run_script(tmp_path, code)
    with nf.open_store(tmp_path / "store.duckdb") as store:
        run = nf.get_run(run_id, store)
        with pytest.raises(ReproductionError, match=r"package numpy: 0\.0\.1 recorded"):
            run.reproduce(strict=True)
        assert len(store.runs_frame()) == 1  # refused before anything ran
        with warnings.catch_warnings(record=True) as told:
            warnings.simplefilter("always")
            frame = run.reproduce()
    assert any(issubclass(w.category, NbflowWarning) for w in told)
    assert frame.attrs["environment"][0]["what"] == "package numpy"
    assert frame.loc[0, "status"] == "identical"
    assert "environment: package numpy: 0.0.1 recorded" in frame.loc[0, "reason"]


def test_bad_input_is_refused_clearly(example: tuple[Path, str]) -> None:
    folder, run_id = example
    with nf.open_store(folder / "store.duckdb") as store:
        run = nf.get_run(run_id, store)
        with pytest.raises(UnknownStepError, match="nope"):
            run.reproduce(steps=["nope"])
        with pytest.raises(nf.errors.ParameterError, match="rtol"):
            run.reproduce(rtol=-1)
        from nbflow.api.run import Run

        with pytest.raises(UnknownRunError):
            Run(store, "20990101-000000-00000000").reproduce()
    done = cli("reproduce", run_id, "--store", "store.duckdb", "--steps", "nope", cwd=folder)
    assert done.returncode == 2 and "nope" in done.stderr
    done = cli("reproduce", "20990101-000000-00000000", "--store", "store.duckdb", cwd=folder)
    assert done.returncode == 2


def test_a_waiting_run_and_an_in_memory_store_are_refused(tmp_path: Path) -> None:
    store = nf.open_store(tmp_path / "gates.duckdb")
    flow = nf.Flow("gated", store=store)

    @flow.gate
    def review():
        return 1

    run = flow.run(progress=False)
    assert run.status == "waiting"
    with pytest.raises(RunError, match="is waiting: only a finished run"):
        run.reproduce()
    memory = nf.Flow("mem", store="memory://")

    @memory.step
    def one():
        return 1

    with pytest.raises(ReproductionError, match="in-memory store"):
        memory.run(progress=False).reproduce()
    store.close()


def test_gc_and_check_keep_the_record(example: tuple[Path, str]) -> None:
    folder, run_id = example
    with nf.open_store(folder / "store.duckdb") as store:
        store.gc()
        assert store.check() == []
        assert nf.get_run(run_id, store).provenance().complete


def test_a_process_executor_reproduces_with_recorded_modules(tmp_path: Path) -> None:
    code = """
        import nbflow as nf
        import mylib
        flow = nf.Flow("procs", store="store.duckdb")

        @flow.step
        def tripled():
            return mylib.triple(14)

        flow.run(progress=False)
        print(flow.latest_run().id)
    """
    mylib = """
        FACTOR = 3
        def triple(x):
            return x * FACTOR
    """
    run_id = run_script(tmp_path, code, **{"mylib.py": mylib})
    assert not (tmp_path / "mylib.py").exists()
    with nf.open_store(tmp_path / "store.duckdb") as store:
        record = nf.get_run(run_id, store).provenance().steps["tripled"]
        assert "def triple(x):" in record.modules["mylib"]
        frame = nf.get_run(run_id, store).reproduce(executor="processes")
    assert frame["status"].tolist() == ["identical"]


def test_a_running_run_is_refused(tmp_path: Path) -> None:
    import threading

    from waiting import wait_for

    release = nf.untracked(threading.Event())
    store = nf.open_store(tmp_path / "running.duckdb")
    flow = nf.Flow("running", store=store)

    @flow.step
    def slow():
        release.wait(600)
        return 1

    run = flow.run(progress=False, background=True)
    try:
        wait_for(lambda: run.status == "running", f"run {run.id} to start")
        with pytest.raises(RunError, match="is running: only a finished run can be reproduced"):
            run.reproduce()
    finally:
        release.set()
        run.wait(600)
        store.close()


def test_step_cells_reproduce_from_their_record(tmp_path: Path) -> None:
    cells = [
        "%load_ext nbflow\nimport nbflow as nf\nflow = nf.Flow('cells', store='store.duckdb')\n"
        "FACTOR = 3",
        "def double(x):\n    return 2 * x",
        "%%step base --flow cells\nbase = list(range(5))",
        "%%step scaled --flow cells\nscaled = [double(v) * FACTOR for v in base]",
    ]
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(c) for c in cells]
    nbformat.write(notebook, tmp_path / "cells.ipynb")
    assert cli("run", "cells.ipynb", "--store", "store.duckdb", cwd=tmp_path).returncode == 0
    (tmp_path / "cells.ipynb").unlink()
    with nf.open_store(tmp_path / "store.duckdb") as store:
        run_id = str(store.runs_frame()["run_id"].iloc[0])
    done = cli("reproduce", run_id, "--store", "store.duckdb", "--format", "json", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert [s["status"] for s in json.loads(done.stdout)["steps"]] == ["identical"] * 2


def test_data_globals_are_stored_once_and_reproduce(tmp_path: Path) -> None:
    code = """
        import numpy as np
        import pandas as pd
        import nbflow as nf
        flow = nf.Flow("lookup", store="store.duckdb")
        WEIGHTS = np.linspace(0, 1, 1000)
        PRICES = pd.DataFrame({"item": ["a", "b"], "price": [1.5, 2.5]})

        @flow.step
        def total():
            return float(WEIGHTS.sum() * PRICES.price.sum())

        first = flow.run(progress=False)
        second = flow.run(progress=False)  # cached: nothing new is stored for its record
        print(first.id)
    """
    run_id = run_script(tmp_path, code)
    with nf.open_store(tmp_path / "store.duckdb") as store:
        runs = store.runs_frame()["run_id"].tolist()
        records = [nf.get_run(r, store).provenance().steps["total"] for r in runs]
        assert records[0].data == records[1].data and set(records[0].data) == {"WEIGHTS", "PRICES"}
        assert records[0].entries["WEIGHTS"]["kind"] == "data"
        frame = nf.get_run(run_id, store).reproduce()
    assert frame["status"].tolist() == ["identical"]


def test_a_tenant_reproduces_its_run_as_itself(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fresh process opens the store as the caller's store does: a tenant's
    reproduction is the tenant's run (and the store's URI is not on its command line)."""
    code = """
        import nbflow as nf
        flow = nf.Flow("tenanted", store="store.duckdb", tenant="team-a")

        @flow.step
        def total():
            return sum(range(10))

        flow.run(progress=False)
        print(flow.latest_run().id)
    """
    run_id = run_script(tmp_path, code)
    monkeypatch.setenv("NBFLOW_TENANT", "team-b")  # the caller's store says otherwise
    with nf.open_store(tmp_path / "store.duckdb", tenant="team-a") as store:
        frame = nf.get_run(run_id, store).reproduce(check_determinism=False)
        child = frame.attrs["reproduction"]
        assert nf.runs(store=store).set_index("run_id").loc[child, "tenant"] == "team-a"
    assert frame.set_index("step")["status"].to_dict() == {"total": "identical"}
    with (
        nf.open_store(tmp_path / "store.duckdb", tenant="team-b") as other,
        pytest.raises(UnknownRunError),
    ):
        nf.get_run(child, other)

"""Data a step reads from its module is part of its key (issue 15, point 1).

A frame, an array or a list of ids read as a global is hashed by content: rebinding or
changing it makes the step stale, and the next run recomputes it. A global that cannot be
hashed makes the step ``untracked``: ``flow.status()`` names it, the run records a
``step_warning`` event, and the step runs every time unless pinned (``version=``) or the
value is marked with ``nf.untracked``.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import os
import sqlite3
import subprocess
import sys
import textwrap
import warnings
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

import nbflow as nf
from nbflow.errors import DefinitionError, UntrackedStepWarning
from nbflow.graph import data as data_module
from nbflow.graph.data import DataHashes
from nbflow.graph.fingerprint import fingerprint_parts, step_fingerprint

_counter = itertools.count()

Loader = Callable[[str], ModuleType]


@pytest.fixture
def load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Loader:
    """Write ``src`` to a fresh file and import it as a fresh module (source readable)."""

    def _load(src: str) -> ModuleType:
        n = next(_counter)
        name = f"nbflow_data_case_{n}"
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(src))
        spec = importlib.util.spec_from_file_location(name, path)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        monkeypatch.setitem(sys.modules, name, module)
        spec.loader.exec_module(module)
        return module

    return _load


def states(flow: nf.Flow) -> dict[str, tuple[str, str]]:
    return {r.step: (r.state, r.why) for r in flow.status().itertuples()}


def statuses(run: nf.Run) -> dict[str, str]:
    return dict(zip(run.steps["step"], run.steps["status"], strict=True))


FRAME_FLOW = """
import numpy as np
import pandas as pd
import nbflow as nf

flow = nf.Flow("data-globals", store=":memory:")

LOOKUP = pd.DataFrame({"code": ["a", "b", "c"], "weight": [1.0, 2.0, 3.0]})
IDS = list(range(5_000))
VECTOR = np.arange(1_000, dtype="float64")


@flow.step
def weighted():
    return float(LOOKUP["weight"].sum())


@flow.step
def counted():
    return len(IDS)


@flow.step
def summed():
    return float(VECTOR.sum())


@flow.step
def report(weighted, counted, summed):
    return {"weighted": weighted, "counted": counted, "summed": summed}
"""


def test_a_rebound_frame_makes_its_step_stale_and_the_run_recomputes_it(load: Loader) -> None:
    module = load(FRAME_FLOW)
    flow = module.flow
    first = flow.run(progress=False)
    assert first["weighted"] == 6.0
    module.LOOKUP = pd.DataFrame({"code": ["a", "b", "c"], "weight": [1.0, 2.0, 4.0]})
    found = states(flow)
    assert found["weighted"][0] == "stale"
    assert "a global it reads changed (LOOKUP)" in found["weighted"][1]
    assert found["counted"][0] == "fresh" and found["summed"][0] == "fresh"
    second = flow.run(progress=False)
    assert second["weighted"] == 7.0  # not the old result
    assert statuses(second) == {
        "weighted": "completed",
        "counted": "cached",
        "summed": "cached",
        "report": "completed",
    }
    assert all(state == "fresh" for state, _ in states(flow).values())


def test_data_changed_in_place_counts_too(load: Loader) -> None:
    module = load(FRAME_FLOW)
    flow = module.flow
    flow.run(progress=False)
    module.VECTOR[0] = 1e6  # the same array object, other content
    module.IDS.append(-1)
    found = states(flow)
    assert found["summed"][0] == "stale" and "(VECTOR)" in found["summed"][1]
    assert found["counted"][0] == "stale" and "(IDS)" in found["counted"][1]
    again = flow.run(progress=False)
    assert again["counted"] == 5_001
    assert again["summed"] == float(np.arange(1_000).sum()) + 1e6
    assert statuses(again)["weighted"] == "cached"


def test_an_equal_frame_rebound_changes_nothing(load: Loader) -> None:
    module = load(FRAME_FLOW)
    flow = module.flow
    flow.run(progress=False)
    module.LOOKUP = module.LOOKUP.copy()  # a new object, the same content
    assert states(flow)["weighted"][0] == "fresh"
    assert statuses(flow.run(progress=False))["weighted"] == "cached"


def test_the_record_holds_each_data_globals_hash(load: Loader) -> None:
    module = load(FRAME_FLOW)
    run = module.flow.run(progress=False)
    record = run.store.get_run(run.id)
    definition = run.store.get_flow(record.flow, record.flow_fingerprint)
    assert definition is not None
    weighted = definition.step("weighted")
    assert weighted is not None and set(weighted.globals) == {"LOOKUP"}
    assert weighted.globals["LOOKUP"].startswith("pickle:")
    summed = definition.step("summed")
    assert summed is not None and summed.globals["VECTOR"].startswith("npy:")
    assert weighted.packages["pandas"] == pd.__version__  # a DataFrame is pandas' value


UNTRACKED_FLOW = """
import sqlite3
import nbflow as nf

flow = nf.Flow("untracked", store=":memory:")
con = sqlite3.connect(":memory:")


@flow.step
def answer():
    return con.execute("select 41 + 1").fetchone()[0]


@flow.step
def doubled(answer):
    return answer * 2
"""


def test_an_unhashable_global_makes_the_step_untracked_visibly(load: Loader) -> None:
    module = load(UNTRACKED_FLOW)
    flow = module.flow
    with pytest.warns(UntrackedStepWarning, match=r"'answer' is untracked: it reads con"):
        first = flow.run(progress=False)
    warned = first.events[first.events["type"] == "step_warning"]
    assert warned["step"].tolist() == ["answer"]
    state, why = states(flow)["answer"]
    assert state == "untracked"
    assert "con (a sqlite3.Connection" in why and "cannot hash" in why
    assert "nf.untracked" in why and "version=" in why
    # Recomputed every run, never silently reused; its unchanged output keeps the
    # step after it cached.
    with pytest.warns(UntrackedStepWarning):
        second = flow.run(progress=False)
    assert statuses(second) == {"answer": "completed", "doubled": "cached"}
    assert second["doubled"] == 84
    assert (second.events["type"] == "step_warning").sum() == 1


def test_a_version_pins_an_untracked_step(load: Loader) -> None:
    module = load(
        UNTRACKED_FLOW.replace("@flow.step\ndef answer", '@flow.step(version="1")\ndef answer')
    )
    flow = module.flow
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrackedStepWarning)
        flow.run(progress=False)
        again = flow.run(progress=False)
    assert statuses(again) == {"answer": "cached", "doubled": "cached"}
    assert states(flow)["answer"][0] == "fresh"


def test_nf_untracked_takes_a_value_out_of_the_key(load: Loader) -> None:
    module = load(
        UNTRACKED_FLOW.replace(
            'con = sqlite3.connect(":memory:")', 'con = nf.untracked(sqlite3.connect(":memory:"))'
        )
    )
    flow = module.flow
    assert fingerprint_parts(module.answer)["con"] == "ignored:sqlite3.Connection"
    with warnings.catch_warnings():
        warnings.simplefilter("error", UntrackedStepWarning)
        flow.run(progress=False)
        again = flow.run(progress=False)
    assert statuses(again)["answer"] == "cached"
    # Another connection, also marked: still not part of the key.
    module.con = nf.untracked(sqlite3.connect(":memory:"))
    assert states(flow)["answer"][0] == "fresh"


def test_nf_untracked_refuses_constants_and_code() -> None:
    with pytest.raises(DefinitionError, match="plain constants"):
        nf.untracked(3)
    with pytest.raises(DefinitionError, match="plain constants"):
        nf.untracked("text")
    with pytest.raises(DefinitionError, match="marks data, not code"):
        nf.untracked(len.__class__)
    with pytest.raises(DefinitionError, match="version="):
        nf.untracked(test_nf_untracked_refuses_constants_and_code)
    con = sqlite3.connect(":memory:")
    assert nf.untracked(con) is con  # the value itself, unwrapped


def test_each_value_is_hashed_once_per_run(load: Loader, monkeypatch: pytest.MonkeyPatch) -> None:
    module = load(
        FRAME_FLOW
        + """

@flow.step
def again():
    return float(LOOKUP["weight"].max())
"""
    )
    seen: list[int] = []
    real = data_module._data_hash

    def counting(value: object) -> tuple[str | None, str]:
        seen.append(id(value))
        return real(value)

    monkeypatch.setattr(data_module, "_data_hash", counting)
    module.flow.run(progress=False)
    assert seen.count(id(module.LOOKUP)) == 1  # read by two steps, hashed once
    module.flow.run(progress=False)
    assert seen.count(id(module.LOOKUP)) == 2  # and again for the next run


def test_the_class_of_a_data_global_is_code_the_step_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = """
    class Scaler:
        def __init__(self, factor):
            self.factor = factor

        def apply(self, x):
            return x * self.factor

    SCALER = Scaler(2)

    def step(x):
        return SCALER.apply(x)
    """
    path = tmp_path / "nbflow_scaler_case.py"
    path.write_text(textwrap.dedent(src))
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # an edit within a second counts
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("nbflow_scaler_case")
    monkeypatch.setitem(sys.modules, "nbflow_scaler_case", module)
    before, _ = step_fingerprint(module.step)
    path.write_text(textwrap.dedent(src.replace("x * self.factor", "x + self.factor")))
    module = importlib.reload(module)
    assert step_fingerprint(module.step)[0] != before
    path.write_text(textwrap.dedent(src))
    module = importlib.reload(module)
    assert step_fingerprint(module.step)[0] == before


_HASH_IN_A_PROCESS = """
import pandas as pd
from nbflow.graph.data import DataHashes


class Point:
    def __init__(self, x, tags):
        self.x = x
        self.tags = tags


frame = pd.DataFrame(
    {
        "name": ["a", "b", None],
        "plan": pd.Categorical(["x", "y", "x"]),
        "when": pd.date_range("2026-01-01", periods=3, tz="Europe/Paris"),
        "value": [1.5, 2.5, float("nan")],
    }
)
hashes = DataHashes()
print(hashes.digest(Point(3, {"red", "green", "blue"}))[0])
print(hashes.digest({"frame": frame, "ids": {"u1", "u2", "u3"}})[0])
"""


def test_data_hashes_are_the_same_in_every_process(tmp_path: Path) -> None:
    # Classes defined in __main__ are pickled by value with a per-process tracker id, and
    # sets of strings in a per-process order: neither may reach a data hash.
    script = tmp_path / "hash_values.py"
    script.write_text(_HASH_IN_A_PROCESS)
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run(
            [sys.executable, str(script)], capture_output=True, text=True, env=env, check=False
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout.split())
    assert outputs[0] == outputs[1]
    assert all(line.startswith("pickle:") for line in outputs[0])


def test_values_that_cannot_be_pickled_say_why() -> None:
    digest, reason = DataHashes().digest(sqlite3.connect(":memory:"))
    assert digest is None and "cannot be pickled" in reason and "sqlite3.Connection" in reason
    assert DataHashes().digest(np.arange(3))[0] == DataHashes().digest(np.arange(3))[0]
    assert DataHashes().digest(np.arange(3))[0] != DataHashes().digest(np.arange(4))[0]


def test_every_backend_records_the_warning_and_the_definitions_reads(store: nf.Store) -> None:
    flow = nf.Flow("untracked-everywhere", store=store)
    lock = sqlite3.connect(":memory:")
    lookup = pd.DataFrame({"x": [1, 2]})

    @flow.step
    def reads() -> int:
        return int(lookup["x"].sum()) + lock.total_changes

    with pytest.warns(UntrackedStepWarning):
        run = flow.run(progress=False)
    warned = run.events[run.events["type"] == "step_warning"]
    assert warned["step"].tolist() == ["reads"]
    record = store.get_run(run.id)
    definition = store.get_flow(record.flow, record.flow_fingerprint)
    assert definition is not None
    step = definition.step("reads")
    assert step is not None and step.globals["lookup"].startswith("pickle:")
    assert step.globals["lock"] == "untracked:sqlite3.Connection"
    assert step.packages["pandas"] == pd.__version__ and step.code_fingerprint

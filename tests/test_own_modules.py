"""Code in the user's own modules is followed; installed packages count by name and
version (issue 15, point 2).

A helper in a local ``mylib.py``, edited and reloaded with ``importlib.reload``, makes
the steps that use it stale, transitively, like a helper in the notebook. A package from
``site-packages`` is not followed: its distribution's name and version are part of the
key instead, and the flow's recorded definition lists them.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pandas as pd
import pytest

import nbflow as nf
from nbflow.graph import modules
from nbflow.graph.fingerprint import fingerprint_parts, step_fingerprint

MYLIB = """
SCALE = 2


def _inner(x):
    return x * SCALE


def helper(x):
    return _inner(x) + 1


class Model:
    def predict(self, x):
        return x - 1
"""

STEPS = """
import nbflow as nf
import nbflow_mylib
from nbflow_mylib import helper

flow = nf.Flow("own-modules", store=":memory:")


@flow.step
def by_attribute():
    return nbflow_mylib.helper(10)


@flow.step
def by_name():
    return helper(20)


@flow.step
def by_class():
    return nbflow_mylib.Model().predict(5)


@flow.step
def untouched():
    return 1
"""


class Project:
    """A folder with a local module and a module of steps that imports it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lib_path = root / "nbflow_mylib.py"
        self.lib_path.write_text(textwrap.dedent(MYLIB))
        (root / "nbflow_steps.py").write_text(textwrap.dedent(STEPS))
        self.lib = importlib.import_module("nbflow_mylib")
        self.steps = importlib.import_module("nbflow_steps")

    @property
    def flow(self) -> nf.Flow:
        return self.steps.flow

    def edit(self, old: str, new: str) -> None:
        """Edit the local module and reload it, as a user in a notebook would."""
        text = self.lib_path.read_text()
        assert old in text
        self.lib_path.write_text(text.replace(old, new))
        self.lib = importlib.reload(self.lib)

    def states(self) -> dict[str, tuple[str, str]]:
        return {r.step: (r.state, r.why) for r in self.flow.status().itertuples()}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # an edit within a second counts
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        yield Project(tmp_path)
    finally:
        for name in ("nbflow_mylib", "nbflow_steps"):
            sys.modules.pop(name, None)


def statuses(run: nf.Run) -> dict[str, str]:
    return dict(zip(run.steps["step"], run.steps["status"], strict=True))


def test_a_local_module_is_the_users_code(project: Project) -> None:
    assert modules.module_kind("nbflow_mylib") is modules.ModuleKind.USER
    assert modules.module_kind("pandas") is modules.ModuleKind.PACKAGE
    assert modules.module_kind("json") is modules.ModuleKind.STDLIB
    assert modules.module_kind("nbflow.api.flow") is modules.ModuleKind.PACKAGE
    parts = fingerprint_parts(project.steps.by_attribute)
    # Followed through the attribute, then transitively: helper -> _inner -> SCALE.
    assert {"nbflow_mylib.helper", "_inner", "SCALE"} <= set(parts)


def test_editing_a_helper_in_a_local_module_and_reloading_makes_its_users_stale(
    project: Project,
) -> None:
    first = project.flow.run(progress=False)
    assert (first["by_attribute"], first["by_name"]) == (21, 41)
    project.edit("return x * SCALE", "return x * SCALE * 10")  # _inner: two calls deep
    found = project.states()
    for step in ("by_attribute", "by_name"):
        assert found[step] == ("stale", "code changed (a function or constant it uses)")
    assert found["by_class"][0] == "fresh" and found["untouched"][0] == "fresh"
    second = project.flow.run(progress=False)
    assert (second["by_attribute"], second["by_name"]) == (201, 401)
    assert statuses(second) == {
        "by_attribute": "completed",
        "by_name": "completed",
        "by_class": "cached",
        "untouched": "cached",
    }


def test_a_constant_and_a_class_in_a_local_module_count(project: Project) -> None:
    project.flow.run(progress=False)
    project.edit("SCALE = 2", "SCALE = 3")
    found = project.states()
    assert found["by_attribute"][0] == "stale" and found["by_name"][0] == "stale"
    assert found["by_class"][0] == "fresh"
    project.flow.run(progress=False)
    project.edit("return x - 1", "return x - 2")
    found = project.states()
    assert found["by_class"][0] == "stale" and found["by_attribute"][0] == "fresh"
    assert project.flow.run(progress=False)["by_class"] == 3


def test_installed_packages_count_by_name_and_version(tmp_path: Path) -> None:
    src = textwrap.dedent(
        """
        import json
        import numpy as np
        import pandas as pd

        def step():
            frame = pd.DataFrame({"x": np.arange(3)})
            return json.dumps(frame["x"].tolist())
        """
    )
    path = tmp_path / "nbflow_package_case.py"
    path.write_text(src)
    namespace: dict[str, object] = {"__name__": "nbflow_package_case"}
    exec(compile(src, str(path), "exec"), namespace)
    step = namespace["step"]
    parts = fingerprint_parts(step)  # type: ignore[arg-type]
    assert parts["<package pandas>"] == pd.__version__
    assert parts["<package numpy>"] == np.__version__
    assert not any("json" in key for key in parts)  # the standard library: neither
    _, reads = step_fingerprint(step)  # type: ignore[arg-type]
    assert reads.packages == {"pandas": pd.__version__, "numpy": np.__version__}


_UPGRADE_SCRIPT = """
import json
import sys

import fakepkg
import nbflow as nf

flow = nf.Flow("upgrade", store=sys.argv[1])


@flow.step
def computed():
    return fakepkg.compute(1)


@flow.step
def independent():
    return 7


before = {r.step: [r.state, r.why] for r in flow.status().itertuples()}
run = flow.run(progress=False)
record = run.store.get_run(run.id)
definition = run.store.get_flow(record.flow, record.flow_fingerprint)
print(json.dumps({
    "before": before,
    "statuses": dict(zip(run.steps["step"], run.steps["status"])),
    "packages": dict(getattr(definition.step("computed"), "packages", {})),
}))
"""


def _install_fake_package(site: Path, version: str) -> None:
    """``fakepkg`` in a ``site-packages`` folder, with the metadata pip would write."""
    for old in site.glob("fakepkg-*.dist-info"):
        for file in old.iterdir():
            file.unlink()
        old.rmdir()
    package = site / "fakepkg"
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("def compute(x):\n    return x + 1\n")
    info = site / f"fakepkg-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakepkg\nVersion: {version}\n")
    (info / "top_level.txt").write_text("fakepkg\n")


def test_a_package_upgrade_invalidates_what_it_computed(tmp_path: Path) -> None:
    # Each run is a new process, as a kernel restarted after `pip install -U` would be.
    site = tmp_path / "lib" / "site-packages"
    script = tmp_path / "upgrade_flow.py"
    script.write_text(_UPGRADE_SCRIPT)
    store = tmp_path / "store.duckdb"

    def run() -> dict[str, dict[str, object]]:
        env = {"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"}
        done = subprocess.run(
            [sys.executable, str(script), str(store)],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        result: dict[str, dict[str, object]] = json.loads(done.stdout.splitlines()[-1])
        return result

    _install_fake_package(site, "1.0")
    first = run()
    assert first["statuses"] == {"computed": "completed", "independent": "completed"}
    assert run()["statuses"] == {"computed": "cached", "independent": "cached"}
    _install_fake_package(site, "2.0")
    upgraded = run()
    assert upgraded["statuses"] == {"computed": "completed", "independent": "cached"}
    assert upgraded["before"]["computed"] == ["stale", "a package changed (fakepkg 1.0 → 2.0)"]
    assert upgraded["before"]["independent"][0] == "fresh"
    # The record of each run says which version computed the step.
    assert first["packages"] == {"fakepkg": "1.0"}
    assert upgraded["packages"] == {"fakepkg": "2.0"}


def test_modules_made_in_memory_are_the_users(monkeypatch: pytest.MonkeyPatch) -> None:
    made = ModuleType("nbflow_in_memory")
    exec("LIMIT = 3\ndef cap(x):\n    return min(x, LIMIT)\n", made.__dict__)
    monkeypatch.setitem(sys.modules, "nbflow_in_memory", made)
    assert modules.module_kind("nbflow_in_memory") is modules.ModuleKind.USER

    def step(x: int) -> int:
        return made.cap(x)

    before = step_fingerprint(step)[0]
    made.LIMIT = 4
    assert step_fingerprint(step)[0] != before

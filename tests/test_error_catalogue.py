"""docs/errors.md stays complete and true: every error class in ``nbflow.errors`` has a
section, and each documented error is raised here the way a user meets it, with a message
that still says what the catalogue's example says.

Adding an error class: give it a section in docs/errors.md (what it means, an example
message in a ```text block, what to do) and a case in ``CASES`` below.

tests/test_error_leaks.py checks the other side: that whatever a user passes wrong to a
public function ends in one of these errors, never in a raw exception.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from read_only_folder import error_in_read_only_child
from waiting import wait_for

import nbflow as nf
from nbflow import errors
from nbflow.store.duckdb.store import DuckDBStore
from nbflow.store.records import EventType, NewEvent
from nbflow.testing import make_run

CATALOGUE = Path(__file__).resolve().parent.parent / "docs" / "errors.md"
SECTION = re.compile(r"^## `(\w+)`\n(.*?)(?=^## |\Z)", re.DOTALL | re.MULTILINE)
EXAMPLE = re.compile(r"^```text\n(.*?)^```", re.DOTALL | re.MULTILINE)


def sections() -> dict[str, str]:
    """Class name -> the text of its section in the catalogue."""
    return dict(SECTION.findall(CATALOGUE.read_text(encoding="utf-8")))


def error_classes() -> dict[str, type[BaseException]]:
    """Every public exception class defined in nbflow.errors."""
    return {
        name: value
        for name, value in vars(errors).items()
        if isinstance(value, type)
        and issubclass(value, BaseException)
        and not issubclass(value, Warning)  # documented under "Warnings"
        and value.__module__ == errors.__name__
        and not name.startswith("_")
    }


# -- the catalogue is complete ---------------------------------------------------------------


def test_every_error_class_has_a_section() -> None:
    missing = sorted(set(error_classes()) - set(sections()))
    assert not missing, (
        f"docs/errors.md has no section for {', '.join(missing)}: add '## `Name`' saying "
        "what the error means, an example message in a ```text block and what to do, "
        "then a case in CASES of tests/test_error_catalogue.py"
    )


def test_every_error_class_is_exported() -> None:
    missing = sorted(set(error_classes()) - set(errors.__all__))
    assert not missing, f"add {', '.join(missing)} to __all__ in nbflow/errors/__init__.py"


def test_every_section_is_an_nbflow_error_in_the_tree() -> None:
    classes = error_classes()
    tree = CATALOGUE.read_text(encoding="utf-8").split("\n## ", 1)[0]
    for name, text in sections().items():
        assert name in classes, f"docs/errors.md documents {name}, which nbflow.errors lacks"
        assert issubclass(classes[name], errors.NbflowError), name
        assert re.search(rf"\b{name}\b", tree), f"add {name} to the tree atop docs/errors.md"
        assert EXAMPLE.search(text), f"the section of {name} needs a ```text example"
        assert "**What to do:**" in text, f"the section of {name} needs '**What to do:**'"


def test_every_section_has_a_case() -> None:
    missing = sorted(set(sections()) - set(CASES))
    assert not missing, (
        f"add a case to CASES in tests/test_error_catalogue.py for {', '.join(missing)}: "
        "raise the error the way a user would, and list the facts its message must show"
    )


# -- each error, raised as a user meets it ------------------------------------------------------


@dataclass
class Raised:
    """What a case raised, and facts of this occurrence (ids, paths) its message names."""

    error: BaseException
    names: list[str] = field(default_factory=list)


def raising(action: Callable[[], object]) -> BaseException:
    """The exception ``action`` raises (failing the test when it raises none)."""
    try:
        action()
    except Exception as exc:
        return exc
    raise AssertionError(f"{action} raised nothing")


@dataclass(frozen=True)
class Case:
    """How to make nbflow raise one documented error, and what its message must say (the
    same words must be in the catalogue's example)."""

    trigger: Callable[[Path, pytest.MonkeyPatch], Raised]
    facts: tuple[str, ...]


def churn(store: nf.Store) -> nf.Flow:
    flow = nf.Flow("churn", store=store)

    @flow.step
    def raw():
        return pd.DataFrame({"x": [1, 2, 3]})

    @flow.step
    def features(raw, window: int = 30):
        return raw.assign(w=window)

    return flow


def failing(store: nf.Store) -> nf.Flow:
    flow = nf.Flow("fails", store=store)

    @flow.step
    def load():
        return 1

    @flow.step
    def boom(load):
        raise ValueError("no data today")

    @flow.step
    def after(boom):
        return boom

    return flow


def memory() -> nf.Store:
    return nf.open_store("memory://")


def any_nbflow_error(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    return Raised(raising(lambda: nf.get_run("no-such-run", memory())))


def bad_step_name(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    flow = nf.Flow("bad", store=memory())
    return Raised(raising(lambda: flow.step(name="not valid")(lambda: 1)))


def cycle(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    flow = nf.Flow("cycle", store=memory())

    @flow.step
    def a(b):
        return b

    @flow.step
    def b(a):
        return a

    return Raised(raising(lambda: flow.run(progress=False)))


def missing_dependency(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    flow = nf.Flow("missing", store=memory())

    @flow.step
    def raw():
        return 1

    @flow.step
    def features(raww):
        return raww

    return Raised(raising(lambda: flow.run(progress=False)))


def bad_cell(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    from nbflow.magics import define_step

    notebook = {"__name__": "__main__", "flow": nf.Flow("nb", store=memory())}
    cell = "x = 1\nfor i in range(3):\n    x += i\n"
    return Raised(raising(lambda: define_step(notebook, "summary", cell)))


def unknown_step(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    run = churn(memory()).run(progress=False)
    return Raised(raising(lambda: run["featurs"]), [f"run {run.id}"])


def unknown_parameter(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    flow = churn(memory())
    return Raised(raising(lambda: flow.run(windw=7, progress=False)))


def read_only_sql(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    return Raised(raising(lambda: memory().sql("DELETE FROM runs")))


def a_directory(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    folder = tmp / "runs"
    folder.mkdir()
    return Raised(raising(lambda: nf.open_store(folder)), [repr(str(folder))])


def _store_file(path: Path) -> Path:
    with DuckDBStore(path) as store:
        store.create_run(make_run("r1", params={"pad": "x" * 2000}))
    return path


def a_damaged_file(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    path = _store_file(tmp / "damaged.duckdb")
    with path.open("r+b") as fh:
        fh.seek(3 * 4096)  # past the file headers: the blocks of the catalog
        fh.write(b"\xa5" * 32 * 1024)
    return Raised(raising(lambda: nf.open_store(path)), [str(path)])


def a_newer_schema(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    path = _store_file(tmp / "newer.duckdb")
    con = duckdb.connect(str(path))
    con.execute("UPDATE nbflow_meta SET value = '99' WHERE key = 'schema_version'")
    con.close()
    return Raised(raising(lambda: nf.open_store(path)), [str(path)])


def a_busy_file(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    path = _store_file(tmp / "busy.duckdb")
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; con = duckdb.connect(sys.argv[1]); print('holding', flush=True);"
            " sys.stdin.read()",
            str(path),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "holding"
        mp.setenv("NBFLOW_BUSY_TIMEOUT", "0.2")
        error = raising(lambda: nf.open_store(path))
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
    assert getattr(error, "pid", None) == holder.pid
    return Raised(error, [f"process {holder.pid}", str(path)])


def a_full_disk(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    disk = tmp / "small"
    disk.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", disk], capture_output=True
    )
    if os.geteuid() != 0 or mounted.returncode != 0:
        pytest.skip("filling a small file system needs root to mount it")
    try:
        store = DuckDBStore(disk / "nbflow.duckdb")
        flow = nf.Flow("full", store=store)

        @flow.step
        def big():
            # 32 MB that DuckDB cannot compress away: more than the disk holds
            return pd.DataFrame({"x": np.random.default_rng(0).random(4_000_000)})

        error = raising(lambda: flow.run(progress=False))
        store.close()
    finally:
        subprocess.run(["umount", "-l", disk], check=False)
    assert isinstance(error.__cause__, errors.StoreFullError)
    return Raised(error, [str(disk / "nbflow.duckdb")])


GC_ALL = "import sys, nbflow as nf; nf.open_store(sys.argv[1]).gc(keep_last=0)"


def a_read_only_store(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    (tmp / "archive").mkdir()
    path = _store_file(tmp / "archive" / "nbflow.duckdb")
    return Raised(error_in_read_only_child(path.parent, GC_ALL, str(path)), [str(path)])


def a_leased_run(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    path = tmp / "leased.duckdb"
    store, other = DuckDBStore(path), DuckDBStore(path)
    try:
        run = failing(store).run(progress=False, raise_on_error=False)
        other.claim(run.id)  # another store object, as another process would hold it
        error = raising(lambda: run.resume(progress=False))
    finally:
        other.close()
        store.close()
    return Raised(error, [run.id, f"pid {os.getpid()}"])


def unknown_run(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    return Raised(raising(lambda: nf.get_run("no-such-run", memory())))


def a_bad_tenant(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    return Raised(raising(lambda: nf.Flow("f", store=memory(), tenant="team\na")))


def another_tenants_run(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    store = memory()
    store.with_tenant("team-b").create_run(make_run("theirs"))
    return Raised(raising(lambda: store.with_tenant("team-a").get_run("theirs")))


def changing_a_run_without_a_tenant(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    store = memory()
    store.create_run(make_run("old"))
    mine = store.with_tenant("team-a")
    return Raised(raising(lambda: mine.append("old", 0, [NewEvent(EventType.RUN_STARTED)])))


def a_stale_write(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    store = memory()
    store.create_run(make_run("dup"))
    return Raised(raising(lambda: store.append("dup", 5, [NewEvent(EventType.RUN_STARTED)])))


def an_invalid_transition(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    store = memory()
    store.create_run(make_run("dup"))
    return Raised(raising(lambda: store.append("dup", 0, [NewEvent(EventType.RUN_COMPLETED)])))


def an_unpicklable_output(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    flow = nf.Flow("ser", store=memory())

    @flow.step
    def lock():
        return threading.Lock()

    return Raised(raising(lambda: flow.run(progress=False)))


class Model:
    """Stands for a fitted model: only pickle can store it."""


def an_untrusted_pickle(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    flow = nf.Flow("models", store=nf.open_store("memory://", trust=False))

    @flow.step
    def model():
        return Model()

    run = flow.run(progress=False)
    return Raised(raising(lambda: run["model"]), [f"in run {run.id}", f"{__name__}.Model"])


def an_imported_pickle(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    flow = nf.Flow("models", store=memory())

    @flow.step
    def model():
        return Model()

    run = flow.run(progress=False)
    folder = nf.export_run(flow.store, run.id, tmp / "export")
    target = DuckDBStore(tmp / "mine.duckdb")  # trusted
    nf.import_run(target, folder)
    facts = [f"imported from the export {folder.resolve()}", f"nbflow trust {run.id} --store"]
    return Raised(raising(lambda: nf.get_run(run.id, target)["model"]), facts)


def a_missing_notebook(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    return Raised(raising(lambda: nf.load_notebook(tmp / "analysis.ipynb")))


def a_version_never_reached(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    run = churn(memory()).run(progress=False)
    return Raised(raising(lambda: run.at(999)), [f"run {run.id} has versions 0 to {run.version}"])


def a_duplicate_run(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    store = memory()
    store.create_run(make_run("dup"))
    return Raised(raising(lambda: store.create_run(make_run("dup"))))


def a_reproduction_of_an_in_memory_run(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    run = churn(memory()).run(progress=False)
    return Raised(raising(lambda: run.reproduce()), [f"run {run.id}"])


def a_failing_step(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    return Raised(raising(lambda: failing(memory()).run(progress=False)))


def a_slow_step(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    flow = nf.Flow("slow", store=memory())

    @flow.step(timeout=0.05)
    def slow():
        time.sleep(0.5)

    return Raised(raising(lambda: flow.run(progress=False)))


def a_step_changing_its_input(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    flow = nf.Flow("shared", store=memory())

    @flow.step
    def frame():
        return pd.DataFrame({"x": [1, 2, 3]})

    @flow.step
    def zeroed(frame):
        frame["x"] = 0
        return 0

    return Raised(raising(lambda: flow.run(progress=False)))


def a_wait_too_short(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    flow = nf.Flow("waits", store=memory())
    release = threading.Event()

    @flow.step
    def slow():
        release.wait(timeout=60)

    run = flow.run(background=True, progress=False)
    try:
        # (A loaded machine may not have started the run within the 0.01 s: it would be
        # "still pending".)
        wait_for(lambda: run.status == "running", f"run {run.id} to start")
        error = raising(lambda: run.wait(timeout=0.01))
    finally:
        release.set()
        run.wait(timeout=60)
    return Raised(error, [f"run {run.id} is still running"])


def a_skipped_output(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    run = failing(memory()).run(progress=False, raise_on_error=False)
    return Raised(raising(lambda: run["after"]), [f"run {run.id}"])


def not_an_export(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    return Raised(raising(lambda: nf.import_run(memory(), tmp)), [str(tmp)])


def gated(store: nf.Store | None = None) -> nf.Run:
    """A run waiting at its gate 'review'."""
    flow = nf.Flow("gated", store=store or memory())

    @flow.step
    def raw():
        return [1, 2, 3]

    @flow.gate
    def review(raw):
        return {"rows": len(raw)}

    @flow.step
    def publish(review):
        return review

    return flow.run(progress=False)


def an_unknown_gate(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    run = gated()
    return Raised(raising(lambda: run.approve("reveiw", by="ann")), [run.id])


def a_tampered_token(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    run = gated()
    token = run.gate_token("review")
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    return Raised(raising(lambda: run.approve("review", by="ann", token=tampered)))


def an_expired_token(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    import datetime as dt

    import nbflow.store.gates as gates

    run = gated()
    token = run.gate_token("review", expires_in=dt.timedelta(minutes=1))
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
    mp.setattr(gates, "utcnow", lambda: later)
    return Raised(raising(lambda: nf.approve(token, store=run.store)), [run.id])


def a_used_token(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    run = gated()
    token = run.gate_token("review")
    nf.approve(token, by="ann", store=run.store)
    return Raised(raising(lambda: nf.approve(token, by="ann", store=run.store)), [run.id])


def another_stores_token(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    run = gated()
    return Raised(raising(lambda: nf.approve(run.gate_token("review"), store=memory())), [run.id])


def a_superseded_token(tmp: Path, mp: pytest.MonkeyPatch) -> Raised:
    run = gated()
    token = run.gate_token("review")
    run.resume(progress=False)  # reaches the gate again: it opens at a newer version
    return Raised(raising(lambda: nf.approve(token, store=run.store)), [run.id])


CASES: dict[str, Case] = {
    "NbflowError": Case(any_nbflow_error, ("no run with id 'no-such-run'",)),
    "DefinitionError": Case(
        bad_step_name,
        ("step name 'not valid' is not a valid Python identifier", "letters, digits"),
    ),
    "CycleError": Case(cycle, ("a -> b -> a", "Remove one of these dependencies")),
    "MissingDependencyError": Case(
        missing_dependency,
        ("step 'features'", "'raww'", "give it a default", "Did you mean 'raw'?"),
    ),
    "CellError": Case(bad_cell, ("%%step cell 'summary' has no value", "line 3", "summary = ")),
    "UnknownStepError": Case(unknown_step, ("has no step 'featurs'", "Did you mean 'features'?")),
    "ParameterError": Case(
        unknown_parameter, ("'windw' is not a run parameter", "Did you mean 'window'?")
    ),
    "StoreError": Case(read_only_sql, ("store.sql is read-only", "Only SELECT queries")),
    "NotAStoreError": Case(a_directory, ("is a directory, not a store file", "nbflow.duckdb")),
    "CorruptStoreError": Case(a_damaged_file, ("is damaged and cannot be read", "checksum")),
    "SchemaVersionError": Case(
        a_newer_schema, ("written by a newer nbflow", "schema 99", "Upgrade nbflow")
    ),
    "StoreBusyError": Case(a_busy_file, ("is in use by process", "NBFLOW_BUSY_TIMEOUT")),
    "StoreFullError": Case(
        a_full_disk,
        ("step 'big' failed", "StoreFullError: the disk holding the store", "is full"),
    ),
    "ReadOnlyStoreError": Case(
        a_read_only_store,
        (
            "is read-only here",
            "so nbflow opened it for reading",
            "store.sql work",
            "but gc needs to write to it",
            "Copy the file to a folder you can write to",
        ),
    ),
    "RunLockedError": Case(
        a_leased_run, ("is being run by pid", "can be resumed", "Wait for it to finish")
    ),
    "UnknownRunError": Case(
        unknown_run, ("no run with id 'no-such-run'", "`nf.runs()` lists the runs")
    ),
    "InvalidTenantError": Case(
        a_bad_tenant, ("must not hold control or invisible characters", "holds '\\n'")
    ),
    "TenantMismatchError": Case(
        another_tenants_run, ("no run with id 'theirs'", "tenant='team-a'", "`nf.runs()` lists")
    ),
    "TenantReadOnlyError": Case(
        changing_a_run_without_a_tenant,
        ("run 'old' has no tenant", "every tenant may read it", "Fork it"),
    ),
    "StaleVersionError": Case(
        a_stale_write,
        ("run 'dup' changed since version 5 was read", "Nothing was written", "try again"),
    ),
    "GateError": Case(
        an_unknown_gate,
        ("has no gate 'reveiw' that opened", "its gates: review", "Did you mean 'review'?"),
    ),
    "InvalidTokenError": Case(
        a_tampered_token,
        ("signature does not match", "Nothing was recorded", "run.gate_token(gate)"),
    ),
    "TokenExpiredError": Case(
        an_expired_token,
        ("gate token for gate 'review'", "expired at", "run.gate_token('review')"),
    ),
    "TokenUsedError": Case(
        a_used_token, ("this token was already used", "was approved by ann", "Nothing was recorded")
    ),
    "TokenStoreMismatchError": Case(
        another_stores_token,
        ("was issued by another store", "approve it against the store that holds run"),
    ),
    "TokenSupersededError": Case(
        a_superseded_token,
        ("token superseded by newer version", "it opened again at version", "run.gate_token("),
    ),
    "InvalidTransitionError": Case(
        an_invalid_transition,
        ("cannot record run_completed", "the run is pending", "Nothing was written"),
    ),
    "SerializationError": Case(
        an_unpicklable_output,
        (
            "step 'lock' failed",
            "the output of step 'lock' (a _thread.lock) cannot be stored",
            "cannot be pickled",
            "Return a DataFrame, an array, JSON-like data, or a picklable object",
        ),
    ),
    "UntrustedStoreError": Case(
        an_untrusted_pickle,
        (
            "the output of step 'model'",
            "is stored as a pickle",
            "arbitrary code",
            "trust=False",
            "DataFrames, arrays and JSON values load without pickle",
            "`nf.open_store(path, trust=True)`",
            "NBFLOW_TRUST=1",
        ),
    ),
    "UntrustedImportError": Case(
        an_imported_pickle,
        (
            "the output of step 'model'",
            "is a pickle that was imported from the export",
            "without --trust",
            "arbitrary code",
            "refused even though the store is trusted",
            "`nbflow import DIR --trust`",
        ),
    ),
    "NotebookError": Case(a_missing_notebook, ("no notebook at", "the file does not exist")),
    "RunError": Case(
        a_version_never_reached, ("there is no version 999", "`run.versions` lists them")
    ),
    "DuplicateRunError": Case(a_duplicate_run, ("a run with id 'dup' already exists",)),
    "ReproductionError": Case(
        a_reproduction_of_an_in_memory_run,
        ("is in an in-memory store, which a fresh process cannot open", "nf.copy_runs"),
    ),
    "StepFailed": Case(
        a_failing_step,
        (
            "step 'boom' failed in run",
            "ValueError: no data today",
            ".resume()` (this error's `.run`",
        ),
    ),
    "StepTimeout": Case(
        a_slow_step, ("step 'slow' failed", "did not finish within its timeout of 0.05 s")
    ),
    "InputMutatedError": Case(
        a_step_changing_its_input,
        ("step 'zeroed' changed its input 'frame' in place", "frame.copy()", "copy_inputs=True"),
    ),
    "WaitTimeout": Case(
        a_wait_too_short,
        ("after the 0.01 s waited for it", "it goes on in the background", "`run.cancel()`"),
    ),
    "OutputNotAvailableError": Case(
        a_skipped_output,
        ("step 'after' has no output", "it was skipped (upstream step 'boom' failed)"),
    ),
    "TransferError": Case(
        not_an_export, ("is not an nbflow run export", "`nbflow export RUN DIR`")
    ),
}


def example(name: str) -> str:
    found = EXAMPLE.search(sections()[name])
    assert found is not None, f"the section of {name} in docs/errors.md has no example"
    return found.group(1)


@pytest.mark.parametrize("name", sorted(CASES))
def test_the_error_says_what_the_catalogue_shows(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shown = example(name)
    case = CASES[name]
    for fact in case.facts:
        assert fact in shown, f"docs/errors.md's example of {name} does not show {fact!r}"

    raised = case.trigger(tmp_path, monkeypatch)
    cls = error_classes()[name]
    # Errors of a step's own (a timeout, an unstorable output) reach the user as the
    # cause of StepFailed, whose message carries theirs.
    met = [raised.error, raised.error.__cause__]
    if name == "NbflowError":
        assert isinstance(raised.error, cls)
    else:
        assert any(type(e) is cls for e in met), f"{name} was not raised: {raised.error!r}"
    message = str(raised.error)
    for fact in (*case.facts, *raised.names):
        assert fact in message, f"the message of {name} no longer says {fact!r}: {message}"

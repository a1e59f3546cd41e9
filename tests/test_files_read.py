"""Files a step reads are part of its key: declared ``inputs=`` (hashed by content) and
the files it opens through Python while it runs (recorded, and checked before a cache hit).

Steps are defined as a notebook defines them (exec in a ``__main__`` namespace), so the
process executor ships them by value; they read files under ``DATA`` (an absolute path:
worker processes do not share the test's current directory).
"""

from __future__ import annotations

import os
import textwrap
import threading
from pathlib import Path
from typing import Any

import pytest

import nbflow as nf
from nbflow.definition.cells import parse_step_line
from nbflow.definition.step import StepOptions
from nbflow.engine import files as file_hashing
from nbflow.errors import CellError, DefinitionError

STEPS = """
import json
import pandas as pd

def table():
    return int(pd.read_csv(DATA + "/raw.csv")["a"].sum())

def config():
    with open(DATA + "/config.json") as f:
        return json.load(f)["k"]

def report(table, config):
    return table * config
"""


def notebook(src: str, **names: Any) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": "__main__", **names}
    exec(compile(textwrap.dedent(src), "<notebook cell>", "exec"), namespace)
    return namespace


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def make_flow(store: nf.Store, data: Path, name: str = "files") -> nf.Flow:
    ns = notebook(STEPS, DATA=str(data))
    flow = nf.Flow(name, store=store)
    for step in ("table", "config", "report"):
        flow.step(ns[step])
    return flow


def states(run: nf.Run) -> dict[str, str]:
    return dict(zip(run.steps["step"], run.steps["status"], strict=True))


def why(flow: nf.Flow) -> dict[str, tuple[str, str]]:
    frame = flow.status()
    return {r.step: (r.state, r.why) for r in frame.itertuples()}


@pytest.fixture
def data(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    write(folder / "raw.csv", "a\n1\n2\n")
    write(folder / "config.json", '{"k": 10}')
    return folder


@pytest.mark.parametrize("executor", ["inline", "threads", "processes"])
def test_a_step_that_reads_a_file_is_stale_once_the_file_changes(
    store: nf.Store, data: Path, executor: str
) -> None:
    """pd.read_csv and json.load are seen in every executor: a changed file recomputes
    the step (status names the file); the same content again is a cache hit."""
    flow = make_flow(store, data)
    first = flow.run(executor=executor, max_workers=2, progress=False)
    assert first["report"] == 30
    again = flow.run(executor=executor, max_workers=2, progress=False)
    assert set(states(again).values()) == {"cached"}

    write(data / "raw.csv", "a\n1\n5\n")
    rows = why(flow)
    assert rows["table"] == ("stale", f"files changed ({data / 'raw.csv'} changed)")
    assert rows["config"][0] == "fresh"
    changed = flow.run(executor=executor, max_workers=2, progress=False)
    assert changed["report"] == 60
    assert states(changed) == {"table": "completed", "config": "cached", "report": "completed"}

    write(data / "config.json", '{"k": 1}')
    assert why(flow)["config"] == ("stale", f"files changed ({data / 'config.json'} changed)")
    assert flow.run(executor=executor, max_workers=2, progress=False)["report"] == 6

    # Back to the first contents: the first run's executions are hits again.
    write(data / "raw.csv", "a\n1\n2\n")
    write(data / "config.json", '{"k": 10}')
    back = flow.run(executor=executor, max_workers=2, progress=False)
    assert back["report"] == 30 and set(states(back).values()) == {"cached"}
    assert {x.source_run_id for x in store.executions(back.id)} == {first.id}


def test_the_execution_records_each_file_read_with_its_hash(store: nf.Store, data: Path) -> None:
    flow = make_flow(store, data)
    run = flow.run(progress=False)
    files = {x.step: x.files for x in store.executions(run.id)}
    raw = str(data / "raw.csv")
    assert files["table"] is not None and files["table"].read == {raw: file_hashing.file_hash(raw)}
    assert files["config"] is not None and list(files["config"].read) == [str(data / "config.json")]
    assert files["report"] is None  # it read no file


def test_concurrent_steps_on_threads_each_record_only_their_own_files(
    store: nf.Store, tmp_path: Path
) -> None:
    """Two steps open files at the same time on two threads: each open counts for the
    step whose thread made it."""
    for name in "ab":
        write(tmp_path / f"{name}.txt", name)
    src = """
    def left():
        BARRIER.wait(timeout=30)
        with open(FOLDER + "/a.txt") as f:
            text = f.read()
        BARRIER.wait(timeout=30)
        return text

    def right():
        BARRIER.wait(timeout=30)
        with open(FOLDER + "/b.txt") as f:
            text = f.read()
        BARRIER.wait(timeout=30)
        return text
    """
    ns = notebook(src, BARRIER=threading.Barrier(2), FOLDER=str(tmp_path))
    flow = nf.Flow("threads", store=store)
    flow.step(ns["left"])
    flow.step(ns["right"])
    run = flow.run(executor="threads", max_workers=2, progress=False)
    read = {x.step: list(x.files.read) for x in store.executions(run.id) if x.files}
    assert read == {"left": [str(tmp_path / "a.txt")], "right": [str(tmp_path / "b.txt")]}


def test_a_step_with_a_timeout_records_what_it_reads_on_its_timeout_thread(
    store: nf.Store, data: Path
) -> None:
    ns = notebook(STEPS, DATA=str(data))
    flow = nf.Flow("timeout", store=store)
    flow.step(timeout=60)(ns["config"])
    flow.run(progress=False)
    write(data / "config.json", '{"k": 2}')
    assert why(flow)["config"][0] == "stale"
    assert flow.run(progress=False)["config"] == 2


def test_a_file_the_step_could_not_open_counts_once_it_appears(
    store: nf.Store, tmp_path: Path
) -> None:
    """An open that failed (the step falls back) is recorded as missing: the file
    appearing changes what the step would do, so it runs again."""
    src = """
    def settings():
        try:
            with open(FOLDER + "/override.txt") as f:
                return f.read()
        except FileNotFoundError:
            return "default"
    """
    flow = nf.Flow("missing", store=store)
    flow.step(notebook(src, FOLDER=str(tmp_path))["settings"])
    assert flow.run(progress=False)["settings"] == "default"
    assert set(states(flow.run(progress=False)).values()) == {"cached"}
    write(tmp_path / "override.txt", "custom")
    assert why(flow)["settings"] == (
        "stale",
        f"files changed ({tmp_path / 'override.txt'} appeared)",
    )
    assert flow.run(progress=False)["settings"] == "custom"


def test_files_the_step_writes_and_the_interpreters_own_are_not_its_inputs(
    store: nf.Store, tmp_path: Path
) -> None:
    src = """
    import os

    def export():
        with open(FOLDER + "/out.txt", "w") as f:
            f.write("x")
        with open(FOLDER + "/out.txt") as f:
            written = f.read()
        with open(os.__file__) as f:  # the standard library
            f.read(10)
        with open(FOLDER + "/in.txt") as f:
            return written + f.read()
    """
    write(tmp_path / "in.txt", "y")
    flow = nf.Flow("writes", store=store)
    flow.step(notebook(src, FOLDER=str(tmp_path))["export"])
    run = flow.run(progress=False)
    (execution,) = store.executions(run.id)
    assert execution.files is not None
    assert list(execution.files.read) == [str(tmp_path / "in.txt")]
    assert set(states(flow.run(progress=False)).values()) == {"cached"}


def test_track_reads_false_records_nothing(store: nf.Store, data: Path) -> None:
    ns = notebook(STEPS, DATA=str(data))
    flow = nf.Flow("untracked", store=store)
    flow.step(track_reads=False)(ns["config"])
    run = flow.run(progress=False)
    assert [x.files for x in store.executions(run.id)] == [None]
    write(data / "config.json", '{"k": 3}')
    assert why(flow)["config"][0] == "fresh"  # as asked: the step opted out


# -- declared inputs --------------------------------------------------------------------

NATIVE = """
import duckdb

def total():
    # DuckDB reads the file itself: Python's open() never sees it.
    return int(duckdb.sql(f"SELECT sum(a) FROM read_csv('{DATA}/raw.csv')").fetchall()[0][0])
"""


def test_a_file_read_by_native_code_is_seen_only_when_declared(store: nf.Store, data: Path) -> None:
    """The documented blind spot, and its answer: declare the file with inputs=."""
    ns = notebook(NATIVE, DATA=str(data))
    blind = nf.Flow("native", store=store)
    blind.step(ns["total"])
    seeing = nf.Flow("declared", store=store)
    seeing.step(inputs=[str(data / "raw.csv")])(ns["total"])
    assert blind.run(progress=False)["total"] == seeing.run(progress=False)["total"] == 3
    write(data / "raw.csv", "a\n1\n7\n")
    assert why(blind)["total"][0] == "fresh"  # not seen: see docs/invalidation.md
    assert why(seeing)["total"] == ("stale", f"files changed ({data / 'raw.csv'} changed)")
    assert seeing.run(progress=False)["total"] == 8


def test_declared_globs_and_folders_notice_files_that_appear_and_go(
    store: nf.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Relative patterns are read from the current directory and kept relative."""
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "data" / "a.part", "1")
    write(tmp_path / "lookups" / "x.csv", "1")
    flow = nf.Flow("globs", store=store)

    @flow.step(inputs=["data/*.part", "lookups"])
    def combined():
        return 1

    flow.run(progress=False)
    assert set(states(flow.run(progress=False)).values()) == {"cached"}
    write(tmp_path / "data" / "b.part", "2")
    assert why(flow)["combined"] == ("stale", "files changed (data/b.part is new)")
    flow.run(progress=False)
    (tmp_path / "data" / "a.part").unlink()
    write(tmp_path / "lookups" / "x.csv", "2")
    assert why(flow)["combined"] == (
        "stale",
        "files changed (data/a.part is missing, lookups/x.csv changed)",
    )
    run = flow.run(progress=False)
    assert states(run) == {"combined": "completed"}
    (execution,) = store.executions(run.id)
    assert execution.files is not None
    assert set(execution.files.declared) == {"data/b.part", "lookups/x.csv"}


def test_declaring_inputs_keeps_the_key_of_steps_that_declare_none() -> None:
    from nbflow.engine.cache import cache_key

    assert cache_key("fp", {"a": "h"}, {"n": 1}, {}) == cache_key("fp", {"a": "h"}, {"n": 1})
    assert cache_key("fp", {}, {}, {"x.csv": "h1"}) != cache_key("fp", {}, {}, {"x.csv": "h2"})
    assert StepOptions(inputs="x.csv").inputs == ("x.csv",)  # type: ignore[arg-type]
    assert StepOptions(inputs=[Path("x.csv")]).inputs == ("x.csv",)  # type: ignore[list-item]
    assert "inputs" not in StepOptions().to_json()


@pytest.mark.parametrize("bad", [3, [3], [""], [b"raw.csv"], {"a": 1}])
def test_inputs_that_are_not_paths_are_refused_at_definition(bad: Any) -> None:
    flow = nf.Flow("bad")
    with pytest.raises(DefinitionError, match="inputs"):
        flow.step(inputs=bad)


def test_the_step_magic_line_takes_inputs() -> None:
    spec = parse_step_line("raw --inputs data/raw.csv, 'data/*.parquet' \"my file.csv\" --run")
    assert spec.options.inputs == ("data/raw.csv", "data/*.parquet", "my file.csv")
    assert spec.run and spec.options.track_reads
    assert not parse_step_line("raw --no-track-reads").options.track_reads
    with pytest.raises(CellError, match="--inputs needs a value"):
        parse_step_line("raw --inputs --run")


# -- hashing ----------------------------------------------------------------------------


def test_a_rewrite_of_the_same_size_with_its_mtime_put_back_is_seen(tmp_path: Path) -> None:
    """The stat fast path never trusts mtime alone."""
    path = tmp_path / "f.txt"
    write(path, "aaaa")
    before = file_hashing.file_hash(str(path))
    st = path.stat()
    write(path, "bbbb")
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert path.stat().st_mtime_ns == st.st_mtime_ns
    assert file_hashing.file_hash(str(path)) != before


def test_a_hash_is_not_trusted_for_a_file_modified_within_the_timestamp_granularity(
    tmp_path: Path,
) -> None:
    path = tmp_path / "f.txt"
    write(path, "aaaa")
    st = path.stat()
    signature = file_hashing._signature(st)
    latest = max(st.st_mtime_ns, st.st_ctime_ns)
    racy = file_hashing._Seen(signature, latest + file_hashing.GRANULARITY_NS // 2, "h")
    settled = file_hashing._Seen(signature, latest + 2 * file_hashing.GRANULARITY_NS, "h")
    assert not file_hashing.trusted(racy, st)
    assert file_hashing.trusted(settled, st)
    moved = file_hashing._Seen((st.st_size + 1, *signature[1:]), settled.hashed_at_ns, "h")
    assert not file_hashing.trusted(moved, st)


def test_missing_files_and_folders_hash_as_none(tmp_path: Path) -> None:
    assert file_hashing.file_hash(str(tmp_path / "nope")) is None
    assert file_hashing.file_hash(str(tmp_path)) is None

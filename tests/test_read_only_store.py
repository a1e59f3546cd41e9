"""A store on a read-only file system is not a damaged store: it opens for reading, reads
work, and every write says the store is read-only (the folder is made read-only for a
child process: see read_only_folder.py)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
from read_only_folder import read_only

import nbflow as nf

CHILD = textwrap.dedent(
    """
    import json, sys
    import pandas as pd
    import nbflow as nf
    from nbflow.errors import NbflowError

    path, run_id = sys.argv[1], sys.argv[2]
    out = {}

    def attempt(name, action):
        try:
            result = action()
        except NbflowError as exc:
            out[name] = [type(exc).__name__, str(exc)]
        except Exception as exc:  # a raw error is what this test is about
            out[name] = ["raw " + type(exc).__name__, str(exc)]
        else:
            out[name] = ["ok", result]

    store = nf.open_store(path)
    out["read_only"] = store.read_only
    run = nf.get_run(run_id, store)
    attempt("status", lambda: run.status)
    attempt("output", lambda: run["frame"].to_dict("list"))
    attempt("runs", lambda: len(nf.runs(store)))
    attempt("events", lambda: len(run.events))
    attempt("sql", lambda: int(store.sql("SELECT count(*) AS n FROM events")["n"][0]))
    attempt("check", lambda: [str(p) for p in store.check()])

    flow = nf.Flow("ro", store=store)

    @flow.step
    def frame(k: int = 1):
        return pd.DataFrame({"x": [1, 2, 3]}) * k

    attempt("run", lambda: flow.run(k=2, progress=False).id)
    attempt("fork", lambda: run.fork(from_step="frame", k=3, progress=False).id)
    attempt("gc", lambda: store.gc(keep_last=0).runs)
    attempt("repair", lambda: store.check(repair=True))
    attempt("new store", lambda: nf.open_store(path + "-new.duckdb").uri)
    print(json.dumps(out))
    """
)


def test_a_read_only_store_reads_and_refuses_every_write(tmp_path: Path) -> None:
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "store.duckdb"
    with nf.open_store(path) as store:
        flow = nf.Flow("ro", store=store)

        @flow.step
        def frame(k: int = 1):
            return pd.DataFrame({"x": [1, 2, 3]}) * k

        run = flow.run(progress=False)
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    with read_only(folder) as wrap:
        done = subprocess.run(
            wrap([sys.executable, str(script), str(path), run.id]),
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])

    assert out["read_only"] is True
    assert out["status"] == ["ok", "completed"]
    assert out["output"] == ["ok", {"x": [1, 2, 3]}]
    assert out["runs"] == ["ok", 1]
    assert out["events"][0] == "ok" and out["sql"] == ["ok", out["events"][1]]
    assert out["check"] == ["ok", []]
    for write, action in [
        ("run", "running a flow"),
        ("fork", "running a flow"),
        ("gc", "gc"),
        ("repair", "check --repair"),
    ]:
        kind, message = out[write]
        assert kind == "ReadOnlyStoreError", (write, out[write])
        assert f"{path} is read-only here" in message
        assert f"but {action} needs to write to it" in message
        assert "store.sql work" in message
    kind, message = out["new store"]
    assert kind == "StoreError" and "its folder cannot be written" in message
    # Nothing was written while it was read-only.
    with nf.open_store(path) as store:
        assert [r.run_id for r in store.list_runs()] == [run.id]

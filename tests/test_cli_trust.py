"""Trust on the command line and in ``$NBFLOW_TRUST`` (it fails closed), ``nbflow import
--trust`` and ``nbflow trust``, and terminal output that a store's names cannot hijack."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from click.testing import CliRunner, Result

import nbflow as nf
from nbflow.cli import main
from nbflow.errors import ParameterError
from nbflow.store.duckdb.store import DuckDBStore
from nbflow.store.records import EventType, NewEvent
from nbflow.testing import Clock, make_flow, make_run, typical_events


@dataclass(frozen=True)
class Point:
    """A value only pickle can store."""

    x: int


def invoke(*args: str, env: dict[str, str | None] | None = None) -> Result:
    return CliRunner().invoke(
        main, list(args), env={"NBFLOW_STORE": None, "NBFLOW_TRUST": None, **(env or {})}
    )


def one_line_error(result: Result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("nbflow: error: ") and "Traceback" not in result.stderr
    return lines[0]


def pickles(store: nf.Store) -> nf.Flow:
    flow = nf.Flow("pickles", store=store)

    @flow.step
    def frame(n: int = 3):
        return pd.DataFrame({"x": range(n)})

    @flow.step
    def thing(frame):
        return Point(len(frame))

    return flow


# -- NBFLOW_TRUST fails closed ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "trusted"),
    [
        ("1", True),
        ("true", True),
        (" YES ", True),
        ("On", True),
        ("0", False),
        ("False", False),
        ("no", False),
        ("OFF ", False),
    ],
)
def test_nbflow_trust_takes_the_documented_values(
    value: str, trusted: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NBFLOW_TRUST", value)
    assert nf.open_store("memory://").trust is trusted


def test_without_nbflow_trust_a_store_is_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NBFLOW_TRUST", raising=False)
    assert nf.open_store("memory://").trust is True


@pytest.mark.parametrize("value", ["2", "maybe", "", "  ", "truee", "n0", "-1", "y"])
def test_any_other_value_of_nbflow_trust_is_an_error_never_trust(
    value: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    DuckDBStore(tmp_path / "s.duckdb").close()
    monkeypatch.setenv("NBFLOW_TRUST", value)
    with pytest.raises(ParameterError) as caught:
        nf.open_store("memory://")
    message = str(caught.value)
    assert f"NBFLOW_TRUST={value!r} is not a value nbflow accepts" in message
    assert "0, false, no, off" in message and "1, true, yes, on" in message
    with pytest.raises(ParameterError, match="NBFLOW_TRUST"):
        nf.Flow("f", store=str(tmp_path / "s.duckdb")).store  # noqa: B018 - opens it
    assert nf.open_store("memory://", trust=True).trust is True  # an explicit choice wins
    result = invoke("runs", "--store", str(tmp_path / "s.duckdb"), env={"NBFLOW_TRUST": value})
    assert result.exit_code == 2
    assert "is not a value nbflow accepts" in one_line_error(result)


# -- --trust/--no-trust ---------------------------------------------------------------------------


def test_diff_and_run_take_trust_and_no_trust(tmp_path: Path) -> None:
    path = tmp_path / "s.duckdb"
    flow = pickles(nf.open_store(path))
    a, b = flow.run(progress=False), flow.run(n=4, progress=False)
    store = ["--store", str(path)]
    diff = ["diff", a.id, b.id, "--step", "thing", *store]
    refused = invoke(*diff, "--no-trust")
    assert refused.exit_code == 2 and "trust=False" in one_line_error(refused)
    assert invoke(*diff, env={"NBFLOW_TRUST": "0"}).exit_code == 2  # the default follows it
    trusted = invoke(*diff, "--trust", env={"NBFLOW_TRUST": "0"})
    assert trusted.exit_code == 0, trusted.stderr
    assert invoke(*diff).exit_code == 0  # trusted by default, as in Python

    module = tmp_path / "pipeline.py"
    module.write_text(
        "import nbflow as nf\n"
        "flow = nf.Flow('pickles')\n"
        "class Point:\n"
        "    def __init__(self, x):\n"
        "        self.x = x\n"
        "@flow.step\n"
        "def thing(n: int = 3):\n"
        "    return Point(n)\n"
        "@flow.step\n"
        "def doubled(thing):\n"
        "    return thing.x * 2\n"
    )
    first = invoke("run", f"{module}:flow", *store)
    assert first.exit_code == 0, first.stderr
    with open(module, "a") as out:  # a new step, whose input is the stored pickle
        out.write("@flow.step\ndef tripled(thing):\n    return thing.x * 3\n")
    refused = invoke("run", f"{module}:flow", *store, "--no-trust")
    assert refused.exit_code == 1
    assert "tripled" in refused.stdout and "UntrustedStoreError" in refused.stdout
    again = invoke("run", f"{module}:flow", *store, "--trust", env={"NBFLOW_TRUST": "no"})
    assert again.exit_code == 0, again.stderr + again.stdout


def test_import_refuses_pickles_until_trust(tmp_path: Path) -> None:
    source = tmp_path / "source.duckdb"
    run = pickles(nf.open_store(source)).run(progress=False)
    folder = tmp_path / "export"
    assert invoke("export", run.id, str(folder), "--store", str(source)).exit_code == 0
    target = str(tmp_path / "target.duckdb")
    imported = invoke("import", str(folder), "--store", target)
    assert imported.exit_code == 0, imported.stderr
    assert f"imported run {run.id}" in imported.stdout
    assert "its outputs are no cache hits for your runs" in imported.stdout
    assert "and its pickled outputs (thing) do not load" in imported.stdout
    assert f"nbflow trust {run.id} --store {target}" in imported.stdout
    a_fork = nf.open_store(target)
    second = pickles(a_fork).run(n=5, progress=False)  # a run of the importer's own
    diff = invoke("diff", run.id, second.id, "--step", "thing", "--store", target, "--trust")
    assert diff.exit_code == 2
    error = one_line_error(diff)
    assert "imported from the export" in error and f"nbflow trust {run.id}" in error

    trusted = invoke("trust", run.id, "--store", target)
    assert trusted.exit_code == 0, trusted.stderr
    assert f"marked 1 pickled value(s) of run {run.id} trusted" in trusted.stdout
    assert f"trusted run(s) {run.id}: their outputs are cache hits" in trusted.stdout
    assert "nothing to do" in invoke("trust", run.id, "--store", target).stdout
    assert invoke("diff", run.id, second.id, "--step", "thing", "--store", target).exit_code == 0
    assert invoke("trust", "nope", "--store", target).exit_code == 2

    other = str(tmp_path / "other.duckdb")
    with_trust = invoke("import", str(folder), "--store", other, "--trust")
    assert with_trust.exit_code == 0, with_trust.stderr
    assert "trust" not in with_trust.stdout.replace("--trust", "")
    assert nf.get_run(run.id, nf.open_store(other))["thing"] == Point(3)


# -- what a store holds cannot hijack the terminal ---------------------------------------------

EVIL_ID = "r\x1b[31m1\nrun FAKE of flow 'x': completed"
EVIL_FLOW = "churn\x1b]0;pwned\x07\n\u202etxt.exe"
EVIL_STEPS = ("lo\x1bad", "cl\u202eean")
EVIL_ERROR = "boom \x1b[2J\x1b[H\rcleared\x9b31m"
CONTROLS = ("\x1b", "\x07", "\u202e", "\x9b", "\r")


@pytest.fixture
def evil_store(tmp_path: Path) -> Path:
    """A store whose run id, flow name, step names and error are full of escapes."""
    path = tmp_path / "evil.duckdb"
    with DuckDBStore(path) as store:
        store.put_flow(make_flow(EVIL_FLOW, steps=EVIL_STEPS))
        clock = Clock()
        store.create_run(make_run(EVIL_ID, flow=EVIL_FLOW, steps=EVIL_STEPS, params={"k\x1bx": 1}))
        events = typical_events(EVIL_STEPS, clock=clock, finish=False)
        events.append(NewEvent(EventType.RUN_FAILED, None, None, {"error": EVIL_ERROR}, clock()))
        store.append(EVIL_ID, 0, events)
    return path


def assert_escaped(text: str) -> None:
    for char in CONTROLS:
        assert char not in text, (char, text)
    assert not any(line.startswith("run FAKE") for line in text.splitlines()), text


@pytest.mark.parametrize(
    "args",
    [
        ["runs"],
        ["runs", "--format", "csv"],
        ["runs", "--format", "json"],
        ["show", EVIL_ID],
        ["events", EVIL_ID],
        ["events", EVIL_ID, "--format", "csv"],
        ["check"],
        ["gc", "--keep-last", "0", "--dry-run"],
    ],
)
def test_names_and_ids_reach_the_terminal_escaped(evil_store: Path, args: list[str]) -> None:
    result = invoke(*args, "--store", str(evil_store))
    assert result.exit_code in (0, 1), result.stderr
    assert_escaped(result.stdout + result.stderr)
    if args[0] in ("runs", "show") and "json" not in args:
        assert "r\\x1b[31m1" in result.stdout  # shown, as escapes


def test_errors_and_copies_reach_the_terminal_escaped(evil_store: Path, tmp_path: Path) -> None:
    unknown = invoke("show", "nope\x1b[2J\u202e", "--store", str(evil_store))
    assert unknown.exit_code == 2
    assert_escaped(unknown.stderr)
    copied = invoke("copy", "--from", str(evil_store), "--to", str(tmp_path / "copy.duckdb"))
    assert copied.exit_code == 0, copied.stderr
    assert_escaped(copied.stdout)


def test_an_export_with_escapes_in_its_names(tmp_path: Path) -> None:
    source = tmp_path / "source.duckdb"
    run = pickles(nf.open_store(source)).run(progress=False)
    folder = tmp_path / "out"
    assert invoke("export", run.id, str(folder), "--store", str(source)).exit_code == 0
    header = json.loads((folder / "run.json").read_text())
    header["flow"] = None  # (its definition names the flow by its real name)
    header["run"]["flow"] = EVIL_FLOW
    (folder / "run.json").write_text(json.dumps(header))
    target = str(tmp_path / "in.duckdb")
    imported = invoke("import", str(folder), "--store", target)
    assert imported.exit_code == 0, imported.stderr
    listed = invoke("runs", "--store", target)
    assert "churn\\x1b]0;pwned\\x07 \\u202etxt.exe" in listed.stdout
    shown = invoke("show", run.id, "--store", target)
    assert_escaped(shown.stdout)
    header["run"]["run_id"] = EVIL_ID
    (folder / "run.json").write_text(json.dumps(header))
    refused = invoke("import", str(folder), "--store", str(tmp_path / "other.duckdb"))
    assert refused.exit_code == 2
    assert "is not a valid run id" in one_line_error(refused)
    assert_escaped(refused.stderr)
    assert not (tmp_path / "other.duckdb").exists()  # a refused import makes no store
    debug = invoke("show", "nope\x1b[2J", "--store", str(evil_store), "--debug")
    assert_escaped(debug.stderr)


# -- docs/trust.md stays true ---------------------------------------------------------------------


def test_the_trust_page_names_tests_that_exist() -> None:
    tests = Path(__file__).resolve().parent
    page = (tests.parent / "docs" / "trust.md").read_text(encoding="utf-8")
    table = page.split("## How each of these is tested", 1)[1]
    file = None
    named = 0
    for token in re.findall(r"`(tests/test_\w+\.py(?:::test_\w+)?|test_\w+)`", table):
        if token.startswith("tests/"):
            file, _, token = token.partition("::")
            file = file.removeprefix("tests/")
            if not token:
                continue
        assert file is not None, token
        assert f"def {token}(" in (tests / file).read_text(encoding="utf-8"), (file, token)
        named += 1
    assert named >= 15

"""Diffs show why (issue 15, point 9): which parameters each step read that differ, and
what changed in its cache key; the command line says the same as ``nf.diff``."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from click.testing import CliRunner

import nbflow as nf
from nbflow.cli import main
from nbflow.diff import DIFF_COLUMNS, KEY_COMPONENTS, KeyChange


def sales(store: nf.Store, factor: int = 1, name: str = "sales") -> nf.Flow:
    flow = nf.Flow(name, store=store)

    @flow.step
    def raw():
        return pd.DataFrame({"amount": [10.0, 50.0, 70.0, 90.0]})

    @flow.step
    def cleaned(raw, min_amount: float = 40.0):
        return raw[raw["amount"] >= min_amount].reset_index(drop=True)

    @flow.step
    def daily(cleaned):
        return float(cleaned["amount"].sum()) * factor  # `factor`: a constant it uses

    return flow


def column(frame: pd.DataFrame, name: str) -> dict:
    return dict(zip(frame["step"], frame[name], strict=True))


def test_diff_names_the_parameters_each_step_read_that_differ(store):
    a = sales(store).run()
    b = a.fork(from_step="daily", min_amount=60.0)
    d = nf.diff(a, b)
    assert list(d.columns) == DIFF_COLUMNS
    assert column(d, "params_changed") == {"raw": [], "cleaned": ["min_amount"], "daily": []}
    assert column(d, "key_changed") == {"raw": False, "cleaned": True, "daily": True}
    assert column(d, "why") == {
        "raw": [],
        "cleaned": ["parameter min_amount: 40.0 -> 60.0"],
        "daily": ["input cleaned"],
    }
    assert d.attrs["why"]["cleaned"] == [KeyChange("parameter", "min_amount", 40.0, 60.0)]
    assert d.attrs["params"] == {"min_amount": (40.0, 60.0)}


def test_a_parameter_no_step_reads_differently_changes_no_step(store):
    flow = sales(store)
    a = flow.run()
    b = a.fork(from_step="daily")  # the same parameters: everything upstream reused
    d = nf.diff(a, b)
    assert column(d, "params_changed") == {"raw": [], "cleaned": [], "daily": []}
    assert column(d, "why") == {"raw": [], "cleaned": [], "daily": []}
    assert not d["key_changed"].any()


def test_diff_says_code_when_the_step_s_own_source_changed(store):
    flow = sales(store)
    a = flow.run()

    @flow.step
    def cleaned(raw, min_amount: float = 40.0):
        return raw[raw["amount"] > min_amount].reset_index(drop=True)  # > instead of >=

    b = flow.run()
    why = column(nf.diff(a, b), "why")
    assert why["cleaned"] == ["code"] and why["raw"] == []
    assert why["daily"] == []  # its input came out the same: its key did not change


def test_diff_says_helper_when_only_something_the_step_uses_changed(store):
    a = sales(store, factor=1).run()
    b = sales(store, factor=2).run()  # the same source, another constant
    d = nf.diff(a, b)
    assert column(d, "why")["daily"] == ["helper"]
    assert column(d, "code_changed")["daily"]
    assert column(d, "params_changed")["daily"] == []


def test_diff_names_the_options_that_changed(store):
    flow = sales(store)
    a = flow.run()
    factor = 1

    @flow.step(retries=2)  # the same code, the same constant
    def daily(cleaned):
        return float(cleaned["amount"].sum()) * factor  # `factor`: a constant it uses

    b = flow.run()
    assert column(nf.diff(a, b), "why")["daily"] == ["options retries: 0 -> 2"]


def test_diff_says_global_when_a_data_global_the_step_reads_changed(store):
    flow = nf.Flow("lookup", store=store)
    table = {"frame": pd.DataFrame({"k": [1, 2], "rate": [0.5, 2.0]})}

    @flow.step
    def priced():
        return float(table["frame"]["rate"].sum())

    a = flow.run()
    table["frame"] = pd.DataFrame({"k": [1, 2], "rate": [0.5, 3.0]})  # the global rebound
    b = flow.run()
    assert b["priced"] == 3.5
    why = column(nf.diff(a, b), "why")
    assert why["priced"] == ["global table"]  # not "helper": the code is the same


def test_diff_says_package_when_an_installed_package_it_uses_changed(store):
    import dataclasses

    from nbflow.diff import StepSide, key_changes

    a = sales(store).run()
    stored = store.get_flow(a.record.flow, a.record.flow_fingerprint)
    definition = stored.step("daily")
    row = a._latest_rows()["daily"]
    # Two runs of the same code whose definitions record another pandas (an upgrade),
    # their keys apart: what `why` says of them.
    before = StepSide(
        a.record, row, dataclasses.replace(definition, packages={"pandas": "2.2"}), {}
    )
    after = StepSide(
        a.record,
        dataclasses.replace(row, fingerprint="other", cache_key="other"),
        dataclasses.replace(definition, packages={"pandas": "3.1"}),
        {},
    )
    assert key_changes(before, after) == [KeyChange("package", "pandas", "2.2", "3.1")]


def test_diff_says_file_when_a_file_the_step_read_changed(store, tmp_path: Path):
    data = tmp_path / "raw.csv"
    data.write_text("amount\n10\n")
    flow = nf.Flow("files", store=store)

    @flow.step
    def total():
        return float(pd.read_csv(data)["amount"].sum())

    a = flow.run()
    data.write_text("amount\n10\n20\n")
    b = flow.run()
    assert b["total"] == 30.0
    assert column(nf.diff(a, b), "why")["total"] == [f"file {data}"]


def test_each_key_component_is_one_entry():
    assert list(KEY_COMPONENTS) == [
        "code",
        "options",
        "helper",
        "global",
        "package",
        "file",
        "parameter",
        "input",
    ]


def test_the_command_line_and_nf_diff_agree(tmp_path: Path):
    path = tmp_path / "runs.duckdb"
    a = sales(nf.open_store(path)).run()
    b = a.fork(from_step="daily", min_amount=60.0)
    frame = nf.diff(a, b)
    env = {"NBFLOW_STORE": None}
    runner = CliRunner()
    result = runner.invoke(main, ["diff", a.id, b.id, "--store", str(path)], env=env)
    assert result.exit_code == 0, result.stderr
    assert "param min_amount: 40.0 -> 60.0" in result.stdout
    assert "why cleaned: parameter min_amount: 40.0 -> 60.0" in result.stdout
    assert "why daily: input cleaned" in result.stdout
    assert "why raw" not in result.stdout
    args = ["diff", a.id, b.id, "--store", str(path), "--format", "json"]
    rows = json.loads(runner.invoke(main, args, env=env).stdout)
    for name in ("params_changed", "key_changed", "why", "code_changed", "output_changed"):
        assert {r["step"]: r[name] for r in rows} == column(frame, name), name

"""Gates in the widgets, without a browser: the DAG draws a gate as a hexagon in its state,
the gate panel shows the gate's value and token, and Approve / Reject decide (an
approval continues the run in this process, and the DAG follows it)."""

from __future__ import annotations

import gc
import getpass
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
from waiting import GENEROUS, wait_for
from widget_comms import comms  # noqa: F401 - a fixture

import nbflow as nf
from nbflow.store.memory.store import MemoryStore
from nbflow.widgets import show
from nbflow.widgets.browser import Browser
from nbflow.widgets.display import run_bundle, run_view
from nbflow.widgets.gate_panel import GatePanel
from nbflow.widgets.run_view import RunView
from nbflow.widgets.states import DagSpec, NodeInfo, NodeState
from nbflow.widgets.svg import GATE_DASH, GATE_ICONS, render_svg
from nbflow.widgets.theme import GATE_PALETTE, GateLook, theme_css


def gated(store: nf.Store, name: str = "gated") -> nf.Flow:
    flow = nf.Flow(name, store=store)

    @flow.step
    def sales(n: int = 6) -> pd.DataFrame:
        return pd.DataFrame({"region": ["north", "south", "east"] * (n // 3), "amount": range(n)})

    @flow.gate
    def check_sales(sales: pd.DataFrame) -> pd.DataFrame:
        return sales.groupby("region", as_index=False)["amount"].sum()

    @flow.step
    def totals(check_sales: pd.DataFrame) -> int:
        return int(check_sales["amount"].sum())

    return flow


@pytest.fixture
def store():
    with MemoryStore() as s:
        yield s


def node(svg: str, step: str) -> str:
    pattern = rf'<g class="([^"]*)" data-step="{step}"[^>]*>(.*?)</g>(?=<g class|</svg>)'
    found = re.search(pattern, svg)
    assert found, step
    return found.group(0)


def test_a_gate_is_a_hexagon_whose_decision_shows_by_more_than_color():
    spec = DagSpec(("a", "gate"), (("a", "gate"),), gates=("gate",))
    looks = {}
    for look in GateLook:
        info = NodeInfo(NodeState.COMPLETED, gate=look.value, label=look.value)
        svg = render_svg(spec, {"gate": info})
        drawn = node(svg, "gate")
        assert f"gate gate-{look.value}" in drawn and f'data-gate="{look.value}"' in drawn
        assert '<polygon class="shape"' in drawn  # not a box
        assert GATE_ICONS[look] in drawn and GATE_PALETTE[look][0] in drawn
        looks[look] = drawn
    assert f'stroke-dasharray="{GATE_DASH}"' in looks[GateLook.OPEN]  # dashed while open
    assert '<polygon class="inner"' in looks[GateLook.APPROVED]  # a double border
    assert 'stroke-width="2.2"' in looks[GateLook.REJECTED]  # a heavy border
    # Not reached yet: a hexagon in the step's own state.
    unreached = node(render_svg(spec), "gate")
    assert "gate-unreached" in unreached and "state-never_run" in unreached
    # A plain step stays a box.
    assert '<rect class="shape"' in node(render_svg(spec), "a")


def test_the_stylesheet_colors_states_and_gates_in_both_themes():
    css = theme_css()
    assert '[data-jp-theme-light="false"] .nbflow-dag .state-completed > .shape' in css
    assert '[data-jp-theme-light="false"] .nbflow-dag .gate.gate-open > .shape' in css
    assert ".nbflow-dag g.node.selected.node > .shape" in css
    assert "--nbflow-error: var(--jp-error-color2" in css  # readable on a dark background


def test_the_run_view_shows_the_open_gate_value_and_token(store, comms):
    run = gated(store).run(progress=False)
    assert run.status == "waiting"
    view = run_view(run)
    assert isinstance(view, RunView)
    panel = view.gates
    assert panel.layout.display == "" and panel.form.layout.display == ""
    assert panel.choice.value == "check_sales"
    assert "north" in panel.value.value and "<table" in panel.value.value  # the frame's head
    assert panel.token.value.startswith("nbflow-gate.v1.")
    assert panel.by.value == getpass.getuser()
    assert view.dag.infos["check_sales"].gate == "open"
    assert 'data-gate="open"' in view.dag.svg
    # Redrawing issues no new token.
    token = panel.token.value
    panel.show(run)
    assert panel.token.value == token
    assert "application/vnd.jupyter.widget-view+json" in run_bundle(run)
    # Each display is a view of its own (an older output keeps its meaning), of the same gate.
    again = show(run)
    assert isinstance(again, RunView) and again is not view
    assert again.gates.choice.value == "check_sales"
    # Where widgets cannot render, the summary says the gate needs approval.
    bundle = view._repr_mimebundle_()
    data = bundle[0] if isinstance(bundle, tuple) else bundle
    assert "needs approval" in data["text/plain"] and "needs approval" in data["text/html"]


def test_approve_in_the_widget_continues_the_run_here(store, comms):
    run = gated(store).run(progress=False)
    view = run_view(run)
    view.gates.by.value = "ann"
    view.gates.comment.value = "ledger matches"
    view.gates.approve_button.click()
    view.gates.approve_button.click()  # a second click, sent before the first was answered
    wait_for(lambda: nf.get_run(run.id, store).status == "completed", "the run completed")
    assert run["totals"] == 15
    (gate,) = run.gates.itertuples()
    assert (gate.status, gate.decided_by, gate.comment) == ("approved", "ann", "ledger matches")
    wait_for(
        lambda: view.dag.infos.get("totals", NodeInfo()).state is NodeState.COMPLETED,
        "the view's DAG showing totals completed",
    )
    assert view.dag.infos["check_sales"].gate == "approved"
    assert "approved" in view.gates.status.value and view.gates.form.layout.display == "none"
    assert "ann" in view.gates.decided.value and "ledger matches" in view.gates.decided.value


def test_reject_in_the_widget_cancels_the_run(store, comms):
    run = gated(store).run(progress=False)
    view = run_view(run)
    view.gates.by.value = "bob"
    view.gates.reject_button.click()
    assert run.status == "cancelled"
    assert run.step_states()["totals"] == "skipped"
    assert view.dag.infos["check_sales"].gate == "rejected"
    assert "rejected" in view.gates.status.value


def test_a_decision_refused_says_why_and_changes_nothing(store, comms):
    run = gated(store).run(progress=False)
    panel = GatePanel()
    panel.show(run)
    run.approve("check_sales", by="elsewhere", resume=False)  # decided meanwhile
    panel.reject_button.click()
    assert "could not decide" in panel.status.value
    assert list(run.gates["decided_by"]) == ["elsewhere"]
    # A run without gates, or none, hides the panel.
    plain = nf.Flow("plain", store=store)

    @plain.step
    def one() -> int:
        return 1

    panel.show(plain.run(progress=False))
    assert panel.layout.display == "none"
    panel.show(None)
    assert panel.layout.display == "none"


def test_the_browser_approves_and_follows_the_run(store, comms):
    run = gated(store).run(progress=False)
    browser = Browser(store)
    try:
        assert browser.run is not None and browser.run.id == run.id
        assert browser.gate.layout.display == ""
        assert "north" in browser.gate.value.value and browser.gate.token.value
        assert browser.dag.infos["check_sales"].gate == "open"
        browser.gate.by.value = "carol"
        browser.gate.approve_button.click()
        wait_for(
            lambda: browser.dag.infos.get("totals", NodeInfo()).state is NodeState.COMPLETED,
            "the browser's DAG showing totals completed",
        )
        wait_for(lambda: nf.get_run(run.id, store).status == "completed", "the run completed")
        assert list(run.gates["decided_by"]) == ["carol"]
        # At a version before the decision the panel hides; the DAG shows the gate open.
        opened = int(run.gates["opened_version"].iloc[0])
        browser.version.value = opened
        assert browser.gate.layout.display == "none"
        assert browser.dag.infos["check_sales"].gate == "open"
    finally:
        browser.close()


def test_approving_where_the_flow_is_not_defined_records_it_and_says_so(store, comms):
    def waiting_run_id() -> str:
        return gated(store, name="elsewhere").run(progress=False).id

    run_id = waiting_run_id()
    gc.collect()  # the flow is gone from this process: nothing here can continue the run
    run = nf.get_run(run_id, store)
    panel = GatePanel()
    panel.show(run)
    panel.by.value = ""  # left empty: the OS user decides
    panel.approve_button.click()
    assert run.status == "waiting"
    assert list(run.gates["status"]) == ["approved"]
    assert list(run.gates["decided_by"]) == [getpass.getuser()]
    assert "stays waiting" in panel.status.value and getpass.getuser() in panel.status.value
    assert "is not defined in this session" in panel.status.value


def test_with_two_gates_open_the_panel_picks_one_and_continues_after_both(store, comms):
    flow = nf.Flow("two_gates", store=store)

    @flow.step
    def raw() -> list[int]:
        return [1, 2, 3]

    @flow.gate
    def check_rows(raw: list[int]) -> dict[str, int]:
        return {"rows": len(raw)}

    @flow.gate
    def check_sum(raw: list[int]) -> dict[str, int]:
        return {"sum": sum(raw)}

    @flow.step
    def report(check_rows: dict[str, int], check_sum: dict[str, int]) -> str:
        return f"{check_rows['rows']} rows, sum {check_sum['sum']}"

    run = flow.run(progress=False)
    view = run_view(run)
    panel = view.gates
    assert list(panel.choice.options) == ["check_rows", "check_sum"]
    assert panel.choice.layout.display == ""  # a choice to make
    assert "rows" in panel.value.value
    panel.choice.value = "check_sum"
    assert "sum" in panel.value.value and "rows" not in panel.value.value
    panel.approve_button.click()
    assert run.status == "waiting" and "waits for its other gates" in panel.status.value
    assert list(panel.choice.options) == ["check_rows"]
    panel.approve_button.click()
    panel.continued.wait()
    wait_for(lambda: run.status == "completed", "the run completed")
    assert run["report"] == "3 rows, sum 6"


def two_gates(store: nf.Store) -> nf.Flow:
    flow = nf.Flow("two_gates_elsewhere", store=store)

    @flow.step
    def raw() -> list[int]:
        return [1, 2, 3]

    @flow.gate
    def check_rows(raw: list[int]) -> dict[str, int]:
        return {"rows": len(raw)}

    @flow.gate
    def check_sum(raw: list[int]) -> dict[str, int]:
        return {"sum": sum(raw)}

    @flow.step
    def report(check_rows: dict[str, int], check_sum: dict[str, int]) -> str:
        return f"{check_rows['rows']} rows, sum {check_sum['sum']}"

    return flow


def test_the_panel_follows_decisions_made_elsewhere_keeping_what_the_user_typed(store, comms):
    run = two_gates(store).run(progress=False)
    view = run_view(run)
    panel = view.gates
    panel.choice.value = "check_rows"
    panel.by.value = "dora"
    panel.comment.value = "half typed"
    # Another panel (another handle on the run) decides the other gate.
    nf.get_run(run.id, store).approve("check_sum", by="ann", comment="sums ok", resume=False)
    wait_for(lambda: "ann" in panel.decided.value, "the panel listing ann's decision")
    assert list(panel.choice.options) == ["check_rows"]
    assert (panel.choice.value, panel.by.value, panel.comment.value) == (
        "check_rows",
        "dora",
        "half typed",
    )
    assert panel.form.layout.display == ""
    assert "check_sum approved by ann" in panel.status.value
    assert "elsewhere" in panel.status.value
    assert view.dag.infos["check_sum"].gate == "approved"
    # The last gate rejected elsewhere: the form hides, the run's end is said.
    nf.get_run(run.id, store).reject("check_rows", by="bob")
    wait_for(lambda: panel.form.layout.display == "none", "the form hidden")
    assert "check_rows rejected by bob" in panel.status.value
    assert f"run {run.id} cancelled" in panel.status.value
    assert view.dag.infos["check_rows"].gate == "rejected"
    # A click that came after the decision elsewhere says so; nothing changes.
    panel.approve_button.click()
    assert "too late" in panel.status.value and "rejected by bob" in panel.status.value
    assert run.status == "cancelled"


GATED_SCRIPT = """
import sys
import pandas as pd
import nbflow as nf

flow = nf.Flow("gated", store=nf.open_store(sys.argv[1]))

@flow.step
def sales(n: int = 6) -> pd.DataFrame:
    return pd.DataFrame({"region": ["north", "south", "east"] * (n // 3), "amount": range(n)})

@flow.gate
def check_sales(sales: pd.DataFrame) -> pd.DataFrame:
    return sales.groupby("region", as_index=False)["amount"].sum()

@flow.step
def totals(check_sales: pd.DataFrame) -> int:
    return int(check_sales["amount"].sum())

run = nf.get_run(sys.argv[2], flow.store)
run.approve("check_sales", by="eve", comment="continue there")
run.wait()
print(run.status)
"""


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NBFLOW_STORE", None)
    return env


def test_an_approval_from_the_cli_shows_in_an_open_run_view(tmp_path, comms):
    path = tmp_path / "gates.duckdb"
    store = nf.open_store(path)
    try:
        run = gated(store).run(progress=False)
        view = run_view(run)
        panel = view.gates
        panel.comment.value = "still typing"
        token = run.gate_token("check_sales")
        cli = [sys.executable, "-m", "nbflow.cli", "approve", token, "--by", "ann"]
        done = subprocess.run(
            [*cli, "--comment", "from the terminal", "--store", str(path)],
            capture_output=True,
            text=True,
            timeout=GENEROUS * 2,
            env=cli_env(),
        )
        assert done.returncode == 0, done.stderr
        wait_for(lambda: panel.form.layout.display == "none", "the panel's form hidden")
        assert "ann" in panel.decided.value and "from the terminal" in panel.decided.value
        assert "check_sales approved by ann" in panel.status.value
        assert "elsewhere" in panel.status.value
        assert panel.comment.value == "still typing"  # never reset under the user
        assert view.dag.infos["check_sales"].gate == "approved"
    finally:
        store.close()


def test_a_run_continued_by_another_process_ends_in_the_open_view(tmp_path, comms):
    path = tmp_path / "gates.duckdb"
    store = nf.open_store(path)
    try:
        run = gated(store).run(progress=False)
        view = run_view(run)
        script = tmp_path / "continue_there.py"
        script.write_text(GATED_SCRIPT)
        done = subprocess.run(
            [sys.executable, str(script), str(path), run.id],
            capture_output=True,
            text=True,
            timeout=GENEROUS * 2,
            env=cli_env(),
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip().splitlines()[-1] == "completed"
        wait_for(
            lambda: view.dag.infos.get("totals", NodeInfo()).state is NodeState.COMPLETED,
            "the view's DAG showing totals completed",
        )
        wait_for(lambda: "completed" in view.gates.status.value, "the panel saying completed")
        assert "check_sales approved by eve" in view.gates.status.value
        assert view.gates.form.layout.display == "none"
        assert "continue there" in view.gates.decided.value
    finally:
        store.close()

"""Big DAGs without a browser: groups folded and unfolded, the install hint once, states
told apart by more than color, the in-browser layout sent only when ``dot`` is missing."""

from __future__ import annotations

import re

import pytest
from widget_comms import comms, frontend_update  # noqa: F401 - a fixture

import nbflow as nf
from nbflow.definition.step import Step, StepOptions
from nbflow.errors import DefinitionError
from nbflow.widgets import dag as dag_module
from nbflow.widgets import layout as dag_layout
from nbflow.widgets.dag import BIG_DAG, DagWidget, run_source
from nbflow.widgets.groups import Group, find_groups, fold, group_info
from nbflow.widgets.states import DagSpec, NodeInfo, NodeState
from nbflow.widgets.svg import DASH, ICONS, render_svg


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    dag_layout.layout.cache_clear()
    monkeypatch.setattr(dag_module, "_hint_shown_by", [])
    yield
    dag_layout.layout.cache_clear()


def fan(width: int = 40) -> DagSpec:
    """raw -> load_0 … load_{width-1} -> merged -> report."""
    loads = tuple(f"load_{i}" for i in range(width))
    edges = tuple(("raw", n) for n in loads) + tuple((n, "merged") for n in loads)
    return DagSpec(("raw", *loads, "merged", "report"), (*edges, ("merged", "report")))


def drawn_steps(svg: str) -> set[str]:
    return set(re.findall(r'data-step="([^"]+)"', svg))


def test_steps_differing_only_in_numbers_form_a_group():
    groups = find_groups(fan(5))
    assert list(groups) == ["load_*"]
    assert groups["load_*"].members == tuple(f"load_{i}" for i in range(5))


def test_a_chain_of_numbered_steps_is_no_group_and_two_are_too_few():
    chain = DagSpec(("s1", "s2", "s3"), (("s1", "s2"), ("s2", "s3")))
    assert find_groups(chain) == {}
    assert find_groups(DagSpec(("a1", "a2"), ())) == {}


def test_folding_merges_edges_and_keeps_the_dag_acyclic():
    group = find_groups(fan(4))["load_*"]
    folded = fold(fan(4), [group])
    assert folded.nodes == ("raw", "load_* (4)", "merged", "report")
    node = "load_* (4)"
    assert set(folded.edges) == {("raw", node), (node, "merged"), ("merged", "report")}


def test_a_folded_group_shows_its_most_telling_state_and_counts():
    group = Group("load_*", ("a", "b", "c"))
    infos = {"a": NodeInfo(NodeState.COMPLETED), "b": NodeInfo(NodeState.FAILED)}
    info = group_info(group, infos)
    assert info.state is NodeState.FAILED
    assert info.caption == "3 steps · 1/3 done"
    assert "1 failed" in info.detail and "1 never run" in info.detail
    done = group_info(group, dict.fromkeys("abc", NodeInfo(NodeState.CACHED)))
    assert done.state is NodeState.CACHED and done.caption == "3 steps · cached"


def test_a_big_dag_starts_folded_and_the_front_end_unfolds_it(comms):
    spec = fan(40)
    assert len(spec.nodes) > BIG_DAG
    widget = DagWidget(spec, {"load_3": NodeInfo(NodeState.FAILED)})
    assert widget.collapsed == ["load_*"]
    assert widget.groups["load_*"][0] == "load_0" and len(widget.groups["load_*"]) == 40
    assert drawn_steps(widget.svg) == {"raw", "merged", "report"}
    assert 'data-group="load_*"' in widget.svg and 'data-state="failed"' in widget.svg
    assert len(widget.states) == 43  # every step's state is still synced
    frontend_update(widget, collapsed=[])  # a click on the group
    assert widget.collapsed == []
    assert drawn_steps(widget.svg) == set(spec.nodes)
    widget.show(infos={"load_0": NodeInfo(NodeState.COMPLETED)})  # a state change
    assert widget.collapsed == []  # the user's choice stays
    frontend_update(widget, collapsed=["load_*"])
    assert "load_0" not in drawn_steps(widget.svg)


def test_a_small_dag_starts_unfolded_and_a_selected_step_is_never_hidden(comms):
    widget = DagWidget(fan(5))
    assert widget.collapsed == [] and "load_*" in widget.groups
    frontend_update(widget, collapsed=["load_*"])
    assert "load_2" not in drawn_steps(widget.svg)
    widget.selected = "load_2"
    assert widget.collapsed == [] and "load_2" in drawn_steps(widget.svg)


def test_a_user_given_group_is_display_only(store, comms):
    flow = nf.Flow("grouped", store=store)

    @flow.step
    def raw():
        return 1

    @flow.step(group="regions")
    def north(raw):
        return raw

    @flow.step(group="regions")
    def south(raw):
        return raw

    @flow.step(group="regions")
    def east(raw):
        return raw

    spec = DagSpec.from_graph(flow.graph())
    assert spec.groups == (("north", "regions"), ("south", "regions"), ("east", "regions"))
    assert find_groups(spec)["regions"].members == ("north", "south", "east")
    assert "group" not in flow.steps["north"].options.to_json()  # not in the cache key
    run = flow.run(progress=False)
    shown = run_source(run)().spec  # a run's DAG, from the stored definition
    assert dict(shown.groups) == dict.fromkeys(("north", "south", "east"), "regions")
    widget = DagWidget(source=run_source(run))
    frontend_update(widget, collapsed=["regions"])
    assert 'data-group="regions"' in widget.svg and "north" not in drawn_steps(widget.svg)


def test_a_user_group_that_would_make_a_cycle_is_not_folded():
    spec = DagSpec(("a", "b", "c"), (("a", "b"), ("b", "c")), groups=(("a", "ends"), ("c", "ends")))
    assert "ends" not in find_groups(spec)


@pytest.mark.parametrize("bad", ["", "  ", 3])
def test_a_bad_group_is_refused(bad):
    with pytest.raises(DefinitionError, match="group must be a non-empty string"):
        StepOptions(group=bad)
    assert Step.from_function(lambda: 1, name="ok", options=StepOptions(group="g"))


def test_every_state_differs_by_more_than_color():
    marks = {state: (DASH.get(state, ""), ICONS[state]) for state in NodeState}
    assert len(set(marks.values())) == len(NodeState)
    assert len(set(ICONS.values())) == len(NodeState)
    skipped = render_svg(DagSpec(("a",), ()), {"a": NodeInfo(NodeState.SKIPPED)})
    never = render_svg(DagSpec(("a",), ()))
    assert DASH[NodeState.SKIPPED] in skipped and DASH[NodeState.NEVER_RUN] in never
    assert ICONS[NodeState.SKIPPED] in skipped and ICONS[NodeState.NEVER_RUN] in never


def test_the_legend_carries_each_state_s_border_and_icon(comms):
    palette = DagWidget().palette
    assert palette["skipped"][2:4] == [DASH[NodeState.SKIPPED], ICONS[NodeState.SKIPPED]]
    assert palette["completed"][2] == ""  # a solid border


def test_without_dot_the_hint_shows_under_the_first_dag_only(monkeypatch, tmp_path, comms):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` anywhere
    first = DagWidget(DagSpec(("a", "b"), (("a", "b"),)))
    second = DagWidget(DagSpec(("c",), ()))
    assert "Graphviz" in first.note and second.note == ""
    first.show(infos={"a": NodeInfo(NodeState.COMPLETED)})
    assert "Graphviz" in first.note  # it keeps its hint across redraws
    # The browser lays it out with the vendored dagre, sent along only without dot.
    assert first.engine == "layered" and "dagre" in first.layout_module[:200]
    assert first.layout_module == (dag_module.HERE / "vendor" / "dagre.esm.js").read_text()


def test_with_dot_no_hint_and_no_layout_module(comms):
    widget = DagWidget(DagSpec(("a", "b"), (("a", "b"),)))
    if widget.engine != "dot":
        pytest.skip("Graphviz's dot is not installed")
    assert widget.note == "" and widget.layout_module == ""


def test_the_vendored_layout_is_package_data():
    import tomllib
    from pathlib import Path

    pyproject = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"]["package-data"]["nbflow.widgets"]
    assert "vendor/*" in patterns
    vendor = dag_module.HERE / "vendor"
    assert (vendor / "LICENSE.dagre.txt").read_text().startswith("Copyright")
    assert "| @dagrejs/dagre | 3.1.3 | MIT" in (vendor / "README.md").read_text()

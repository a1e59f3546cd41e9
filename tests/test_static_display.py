"""Where widgets cannot render (issue 17, point 12): a terminal, a static page (nbconvert,
nbviewer, GitHub's preview) or a notebook without its widget state shows a summary of the
steps, their states and durations; ``flow.show()`` and the browser export standalone HTML
that opens offline."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import nbformat
import pytest
from widget_comms import comms  # noqa: F401 - a fixture

import nbflow as nf
from nbflow.errors import ParameterError
from nbflow.widgets.dag import DagWidget
from nbflow.widgets.states import DagSpec, NodeInfo, NodeState
from nbflow.widgets.summary import plural, steps_text

WIDGET = "application/vnd.jupyter.widget-view+json"
# Anything a page would fetch: a script, a stylesheet, an image, a font, an import.
FETCHES = re.compile(
    r"<script|<link|@import|url\(|(?:src|href)\s*=\s*[\"']?(?:https?:)?//", re.IGNORECASE
)

CELLS = [
    """
    import nbflow as nf
    flow = nf.Flow("static")

    @flow.step
    def raw():
        return list(range(5))

    @flow.step
    def doubled(raw):
        return [2 * x for x in raw]

    @flow.step
    def total(doubled):
        return sum(doubled)

    run = flow.run()
    """,
    "flow",
    "run",
    "flow.show()",
    "nf.browse(flow)",
    """
    flow.show().to_html("dag.html")
    nf.browse(flow).to_html("browser.html")
    """,
]


@pytest.fixture(scope="module")
def executed(jupyter_env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The notebook above, executed by nbclient (widget state kept, as Jupyter saves it)."""
    from nbclient import NotebookClient

    folder = tmp_path_factory.mktemp("static")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(textwrap.dedent(c).strip()) for c in CELLS]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in jupyter_env.items():
            patch.setenv(key, value)
        patch.setenv("NBFLOW_STORE", str(folder / "nbflow.duckdb"))
        NotebookClient(
            nb,
            timeout=180,
            kernel_name="python3",
            resources={"metadata": {"path": str(folder)}},
            store_widget_state=True,
        ).execute()
    return nb, folder


def displays(nb: Any) -> list[dict[str, Any]]:
    return [
        o["data"]
        for cell in nb.cells
        for o in cell.outputs
        if o.output_type in ("display_data", "execute_result")
    ]


def test_every_widget_output_carries_a_text_and_html_summary(executed: Any) -> None:
    nb, _ = executed
    shown = [d for d in displays(nb) if WIDGET in d]
    # The live view of the run, the flow, the run, flow.show() and the browser.
    assert len(shown) == 5
    for data in shown:
        text, html = data["text/plain"], data["text/html"]
        assert "object at 0x" not in text and "VBox(" not in text and "IntProgress" not in text
        for step in ("raw", "doubled", "total"):
            assert step in text and step in html
        assert "completed" in text or "cached" in text
    live = shown[0]["text/plain"]
    # The live view's summary was updated when the run ended: it shows the run's end.
    assert "completed" in live and "3 of 3 steps" in live and "waiting" not in live
    assert "nbflow checkpoints" in shown[-1]["text/plain"] and "Runs (" in shown[-1]["text/plain"]


def test_nbconvert_without_widget_state_shows_the_summary(executed: Any) -> None:
    from nbconvert import HTMLExporter

    nb, _ = executed
    stripped = nbformat.from_dict(nb)
    stripped.metadata.pop("widgets", None)  # as nbviewer or GitHub see a notebook saved so
    body, _ = HTMLExporter().from_notebook_node(stripped)
    assert "nbflow-summary" in body
    for step in ("raw", "doubled", "total"):
        assert f"<td>{step}</td>" in body
    assert "completed" in body and "DagWidget object" not in body and "VBox(children" not in body
    assert re.search(r'<svg [^>]*class="nbflow-dag-svg"', body)  # the drawing, inline


def test_the_exported_pages_open_offline_and_show_the_steps(executed: Any) -> None:
    _, folder = executed
    dag = (folder / "dag.html").read_text(encoding="utf-8")
    browser = (folder / "browser.html").read_text(encoding="utf-8")
    for page in (dag, browser):
        assert page.startswith("<!DOCTYPE html>")
        assert not FETCHES.search(page), FETCHES.search(page)
        assert "<svg" in page and 'class="node ' in page  # the DAG drawing itself
        for step in ("raw", "doubled", "total"):
            assert f"<td>{step}</td>" in page
        assert re.search(r"<td>\d+(\.\d)? (µs|ms|s)</td>", page)  # durations
    assert "Runs, newest first" in browser and "static" in browser


def test_in_a_terminal_a_flow_and_a_run_show_their_steps(store: Any) -> None:
    flow = nf.Flow("terminal", store=store)

    @flow.step
    def a() -> int:
        return 1

    @flow.step
    def b(a: int) -> int:
        return a + 1

    never = flow._repr_mimebundle_()["text/plain"]
    assert "never run" in never and "a " in never and "b " in never
    run = flow.run(progress=False)
    text = run._repr_mimebundle_()["text/plain"]
    assert text.splitlines()[0] == f"terminal · run {run.id} · completed · 2 steps: 2 completed"
    assert re.search(r"^  a +completed +\d", text, re.MULTILINE)
    assert "<td>b</td>" in flow._repr_mimebundle_()["text/html"]


def test_the_summary_reads_well() -> None:
    spec = DagSpec(("load", "fit", "report"), (("load", "fit"), ("fit", "report")))
    infos = {
        "load": NodeInfo(NodeState.COMPLETED, 1200.0),
        "fit": NodeInfo(NodeState.FAILED, 30.0, detail="ValueError: no data"),
        "report": NodeInfo(NodeState.SKIPPED),
    }
    assert steps_text("demo · run r1 · failed", spec, infos) == (
        "demo · run r1 · failed · 3 steps: 1 completed, 1 failed, 1 skipped\n"
        "  step    state      took   detail\n"
        "  load    completed  1.2 s\n"
        "  fit     failed     30 ms  ValueError: no data\n"
        "  report  skipped"
    )
    assert plural(1, "step") == "1 step" and plural(0, "step") == "0 steps"
    assert steps_text("empty", DagSpec((), ()), {}) == "empty\n(no steps)"


def test_to_html_refuses_a_bad_path(tmp_path: Path, comms: Any) -> None:
    widget = DagWidget(DagSpec(("a",), ()))
    with pytest.raises(ParameterError, match="is a folder"):
        widget.to_html(tmp_path)
    with pytest.raises(ParameterError, match="folder does not exist"):
        widget.to_html(tmp_path / "missing" / "dag.html")
    with pytest.raises(ParameterError, match="path of the file"):
        widget.to_html(42)  # type: ignore[arg-type]
    assert (
        widget.to_html(tmp_path / "dag.html").read_text(encoding="utf-8").count("<td>a</td>") == 1
    )


def test_every_state_is_drawn_in_its_color() -> None:
    from nbflow.widgets.states import PALETTE
    from nbflow.widgets.summary import badge, steps_html

    spec = DagSpec(("a", "b"), ())
    html = steps_html("t", spec, {"a": NodeInfo(NodeState.NEVER_RUN, label="waiting")})
    assert f"background:{PALETTE[NodeState.NEVER_RUN][0]}" in html and ">waiting<" in html
    assert html.count(f"background:{PALETTE[NodeState.NEVER_RUN][0]}") == 2  # b: never run
    assert PALETTE[NodeState.QUEUED][0] in badge("waiting")  # a run waiting at a gate
    assert PALETTE[NodeState.FAILED][0] in badge("failed")
    assert badge("<odd>") == "&lt;odd&gt;"

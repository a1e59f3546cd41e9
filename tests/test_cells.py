"""%%step cells compiled into steps (no kernel): dependencies, values, parameters, errors.

The cells here are compiled the way the magic compiles them, in a namespace that plays
the notebook's (``__name__ == "__main__"``, helpers defined by exec). The magics in a
real kernel are in test_magics.py.
"""

from __future__ import annotations

import textwrap
from typing import Any

import pandas as pd
import pytest

import nbflow as nf
from nbflow.api.cells import add_cell_step, resolve_flow
from nbflow.definition.cells import StepSpec, compile_cell, parse_step_line
from nbflow.errors import CellError, DefinitionError, StepFailed


class Notebook:
    """A notebook's namespace with one flow, and cells run into it like the magic does."""

    def __init__(self, store: nf.Store | str = "memory://", name: str = "nb") -> None:
        self.ns: dict[str, Any] = {"__name__": "__main__"}
        self.cell("import pandas as pd\nimport nbflow as nf")
        self.flow = nf.Flow(name, store=store)
        self.ns["flow"] = self.flow

    def cell(self, src: str) -> None:
        """A plain cell."""
        exec(compile(textwrap.dedent(src), "<plain cell>", "exec"), self.ns)

    def step(self, line: str, body: str) -> nf.Flow:
        """A %%step cell (line without the %%step)."""
        body = textwrap.dedent(body)
        spec = parse_step_line(line)
        flow = resolve_flow(self.ns, spec.flow)
        step = compile_cell(
            spec,
            body,
            steps=flow.steps,
            namespace=self.ns,
            flow_name=flow.name,
            cell_text=f"%%step {line}\n{body}",
        )
        add_cell_step(flow, step)
        return flow


@pytest.fixture
def nb() -> Notebook:
    return Notebook()


# -- dependencies ----------------------------------------------------------------------------


def test_steps_the_cell_reads_are_its_dependencies(nb: Notebook) -> None:
    nb.step("raw", "raw = [3, 1, 2]")
    nb.step("other", "other = 10")
    nb.step("total", "s = sum(raw)\ntotal = s + other")
    step = nb.flow.steps["total"]
    assert step.inputs == ("raw", "other")
    assert set(nb.flow.dag.edges) == {("raw", "total"), ("other", "total")}
    assert nb.flow.run()["total"] == 16


def test_dependencies_come_from_the_ast_not_the_text(nb: Notebook) -> None:
    nb.step("raw", "raw = [1, 2]")
    nb.cell("class Box:\n    raw = 5")
    body = """
    # raw is mentioned in a comment
    text = "raw"          # and in a string
    n = Box.raw           # and as an attribute
    f = lambda raw: raw   # and as a lambda's own parameter
    squares = [raw for raw in range(3)]   # and as a comprehension variable
    (text, n, f(1), squares)
    """
    nb.step("unrelated", body)
    assert nb.flow.steps["unrelated"].inputs == ()
    assert nb.flow.run()["unrelated"] == ("raw", 5, 1, [0, 1, 2])


def test_a_step_read_inside_nested_code_is_a_dependency(nb: Notebook) -> None:
    nb.step("raw", "raw = [1, 2, 3]")
    nb.step("scale", "scale = 10")
    nb.step("scaled", "scaled = [v * scale for v in raw]")
    nb.step("fn", "def add(v):\n    return v + scale\nlist(map(add, raw))")
    assert nb.flow.steps["scaled"].inputs == ("raw", "scale")
    assert set(nb.flow.steps["fn"].inputs) == {"raw", "scale"}
    run = nb.flow.run()
    assert run["scaled"] == [10, 20, 30]
    assert run["fn"] == [11, 12, 13]


def test_a_step_read_then_reassigned_is_still_its_input(nb: Notebook) -> None:
    nb.step("raw", "raw = pd.DataFrame({'x': [1.0, None, 3.0]})")
    nb.step("clean", "raw = raw.dropna()\nclean = raw.reset_index(drop=True)")
    assert nb.flow.steps["clean"].inputs == ("raw",)
    assert nb.flow.run()["clean"]["x"].tolist() == [1.0, 3.0]


def test_names_assigned_before_they_are_read_are_local(nb: Notebook) -> None:
    nb.step("raw", "raw = 1")
    nb.step("local", "raw = 41\nlocal = raw + 1")
    assert nb.flow.steps["local"].inputs == ()
    assert nb.flow.run()["local"] == 42


def test_needs_adds_an_order_without_passing_a_value(nb: Notebook) -> None:
    nb.cell("seen = []")
    nb.step("setup", "seen.append('setup')\nsetup = True")
    nb.step("after --needs setup", "seen.append('after')\nafter = len(seen)")
    step = nb.flow.steps["after"]
    assert step.inputs == () and step.depends_on == ("setup",)
    assert nb.flow.run()["after"] == 2


def test_imports_in_the_cell_are_not_looked_up(nb: Notebook) -> None:
    nb.step("stats", "import statistics as st\nfrom math import sqrt\nsqrt(st.mean([4, 4]))")
    assert nb.flow.run()["stats"] == 2.0


# -- the value ---------------------------------------------------------------------------------


def test_value_is_the_variable_named_like_the_step(nb: Notebook) -> None:
    nb.step("answer", "answer = 41\nanswer += 1\n'not the value'")
    assert nb.flow.run()["answer"] == 42


def test_value_is_else_the_last_expression(nb: Notebook) -> None:
    nb.step("frame", "df = pd.DataFrame({'a': [1, 2]})\ndf.assign(b=df['a'] * 2)")
    out = nb.flow.run()["frame"]
    assert isinstance(out, pd.DataFrame)
    assert out["b"].tolist() == [2, 4]


def test_a_cell_without_a_value_is_refused_saying_what_the_value_should_be(
    nb: Notebook,
) -> None:
    with pytest.raises(CellError) as info:
        nb.step("summary", "x = 1\nfor i in range(3):\n    x += i")
    message = str(info.value)
    assert "has no value" in message
    assert "does not assign 'summary'" in message
    assert "line 3" in message  # the for loop, counting the %%step line as line 1
    assert "`summary = ...`" in message and "end the cell with the expression" in message
    with pytest.raises(CellError, match="is empty"):
        nb.step("empty", "# nothing here\n")


# -- run parameters ------------------------------------------------------------------------------


def test_params_declare_run_parameters_typed_by_their_literals(nb: Notebook) -> None:
    nb.step("raw", "raw = list(range(10))")
    nb.step(
        "window --params size=3,rate=0.5,label='last',flags=[1, 2],mode=fast",
        "window = (raw[-size:], rate, label, flags, mode)",
    )
    step = nb.flow.steps["window"]
    assert step.params == {"size": 3, "rate": 0.5, "label": "last", "flags": [1, 2], "mode": "fast"}
    assert step.param_types == {
        "size": "int",
        "rate": "float",
        "label": "str",
        "flags": "list",
        "mode": "str",
    }
    assert nb.flow.run(size=2)["window"] == ([8, 9], 0.5, "last", [1, 2], "fast")


def test_step_options_on_the_magic_line(nb: Notebook) -> None:
    spec = parse_step_line("s --retries 2 --retry-delay=0.5 --timeout 9 --no-cache --version v1")
    assert spec.options == nf.definition.step.StepOptions(
        retries=2, retry_delay=0.5, timeout=9.0, cache=False, version="v1"
    )
    nb.cell("calls = []")
    nb.step(
        "flaky --retries 1",
        "calls.append(1)\nif len(calls) < 2:\n    raise RuntimeError('once')\nflaky = len(calls)",
    )
    assert nb.flow.run()["flaky"] == 2


def test_magic_line_parsing() -> None:
    spec = parse_step_line("features --flow 'churn model' --needs a, b --params w=3 --run")
    assert spec == StepSpec(
        "features", flow="churn model", needs=("a", "b"), params={"w": 3}, run=True
    )
    assert parse_step_line('f --params label="a b",n=-1  # a comment').params == {
        "label": "a b",
        "n": -1,
    }


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "needs the step's name"),
        ("1abc", "not a valid Python identifier"),
        ("f g", "unexpected 'g'"),
        ("f --flw x", "Did you mean '--flow'"),
        ("f --run=yes", "--run takes no value"),
        ("f --flow", "--flow needs a value"),
        ("f --params", "--params needs a value"),
        ("f --params a", "every entry must be name=value"),
        ("f --params a=b+c", "is not a literal"),
        ("f --retries many", "--retries needs a whole number"),
        ("f --needs f", "cannot need itself"),
        ("f --params f=1", "run parameter named like itself"),
        ("f --needs a --params a=1", "both a step it needs and a run parameter"),
        ('f --params "a=1', "No closing quotation"),
    ],
)
def test_bad_magic_lines_are_refused_clearly(line: str, message: str) -> None:
    with pytest.raises(CellError, match=message.replace("(", r"\(")):
        parse_step_line(line)


# -- names read from the notebook --------------------------------------------------------------


def test_helpers_and_constants_resolve_from_the_notebook(nb: Notebook) -> None:
    nb.cell("FACTOR = 3\ndef triple(v):\n    return v * FACTOR")
    nb.step("raw", "raw = [1, 2]")
    nb.step("tripled", "[triple(v) for v in raw]")
    assert nb.flow.run()["tripled"] == [3, 6]


def test_a_name_defined_nowhere_is_refused_with_a_suggestion(nb: Notebook) -> None:
    nb.step("raw", "raw = [1, 2]")
    with pytest.raises(CellError) as info:
        nb.step("total", "x = 1\nsum(rw) + x")
    message = str(info.value)
    assert "reads 'rw' (line 3)" in message
    assert "not defined anywhere" in message
    assert "Did you mean 'raw'?" in message
    assert "total" not in nb.flow.steps


def test_a_notebook_name_read_and_then_assigned_is_refused(nb: Notebook) -> None:
    nb.cell("LIMIT = 3")
    with pytest.raises(CellError, match="reads the notebook's 'LIMIT'.*another name"):
        nb.step("capped", "LIMIT = LIMIT + 1\nLIMIT")


def test_a_step_reading_itself_is_refused(nb: Notebook) -> None:
    with pytest.raises(CellError, match="cannot read its own value"):
        nb.step("loop", "loop + 1")


def test_a_step_cell_with_a_syntax_error_points_at_the_cell_line(nb: Notebook) -> None:
    with pytest.raises(CellError) as info:
        nb.step("broken", "x = 1\ny = (x +\nz = 2\n")
    message = str(info.value)
    assert message.startswith("syntax error in %%step cell 'broken', line 3:")
    assert "y = (x +" in message
    with pytest.raises(CellError, match="magics and shell commands"):
        nb.step("magic", "x = 1\n%time x + 1")
    with pytest.raises(CellError, match="line 2: import \\* only allowed"):
        nb.step("star", "from math import *\npi")


def test_yield_and_await_are_refused(nb: Notebook) -> None:
    with pytest.raises(CellError, match="uses yield"):
        nb.step("gen", "yield 1")
    with pytest.raises(CellError, match="uses await.*asyncio.run"):
        nb.step("coro", "await thing()")


def test_an_error_while_running_points_at_the_cell_line(nb: Notebook) -> None:
    nb.step("fails", "x = 1\ny = x / 0\ny")
    with pytest.raises(StepFailed) as info:
        nb.flow.run()
    assert 'File "<%%step fails' in info.value.traceback
    assert "line 3, in fails" in info.value.traceback
    assert "y = x / 0" in info.value.traceback  # the cell's text is what tracebacks show


def test_a_cell_that_would_make_a_cycle_leaves_the_flow_as_it_was(nb: Notebook) -> None:
    nb.step("a", "a = 1")
    nb.step("b", "b = a + 1")
    with pytest.raises(DefinitionError, match="was not \\(re\\)defined.*cycle"):
        nb.step("a", "a = b + 1")
    assert nb.flow.steps["a"].inputs == ()
    assert nb.flow.run()["b"] == 2


# -- which flow ----------------------------------------------------------------------------------


def test_flow_defaults_to_the_only_flow_and_several_need_a_choice(nb: Notebook) -> None:
    nb.cell("_old = nf.Flow('old', store='memory://')")  # underscore names are not flows
    assert resolve_flow(nb.ns, None) is nb.flow
    nb.cell("other = nf.Flow('other', store='memory://')")
    with pytest.raises(CellError, match="several flows.*flow \\(flow 'nb'\\).*--flow NAME"):
        nb.step("raw", "raw = 1")
    nb.step("raw --flow other", "raw = 1")  # by flow name
    nb.step("raw2 --flow flow", "raw2 = 2")  # by variable
    assert list(nb.ns["other"].steps) == ["raw"]
    assert list(nb.flow.steps) == ["raw2"]
    with pytest.raises(CellError, match="no Flow 'othr'.*Did you mean 'other'"):
        nb.step("x --flow othr", "x = 1")


def test_no_flow_at_all_says_how_to_make_one() -> None:
    with pytest.raises(CellError, match="flow = nf.Flow"):
        resolve_flow({"__name__": "__main__"}, None)


# -- fingerprints: editing cells -------------------------------------------------------------------


def test_formatting_and_comments_do_not_change_the_fingerprint(nb: Notebook) -> None:
    nb.step("raw", "raw = [1, 2]")
    nb.step("total", "t = sum(raw)  # total\ntotal = t")
    first = nb.flow.run()
    nb.step("total", "# a comment\nt = sum( raw )\n\ntotal = t\n")
    again = nb.flow.run()
    assert set(again.steps["status"]) == {"cached"}
    assert again["total"] == first["total"]


def test_editing_a_helper_recomputes_exactly_the_steps_that_use_it(nb: Notebook) -> None:
    nb.cell("OFFSET = 1\ndef shift(v):\n    return v + OFFSET\ndef unused():\n    return 0")
    nb.step("raw", "raw = [1, 2]")
    nb.step("shifted", "[shift(v) for v in raw]")
    nb.step("plain", "len(raw)")
    nb.step("report", "report = (sum(shifted), plain)")
    nb.flow.run()
    nb.cell("def unused():\n    return 1")  # a helper no step calls
    assert set(nb.flow.run().steps["status"]) == {"cached"}
    nb.cell("OFFSET = 2")  # a constant the helper reads
    run = nb.flow.run()
    status = dict(zip(run.steps["step"], run.steps["status"], strict=True))
    assert status == {
        "raw": "cached",
        "shifted": "completed",
        "plain": "cached",
        "report": "completed",
    }
    assert run["report"] == (7, 2)

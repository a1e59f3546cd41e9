"""IPython magics: ``%%step`` cells and the ``%nbflow`` line magic.

``%load_ext nbflow`` registers them. ``%%step NAME [options]`` turns the cell into a step
of the notebook's flow (``%%gate NAME [options]`` into a human gate) and shows the
flow's steps with their state; ``--run`` also runs what the step needs and binds its
value under the step's name. ``%nbflow run [FLOW]
[k=v ...]`` runs a flow, ``%nbflow status [FLOW]`` shows which steps are stale.

Errors nbflow raises here are shown as one clear message (a failing step with its own
traceback), not as a traceback through nbflow's internals.
"""

from __future__ import annotations

import functools
import html
import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from IPython.core.magic import Magics, cell_magic, line_magic, magics_class

from nbflow.api.cells import add_cell_step, resolve_flow
from nbflow.definition.cells import compile_cell, parse_step_line
from nbflow.definition.params import coerce_params, parse_assignments
from nbflow.errors import CellError, NbflowError, StepFailed

if TYPE_CHECKING:
    from nbflow.api.flow import Flow
    from nbflow.api.status import StepFreshness

__all__ = ["FlowView", "NbflowMagics"]

NBFLOW_USAGE = (
    "%nbflow run [FLOW] [name=value ...] [--executor inline|threads|processes|dask|ADDRESS] "
    "[--max-workers N] [--targets a,b] [--force] [--background]\n"
    "%nbflow status [FLOW]"
)

T = TypeVar("T", bound=Callable[..., Any])


def _brief_errors(method: T) -> T:
    """Show nbflow's errors as their message in IPython, not as a traceback through the
    magic's internals (IPython renders an exception's ``_render_traceback_``)."""

    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except NbflowError as exc:
            exc._render_traceback_ = functools.partial(_render, exc)  # type: ignore[attr-defined]
            raise

    return wrapper  # type: ignore[return-value]


def _render(exc: NbflowError) -> list[str]:
    red, reset = "\x1b[0;31m", "\x1b[0m"
    lines = [f"{red}{type(exc).__name__}{reset}: {exc}"]
    if isinstance(exc, StepFailed) and exc.traceback:
        lines = [*exc.traceback.rstrip("\n").splitlines(), "", *lines]
    return lines


@magics_class
class NbflowMagics(Magics):
    """The ``%%step`` and ``%%gate`` cell magics and the ``%nbflow`` line magic."""

    @cell_magic
    @_brief_errors
    def step(self, line: str, cell: str) -> Any:
        """Define (or redefine) a step from this cell.

        ``%%step NAME [--flow FLOW] [--needs a,b] [--params window=30,limit=5] [--run]``.
        The steps the cell reads are its dependencies; its value is the variable named
        NAME if the cell assigns it, else the cell's last expression. With ``--run``, the
        step and what it needs run now, and the value is bound to NAME and shown.
        """
        assert self.shell is not None
        return define_step(self.shell.user_ns, line, cell)

    @cell_magic
    @_brief_errors
    def gate(self, line: str, cell: str) -> Any:
        """Define (or redefine) a human gate from this cell: ``%%gate NAME`` takes the
        options of ``%%step``. The cell's value is what the reviewer sees; a run that
        reaches the gate waits until ``run.approve(NAME)`` (see docs/gates.md)."""
        assert self.shell is not None
        return define_step(self.shell.user_ns, line, cell, gate=True)

    @line_magic
    @_brief_errors
    def nbflow(self, line: str) -> Any:
        """``%nbflow run [FLOW] [k=v ...]`` runs a flow; ``%nbflow status [FLOW]`` shows
        which of its steps are stale and why."""
        assert self.shell is not None
        return nbflow_command(self.shell.user_ns, line)


def define_step(namespace: dict[str, Any], line: str, cell: str, *, gate: bool = False) -> Any:
    """What ``%%step`` (``%%gate`` with ``gate=True``) does, given the notebook's
    namespace (testable without IPython)."""
    import dataclasses

    from IPython.display import display

    spec = parse_step_line(line)
    if gate:
        spec = dataclasses.replace(spec, options=dataclasses.replace(spec.options, gate=True))
    flow = resolve_flow(namespace, spec.flow)
    step = compile_cell(
        spec,
        cell,
        steps=flow.steps,
        namespace=namespace,
        flow_name=flow.name,
        cell_text=f"%%{'gate' if gate else 'step'} {line}\n{cell}",
        first_line=2,
    )
    add_cell_step(flow, step)
    if not spec.run:
        display(FlowView(flow, focus=spec.name))
        return None
    run = flow.run(targets=[spec.name])
    value = run[spec.name]
    namespace[spec.name] = value
    # The run's live view above already draws the DAG: the table of steps is enough.
    display(FlowView(flow, focus=spec.name, dag=False))
    return value


def nbflow_command(namespace: dict[str, Any], line: str) -> Any:
    """What ``%nbflow`` does, given the notebook's namespace."""
    try:
        tokens = shlex.split(line)
    except ValueError as exc:
        raise CellError(f"cannot read `%nbflow {line}`: {exc}") from None
    if not tokens or tokens[0] in ("help", "--help", "-h"):
        print(NBFLOW_USAGE)
        return None
    command, rest = tokens[0], tokens[1:]
    if command == "run":
        return _run_command(namespace, rest)
    if command == "status":
        if len(rest) > 1:
            raise CellError(f"usage: %nbflow status [FLOW], not {line!r}")
        return resolve_flow(namespace, rest[0] if rest else None).status()
    from nbflow.errors import suggest

    raise CellError(
        f"unknown %nbflow command {command!r}.{suggest(command, ['run', 'status'])}\n"
        f"usage:\n{NBFLOW_USAGE}"
    )


def _run_command(namespace: dict[str, Any], tokens: list[str]) -> Any:
    flow_name: str | None = None
    assignments: list[str] = []
    options: dict[str, Any] = {}
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        option, has_value, value = token.partition("=")
        if option in ("--force", "--background"):
            options[option[2:]] = True
        elif option in ("--executor", "--max-workers", "--targets"):
            if not has_value:
                if i >= len(tokens):
                    raise CellError(f"{option} needs a value.\nusage: {NBFLOW_USAGE}")
                value = tokens[i]
                i += 1
            options[option[2:].replace("-", "_")] = value
        elif token.startswith("-"):
            raise CellError(f"unknown option {option!r}.\nusage: {NBFLOW_USAGE}")
        elif has_value:
            assignments.append(token)
        elif flow_name is None and not assignments:
            flow_name = token
        else:
            raise CellError(f"unexpected {token!r}: parameters are name=value.\n{NBFLOW_USAGE}")
    flow = resolve_flow(namespace, flow_name)
    if "max_workers" in options:
        try:
            options["max_workers"] = int(options["max_workers"])
        except ValueError:
            raise CellError(
                f"--max-workers needs a number, not {options['max_workers']!r}"
            ) from None
    if "targets" in options:
        options["targets"] = [t for t in options["targets"].replace(",", " ").split() if t]
    params = coerce_params(parse_assignments(assignments), flow.params)
    return flow.run(**options, **params)


# -- showing the flow ----------------------------------------------------------------------

_MARKS = {"fresh": "●", "stale": "◐", "never_run": "○", "failed": "✖"}
_COLORS = {"fresh": "#2e7d32", "stale": "#ef6c00", "never_run": "#757575", "failed": "#c62828"}


class FlowView:
    """The flow's steps in run order, each with what it needs and its state (fresh, stale,
    never run, failed) and why; ``focus`` marks the step a cell just defined; ``dag`` says
    whether the flow's DAG widget is shown too."""

    def __init__(self, flow: Flow, focus: str | None = None, *, dag: bool = True) -> None:
        self.flow = flow
        self.focus = focus
        self.dag = dag
        self.error: str | None = None
        self.rows: list[StepFreshness] = []
        try:
            from nbflow.api.status import flow_status

            self.rows = flow_status(flow)
        except Exception as exc:  # showing must not fail the cell: say what is wrong
            self.error = str(exc) if isinstance(exc, NbflowError) else f"{exc!r}"

    def _title(self) -> str:
        count = len(self.flow.steps)
        return f"flow {self.flow.name!r}: {count} step{'s' if count != 1 else ''}"

    def __repr__(self) -> str:
        lines = [self._title()]
        width = max((len(r.step) for r in self.rows), default=0)
        for r in self.rows:
            mark = "▶" if r.step == self.focus else " "
            needs = f" ← {', '.join(r.upstream)}" if r.upstream else ""
            state = r.state.value.replace("_", " ")
            why = f"  ({r.why})" if r.why else ""
            lines.append(f"{mark} {_MARKS[r.state.value]} {r.step:<{width}}  {state}{needs}{why}")
        if self.error:
            lines.append(f"  (cannot show the steps' states: {self.error})")
        return "\n".join(lines)

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        """The flow's DAG widget where widgets render, with this table as HTML and text."""
        bundle = {"text/plain": repr(self), "text/html": self._repr_html_()}
        if not self.dag:
            return bundle
        try:
            from nbflow.widgets import repr_bundle

            dag = repr_bundle(self.flow)
        except Exception:  # no widget: the table says it all
            return bundle
        return {**{k: v for k, v in dag.items() if not k.startswith("text/")}, **bundle}

    def _repr_html_(self) -> str:
        rows = []
        for r in self.rows:
            color = _COLORS[r.state.value]
            weight = "font-weight:bold;" if r.step == self.focus else ""
            rows.append(
                f"<tr style='{weight}'><td>{'▶' if r.step == self.focus else ''}</td>"
                f"<td><code>{html.escape(r.step)}</code></td>"
                f"<td style='color:{color}'>{_MARKS[r.state.value]} "
                f"{r.state.value.replace('_', ' ')}</td>"
                f"<td>{html.escape(', '.join(r.upstream))}</td>"
                f"<td>{html.escape(r.why)}</td></tr>"
            )
        error = f"<p><em>{html.escape(self.error)}</em></p>" if self.error else ""
        return (
            f"<div class='nbflow-flow'><strong>{html.escape(self._title())}</strong>"
            "<table><thead><tr><th></th><th>step</th><th>state</th><th>needs</th><th>why</th>"
            f"</tr></thead><tbody>{''.join(rows)}</tbody></table>{error}</div>"
        )

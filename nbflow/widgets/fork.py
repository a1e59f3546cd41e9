"""The fork panel: where to fork from, a form for the run parameters, and a Fork button.

The form is generated from the flow's stored definition: each run parameter gets an
input that fits its type (a number box for ``int`` and ``float``, a checkbox for
``bool``, a text box for ``str``, JSON for anything else), filled with the selected
run's values. Pressing Fork calls back the browser with what was chosen.

Before Fork is pressed, the panel says what the fork would do (its ``plan`` callback, the
browser's :func:`nbflow.api.fork.preview_fork`): what it reuses, what it runs, and each
step outside the fork point that it recomputes because the chosen parameters (or the
code) changed what that step read — redrawn whenever the step, the version or a
parameter changes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import ipywidgets as w

from nbflow.errors import NbflowError
from nbflow.store.records import FlowRecord, RunRecord, RunStatus
from nbflow.widgets.preview import message

if TYPE_CHECKING:
    from nbflow.api.protocols import FlowDefinition
    from nbflow.api.run import Run

FROM_STEP = "step"
AT_VERSION = "version"


@dataclass(frozen=True)
class ForkRequest:
    """What the Fork button asks for: a step or a version, and changed parameters."""

    from_step: str | None
    at_version: int | None
    params: dict[str, Any]


def param_types(record: FlowRecord | None, steps: tuple[str, ...] = ()) -> dict[str, str]:
    """Each run parameter of a stored flow definition and its type name."""
    if record is None:
        return {}
    types: dict[str, str] = {}
    for step in record.steps:
        if steps and step.name not in steps:
            continue
        for name in step.params:
            types.setdefault(name, step.param_types.get(name, "any"))
    return types


class ParamForm(w.VBox):
    """Inputs for run parameters, one per parameter, typed from the flow's definition."""

    def __init__(self, on_change: Callable[[], None] = lambda: None) -> None:
        super().__init__()
        self.add_class("nbflow-param-form")
        self._on_change = on_change
        self._inputs: dict[str, w.ValueWidget] = {}
        self._types: dict[str, str] = {}
        self._initial: dict[str, Any] = {}

    def load(self, types: Mapping[str, str], values: Mapping[str, Any]) -> None:
        """Build the inputs for ``types``, filled with ``values``."""
        for old in self._inputs.values():
            old.close()
        self._types = dict(types)
        self._initial = {name: values.get(name) for name in types}
        # One label width for every input, so that the boxes line up under each other.
        longest = max((len(_label(n, t, values.get(n))) for n, t in types.items()), default=0)
        width = f"{longest + 2}ch"
        self._inputs = {name: _input(name, t, values.get(name), width) for name, t in types.items()}
        for box in self._inputs.values():
            box.observe(lambda _: self._on_change(), names="value")
        self.children = list(self._inputs.values()) or [
            w.HTML(message("this flow has no run parameters"))
        ]

    @property
    def inputs(self) -> dict[str, w.ValueWidget]:
        """The input widget of each parameter."""
        return dict(self._inputs)

    def values(self) -> dict[str, Any]:
        """Every parameter's value; ValueError naming a parameter whose JSON is invalid."""
        out: dict[str, Any] = {}
        for name, box in self._inputs.items():
            value = box.value
            if isinstance(box, w.Textarea | w.Text) and _is_json_type(self._types[name]):
                try:
                    value = json.loads(value)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"parameter {name!r}: {value!r} is not JSON ({exc})") from None
            out[name] = value
        return out

    def changed(self) -> dict[str, Any]:
        """The parameters whose value differs from the one the form was filled with."""
        return {k: v for k, v in self.values().items() if v != self._initial.get(k)}


def _is_json_type(type_name: str) -> bool:
    return type_name not in ("str",)


def _editable_as(type_name: str, value: Any) -> str:
    """The kind of input a parameter gets: bool, int, float, str, or JSON for the rest."""
    if type_name == "bool" and isinstance(value, bool):
        return "bool"
    if type_name == "int" and isinstance(value, int) and not isinstance(value, bool):
        return "int"
    if type_name == "float" and isinstance(value, int | float) and not isinstance(value, bool):
        return "float"
    if type_name == "str" and isinstance(value, str):
        return "str"
    return "JSON"  # lists, dicts, Optional[...], None


def _label(name: str, type_name: str, value: Any) -> str:
    kind = _editable_as(type_name, value)
    return f"{name} ({type_name if kind != 'JSON' else 'JSON'})"


def _input(name: str, type_name: str, value: Any, label_width: str) -> w.ValueWidget:
    style = {"description_width": label_width}
    description = _label(name, type_name, value)
    layout = w.Layout(width=f"calc({label_width} + 220px)")
    kind = _editable_as(type_name, value)
    if kind == "bool":
        # Indented by the label width, the box sits where the other inputs start.
        return w.Checkbox(value=value, description=description, indent=True, style=style)
    if kind == "int":
        return w.IntText(value=value, description=description, style=style, layout=layout)
    if kind == "float":
        return w.FloatText(value=float(value), description=description, style=style, layout=layout)
    if kind == "str":
        return w.Text(value=value, description=description, style=style, layout=layout)
    return w.Text(value=json.dumps(value), description=description, style=style, layout=layout)


def fork_plan(run: Run | None, flow: FlowDefinition | None, request: ForkRequest) -> list[str]:
    """What forking ``run`` (of ``flow``, as defined now) as ``request`` asks would do, as
    lines (nothing without a run, or when its flow is not defined in this session)."""
    if run is None or flow is None:
        return []
    from nbflow.api.fork import preview_fork

    preview = preview_fork(
        flow,
        run,
        from_step=request.from_step,
        at_version=request.at_version,
        params=request.params,
    )
    return preview.describe()


#: What the panel asks of its owner to preview a fork: the lines saying what it would
#: do (``ForkPreview.describe``); an NbflowError or ValueError says why it cannot.
PlanFork = Callable[[ForkRequest], list[str]]


class ForkPanel(w.VBox):
    """Choose a step (or the selected version), edit the parameters, see what the fork
    would do, press Fork."""

    def __init__(
        self, on_fork: Callable[[ForkRequest], None], plan: PlanFork | None = None
    ) -> None:
        self._on_fork = on_fork
        self._plan = plan
        self._loading = False
        self._version: int | None = None
        self.mode = w.ToggleButtons(
            options=[("from a step", FROM_STEP), ("at the selected version", AT_VERSION)],
            value=FROM_STEP,
            style={"button_width": "auto"},
        )
        self.step = w.Dropdown(
            description="step", options=[], style={"description_width": "initial"}
        )
        self.where = w.HTML()
        self.form = ParamForm(self._show_plan)
        self.plan = w.HTML()
        self.plan.add_class("nbflow-fork-plan")
        self.button = w.Button(description="Fork", button_style="primary", icon="code-branch")
        self.button.add_class("nbflow-fork-button")
        self.status = w.HTML()
        super().__init__(
            [
                w.HTML(
                    message(
                        "A fork reuses the outputs upstream of the chosen step (or everything "
                        "completed at the chosen version) and runs the rest with these parameters."
                    )
                ),
                self.mode,
                self.step,
                self.where,
                w.HTML('<div class="nbflow-subhead">run parameters</div>'),
                self.form,
                self.plan,
                self.button,
                self.status,
            ]
        )
        self.add_class("nbflow-fork")
        self.mode.observe(lambda _: self._describe(), names="value")
        self.step.observe(lambda _: self._show_plan(), names="value")
        self.button.on_click(lambda _: self.press())

    def load(
        self,
        steps: tuple[str, ...],
        types: Mapping[str, str],
        values: Mapping[str, Any],
        version: int | None,
        step: str = "",
    ) -> None:
        """Fill the panel for a newly selected run. The step chosen stays chosen where
        the new run has it (a fork of a fork is forked from the step the user picked, not
        the one selected in the DAG); else ``step``, else the first."""
        self._loading = True  # one plan for the new run, not one per input filled
        try:
            chosen = self.step.value
            self.step.options = list(steps)
            self.step.value = (
                chosen
                if chosen in steps
                else step
                if step in steps
                else (steps[0] if steps else None)
            )
            self.form.load(types, values)
        finally:
            self._loading = False
        self._version = version
        self._describe()

    def set_step(self, step: str) -> None:
        """Follow the step selected in the DAG."""
        if step in self.step.options:
            self.step.value = step

    def set_version(self, version: int | None) -> None:
        """Follow the version selected with the slider."""
        if version == self._version and not self._loading:
            return  # (a live run redrawn: nothing the panel says changed)
        self._version = version
        self._describe()

    def _describe(self) -> None:
        at = self.mode.value == AT_VERSION
        self.step.layout.display = "none" if at else ""
        self.where.value = (
            message(f"forks at version {self._version} (move the version slider to change it)")
            if at
            else ""
        )
        self._show_plan()

    def _show_plan(self) -> None:
        """Say what pressing Fork would do now: reused, run, and recomputed with why."""
        if self._plan is None or self._loading:
            return
        try:
            lines = self._plan(self.request())
        except (NbflowError, ValueError) as exc:
            self.plan.value = message(f"cannot fork so: {exc}", "error")
            return
        self.plan.value = "".join(message(line) for line in lines)

    def request(self) -> ForkRequest:
        """What pressing Fork would ask for (ValueError if a parameter is invalid)."""
        params = self.form.changed()
        if self.mode.value == AT_VERSION:
            return ForkRequest(None, self._version, params)
        return ForkRequest(self.step.value or None, None, params)

    def show_ended(self, record: RunRecord) -> None:
        """Say how a fork started here ended: the panel's last word on it."""
        kind = "ok" if record.status is RunStatus.COMPLETED else "error"
        detail = f": {record.error}" if record.error else "."
        self.status.value = message(f"fork {record.run_id} {record.status.value}{detail}", kind)

    def press(self) -> None:
        """Fork: ask the browser to start it; show what happened."""
        try:
            request = self.request()
        except ValueError as exc:
            self.status.value = message(str(exc), "error")
            return
        self.status.value = message("forking…")
        self._on_fork(request)

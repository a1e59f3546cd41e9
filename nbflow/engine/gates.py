"""Human gates, for the :class:`~nbflow.engine.runner.Runner`: holding back what depends
on a gate until a person approves it, and opening the gates when nothing else can run.

A gate is a step (``StepOptions.gate``): it runs (or is found in the cache) like any
other, and its value is checkpointed. Unless the gate was approved in this run, the
runner then keeps its output from the steps downstream of it, lets every step that does
not depend on it run to its end, and, once nothing else can start, records one
``gate_opened`` event per gate reached (the run becomes ``waiting``) and returns: the
process is free. A failed step wins: a run with a failed step ends ``failed`` and opens
no gate (``resume()`` retries the step, then reaches the gate again).

When the run is resumed after an approval, the approved gates' outputs flow downstream:
a step with a parameter named like the gate gets the gate's value, the one the person
approved. A gate not (yet) approved when the run resumes is reached again (its step is
a cache hit when its code and inputs are unchanged) and opens again at a newer version,
which supersedes the tokens issued for its earlier opening.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from nbflow.store.records import EventType

if TYPE_CHECKING:
    import datetime as dt

    from nbflow.engine.plans import StepPlan
    from nbflow.graph.dag import FlowGraph
    from nbflow.store.records import ValueRef


class GateHolds:
    """The gate half of the runner."""

    if TYPE_CHECKING:
        graph: FlowGraph
        plans: Mapping[str, StepPlan]
        _outputs: dict[str, ValueRef]

        def _emit(
            self,
            type: EventType,
            step: str | None = None,
            attempt: int | None = None,
            ts: dt.datetime | None = None,
            **payload: Any,
        ) -> None: ...

    def _init_gates(self, approved: Collection[str]) -> None:
        """Note the flow's gates and those already approved in this run; a gate's output
        from an earlier opening that was not approved is not passed on."""
        self._gates = {n for n in self.graph.order if self.plans[n].step.options.gate}
        self._approved = set(approved) & self._gates
        self._held_gates: dict[str, ValueRef] = {}  # gates reached, waiting to open
        for name in self._gates - self._approved:
            self._outputs.pop(name, None)

    def _gate_reached(self, name: str) -> None:
        """``name`` has an output now: if it is a gate not approved, hold it back."""
        if name in self._gates and name not in self._approved and name in self._outputs:
            self._held_gates[name] = self._outputs.pop(name)

    @property
    def holding(self) -> bool:
        """Whether gates were reached that wait for a person."""
        return bool(self._held_gates)

    def _open_gates(self) -> None:
        """Record the opening of every gate reached (the run becomes waiting)."""
        for name in self.graph.order:
            ref = self._held_gates.get(name)
            if ref is not None:
                self._emit(EventType.GATE_OPENED, name, digest=ref.hash, value=ref.to_json())

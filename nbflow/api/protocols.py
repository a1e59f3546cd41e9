"""What the facades' modules need of a flow, as protocols: launching, forking and
``status`` take any object with these members (a :class:`~nbflow.api.flow.Flow` has them),
so nothing below ``nbflow.api.flow`` imports it and the facades form no import cycle.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from nbflow.definition.step import Step
    from nbflow.graph.dag import FlowGraph
    from nbflow.store.base import Store
    from nbflow.store.records import Event


class FlowDefinition(Protocol):
    """A flow as it is defined now: its name, store, steps and their graph."""

    @property
    def name(self) -> str:
        """The flow's name."""
        ...

    @property
    def store(self) -> Store:
        """The store its runs are written to."""
        ...

    @property
    def steps(self) -> Mapping[str, Step]:
        """Its steps by name."""
        ...

    @property
    def event_callbacks(self) -> Sequence[Callable[[Event], None]]:
        """Its ``on_event`` callbacks."""
        ...

    @property
    def durability(self) -> str | None:
        """Its runs' durability mode, if it sets one (``$NBFLOW_DURABILITY`` or async)."""
        ...

    def graph(self, targets: Collection[str] | None = None) -> FlowGraph:
        """The validated DAG (only what ``targets`` need, when given)."""
        ...


class RunsFlow(FlowDefinition, Protocol):
    """A flow that a :class:`~nbflow.api.run.Run` can ask to fork or resume it."""

    def _fork_run(self, parent: Any, **fork: Any) -> Any:
        """Fork run ``parent`` (see :meth:`nbflow.api.run.Run.fork`); the fork's Run."""
        ...

    def _resume_run(self, run: Any, **options: Any) -> Any:
        """Resume ``run`` (see :meth:`nbflow.api.run.Run.resume`); its Run."""
        ...

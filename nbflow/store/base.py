"""The store interface: what the engine, the frames and the widgets may ask of a backend.

A backend subclasses :class:`Store` and implements the abstract methods; the conformance
suite in :mod:`nbflow.testing` checks that it keeps the contract. Backends apply events
through :func:`nbflow.store.fold.apply`, so status rules are the same everywhere.

The class is put together from parts, one job each: :mod:`nbflow.store.core` (the
backend's primitives, runs, events, values), :mod:`nbflow.store.leasing` (which process
executes a run), :mod:`nbflow.store.maintenance` (gc and check), and here the frames.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from nbflow.store.core import StoreCore
from nbflow.store.gate_keys import GateKeying
from nbflow.store.leasing import Leasing
from nbflow.store.maintenance import Maintenance

if TYPE_CHECKING:
    import pandas as pd


class Store(GateKeying, Leasing, Maintenance, StoreCore):
    """A durable home for flows, runs, their event logs, step executions and values.

    Writes are event-sourced: :meth:`append` adds events to a run's log and updates the
    ``runs`` and ``step_executions`` views in one transaction, refusing a stale
    ``expected_version`` (:class:`~nbflow.errors.StaleVersionError`) or an invalid status
    transition (:class:`~nbflow.errors.InvalidTransitionError`) without writing anything.
    Values are content-addressed: storing a value whose hash is already present writes no
    bytes.
    """

    def connection_uri(self) -> str:
        """The URI another process opens this store with, credentials included where
        :attr:`uri` leaves them out (a PostgreSQL password). For the environment of a
        process this one starts, never for a command line, a log or a message."""
        return self.uri

    # -- frames -----------------------------------------------------------------------

    def runs_frame(
        self,
        *,
        flow: str | None = None,
        status: str | Collection[str] | None = None,
        thread_id: str | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """Runs as a DataFrame, newest first (columns: :data:`nbflow.store.frames.RUN_COLUMNS`;
        ``gate`` and ``waited_s`` say where a waiting run waits, and for how long)."""
        from nbflow.store import frames

        frame = self._runs_frame(flow=flow, status=status, thread_id=thread_id, limit=limit)
        return frames.fill_gates(frame, self.read_events)

    def _runs_frame(
        self,
        *,
        flow: str | None = None,
        status: str | Collection[str] | None = None,
        thread_id: str | None = None,
        limit: int | None = None,
    ) -> pd.DataFrame:
        """The runs frame without its gate columns filled (backends may read it faster)."""
        from nbflow.store import frames

        rows = self.list_runs(flow=flow, status=status, thread_id=thread_id, limit=limit)
        return frames.runs_frame(rows)

    def events_frame(self, run_id: str | None = None) -> pd.DataFrame:
        """Events as a DataFrame (columns: :data:`nbflow.store.frames.EVENT_COLUMNS`)."""
        from nbflow.store import frames

        return frames.events_frame(self.read_events(run_id))

    def steps_frame(self, run_id: str) -> pd.DataFrame:
        """A run's step executions as a DataFrame (:data:`nbflow.store.frames.STEP_COLUMNS`)."""
        from nbflow.store import frames

        return frames.steps_frame(self.executions(run_id))

    @abstractmethod
    def sql(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """Run a read-only SQL query over the store's tables; return a DataFrame."""


# (Kept importable from here, where they were first defined.)
from nbflow.store.filters import run_filters, status_set  # noqa: E402, F401

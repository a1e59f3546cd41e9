"""What the parts of the DuckDB store (runs, events, values, gc/check hooks, frames) use
of it."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import duckdb

    from nbflow.errors import UnknownRunError
    from nbflow.store.duckdb.file_guard import FileGuard
    from nbflow.store.fold import RunState
    from nbflow.store.records import RunRecord, StepExecution
    from nbflow.values.refs import ValueRef


class DuckDBPart:
    """Base of :class:`~nbflow.store.duckdb.store.DuckDBStore`'s parts: the members the
    store provides them, declared for the type checker only."""

    if TYPE_CHECKING:
        tenant: str | None

        def _unknown_run(self, run_id: str) -> UnknownRunError: ...

        def _seen(self, run: RunRecord) -> RunRecord: ...

        def _stamped(self, run: RunRecord) -> RunRecord: ...

        def _check_value_seen(self, ref: ValueRef) -> None: ...

        _lock: threading.RLock
        _states: dict[str, RunState]
        _leases: dict[str, float]
        _token: str
        _known_blobs: dict[str, int]
        _filed: set[str]
        _known_generation: int
        _guard: FileGuard | None
        _threads: int
        busy_timeout: float
        _closed: bool
        trust: bool
        path: str
        uri: str

        @property
        def _con(self) -> duckdb.DuckDBPyConnection: ...

        def _execute(
            self, query: str, params: Sequence[Any] | None = None
        ) -> list[tuple[Any, ...]]: ...

        def _all_threads(self, nbytes: int | None = None) -> AbstractContextManager[None]: ...

        def _insert(
            self, table: str, columns: str, rows: list[list[Any]], types: Sequence[Any]
        ) -> None: ...

        def _get_run(self, run_id: str) -> RunRecord: ...

        def _forget_values(self) -> None: ...

        def _connect(self) -> duckdb.DuckDBPyConnection: ...

        def release_connection(self) -> None:  # noqa: D102
            ...

        def _has_running_attempts(self, run_id: str) -> bool: ...

        def _materialize_compact(self, query: str) -> None: ...

        def executions(self, run_id: str) -> list[StepExecution]:  # noqa: D102
            ...

        def state_at(self, run_id: str, version: int | None = None) -> RunState:  # noqa: D102
            ...

        def reap_interrupted(  # noqa: D102
            self, runs: Sequence[RunRecord] | None = None
        ) -> list[RunRecord]: ...

"""What the parts of the PostgreSQL store (runs, events, values, gc/check hooks) use of it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbflow.store.postgres.rows import T

if TYPE_CHECKING:
    import psycopg

    from nbflow.errors import UnknownRunError
    from nbflow.store.fold import RunState
    from nbflow.store.records import RunRecord
    from nbflow.values.refs import ValueRef


class PostgresPart:
    """Base of :class:`~nbflow.store.postgres.store.PostgresStore`'s parts: the members
    the store provides them, declared for the type checker only."""

    if TYPE_CHECKING:
        tenant: str | None
        _row_security: bool

        def _unknown_run(self, run_id: str) -> UnknownRunError: ...

        def _seen(self, run: RunRecord) -> RunRecord: ...

        def _stamped(self, run: RunRecord) -> RunRecord: ...

        def _check_value_seen(self, ref: ValueRef) -> None: ...

        _lock: threading.RLock
        _states: dict[str, RunState]
        _known_blobs: dict[str, int]
        _con: psycopg.Connection[Any] | None
        trust: bool

        def _connection(self) -> psycopg.Connection[Any]: ...

        def _run(
            self, work: Callable[[psycopg.Connection[Any]], T], *, retry: bool = True
        ) -> T: ...

        def _rows(self, query: Any, params: Any = None) -> list[tuple[Any, ...]]: ...

        def _get_run(self, run_id: str) -> RunRecord: ...

        def state_at(self, run_id: str, version: int | None = None) -> RunState:  # noqa: D102
            ...

        def _read_blob(self, hash: str) -> tuple[str, int, dict[str, Any], bytearray] | None: ...

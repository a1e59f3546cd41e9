"""What the parts of the PostgreSQL store (values, gc/check hooks) use of it."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from nbflow.store.postgres.rows import T

if TYPE_CHECKING:
    import psycopg


class PostgresPart:
    """Base of :class:`~nbflow.store.postgres.store.PostgresStore`'s parts: the members
    the store provides them, declared for the type checker only."""

    if TYPE_CHECKING:
        _lock: threading.RLock
        _known_blobs: dict[str, int]
        _con: psycopg.Connection[Any] | None
        trust: bool

        def _connection(self) -> psycopg.Connection[Any]: ...

        def _run(
            self, work: Callable[[psycopg.Connection[Any]], T], *, retry: bool = True
        ) -> T: ...

        def _rows(self, query: Any, params: Any = None) -> list[tuple[Any, ...]]: ...

        def _read_blob(self, hash: str) -> tuple[str, int, dict[str, Any], bytearray] | None: ...

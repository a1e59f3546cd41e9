"""The PostgreSQL store's run marks (``untrusted_runs``, see :mod:`nbflow.store.untrusted`)."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import TYPE_CHECKING, Any

from nbflow import arguments
from nbflow.store.postgres.part import PostgresPart
from nbflow.store.untrusted import UntrustedRun

if TYPE_CHECKING:
    import psycopg

_COLS = "run_id, source, marked_at, derived_from"


class PostgresTrust(PostgresPart):
    """Run marks for :class:`~nbflow.store.postgres.store.PostgresStore`."""

    def untrusted_runs(self, run_ids: Collection[str] | None = None) -> dict[str, UntrustedRun]:
        """The marks of these runs (default: all), by run id."""
        if run_ids is not None:
            run_ids = arguments.run_ids(run_ids, "untrusted_runs' run_ids")
        if run_ids is None:
            rows = self._rows(f"SELECT {_COLS} FROM untrusted_runs ORDER BY run_id")
        else:
            rows = self._rows(
                f"SELECT {_COLS} FROM untrusted_runs WHERE run_id = ANY(%s::text[]) "
                "ORDER BY run_id",
                [sorted(set(run_ids))],
            )
        return {r[0]: UntrustedRun(*r) for r in rows}

    def mark_untrusted(self, marks: Iterable[UntrustedRun]) -> None:
        """Mark runs untrusted in one statement; a run marked already keeps its mark."""
        rows = list({m.run_id: m for m in marks}.values())
        if not rows:
            return

        def write(con: psycopg.Connection[Any]) -> None:
            with con.transaction():
                con.execute(
                    f"INSERT INTO untrusted_runs ({_COLS}) SELECT * FROM unnest("
                    "%s::text[], %s::text[], %s::timestamptz[], %s::text[]) "
                    "ON CONFLICT (run_id) DO NOTHING",
                    [
                        [m.run_id for m in rows],
                        [m.source for m in rows],
                        [m.marked_at for m in rows],
                        [m.derived_from for m in rows],
                    ],
                )

        self._run(write, retry=False)

    def clear_untrusted(self, run_ids: Collection[str]) -> list[str]:
        """Remove these runs' marks in one statement; return those that had one."""
        run_ids = arguments.run_ids(run_ids, "clear_untrusted's run_ids")
        if not run_ids:
            return []
        wanted = sorted(set(run_ids))

        def write(con: psycopg.Connection[Any]) -> list[str]:
            with con.transaction():
                cur = con.execute(
                    "DELETE FROM untrusted_runs WHERE run_id = ANY(%s::text[]) RETURNING run_id",
                    [wanted],
                )
                return sorted(r[0] for r in cur.fetchall())

        return self._run(write, retry=False)

"""The DuckDB store's run marks (``untrusted_runs``, see :mod:`nbflow.store.untrusted`)."""

from __future__ import annotations

from collections.abc import Collection, Iterable

from nbflow import arguments
from nbflow.store.duckdb.part import DuckDBPart
from nbflow.store.untrusted import UntrustedRun

_COLS = "run_id, source, marked_at, derived_from"


class DuckDBTrust(DuckDBPart):
    """Run marks for :class:`~nbflow.store.duckdb.store.DuckDBStore`."""

    def untrusted_runs(self, run_ids: Collection[str] | None = None) -> dict[str, UntrustedRun]:
        """The marks of these runs (default: all), by run id."""
        if run_ids is not None:
            run_ids = arguments.run_ids(run_ids, "untrusted_runs' run_ids")
        if run_ids is None:
            rows = self._execute(f"SELECT {_COLS} FROM untrusted_runs ORDER BY run_id")
        else:
            rows = self._execute(
                f"SELECT {_COLS} FROM untrusted_runs "
                "WHERE run_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY run_id",
                [sorted(set(run_ids))],
            )
        return {r[0]: UntrustedRun(*r) for r in rows}

    def mark_untrusted(self, marks: Iterable[UntrustedRun]) -> None:
        """Mark runs untrusted in one statement; a run marked already keeps its mark."""
        rows = {m.run_id: m for m in marks}
        if not rows:
            return
        params = [
            v for m in rows.values() for v in (m.run_id, m.source, m.marked_at, m.derived_from)
        ]
        self._execute(
            f"INSERT INTO untrusted_runs ({_COLS}) VALUES "
            + ", ".join(["(?, ?, ?, ?)"] * len(rows))
            + " ON CONFLICT (run_id) DO NOTHING",
            params,
        )

    def clear_untrusted(self, run_ids: Collection[str]) -> list[str]:
        """Remove these runs' marks in one statement; return those that had one."""
        run_ids = arguments.run_ids(run_ids, "clear_untrusted's run_ids")
        if not run_ids:
            return []
        rows = self._execute(
            "DELETE FROM untrusted_runs WHERE run_id IN (SELECT unnest(?::VARCHAR[])) "
            "RETURNING run_id",
            [sorted(set(run_ids))],
        )
        return sorted(r[0] for r in rows)

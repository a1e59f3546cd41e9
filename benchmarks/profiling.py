"""Where one chain run spends its time (``python -m benchmarks --profile``).

Two views of a 200-step chain's first run and of its cached re-run:

* wall time per kind of SQL statement the store sends to DuckDB (cProfile cannot see
  inside DuckDB's C++ methods, so their cost lands in the caller's own time);
* cProfile's top functions by own time and by cumulative time.

The SQL view wraps the store's private open connection (``DuckDBStore._conn``) in a
timing proxy; if that attribute goes away, the view is skipped and only cProfile is shown.
"""

from __future__ import annotations

import cProfile
import io
import pstats
import re
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.overhead import STEPS, build_flow, chain, warm_up

_STATEMENT = re.compile(
    r"\s*(BEGIN|COMMIT|ROLLBACK|INSERT INTO \w+|UPDATE \w+|DELETE FROM \w+|SELECT|CREATE)",
    re.IGNORECASE,
)


def statement_kind(query: str) -> str:
    """A short label for a SQL statement, e.g. ``INSERT INTO events``."""
    match = _STATEMENT.match(query)
    return " ".join(match.group(1).split()) if match else query.split(None, 1)[0]


class TimedConnection:
    """A DuckDB connection proxy that adds up the wall time of ``execute`` per statement."""

    def __init__(self, con: Any) -> None:
        self.con = con
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def execute(self, query: str, parameters: Any = None) -> Any:
        """Run ``query`` on the real connection, timing it."""
        kind = statement_kind(query)
        # DuckDB finds the store's Arrow batches among the calling frame's variables (a
        # replacement scan): bring the caller's into this frame.
        nbflow_batch = sys._getframe(1).f_locals.get("nbflow_batch")  # noqa: F841
        start = time.perf_counter()
        try:
            return self.con.execute(query, parameters)
        finally:
            self.seconds[kind] += time.perf_counter() - start
            self.calls[kind] += 1

    def reset(self) -> None:
        """Forget the times collected so far."""
        self.seconds.clear()
        self.calls.clear()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.con, name)


def statement_table(timer: TimedConnection, steps: int, total: float) -> str:
    """The SQL times as a small aligned table, biggest first."""
    lines = [f"{'statement':28}  {'calls':>5}  {'total ms':>9}  {'ms/call':>8}  {'ms/step':>8}"]
    for kind, seconds in sorted(timer.seconds.items(), key=lambda item: -item[1]):
        calls = timer.calls[kind]
        lines.append(
            f"{kind:28}  {calls:5d}  {seconds * 1e3:9.1f}  {seconds / calls * 1e3:8.3f}  "
            f"{seconds / steps * 1e3:8.3f}"
        )
    in_sql = sum(timer.seconds.values())
    lines.append(
        f"{'all SQL':28}  {sum(timer.calls.values()):5d}  {in_sql * 1e3:9.1f}  {'':8}  "
        f"{in_sql / steps * 1e3:8.3f}"
    )
    lines.append(
        f"{'Python (run - SQL)':28}  {'':5}  {(total - in_sql) * 1e3:9.1f}  {'':8}  "
        f"{(total - in_sql) / steps * 1e3:8.3f}"
    )
    return "\n".join(lines)


def _stats_text(profiler: cProfile.Profile, sort: str, limit: int) -> str:
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.strip_dirs().sort_stats(sort).print_stats(limit)
    return out.getvalue().strip()


def _install_timer(store: Any) -> TimedConnection | None:
    """Wrap the store's connection in a TimedConnection, if it has the expected one."""
    if getattr(store, "_conn", None) is None:
        return None
    timer = TimedConnection(store._con)  # opened now if it was released
    store._conn = timer
    return timer


def _sql_sections(workdir: Path, steps: int) -> list[str]:
    """Time every SQL statement of a first run and a cached re-run (fresh store)."""
    flow = build_flow("bench-profile-sql", workdir / "profile-sql.duckdb", chain(steps).steps)
    store = flow.store  # opening the store is not what is measured
    sections = []
    try:
        for label in ("first run", "cached re-run"):
            timer = _install_timer(store)
            if timer is None:
                return []
            start = time.perf_counter()
            try:
                flow.run(progress=False)
            finally:
                store._conn = timer.con
            total = time.perf_counter() - start
            title = f"=== {steps}-step chain, {label}: {total * 1e3:.1f} ms, SQL by statement ==="
            sections.append(f"{title}\n{statement_table(timer, steps, total)}")
    finally:
        store.close()
    return sections


def _cprofile_sections(workdir: Path, steps: int, limit: int, sorts: Sequence[str]) -> list[str]:
    """cProfile a first run and a cached re-run (fresh store)."""
    flow = build_flow("bench-profile", workdir / "profile.duckdb", chain(steps).steps)
    _ = flow.store
    sections = []
    try:
        for label in ("first run", "cached re-run"):
            profiler = cProfile.Profile()
            profiler.runcall(flow.run, progress=False)
            for sort in sorts:
                title = f"=== {steps}-step chain, {label} (cProfile), top {limit} by {sort} ==="
                sections.append(f"{title}\n{_stats_text(profiler, sort, limit)}")
    finally:
        flow.store.close()
    return sections


def profile_chain(
    workdir: Path,
    steps: int = STEPS,
    limit: int = 20,
    sorts: Sequence[str] = ("tottime", "cumulative"),
) -> str:
    """SQL breakdown and cProfile reports of a chain's first run and cached re-run."""
    warm_up(workdir)
    sections = _sql_sections(workdir, steps) + _cprofile_sections(workdir, steps, limit, sorts)
    return "\n\n".join(sections)

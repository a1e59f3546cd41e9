"""The floors: one small row per step, each in its own durable transaction.

* raw DuckDB: ``BEGIN`` / ``INSERT`` / ``COMMIT`` per step into a fresh file (what one
  durable write per step costs at the very least with nbflow's database);
* raw SQLite: the same in WAL mode with ``synchronous=FULL`` (every commit fsynced).

Neither depends on the flow's shape; each topology gets its own fresh files all the same.
"""

from __future__ import annotations

import sqlite3

import duckdb

from benchmarks.overhead import duckdb_commit_per_step
from benchmarks.peers.protocol import PeerArgs, Samples, add, fresh_dir, serve, topologies
from benchmarks.timing import timed

DUCKDB = "raw DuckDB insert+commit"
SQLITE = "raw SQLite WAL FULL commit"


def sqlite_commit_per_step(path: str, steps: int) -> float:
    """Seconds per step for one ``INSERT`` in its own transaction, WAL, synchronous=FULL."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA synchronous=FULL")
        con.execute("CREATE TABLE outputs (step TEXT, attempt INTEGER, value INTEGER)")

        def insert_all() -> None:
            for i in range(steps):
                con.execute("BEGIN")
                con.execute("INSERT INTO outputs VALUES (?, ?, ?)", (f"s{i}", 1, i))
                con.execute("COMMIT")

        seconds, _ = timed(insert_all)
    finally:
        con.close()
    return seconds / steps


def measure(args: PeerArgs) -> tuple[str, Samples]:
    samples: Samples = {}
    warm = fresh_dir(args.workdir / "warm")
    duckdb_commit_per_step(warm / "floor.duckdb", 10)
    sqlite_commit_per_step(str(warm / "floor.sqlite"), 10)
    for rep in range(args.repeats):
        for topology in topologies(args.steps):
            folder = fresh_dir(args.workdir / f"{topology.name}-{rep}")
            steps = len(topology.steps)
            add(
                samples,
                DUCKDB,
                topology.name,
                "first",
                duckdb_commit_per_step(folder / "floor.duckdb", steps),
            )
            add(
                samples,
                SQLITE,
                topology.name,
                "first",
                sqlite_commit_per_step(str(folder / "floor.sqlite"), steps),
            )
    return f"duckdb {duckdb.__version__}, SQLite {sqlite3.sqlite_version}", samples


if __name__ == "__main__":
    serve(None, measure)

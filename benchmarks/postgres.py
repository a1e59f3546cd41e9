"""PostgreSQL beside DuckDB: per-step overhead, and runs per second of 4 processes at once.

The server is a throwaway one from Debian's package (:mod:`nbflow.testing.postgres`, as
the tests start it), on a loopback TCP port, durable as a real one (``fsync`` and
synchronous commit on), so a commit costs what it costs. Each store is a fresh schema of
it; each DuckDB store a fresh file.

* per step: the 200-step chain of :mod:`benchmarks.overhead`, first run and cached
  re-run, on both backends in the same repetition; the floors are one durable
  ``INSERT`` + commit per step (DuckDB: in-process; PostgreSQL: one autocommitted
  statement over loopback).
* several writers: 4 processes, started together, each running a small flow
  (a 10-step chain, every step executed) ``runs`` times into one shared store; the
  throughput is all their runs over the time from the start signal to the last run's
  end. DuckDB lets one process at a time hold its file, so its writers take turns;
  PostgreSQL's write at once.
* a reader beside them: the writers again (5 times as many runs, so that the reader has
  time for enough reads), with a 5th process that, from the start
  signal until the writers are done, opens the store, lists its runs and closes it
  (``with nf.open_store(store) as s: s.list_runs(limit=10)``), pausing 50 ms between
  reads; each read's time is a wait for the writers (an uncontended one costs the
  store's open, tens of ms). Target (issue 16): no read waits more than 1 s.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nbflow as nf
from benchmarks.overhead import STEPS, build_flow, chain, duckdb_commit_per_step
from benchmarks.report import Quantity, Row
from benchmarks.timing import format_seconds, median, timed

WRITERS = 4
WRITER_STEPS = 10
READER_PAUSE_S = 0.05
READER_RUNS = 5  # the writers' runs with the reader beside, x the runs without: enough reads
MAX_READER_WAIT_S = 1.0


@dataclass
class PostgresResult:
    """Per-step seconds of each repetition on both backends, and the writers' runs/s."""

    description: str = ""
    server: str = ""
    skipped: str = ""  # why nothing was measured (no server binaries), else ""
    steps: int = STEPS
    pg_first: list[float] = field(default_factory=list)
    pg_cached: list[float] = field(default_factory=list)
    duckdb_first: list[float] = field(default_factory=list)
    duckdb_cached: list[float] = field(default_factory=list)
    pg_floor: list[float] = field(default_factory=list)
    duckdb_floor: list[float] = field(default_factory=list)
    writers: int = WRITERS
    runs_per_writer: int = 0
    throughput: dict[str, float] = field(default_factory=dict)  # backend -> runs/s
    writers_s: dict[str, float] = field(default_factory=dict)  # backend -> wall seconds
    reader_waits: dict[str, list[float]] = field(default_factory=dict)  # backend -> each read
    read_throughput: dict[str, float] = field(default_factory=dict)  # runs/s, reader beside


def pg_commit_per_step(uri: str, steps: int = STEPS) -> float:
    """Seconds per step for one autocommitted ``INSERT`` of a small row into a fresh
    table (a durable commit: a temporary table would skip the write-ahead log)."""
    import psycopg

    with psycopg.connect(uri, autocommit=True) as con:
        con.execute("DROP TABLE IF EXISTS floor_outputs")
        con.execute("CREATE TABLE floor_outputs (step TEXT, attempt INTEGER, value BIGINT)")

        def insert_all() -> None:
            for i in range(steps):
                con.execute("INSERT INTO floor_outputs VALUES (%s, %s, %s)", [f"s{i}", 1, i])

        try:
            seconds, _ = timed(insert_all)
        finally:
            con.execute("DROP TABLE floor_outputs")
    return seconds / steps


def _per_step(store: str, name: str, steps: int) -> tuple[float, float]:
    """(first run, cached re-run) seconds per step of the chain in a fresh store."""
    topology = chain(steps)
    flow = build_flow(name, store, topology.steps)
    _ = flow.store  # opened (and, on PostgreSQL, the schema created) before the clock
    try:
        first_s, first = timed(lambda: flow.run(progress=False))
        cached_s, cached = timed(lambda: flow.run(progress=False))
        for run, status in ((first, "completed"), (cached, "cached")):
            counts = run.steps["status"].value_counts().to_dict()
            if run.status != "completed" or counts.get(status) != steps:
                raise RuntimeError(f"benchmark run {run.id} on {store}: {run.status}, {counts}")
    finally:
        flow.store.close()
    return first_s / steps, cached_s / steps


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from benchmarks.overhead import build_flow, chain

    store, proc, runs, steps, go = sys.argv[1:6]
    runs, steps, go = int(runs), int(steps), Path(go)
    flow = build_flow("writers", store, chain(steps).steps)
    flow.run(progress=False)  # warm: imports, the connection, the flow's definition
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.002)
    for r in range(runs):
        run = flow.run(progress=False, force=True)
        assert run.status == "completed", (run.status, run.error)
    print(time.time(), flush=True)
    """
)

READER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import nbflow as nf

    store, go, stop, pause = sys.argv[1:5]
    go, stop, pause = Path(go), Path(stop), float(pause)
    with nf.open_store(store) as opened:  # warm: imports, the first connection
        opened.list_runs(limit=10)
    print("ready", flush=True)
    while not go.exists():
        time.sleep(0.002)
    waits = []
    while not stop.exists():
        started = time.perf_counter()
        with nf.open_store(store) as opened:
            opened.list_runs(limit=10)
        waits.append(time.perf_counter() - started)
        time.sleep(pause)
    print(json.dumps(waits), flush=True)
    """
)


def _start(script: Path, args: list[str], workdir: Path) -> subprocess.Popen[str]:
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": root + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen(
        [sys.executable, str(script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=workdir,
    )


def writers_throughput(
    store: str,
    workdir: Path,
    runs: int,
    steps: int = WRITER_STEPS,
    writers: int = WRITERS,
    reader: bool = False,
) -> tuple[float, list[float]]:
    """Seconds from the start signal until ``writers`` processes have each run the flow
    ``runs`` times into ``store``; and, with ``reader``, the time of each read a 5th
    process made meanwhile (else [])."""
    script, reader_script = workdir / "writer.py", workdir / "reader.py"
    script.write_text(WRITER)
    reader_script.write_text(READER)
    stamp = time.monotonic_ns()
    go, stop = workdir / f"go-{stamp}", workdir / f"stop-{stamp}"
    procs = [
        _start(script, [store, str(p), str(runs), str(steps), str(go)], workdir)
        for p in range(writers)
    ]
    if reader:
        procs.append(
            _start(reader_script, [store, str(go), str(stop), str(READER_PAUSE_S)], workdir)
        )
    try:
        for proc in procs:
            assert proc.stdout is not None
            if proc.stdout.readline().strip() != "ready":
                raise RuntimeError(f"a writer did not start: {proc.communicate()[1][-2000:]}")
        started = time.time()
        go.write_text("go")
        ends = []
        for proc in procs[:writers]:
            out, err = proc.communicate(timeout=900)
            if proc.returncode != 0:
                raise RuntimeError(f"a writer failed on {store}: {err[-2000:]}")
            ends.append(float(out.strip()))
        waits: list[float] = []
        if reader:
            stop.write_text("stop")
            out, err = procs[-1].communicate(timeout=300)
            if procs[-1].returncode != 0:
                raise RuntimeError(f"the reader failed on {store}: {err[-2000:]}")
            waits = json.loads(out.strip().splitlines()[-1])
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
    return max(ends) - started, waits


def run_postgres(
    workdir: Path,
    repeats: int,
    steps: int = STEPS,
    writer_runs: int = 10,
    log: Callable[[str], None] = print,
) -> PostgresResult:
    """Start a durable throwaway server, measure both backends, stop the server."""
    from nbflow.testing.postgres import PostgresUnavailableError, start_server

    result = PostgresResult(
        description=(
            f"PostgreSQL vs DuckDB: {steps}-step chain; {WRITERS} processes x {writer_runs} "
            f"runs of a {WRITER_STEPS}-step chain into one store"
        ),
        steps=steps,
        runs_per_writer=writer_runs,
    )
    try:
        server = start_server(durable=True)
    except PostgresUnavailableError as exc:
        result.skipped = str(exc)
        log(f"  PostgreSQL: not measured: {exc}")
        return result
    try:
        import psycopg

        with psycopg.connect(server.uri()) as con:
            row = con.execute("SHOW server_version").fetchone()
            result.server = f"PostgreSQL {row[0] if row else '?'}"
        result.description += f"; {result.server} on loopback, fsync on"
        # Warm up both paths (imports, first connections) outside the timings.
        _per_step(server.new_schema_uri("warm"), "bench-pg-warm", 10)
        _per_step(str(workdir / "pg-warm.duckdb"), "bench-pg-warm", 10)
        for rep in range(repeats):
            log(f"  PostgreSQL beside DuckDB: repetition {rep + 1}/{repeats}")
            result.pg_floor.append(pg_commit_per_step(server.uri(), steps))
            result.duckdb_floor.append(
                duckdb_commit_per_step(workdir / f"pg-floor-{rep}.duckdb", steps)
            )
            first, cached = _per_step(server.new_schema_uri("chain"), "bench-pg-chain", steps)
            result.pg_first.append(first)
            result.pg_cached.append(cached)
            first, cached = _per_step(
                str(workdir / f"pg-chain-{rep}.duckdb"), "bench-pg-chain", steps
            )
            result.duckdb_first.append(first)
            result.duckdb_cached.append(cached)
        total = WRITERS * writer_runs
        for name, store in (
            ("postgres", server.new_schema_uri("writers")),
            ("duckdb", str(workdir / "writers.duckdb")),
        ):
            log(f"  {WRITERS} processes writing {total} runs at once: {name}")
            nf.open_store(store).close()  # created before the start signal
            seconds, _ = writers_throughput(store, workdir, writer_runs)
            result.writers_s[name] = seconds
            result.throughput[name] = total / seconds
            log(f"  the same, with a 5th process reading the store: {name}")
            runs = writer_runs * READER_RUNS
            seconds, waits = writers_throughput(store, workdir, runs, reader=True)
            result.read_throughput[name] = WRITERS * runs / seconds
            result.reader_waits[name] = waits
    finally:
        server.stop()
    return result


def postgres_rows(result: PostgresResult) -> list[Row]:
    """PostgreSQL's per-step cost beside DuckDB's and beside its own commit floor, and
    the writers' throughput on each."""
    if result.skipped:
        return []
    name = f"{result.steps}-step chain"
    pg_first, duck_first = median(result.pg_first), median(result.duckdb_first)
    pg_cached, duck_cached = median(result.pg_cached), median(result.duckdb_cached)
    pg_floor = median(result.pg_floor)
    rows = [
        Row(
            f"{name}: per step, first run, PostgreSQL",
            Quantity(pg_first, "s"),
            "the same on DuckDB",
            Quantity(duck_first, "s"),
        ),
        Row(
            f"{name}: per step, first run, PostgreSQL",
            Quantity(pg_first, "s"),
            "PostgreSQL insert+commit/step",
            Quantity(pg_floor, "s"),
        ),
        Row(
            f"{name}: PostgreSQL per step above its floor",
            Quantity(pg_first - pg_floor, "s"),
            "DuckDB's above its floor",
            Quantity(duck_first - median(result.duckdb_floor), "s"),
        ),
        Row(
            f"{name}: per step, cached re-run, PostgreSQL",
            Quantity(pg_cached, "s"),
            "the same on DuckDB",
            Quantity(duck_cached, "s"),
        ),
    ]
    if "postgres" in result.throughput and "duckdb" in result.throughput:
        runs = result.writers * result.runs_per_writer
        rows.append(
            Row(
                f"{result.writers} processes at once, {runs} runs: runs/s, PostgreSQL",
                Quantity(result.throughput["postgres"], "runs/s"),
                "DuckDB (one writer at a time)",
                Quantity(result.throughput["duckdb"], "runs/s"),
            )
        )
    rows += reader_rows(result)
    return rows


def percentile(samples: list[float], fraction: float) -> float:
    """The ``fraction`` quantile of ``samples`` (nearest rank)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def reader_rows(result: PostgresResult) -> list[Row]:
    """The reader's longest wait (against its p99) on each backend, and what reading
    costs the writers."""
    rows = []
    label = {"duckdb": "DuckDB", "postgres": "PostgreSQL"}
    for name in ("duckdb", "postgres"):
        waits = result.reader_waits.get(name)
        if not waits:
            continue
        rows.append(
            Row(
                f"{result.writers} writers + a reader process: longest read, {label[name]}",
                Quantity(max(waits), "s"),
                f"p99 of {len(waits)} reads",
                Quantity(percentile(waits, 0.99), "s"),
                target=f"<= {MAX_READER_WAIT_S:g} s",
                met=max(waits) <= MAX_READER_WAIT_S,
            )
        )
        rows.append(
            Row(
                f"{result.writers} writers + a reader process: runs/s, {label[name]}",
                Quantity(result.read_throughput[name], "runs/s"),
                "without the reader",
                Quantity(result.throughput[name], "runs/s"),
            )
        )
    return rows


def postgres_note(result: PostgresResult) -> str:
    """The line printed above the table."""
    if result.skipped:
        return f"PostgreSQL: not measured ({result.skipped})"
    reads = "; ".join(
        f"{name}: {len(waits)} reads, median {format_seconds(median(waits))}"
        for name, waits in result.reader_waits.items()
        if waits
    )
    return f"{result.description}; median of {len(result.pg_first)} repetitions." + (
        f" Reader beside the writers ({reads})." if reads else ""
    )

"""Run nbflow's benchmarks and print medians, ratios and targets in one table.

``make bench`` runs it with the full sizes; ``--quick`` is a fast smoke run; ``--profile``
prints where one 200-step chain run spends its time instead.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow as pa

import nbflow
from benchmarks import report
from benchmarks.dag_svg import DagResult, dag_rows, run_dag_svg
from benchmarks.data_globals import DataGlobalsResult, data_globals_rows, run_data_globals
from benchmarks.dataframes import FrameResult, run_dataframes
from benchmarks.executors import ExecutorResult, executor_rows, run_executors
from benchmarks.file_reads import FileReadsResult, file_reads_rows, run_file_reads
from benchmarks.fork import ForkResult, fork_rows, run_fork, setup_note
from benchmarks.memory import MemoryResult, memory_rows, run_memory
from benchmarks.overhead import STEPS, TopologyResult, run_overhead
from benchmarks.postgres import PostgresResult, postgres_note, postgres_rows, run_postgres
from benchmarks.profiling import profile_chain
from benchmarks.storage import StorageResult, run_storage, storage_rows
from benchmarks.timing import format_seconds, median


@dataclass(frozen=True)
class Settings:
    """Sizes and repetitions of one benchmark run."""

    steps: int
    step_repeats: int
    rows: int
    frame_repeats: int
    fork_small_bytes: int = 1_000_000
    fork_big_bytes: int = 1_000_000_000
    fork_repeats: int = 5
    executor_steps: int = 40  # the fan-out run on each executor
    executor_repeats: int = 5
    writer_runs: int = 10  # runs of each of the 4 concurrent writer processes
    memory_bytes: int = 1_000_000_000  # the output checkpointed in the memory stage
    storage_runs: int = 2_000  # runs of the small flow in the storage stage
    file_read_rounds: int = 5  # process pairs (without / with the audit hook)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        """Full sizes, or the smaller ``--quick`` ones, with any explicit override."""
        quick = args.quick
        return cls(
            steps=STEPS,
            step_repeats=args.repeats or (3 if quick else 7),
            rows=args.rows or (1_000_000 if quick else 10_000_000),
            frame_repeats=args.frame_repeats,
            fork_big_bytes=100_000_000 if quick else 1_000_000_000,
            executor_steps=20 if quick else 40,
            executor_repeats=args.repeats or (2 if quick else 5),
            writer_runs=5 if quick else 10,
            memory_bytes=300_000_000 if quick else 1_000_000_000,
            storage_runs=200 if quick else 2_000,
            file_read_rounds=2 if quick else 5,
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1M-row frame, 3 repetitions, fork of 100 MB, 300 MB outputs, 200 runs",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    parser.add_argument("--rows", type=int, help="rows of the DataFrame (overrides the default)")
    parser.add_argument("--repeats", type=int, help="repetitions of the per-step runs")
    parser.add_argument(
        "--frame-repeats", type=int, default=3, help="repetitions of the DataFrame writes/reads"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="instead, show where a chain run spends its time (SQL statements, cProfile)",
    )
    return parser.parse_args(argv)


def log(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the report."""
    print(message, file=sys.stderr, flush=True)


def environment() -> dict[str, Any]:
    """Versions and machine, printed above the table and saved in the JSON."""
    return {
        "nbflow": nbflow.__version__,
        "python": platform.python_version(),
        "duckdb": duckdb.__version__,
        "pandas": pd.__version__,
        "pyarrow": pa.__version__,
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
    }


def load_average() -> str:
    """The 1-minute load average (the benchmarks want an otherwise idle machine)."""
    return f"{os.getloadavg()[0]:.2f}" if hasattr(os, "getloadavg") else "n/a"


@dataclass(frozen=True)
class Measurements:
    """Everything one benchmark run measured."""

    topologies: list[TopologyResult]
    duckdb_floor: list[float]
    frame: FrameResult
    fork: ForkResult
    elapsed_s: float
    load: str
    dag: DagResult | None = None
    executors: ExecutorResult | None = None
    postgres: PostgresResult | None = None
    memory: MemoryResult | None = None
    storage: StorageResult | None = None
    file_reads: FileReadsResult | None = None
    data_globals: DataGlobalsResult | None = None


def measure(settings: Settings) -> Measurements:
    """Run every benchmark in one temporary directory (removed afterwards)."""
    load_before = load_average()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nbflow-bench-") as tmp:
        workdir = Path(tmp)
        log(f"per-step overhead: {settings.steps} steps, {settings.step_repeats} repetitions")
        topologies, duckdb_floor = run_overhead(
            workdir, settings.step_repeats, settings.steps, log=log
        )
        log(f"data globals: {settings.steps}-step chain, cached, 10 x 10 MB globals per step")
        data_globals = run_data_globals(workdir, settings.step_repeats, settings.steps, log=log)
        log(f"DataFrame checkpoint: {settings.rows:,} rows, {settings.frame_repeats} repetitions")
        frame = run_dataframes(workdir, settings.rows, settings.frame_repeats, log=log)
        log(f"fork: {settings.fork_small_bytes:,} vs {settings.fork_big_bytes:,} bytes upstream")
        fork = run_fork(
            workdir,
            settings.fork_small_bytes,
            settings.fork_big_bytes,
            settings.fork_repeats,
            log=log,
        )
        log("PostgreSQL beside DuckDB (a throwaway server)")
        postgres = run_postgres(
            workdir, settings.step_repeats, settings.steps, settings.writer_runs, log=log
        )
        log(f"executors: {settings.executor_steps}-step fan-out, {settings.executor_repeats} reps")
        executors = run_executors(
            workdir, settings.executor_repeats, settings.executor_steps, log=log
        )
        log(f"memory: checkpointing {settings.memory_bytes / 1e9:g} GB outputs, a process each")
        memory = run_memory(workdir, settings.memory_bytes, log=log)
        log(f"storage: small frames, and {settings.storage_runs:,} runs of a small flow")
        storage = run_storage(workdir, settings.storage_runs, log=log)
        log("file reads: a step opening 1,000 files, with and without the audit hook")
        file_reads = run_file_reads(workdir, settings.file_read_rounds, log=log)
    log("DAG SVG of a 500-step flow")
    dag = run_dag_svg(settings.frame_repeats, log=log)
    elapsed = time.perf_counter() - started
    load = f"1-min load average {load_before} before, {load_average()} after"
    return Measurements(
        topologies,
        duckdb_floor,
        frame,
        fork,
        elapsed,
        load,
        dag,
        postgres=postgres,
        executors=executors,
        memory=memory,
        storage=storage,
        file_reads=file_reads,
        data_globals=data_globals,
    )


def print_report(settings: Settings, m: Measurements, env: dict[str, Any]) -> list[report.Row]:
    """Print the header, the table and the notes; return the table's rows."""
    rows = [row for t in m.topologies for row in report.per_step_rows(t, m.duckdb_floor)]
    rows += data_globals_rows(m.data_globals) if m.data_globals is not None else []
    rows += report.frame_rows(m.frame)
    rows += fork_rows(m.fork)
    rows += dag_rows(m.dag) if m.dag is not None else []
    rows += executor_rows(m.executors) if m.executors is not None else []
    rows += postgres_rows(m.postgres) if m.postgres is not None else []
    rows += memory_rows(m.memory) if m.memory is not None else []
    rows += storage_rows(m.storage) if m.storage is not None else []
    rows += file_reads_rows(m.file_reads) if m.file_reads is not None else []
    print(" | ".join(f"{k} {v}" for k, v in env.items()))
    print(
        f"per-step: median of {settings.step_repeats} runs each; "
        + "; ".join(t.description for t in m.topologies)
        + "; tiny int outputs, every step committed; store opened before the clock "
        f"(median open {format_seconds(median(m.topologies[0].store_open))})."
    )
    print(f"DataFrame: median of {settings.frame_repeats}; {m.frame.description}.")
    print(f"{m.fork.description}.")
    if m.dag is not None:
        print(f"{m.dag.description}.")
    if m.executors is not None:
        print(f"{m.executors.description}.")
    if m.postgres is not None:
        print(postgres_note(m.postgres))
    for stage in (m.data_globals, m.memory, m.storage, m.file_reads):
        if stage is not None:
            print(f"{stage.description}.")
    print("ratio = nbflow / reference in the row's unit (time per step, or GB/s).")
    print()
    print(report.format_table(rows))
    print()
    for line in report.breakdown(m.frame):
        print(line)
    print(setup_note(m.fork))
    print(report.EXTERNAL_REFERENCES)
    print(f"total time: {m.elapsed_s:.1f} s; {m.load} ({os.cpu_count()} CPUs)")
    return rows


def run(settings: Settings, json_path: Path | None) -> None:
    """Measure, print the table, and write the JSON if asked."""
    m = measure(settings)
    env = environment()
    rows = print_report(settings, m, env)
    if json_path is not None:
        report.to_json(
            json_path,
            settings={
                **asdict(settings),
                "environment": env,
                "elapsed_s": m.elapsed_s,
                "load": m.load,
            },
            rows=rows,
            topologies=m.topologies,
            duckdb_floor=m.duckdb_floor,
            frame=m.frame,
            fork=m.fork,
            executors=m.executors,
            postgres=m.postgres,
            memory=m.memory,
            storage=m.storage,
            file_reads=m.file_reads,
            data_globals=m.data_globals,
        )
        log(f"wrote {json_path}")


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks``."""
    args = parse_args(argv)
    settings = Settings.from_args(args)
    if args.profile:
        with tempfile.TemporaryDirectory(prefix="nbflow-profile-") as tmp:
            print(profile_chain(Path(tmp), settings.steps))
        return 0
    run(settings, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())

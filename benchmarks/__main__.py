"""Run nbflow's benchmarks: each stage's table as soon as it ends, then a summary.

``make bench`` runs it with the full sizes; ``--quick`` is a fast smoke run; ``--stage``
runs only the named stages; ``--profile`` prints where one 200-step chain run spends its
time instead.
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
from benchmarks.dag_browser import browser_rows, run_dag_browser
from benchmarks.dag_svg import dag_rows, run_dag_svg
from benchmarks.data_globals import data_globals_rows, run_data_globals
from benchmarks.dataframes import run_dataframes
from benchmarks.executors import executor_rows, run_executors
from benchmarks.file_reads import file_reads_rows, run_file_reads
from benchmarks.fork import fork_rows, run_fork, setup_note
from benchmarks.frames_pipeline import pipeline_notes, pipeline_rows, run_pipeline
from benchmarks.memory import memory_rows, run_memory
from benchmarks.overhead import STEPS
from benchmarks.peers import run_peers
from benchmarks.peers.rows import peers_notes, peers_rows
from benchmarks.postgres import postgres_note, postgres_rows, run_postgres
from benchmarks.profiling import profile_chain
from benchmarks.stages import Stage, print_summary, run_stages
from benchmarks.storage import run_storage, storage_rows


@dataclass(frozen=True)
class Settings:
    """Sizes and repetitions of one benchmark run."""

    steps: int
    step_repeats: int
    rows: int
    frame_repeats: int
    peer_rounds: int = 4  # rounds of the side-by-side stage (every peer once a round)
    peer_repeats: int = 2  # repetitions inside each peer process
    pipeline_bytes: int = 1_000_000_000  # each frame of the 4-step pipeline
    pipeline_repeats: int = 1  # a process per mode, ~1 min each at 1 GB
    fork_small_bytes: int = 1_000_000
    fork_big_bytes: int = 1_000_000_000
    fork_repeats: int = 5
    executor_steps: int = 40  # the fan-out run on each executor
    executor_repeats: int = 5
    writer_runs: int = 10  # runs of each of the 4 concurrent writer processes
    memory_bytes: int = 1_000_000_000  # the output checkpointed in the memory stage
    storage_runs: int = 2_000  # runs of the small flow in the storage stage
    storage_old_layout: bool = True  # the storage stage also measures the layout before
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
            peer_rounds=1 if quick else 4,
            peer_repeats=1 if quick else 2,
            pipeline_bytes=100_000_000 if quick else 1_000_000_000,
            pipeline_repeats=1,
            fork_big_bytes=100_000_000 if quick else 1_000_000_000,
            executor_steps=20 if quick else 40,
            executor_repeats=args.repeats or (2 if quick else 5),
            writer_runs=5 if quick else 10,
            memory_bytes=300_000_000 if quick else 1_000_000_000,
            storage_runs=100 if quick else 2_000,
            storage_old_layout=not quick,
            file_read_rounds=2 if quick else 5,
        )


def stages(settings: Settings, log: Any) -> list[Stage]:
    """Every stage, in the order they run."""
    s = settings
    return [
        Stage(
            "side by side",
            f"side by side: {s.steps}-step chain and fan-out, every peer in its own process, "
            f"{s.peer_rounds} rounds x {s.peer_repeats}",
            lambda d: run_peers(d, s.peer_rounds, s.peer_repeats, s.steps, log=log),
            peers_rows,
            notes=peers_notes,
        ),
        Stage(
            "frames pipeline",
            f"frames pipeline: 4 steps of {s.pipeline_bytes / 1e9:g} GB frames, each mode",
            lambda d: run_pipeline(d, s.pipeline_bytes, s.pipeline_repeats, log=log),
            pipeline_rows,
            notes=pipeline_notes,
        ),
        Stage(
            "data globals",
            f"data globals: {s.steps}-step chain, cached, 10 x 10 MB globals per step",
            lambda d: run_data_globals(d, s.step_repeats, s.steps, log=log),
            data_globals_rows,
        ),
        Stage(
            "DataFrame checkpoint",
            f"DataFrame checkpoint: {s.rows:,} rows, {s.frame_repeats} repetitions",
            lambda d: run_dataframes(d, s.rows, s.frame_repeats, log=log),
            report.frame_rows,
            notes=lambda r: [f"DataFrame: median of {s.frame_repeats}; {r.description}."],
            after=report.breakdown,
        ),
        Stage(
            "fork",
            f"fork: {s.fork_small_bytes:,} vs {s.fork_big_bytes:,} bytes upstream",
            lambda d: run_fork(d, s.fork_small_bytes, s.fork_big_bytes, s.fork_repeats, log=log),
            fork_rows,
            after=lambda r: [setup_note(r)],
        ),
        Stage(
            "PostgreSQL and several processes",
            "PostgreSQL beside DuckDB (a throwaway server); 4 writer processes, and a reader",
            lambda d: run_postgres(d, s.step_repeats, s.steps, s.writer_runs, log=log),
            postgres_rows,
            notes=lambda r: [postgres_note(r)],
        ),
        Stage(
            "executors",
            f"executors: {s.executor_steps}-step fan-out, {s.executor_repeats} reps",
            lambda d: run_executors(d, s.executor_repeats, s.executor_steps, log=log),
            executor_rows,
        ),
        Stage(
            "memory",
            f"memory: checkpointing {s.memory_bytes / 1e9:g} GB outputs, a process each",
            lambda d: run_memory(d, s.memory_bytes, log=log),
            memory_rows,
        ),
        Stage(
            "storage",
            f"storage: small frames, and {s.storage_runs:,} runs of a small flow",
            lambda d: run_storage(d, s.storage_runs, log=log, old_layout=s.storage_old_layout),
            storage_rows,
        ),
        Stage(
            "file reads",
            "file reads: a step opening 1,000 files, with and without the audit hook",
            lambda d: run_file_reads(d, s.file_read_rounds, log=log),
            file_reads_rows,
        ),
        Stage(
            "DAG SVG",
            "DAG SVG of a 500-step flow",
            lambda d: run_dag_svg(s.frame_repeats, log=log),
            dag_rows,
        ),
        Stage(
            "DAG in the browser",
            "DAG in the browser: 40, 200 and 500 steps in Chromium (skipped without it)",
            lambda d: run_dag_browser(s.frame_repeats, log=log),
            browser_rows,
        ),
    ]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="1M-row frame, 3 repetitions, 100 MB pipeline frames and fork, 300 MB outputs, "
        "100 runs (today's layout only), one round of peers",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the numbers here")
    parser.add_argument("--rows", type=int, help="rows of the DataFrame (overrides the default)")
    parser.add_argument("--repeats", type=int, help="repetitions of the per-step runs")
    parser.add_argument(
        "--frame-repeats", type=int, default=3, help="repetitions of the DataFrame writes/reads"
    )
    parser.add_argument(
        "--stage",
        action="append",
        default=[],
        metavar="NAME",
        help="run only this stage (repeatable), e.g. --stage 'side by side'",
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
    """Versions and machine, printed above the tables and saved in the JSON."""
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


def run(settings: Settings, json_path: Path | None, only: list[str]) -> int:
    """Run the stages (printing each as it ends), the summary, and the JSON if asked;
    1 if a stage failed."""
    env = environment()
    print(" | ".join(f"{k} {v}" for k, v in env.items()))
    print(
        "ratio = measured / reference in the row's unit (time per step, seconds, or GB/s); "
        "every figure is measured in this run.",
        flush=True,
    )
    print()
    load_before = load_average()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="nbflow-bench-") as tmp:
        outcome = run_stages(stages(settings, log), Path(tmp), log, only)
    elapsed = time.perf_counter() - started
    load = f"1-min load average {load_before} before, {load_average()} after"
    timing = ", ".join(f"{name} {s:.0f} s" for name, s in outcome.seconds.items())
    print_summary(
        outcome, [f"total time: {elapsed:.1f} s ({timing}); {load} ({os.cpu_count()} CPUs)"]
    )
    if json_path is not None:
        report.to_json(
            json_path,
            settings={**asdict(settings), "environment": env, "elapsed_s": elapsed, "load": load},
            rows=outcome.all_rows,
            stages=outcome.results,
            failures=outcome.failures,
        )
        log(f"wrote {json_path}")
    return 1 if outcome.failures else 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m benchmarks``."""
    args = parse_args(argv)
    settings = Settings.from_args(args)
    if args.profile:
        with tempfile.TemporaryDirectory(prefix="nbflow-profile-") as tmp:
            print(profile_chain(Path(tmp), settings.steps))
        return 0
    return run(settings, args.json, args.stage)


if __name__ == "__main__":
    sys.exit(main())

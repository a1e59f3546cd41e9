"""Per-step cost of each executor on a small fan-out: inline, threads, processes, Dask.

The flow is the fan-out of :mod:`benchmarks.overhead` (one ``root`` and children that each
read it; tiny int outputs), smaller: every step executes in a fresh DuckDB file, opened
before the clock. Each sample is one first run, divided by the number of steps; the
executors take turns within each repetition, so they see the same machine.

* threads and processes: 2 workers; a processes run starts its own worker processes,
  which is part of what it costs.
* dask: a ``distributed.LocalCluster`` of 2 single-threaded worker processes and a
  client, both started before the clock (a Dask user's cluster is already up); the run
  ships each step to a worker with cloudpickle and stores the output in the driver.

Before the measured repetitions every executor runs the flow once (the workers import
nbflow and pandas then).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nbflow as nf
from benchmarks.overhead import fan_out
from benchmarks.report import Quantity, Row
from benchmarks.timing import format_seconds, median, timed

STEPS = 40
WORKERS = 2
EXECUTORS = ("inline", "threads", "processes", "dask")


@dataclass
class ExecutorResult:
    """Per-step seconds of each repetition, by executor."""

    steps: int
    repeats: int
    samples: dict[str, list[float]] = field(default_factory=dict)
    cluster_start_s: float = 0.0
    skipped: str = ""  # why Dask was not measured, else ""

    @property
    def description(self) -> str:
        """One line for the report's header."""
        dask = (
            f"dask on a LocalCluster of {WORKERS} worker processes (started before the clock "
            f"in {format_seconds(self.cluster_start_s)})"
            if not self.skipped
            else f"dask not measured ({self.skipped})"
        )
        return (
            f"executors: a {self.steps}-step fan-out, every step executed, median of "
            f"{self.repeats}; threads and processes with {WORKERS} workers (a processes run "
            f"starts its workers), {dask}"
        )


def start_cluster() -> tuple[Any, Any]:
    """A LocalCluster of 2 single-threaded worker processes and a client of it."""
    import distributed

    cluster = distributed.LocalCluster(
        n_workers=WORKERS, processes=True, threads_per_worker=1, dashboard_address=None
    )
    client = distributed.Client(cluster, set_as_default=False)
    client.wait_for_workers(WORKERS)
    return cluster, client


def notebook_flow(name: str, store: Path, steps: int) -> nf.Flow:
    """The fan-out, its steps defined as a notebook defines them (in ``__main__``)."""
    from nbflow.definition.step import Step

    flow = nf.Flow(name, store=str(store))
    namespace: dict[str, Any] = {"__name__": "__main__"}
    for spec in fan_out(steps).steps:
        exec(compile(spec.source, f"<cell {spec.name}>", "exec"), namespace)
        flow.add_step(Step.from_function(namespace[spec.name], name=spec.name, source=spec.source))
    return flow


def per_step(workdir: Path, name: str, executor: Any, steps: int) -> float:
    """Seconds per step of one first run of the fan-out on ``executor``."""
    store = workdir / f"executors-{name}-{time.monotonic_ns()}.duckdb"
    flow = notebook_flow(f"bench-executor-{name}", store, steps)
    _ = flow.store  # opened before the clock
    try:
        # Dask's scheduler queues the steps itself, on a cluster of WORKERS workers.
        workers = None if name == "dask" else WORKERS
        seconds, run = timed(
            lambda: flow.run(executor=executor, max_workers=workers, progress=False)
        )
        counts = run.steps["status"].value_counts().to_dict()
        if run.status != "completed" or counts.get("completed") != steps:
            raise RuntimeError(f"benchmark run {run.id} on {name}: {run.status}, {counts}")
    finally:
        flow.store.close()
    return seconds / steps


def run_executors(
    workdir: Path, repeats: int, steps: int = STEPS, log: Callable[[str], None] = print
) -> ExecutorResult:
    """Every executor, ``repeats`` times, interleaved."""
    result = ExecutorResult(steps, repeats)
    executors: dict[str, Any] = {name: name for name in EXECUTORS}
    cluster = client = None
    try:
        started = time.perf_counter()
        cluster, client = start_cluster()
        result.cluster_start_s = time.perf_counter() - started
        executors["dask"] = client
    except ImportError as exc:
        result.skipped = f"{exc}; pip install 'nbflow[dask]'"
        del executors["dask"]
    try:
        for name, executor in executors.items():  # warm-up: workers import what steps use
            per_step(workdir, name, executor, min(steps, 10))
        result.samples = {name: [] for name in executors}
        for rep in range(repeats):
            log(f"  executors: repetition {rep + 1}/{repeats}")
            for name, executor in executors.items():
                result.samples[name].append(per_step(workdir, name, executor, steps))
    finally:
        if client is not None:
            client.close()
        if cluster is not None:
            cluster.close()
    return result


def executor_rows(result: ExecutorResult) -> list[Row]:
    """Each parallel executor's per-step cost beside the one it would replace."""
    m = {name: median(samples) for name, samples in result.samples.items()}

    def row(name: str, reference: str) -> Row:
        return Row(
            f"{result.steps}-step fan-out, executor {name}: per step",
            Quantity(m[name], "s"),
            f"executor {reference}",
            Quantity(m[reference], "s"),
        )

    rows = [row("threads", "inline"), row("processes", "threads")]
    if "dask" in m:
        rows += [row("dask", "threads"), row("dask", "processes")]
    return rows

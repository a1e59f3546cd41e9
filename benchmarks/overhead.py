"""Per-step overhead: a 200-step chain and a 200-step fan-out with tiny (int) outputs.

Every nbflow sample is a first run of a freshly defined flow in a fresh DuckDB file, so
every step executes and is committed (each step's start rides in its own transaction);
the cached sample re-runs the same flow, so nothing executes. The store is opened before
the clock starts (a one-off cost, reported separately); planning, fingerprinting and the
DAG are inside the timed ``flow.run()``.

The floors run the same functions with the same inputs:

* plain Python: the step functions called in order, each with its upstream values;
* raw DuckDB: per step, ``BEGIN`` + one ``INSERT`` of a small row + ``COMMIT`` into a
  fresh file, i.e. what one durable write per step costs at the very least.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb

import nbflow as nf
from benchmarks.timing import timed
from nbflow.definition.step import Step

STEPS = 200
PLAIN_PYTHON_LOOPS = 200  # the floor loop is repeated to rise well above timer resolution


@dataclass(frozen=True)
class StepSpec:
    """One generated step: its name, its inputs (parameter names) and its source text."""

    name: str
    inputs: tuple[str, ...]
    source: str


@dataclass(frozen=True)
class Topology:
    """A generated flow shape."""

    name: str
    description: str
    steps: tuple[StepSpec, ...]


@dataclass
class TopologyResult:
    """Per-step seconds of each repetition, for one topology."""

    topology: str
    description: str
    first_run: list[float] = field(default_factory=list)
    cached_run: list[float] = field(default_factory=list)
    store_open: list[float] = field(default_factory=list)  # seconds, not per step
    plain_python: list[float] = field(default_factory=list)


def chain(n: int = STEPS) -> Topology:
    """``s0 -> s1 -> ... -> s{n-1}``, each step adding one to its input."""
    specs = [StepSpec("s0", (), "def s0():\n    return 0\n")]
    for i in range(1, n):
        prev = f"s{i - 1}"
        specs.append(StepSpec(f"s{i}", (prev,), f"def s{i}({prev}):\n    return {prev} + 1\n"))
    return Topology("chain", f"{n}-step chain (s0 -> s1 -> ... -> s{n - 1})", tuple(specs))


def fan_out(n: int = STEPS) -> Topology:
    """One ``root`` and ``n - 1`` children that each read it."""
    specs = [StepSpec("root", (), "def root():\n    return 1\n")]
    for i in range(1, n):
        specs.append(StepSpec(f"c{i}", ("root",), f"def c{i}(root):\n    return root + {i}\n"))
    return Topology(
        "fan-out", f"{n}-step fan-out (1 root + {n - 1} children reading it)", tuple(specs)
    )


def compile_steps(specs: Sequence[StepSpec]) -> dict[str, Callable[..., Any]]:
    """The step functions, compiled from their source text."""
    namespace: dict[str, Any] = {}
    for spec in specs:
        exec(compile(spec.source, f"<benchmark step {spec.name}>", "exec"), namespace)
    return {spec.name: namespace[spec.name] for spec in specs}


def build_flow(name: str, store: str | Path, specs: Sequence[StepSpec]) -> nf.Flow:
    """A flow of freshly compiled steps (their source is given: exec'd code has no file)."""
    flow = nf.Flow(name, store=str(store))
    functions = compile_steps(specs)
    for spec in specs:
        flow.add_step(Step.from_function(functions[spec.name], name=spec.name, source=spec.source))
    return flow


def plain_python_per_step(topology: Topology, loops: int = PLAIN_PYTHON_LOOPS) -> float:
    """Seconds per step to call the step functions in order, passing upstream values."""
    functions = compile_steps(topology.steps)
    plan = [(spec.name, functions[spec.name], spec.inputs) for spec in topology.steps]

    def run_all() -> None:
        for _ in range(loops):
            values: dict[str, Any] = {}
            for name, func, inputs in plan:
                values[name] = func(**{i: values[i] for i in inputs})

    seconds, _ = timed(run_all)
    return seconds / (loops * len(plan))


def duckdb_commit_per_step(path: Path, steps: int = STEPS) -> float:
    """Seconds per step for ``BEGIN`` / ``INSERT`` one small row / ``COMMIT`` (fresh file)."""
    con = duckdb.connect(str(path))
    try:
        con.execute("CREATE TABLE outputs (step VARCHAR, attempt INTEGER, value BIGINT)")

        def insert_all() -> None:
            for i in range(steps):
                con.execute("BEGIN TRANSACTION")
                con.execute("INSERT INTO outputs VALUES (?, ?, ?)", [f"s{i}", 1, i])
                con.execute("COMMIT")

        seconds, _ = timed(insert_all)
    finally:
        con.close()
    return seconds / steps


def _check_run(run: nf.Run, expected: str, steps: int) -> None:
    """Fail loudly if a benchmarked run did not do what it was meant to."""
    if run.status != "completed":
        raise RuntimeError(f"benchmark run {run.id} ended {run.status}: {run.error}")
    statuses = run.steps["status"].value_counts().to_dict()
    if statuses.get(expected) != steps:
        raise RuntimeError(f"benchmark run {run.id}: expected {steps} {expected}, got {statuses}")


def measure_nbflow(topology: Topology, store: Path, result: TopologyResult) -> None:
    """One repetition: open the store, time a first run and a cached re-run."""
    steps = len(topology.steps)
    flow = build_flow(f"bench-{topology.name}-{store.stem}", store, topology.steps)
    started = time.perf_counter()
    _ = flow.store
    result.store_open.append(time.perf_counter() - started)
    try:
        first_s, first = timed(lambda: flow.run(progress=False))
        cached_s, cached = timed(lambda: flow.run(progress=False))
        _check_run(first, "completed", steps)
        _check_run(cached, "cached", steps)
    finally:
        flow.store.close()
    result.first_run.append(first_s / steps)
    result.cached_run.append(cached_s / steps)


def warm_up(workdir: Path) -> None:
    """Import and initialise everything a run touches once, outside the timings."""
    for topology in (chain(10), fan_out(10)):
        store = workdir / f"warm-up-{topology.name}.duckdb"
        flow = build_flow(f"bench-warm-up-{topology.name}", store, topology.steps)
        flow.run(progress=False)
        flow.run(progress=False)
        flow.store.close()
    duckdb_commit_per_step(workdir / "warm-up-floor.duckdb", steps=10)


def run_overhead(
    workdir: Path, repeats: int, steps: int = STEPS, log: Callable[[str], None] = print
) -> tuple[list[TopologyResult], list[float]]:
    """Every per-step measurement, interleaved repetition by repetition.

    Returns one result per topology and the DuckDB floor's per-step seconds (the floor
    does not depend on the shape of the flow).
    """
    warm_up(workdir)
    topologies = [chain(steps), fan_out(steps)]
    results = [TopologyResult(t.name, t.description) for t in topologies]
    duckdb_floor: list[float] = []
    for rep in range(repeats):
        log(f"  per-step overhead: repetition {rep + 1}/{repeats}")
        duckdb_floor.append(duckdb_commit_per_step(workdir / f"floor-{rep}.duckdb", steps))
        for topology, result in zip(topologies, results, strict=True):
            measure_nbflow(topology, workdir / f"{topology.name}-{rep}.duckdb", result)
            result.plain_python.append(plain_python_per_step(topology))
    return results, duckdb_floor

"""The per-step benchmarks' flows: a 200-step chain and a 200-step fan-out with tiny
(int) outputs, and the floors they are judged against.

:mod:`benchmarks.peers` runs them side by side with the peers, each system in its own
process; :mod:`benchmarks.postgres`, :mod:`benchmarks.executors` and
:mod:`benchmarks.profiling` reuse them. The floors run the same functions with the same
inputs:

* plain Python: the step functions called in order, each with its upstream values;
* raw DuckDB: per step, ``BEGIN`` + one ``INSERT`` of a small row + ``COMMIT`` into a
  fresh file, i.e. what one durable write per step costs at the very least.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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


def warm_up(workdir: Path) -> None:
    """Import and initialise everything a run touches once, outside the timings."""
    for topology in (chain(10), fan_out(10)):
        store = workdir / f"warm-up-{topology.name}.duckdb"
        flow = build_flow(f"bench-warm-up-{topology.name}", store, topology.steps)
        flow.run(progress=False)
        flow.run(progress=False)
        flow.store.close()
    duckdb_commit_per_step(workdir / "warm-up-floor.duckdb", steps=10)

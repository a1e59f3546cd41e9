"""What data globals cost a cached re-run: a chain whose every step reads 10 globals of
10 MB each, against the same chain reading none (issue 15: <= 2x).

Both flows are the 200-step chain of the per-step overhead stage (tiny int outputs, a
fresh DuckDB file per repetition), re-run fully cached; in one, every step also reads
``G0`` ... ``G9``: five 10 MB float64 arrays and five 10 MB DataFrames (four float64
columns and one int64 column). Planning a run hashes each global once (memoized by
identity for the run), however many steps read it: 100 MB per run, at xxh3's speed.
The two flows run interleaved, repetition by repetition, in this process. Beside them:
one pass of hashing the ten globals alone (what a run adds, whatever its length).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import nbflow as nf
from benchmarks.overhead import StepSpec, chain
from benchmarks.report import Quantity, Row
from benchmarks.timing import median, timed
from nbflow.definition.step import Step
from nbflow.graph.data import DataHashes

GLOBALS = 10
GLOBAL_BYTES = 10_000_000
MAX_RATIO = 2.0


@dataclass
class DataGlobalsResult:
    """Per-step seconds of each cached re-run, with and without the globals."""

    steps: int
    description: str
    with_globals: list[float] = field(default_factory=list)
    without: list[float] = field(default_factory=list)
    hash_pass: list[float] = field(default_factory=list)  # seconds per run, not per step


def make_globals() -> dict[str, Any]:
    """``G0`` ... ``G9``: five arrays and five frames of ``GLOBAL_BYTES`` each."""
    rng = np.random.default_rng(0)
    rows = GLOBAL_BYTES // 8
    values: dict[str, Any] = {}
    for i in range(GLOBALS):
        if i % 2 == 0:
            values[f"G{i}"] = rng.random(rows)
        else:
            per_column = rows // 5
            frame = pd.DataFrame({f"f{c}": rng.random(per_column) for c in range(4)})
            frame["n"] = rng.integers(0, 1_000, per_column)
            values[f"G{i}"] = frame
    return values


def reading(spec: StepSpec, names: list[str]) -> StepSpec:
    """``spec`` with a first line that reads every global in ``names``."""
    head, _, body = spec.source.partition("\n")
    line = f"    _ = ({', '.join(names)},)\n" if names else ""
    return StepSpec(spec.name, spec.inputs, f"{head}\n{line}{body}")


def build(name: str, store: Path, specs: list[StepSpec], namespace: dict[str, Any]) -> nf.Flow:
    """A flow of the steps compiled in ``namespace`` (which holds the globals)."""
    flow = nf.Flow(name, store=str(store))
    for spec in specs:
        exec(compile(spec.source, f"<benchmark step {spec.name}>", "exec"), namespace)
        flow.add_step(Step.from_function(namespace[spec.name], name=spec.name, source=spec.source))
    return flow


def hash_all(values: dict[str, Any]) -> list[tuple[str | None, str]]:
    """One planning's worth of data hashing: each value once."""
    hashes = DataHashes()
    return [hashes.digest(value) for value in values.values()]


def _cached_per_step(flow: nf.Flow, steps: int) -> float:
    try:
        flow.run(progress=False)
        seconds, run = timed(lambda: flow.run(progress=False))
        counts = run.steps["status"].value_counts().to_dict()
        if run.status != "completed" or counts.get("cached") != steps:
            raise RuntimeError(f"benchmark run {run.id}: expected {steps} cached, got {counts}")
    finally:
        flow.store.close()
    return seconds / steps


def run_data_globals(
    workdir: Path, repeats: int, steps: int, log: Callable[[str], None] = print
) -> DataGlobalsResult:
    """Cached re-runs with and without the globals, interleaved ``repeats`` times."""
    values = make_globals()
    names = list(values)
    base = list(chain(steps).steps)
    heavy = [reading(spec, names) for spec in base]
    result = DataGlobalsResult(
        steps,
        f"data globals: {steps}-step chain re-run fully cached, every step reading "
        f"{GLOBALS} globals of {GLOBAL_BYTES / 1e6:g} MB (5 float64 arrays, 5 DataFrames), "
        "against the same chain reading none; median of "
        f"{repeats}",
    )
    for rep in range(repeats):
        log(f"  data globals: repetition {rep + 1}/{repeats}")
        plain = build(f"bench-plain-{rep}", workdir / f"plain-{rep}.duckdb", base, {})
        result.without.append(_cached_per_step(plain, steps))
        store = workdir / f"globals-{rep}.duckdb"
        loaded = build(f"bench-globals-{rep}", store, heavy, dict(values))
        result.with_globals.append(_cached_per_step(loaded, steps))
        seconds, _ = timed(lambda: hash_all(values))
        result.hash_pass.append(seconds)
    return result


def data_globals_rows(result: DataGlobalsResult) -> list[Row]:
    """The cached re-run per step with the globals against without, and the hash pass."""
    loaded, plain = median(result.with_globals), median(result.without)
    ratio = loaded / plain if plain else float("inf")
    return [
        Row(
            f"data globals: per step, cached re-run, {GLOBALS} x {GLOBAL_BYTES / 1e6:g} MB read",
            Quantity(loaded, "s"),
            "the same chain reading none",
            Quantity(plain, "s"),
            target=f"<= {MAX_RATIO:g}x",
            met=ratio <= MAX_RATIO,
        ),
        Row(
            f"data globals: hashing the {GLOBALS} globals once (a run's cost)",
            Quantity(median(result.hash_pass), "s"),
            f"{GLOBALS * GLOBAL_BYTES / 1e6:g} MB",
        ),
    ]

"""nbflow in one durability mode (``--mode sync|async|exit``): a first run and a cached
re-run of each topology, each in a fresh DuckDB file opened before the clock.

The flows are :mod:`benchmarks.overhead`'s (steps compiled from source); ``flow.run``
includes planning, fingerprinting and, in every mode, waiting until the run is committed
(a returned run is durable). Where this build's ``flow.run`` takes no ``durability``,
only ``sync`` (what it always does) can be measured: the process answers
``unsupported`` for the others.
"""

from __future__ import annotations

import inspect
import time
from typing import Any

import nbflow as nf
from benchmarks.overhead import Topology, build_flow, plain_python_per_step
from benchmarks.peers.protocol import (
    WARM_UP_STEPS,
    PeerArgs,
    Samples,
    add,
    emit,
    fresh_dir,
    parse_args,
    topologies,
)
from benchmarks.timing import timed

MODES = ("sync", "async", "exit")


def durability_modes() -> tuple[str, ...]:
    """The modes this build's ``flow.run`` takes (only sync, today's behaviour, if it
    takes no ``durability``)."""
    return MODES if "durability" in inspect.signature(nf.Flow.run).parameters else ("sync",)


def system(mode: str) -> str:
    """The row label of nbflow in ``mode``."""
    return f"nbflow {mode}"


def _check(run: nf.Run, expected: str, steps: int) -> None:
    if run.status != "completed":
        raise RuntimeError(f"benchmark run {run.id} ended {run.status}: {run.error}")
    counts = run.steps["status"].value_counts().to_dict()
    if counts.get(expected) != steps:
        raise RuntimeError(f"benchmark run {run.id}: expected {steps} {expected}, got {counts}")


def one_repetition(topology: Topology, folder: Any, mode: str) -> tuple[float, float, float]:
    """(store open s, first run s/step, cached re-run s/step) in a fresh store."""
    steps = len(topology.steps)
    options: dict[str, Any] = {"progress": False}
    if "durability" in inspect.signature(nf.Flow.run).parameters:
        options["durability"] = mode
    flow = build_flow(f"bench-{topology.name}", folder / "store.duckdb", topology.steps)
    started = time.perf_counter()
    _ = flow.store
    opened = time.perf_counter() - started
    try:
        first_s, first = timed(lambda: flow.run(**options))
        cached_s, cached = timed(lambda: flow.run(**options))
        _check(first, "completed", steps)
        _check(cached, "cached", steps)
    finally:
        flow.store.close()
    return opened, first_s / steps, cached_s / steps


def measure(args: PeerArgs) -> tuple[str, Samples]:
    samples: Samples = {}
    label = system(args.mode)
    for topology in topologies(WARM_UP_STEPS):
        one_repetition(topology, fresh_dir(args.workdir / f"warm-{topology.name}"), args.mode)
    for rep in range(args.repeats):
        for topology in topologies(args.steps):
            folder = fresh_dir(args.workdir / f"{topology.name}-{rep}")
            opened, first, cached = one_repetition(topology, folder, args.mode)
            add(samples, label, topology.name, "first", first)
            add(samples, label, topology.name, "cached", cached)
            add(samples, label, topology.name, "open", opened)
            add(samples, label, topology.name, "plain", plain_python_per_step(topology))
    return f"nbflow {nf.__version__}", samples


def main() -> None:
    args = parse_args()
    if args.mode not in durability_modes():
        emit({"unsupported": "not on this build (no durability=)"})
        return
    args.workdir.mkdir(parents=True, exist_ok=True)
    version, samples = measure(args)
    emit({"version": version, "samples": samples})


if __name__ == "__main__":
    main()

"""DBOS on SQLite: each step a ``@DBOS.step()`` called from one ``@DBOS.workflow()``.

DBOS is configured with a SQLite system database (``system_database_url =
"sqlite:///FILE"``, DBOS's own default when none is given: no server), a fresh file per
repetition (SQLite's defaults, as DBOS leaves them: a rollback journal and
``synchronous=FULL``), launched before the clock and destroyed after it. Each step's
output is checkpointed into that file (its ``operation_outputs`` table) before the next
step runs. DBOS has no cache: a workflow
called again runs again (only a workflow re-run under the same id returns what was
recorded), so there is no cached re-run to set beside the others.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.overhead import Topology
from benchmarks.peers.protocol import (
    WARM_UP_STEPS,
    PeerArgs,
    Samples,
    add,
    call_in_order,
    fresh_dir,
    serve,
    step_module,
    topologies,
)
from benchmarks.timing import timed

SYSTEM = "DBOS (SQLite)"


def measure(args: PeerArgs) -> tuple[str, Samples]:
    from importlib.metadata import version

    from dbos import DBOS

    logging.getLogger("dbos").setLevel(logging.ERROR)
    samples: Samples = {}
    workflows: dict[tuple[str, int], Callable[[], Any]] = {}
    # Every step and workflow is registered before the first launch, as DBOS wants.
    for steps in (WARM_UP_STEPS, args.steps):
        for topology in topologies(steps):
            folder = args.workdir / f"module-{topology.name}-{steps}"
            module = step_module(topology, folder, f"dbos_steps_{topology.name[:3]}_{steps}")
            functions = {
                spec.name: DBOS.step(name=f"{spec.name}_{steps}_{topology.name}")(
                    getattr(module, spec.name)
                )
                for spec in topology.steps
            }
            workflows[topology.name, steps] = _workflow(DBOS, topology, functions, steps)
    runs = [("warm", t) for t in topologies(WARM_UP_STEPS)]
    runs += [(f"rep{rep}", t) for rep in range(args.repeats) for t in topologies(args.steps)]
    for label, topology in runs:
        steps = len(topology.steps)
        folder = fresh_dir(args.workdir / f"{label}-{topology.name}-{steps}")
        seconds = _timed_launch(DBOS, folder / "dbos.sqlite", workflows[topology.name, steps])
        if label != "warm":
            add(samples, SYSTEM, topology.name, "first", seconds / steps)
    return f"dbos {version('dbos')}", samples


def _workflow(
    dbos: Any, topology: Topology, functions: dict[str, Callable[..., Any]], steps: int
) -> Callable[[], Any]:
    """One workflow calling the topology's steps in order."""

    def run_steps() -> Any:
        return call_in_order(topology, functions)

    run_steps.__name__ = run_steps.__qualname__ = f"workflow_{topology.name}_{steps}"
    return dbos.workflow(name=run_steps.__name__)(run_steps)  # type: ignore[no-any-return]


def _timed_launch(dbos: Any, path: Path, workflow: Callable[[], Any]) -> float:
    """Launch DBOS on a fresh SQLite file, time one workflow, destroy it."""
    dbos(
        config={
            "name": "nbflow-bench",
            "system_database_url": f"sqlite:///{path}",
            "log_level": "ERROR",
        }
    )
    dbos.launch()
    try:
        seconds, _ = timed(workflow)
    finally:
        dbos.destroy()
    return seconds


if __name__ == "__main__":
    serve("dbos", measure)

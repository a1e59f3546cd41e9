"""The fresh process of a reproduction: ``python -m nbflow.api.replay``.

It opens the store, reads the run's record, defines the steps again from it alone
(:func:`nbflow.api.rebuild.rebuild_steps`), and executes them as a new run: a child of
the original (``parent_run_id``), whose first event, ``run_forked`` with ``reproduces``,
says it is a reproduction. The steps not asked for reuse the original's outputs by
reference. It runs in the run's recorded working folder, so that files are read at the
same paths. Its last line of output is JSON: the new run's id and, per step, what could
not be defined again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from nbflow.api.reproduce import REPLAY_STORE_ENV

__all__ = ["main", "replay"]


def replay(
    store: Any, run_id: str, steps: Sequence[str] | None, executor: str = "inline"
) -> tuple[str, dict[str, dict[str, str]]]:
    """Reproduce run ``run_id`` of ``store`` in this process (which should be fresh):
    the new run's id, and per step the names that could not be defined again."""
    from nbflow.api.flow import Flow
    from nbflow.api.launch import run_handle
    from nbflow.api.rebuild import rebuild_steps
    from nbflow.api.run import Run
    from nbflow.engine.choice import make_executor
    from nbflow.engine.fork import inherit_distrust, reproduction_event
    from nbflow.engine.launch import RunOptions, new_run, plan_steps, resolve_params
    from nbflow.store.provenance import read_provenance
    from nbflow.store.records import StepExecution

    original = store.get_run(run_id)
    provenance = read_provenance(store, run_id)
    if provenance.cwd and os.path.isdir(provenance.cwd):
        os.chdir(provenance.cwd)
    sys.path.insert(0, os.getcwd())

    def load_data(step: str, name: str) -> Any:
        from nbflow.values.refs import ValueRef

        ref = ValueRef.from_json(provenance.steps[step].data[name])
        return store.load_output(ref, step=step, run_id=run_id)

    rebuilt, problems = rebuild_steps(provenance, load_data)
    flow = Flow(original.flow, store=store)
    for step in rebuilt:
        flow.add_step(step)
    selected = list(original.steps) if steps is None else [s for s in original.steps if s in steps]
    graph = flow.graph(original.steps)
    values = resolve_params(graph, dict(original.params), graph.params)
    plans = plan_steps(graph, values)
    reused: dict[str, StepExecution] = {}
    for row in store.executions(run_id):
        if row.step not in selected and row.status.has_output and row.output is not None:
            known = reused.get(row.step)
            if known is None or (row.attempt, row.seq) >= (known.attempt, known.seq):
                reused[row.step] = row
    executor_obj = make_executor(executor, None)
    created = new_run(
        flow.name,
        store,
        graph,
        plans,
        values,
        write=False,
        parent_run_id=run_id,
        fork_from_step=None,
        fork_from_version=original.version,
        thread_id=original.thread_id or run_id,
    )
    handle = Run(store, created.run_id, flow)
    inherit_distrust(store, run_id, handle.id)
    store.create_run(created)
    executes = [s for s in graph.order if s not in reused]
    store.append(
        handle.id, 0, [reproduction_event(run_id, original.version, reused, executes, values)]
    )
    options = RunOptions(executor=executor, raise_on_error=False, progress=False)
    run_handle(
        handle,
        graph,
        plans,
        options=options,
        force=executes,
        state=store.load_state(handle.id),
        reused=reused,
        executor=executor_obj,
    )
    return handle.id, problems


def main(argv: Sequence[str] | None = None) -> int:
    """The command line of the fresh process (used by ``run.reproduce()``)."""
    parser = argparse.ArgumentParser(prog="python -m nbflow.api.replay")
    parser.add_argument("store", nargs="?", default=None)
    parser.add_argument("run_id")
    parser.add_argument(
        "--store-from-env", action="store_true", help=f"the store's URI is ${REPLAY_STORE_ENV}"
    )
    parser.add_argument("--steps", default=None, help="comma-separated steps to execute")
    parser.add_argument("--executor", default="inline")
    parser.add_argument("--untrusted", action="store_true")
    args = parser.parse_args(argv)
    from nbflow.store.open import open_store

    uri = os.environ.get(REPLAY_STORE_ENV) if args.store_from_env else args.store
    if not uri:
        parser.error(f"give the store, or --store-from-env with ${REPLAY_STORE_ENV} set")
    store = open_store(uri, trust=not args.untrusted)
    steps = args.steps.split(",") if args.steps else None
    try:
        new_id, problems = replay(store, args.run_id, steps, args.executor)
    finally:
        store.close()
    sys.stdout.write("\n" + json.dumps({"run_id": new_id, "problems": problems}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

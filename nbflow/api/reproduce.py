"""``run.reproduce()``: execute a run again from its record, in a fresh process, and say
step by step whether it came out the same.

Before running, the current environment is compared with the recorded one (Python,
platform, each package the run used) and each step's files with their recorded hashes.
The fresh process (``python -m nbflow.api.replay``) makes a new run, a child of the
original; its outputs are compared with the original's by content hash, and, where the
step allows a tolerance, by value. A step that differs is executed once more: if the two
reproductions differ from each other, the step is not deterministic.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from nbflow.api.environments import environment_differences
from nbflow.errors import ReproductionError, RunError, UnknownStepError
from nbflow.store.provenance import read_provenance
from nbflow.store.records import StepExecution
from nbflow.store.tenants import ENV_TENANT

if TYPE_CHECKING:
    import pandas as pd

    from nbflow.store.base import Store

__all__ = ["COLUMNS", "REPLAY_STORE_ENV", "reproduce_run"]

#: The environment variable the fresh process reads the store's URI from (with its
#: password: ``python -m nbflow.api.replay --store-from-env``).
REPLAY_STORE_ENV = "NBFLOW_REPLAY_STORE"

#: The columns of the frame ``run.reproduce()`` returns, in order.
COLUMNS = ("step", "status", "recorded_hash", "reproduced_hash", "reason")


def _check(store: Store, run_id: str, steps: Collection[str] | None) -> None:
    record = store.get_run(run_id)  # UnknownRunError names a run the store does not have
    if not record.status.finished:
        raise RunError(
            f"run {run_id} is {record.status.value}: only a finished run can be reproduced. "
            "Wait for it (run.wait()), or decide its gate, then reproduce it."
        )
    if steps is not None:
        for step in steps:
            if step not in record.steps:
                raise UnknownStepError(step, record.steps, where=f"run {run_id}")
    if store.uri in ("", ":memory:", "memory://"):
        raise ReproductionError(
            f"run {run_id} is in an in-memory store, which a fresh process cannot open: "
            "copy it into a store file first (nf.copy_runs) and reproduce it there."
        )


def _latest(rows: list[StepExecution]) -> dict[str, StepExecution]:
    latest: dict[str, StepExecution] = {}
    for row in rows:
        known = latest.get(row.step)
        if known is None or (row.attempt, row.seq) >= (known.attempt, known.seq):
            latest[row.step] = row
    return latest


def _spawn(
    store: Store, run_id: str, steps: Sequence[str] | None, executor: str
) -> tuple[str, dict[str, dict[str, str]]]:
    """Run the fresh process; the new run's id and what could not be defined again."""
    # The store's URI travels in the environment, not the command line (which every user
    # of the machine can read): with its password, which ``store.uri`` leaves out and the
    # fresh process needs. A process's environment is readable by its own user only.
    command = [sys.executable, "-m", "nbflow.api.replay", "--store-from-env", run_id]
    command += ["--executor", executor]
    if steps is not None:
        command += ["--steps", ",".join(steps)]
    if not store.trust:
        command.append("--untrusted")
    env = dict(os.environ)
    env.pop("PYTHONSTARTUP", None)
    env[REPLAY_STORE_ENV] = store.connection_uri()
    # The fresh process sees what this store sees: the same tenant, or the owner's view.
    if store.tenant is not None:
        env[ENV_TENANT] = store.tenant
    else:
        env.pop(ENV_TENANT, None)
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    last = done.stdout.strip().splitlines()[-1:] if done.stdout.strip() else []
    try:
        result = json.loads(last[0]) if last else None
    except ValueError:
        result = None
    if done.returncode != 0 or not isinstance(result, dict):
        tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-12:])
        if env[REPLAY_STORE_ENV] != store.uri:  # (never repeat a password)
            tail = tail.replace(env[REPLAY_STORE_ENV], store.uri)
        raise ReproductionError(
            f"the reproduction of run {run_id} could not run in a fresh process "
            f"(exit {done.returncode}):\n{tail}"
        )
    return str(result["run_id"]), dict(result.get("problems") or {})


def reproduce_run(
    store: Store,
    run_id: str,
    *,
    steps: Collection[str] | None = None,
    executor: str = "inline",
    rtol: float | None = None,
    atol: float | None = None,
    strict: bool = False,
    check_determinism: bool = True,
) -> pd.DataFrame:
    """Reproduce run ``run_id`` of ``store`` (see ``Run.reproduce``)."""
    import warnings

    import pandas as pd

    from nbflow import arguments
    from nbflow.api.verdicts import judge
    from nbflow.errors import ParameterError

    for name, value in (("rtol", rtol), ("atol", atol)):
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0
        ):
            raise ParameterError(f"{name} must be a number >= 0 or None, not {value!r}")
    arguments.flag(strict, "strict")
    arguments.flag(check_determinism, "check_determinism")
    arguments.text(executor, "executor")
    _check(store, run_id, steps)
    provenance = read_provenance(store, run_id)
    differences = environment_differences(provenance)
    if strict and (differences or not provenance.environment.python):
        told = [d.describe() for d in differences] or ["no environment was recorded for it"]
        raise ReproductionError(
            f"run {run_id} was recorded in another environment (strict=True refuses to "
            "reproduce it):\n  " + "\n  ".join(told) + "\nRebuild it with `nbflow show "
            f"{run_id} --requirements > requirements.txt` and `pip install -r requirements.txt`."
        )
    if differences:
        from nbflow.errors import NbflowWarning

        warnings.warn(
            f"reproducing run {run_id} in another environment: "
            + "; ".join(d.describe() for d in differences),
            NbflowWarning,
            stacklevel=3,
        )
    chosen = None if steps is None else [s for s in provenance.steps if s in set(steps)]
    new_id, problems = _spawn(store, run_id, chosen, executor)
    original = _latest(store.executions(run_id))
    reproduced = _latest(store.executions(new_id))
    rows, again = judge(
        store,
        provenance,
        run_id,
        new_id,
        original,
        reproduced,
        chosen,
        problems,
        differences,
        rtol=rtol,
        atol=atol,
    )
    second: str | None = None
    if check_determinism and again:
        second, _ = _spawn(store, run_id, again, executor)
        rows = _determinism(rows, store, new_id, second, again)
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame.attrs.update(
        run_id=run_id,
        reproduction=new_id,
        second_reproduction=second,
        environment=[d.__dict__ for d in differences],
        missing=list(provenance.missing),
    )
    return frame


def _determinism(
    rows: list[dict[str, Any]], store: Store, first: str, second: str, steps: Sequence[str]
) -> list[dict[str, Any]]:
    """Tell the steps whose two reproductions differ from each other."""
    one = _latest(store.executions(first))
    two = _latest(store.executions(second))
    for row in rows:
        step = row["step"]
        if step not in steps:
            continue
        a, b = one.get(step), two.get(step)
        hash_a = a.output.hash if a is not None and a.output is not None else None
        hash_b = b.output.hash if b is not None and b.output is not None else None
        if hash_a is not None and hash_b is not None and hash_a != hash_b:
            row["reason"] = (
                "not deterministic: two reproductions differ from each other (randomness "
                f"without a seed?); {row['reason']}"
            )
        elif hash_a is not None and hash_a == hash_b:
            row["reason"] += "; a second reproduction came out the same as the first"
    return rows

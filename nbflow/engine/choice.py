"""Choosing the executor a run asks for: by name, by Dask address or client, or as given."""

from __future__ import annotations

from typing import Any

from nbflow.engine.dask_executor import DaskExecutor, is_dask_address, is_dask_client
from nbflow.engine.executors import EXECUTORS, Executor, ThreadExecutor
from nbflow.engine.processes import ProcessExecutor
from nbflow.errors import ParameterError


def make_executor(executor: Any, max_workers: int | None) -> Executor:
    """The executor named by ``executor``, or the one given.

    Names: 'inline', 'threads', 'processes', 'dask' (the current Dask client, else the
    scheduler at $DASK_SCHEDULER_ADDRESS); a Dask scheduler address ('tcp://host:port' or
    'dask://host:port'); or a ``distributed.Client``.
    """
    if isinstance(executor, Executor):
        return executor
    if is_dask_client(executor) or (isinstance(executor, str) and is_dask_address(executor)):
        return DaskExecutor.from_spec(executor, max_workers)
    if executor == "inline":
        return Executor()
    if executor == "threads":
        if max_workers is not None and max_workers < 1:
            raise ParameterError(f"max_workers must be at least 1, not {max_workers}")
        return ThreadExecutor(max_workers)
    if executor == "processes":
        return ProcessExecutor(max_workers)
    raise ParameterError(
        f"unknown executor {executor!r}: use one of {', '.join(repr(e) for e in EXECUTORS)}, "
        "a Dask scheduler address ('tcp://host:8786') or a distributed.Client"
    )

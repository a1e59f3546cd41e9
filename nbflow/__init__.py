"""nbflow: durable, explorable notebook workflows.

Steps are plain functions (or notebook cells) run as a DAG; every step's output and
every state change is checkpointed in one DuckDB file, and the history comes back as
pandas DataFrames.
"""

from __future__ import annotations

from typing import Any

from nbflow import errors
from nbflow.api.flow import Flow, gate
from nbflow.api.history import RunView
from nbflow.api.hooks import JSONLSink, add_sink, flush_sinks, remove_sink, sink_stats
from nbflow.api.lookups import approve, events, get_run, reject, runs
from nbflow.api.notebook import load_notebook
from nbflow.api.run import Run
from nbflow.copying import CopyReport, copy_runs
from nbflow.diff import diff
from nbflow.graph.data import untracked
from nbflow.store.base import Store
from nbflow.store.open import open_store
from nbflow.transfer import export_run, import_run, mark_trusted
from nbflow.widgets import browse

__version__ = "0.1.0"


def load_ipython_extension(ipython: Any) -> None:
    """Register the ``%%step`` and ``%nbflow`` magics: ``%load_ext nbflow``."""
    from nbflow.magics import NbflowMagics

    if not callable(getattr(ipython, "register_magics", None)):
        raise errors.ParameterError(
            f"load_ipython_extension takes the IPython shell (`%load_ext nbflow` passes it), "
            f"not {type(ipython).__name__}"
        )
    ipython.register_magics(NbflowMagics)


__all__ = [
    "CopyReport",
    "Flow",
    "JSONLSink",
    "Run",
    "RunView",
    "Store",
    "__version__",
    "add_sink",
    "approve",
    "browse",
    "copy_runs",
    "diff",
    "errors",
    "events",
    "export_run",
    "flush_sinks",
    "gate",
    "get_run",
    "import_run",
    "load_ipython_extension",
    "load_notebook",
    "mark_trusted",
    "open_store",
    "reject",
    "remove_sink",
    "runs",
    "sink_stats",
    "untracked",
]

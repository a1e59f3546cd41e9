"""nbflow: durable, explorable notebook workflows.

Steps are plain functions (or notebook cells) run as a DAG; every step's output and
every state change is checkpointed in one DuckDB file, and the history comes back as
pandas DataFrames.
"""

from __future__ import annotations

from nbflow import errors
from nbflow.api import events, get_run, runs
from nbflow.definition.flow import Flow
from nbflow.run import Run
from nbflow.store.base import Store
from nbflow.store.open import open_store

__version__ = "0.1.0"

__all__ = [
    "Flow",
    "Run",
    "Store",
    "__version__",
    "errors",
    "events",
    "get_run",
    "open_store",
    "runs",
]

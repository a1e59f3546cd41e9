"""Test helpers for nbflow: the store conformance suite, reusable by third-party backends.

``nbflow.testing`` needs pytest. Subclass :class:`StoreConformance` and provide a
``store`` fixture to check a backend against the contract of
:class:`nbflow.store.base.Store`.

A top layer, beside the CLI: it may import every layer of nbflow; nothing in nbflow
imports it.
"""

import pytest

# Plain ``assert`` in the suite should explain failures like assertions in test files do.
pytest.register_assert_rewrite(
    "nbflow.testing.builders",
    "nbflow.testing.conformance",
    "nbflow.testing.conformance_records",
    "nbflow.testing.conformance_executions",
    "nbflow.testing.conformance_values",
    "nbflow.testing.conformance_leases",
    "nbflow.testing.conformance_check",
    "nbflow.testing.conformance_trust",
    "nbflow.testing.conformance_gates",
)

from nbflow.testing import conformance  # noqa: E402 - after the rewrite hook
from nbflow.testing.conformance import *  # noqa: E402, F403 - the suite and its builders

__all__ = list(conformance.__all__)

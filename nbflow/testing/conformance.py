"""The store contract as reusable pytest tests.

Subclass :class:`StoreConformance` in a test module and provide a ``store`` fixture that
returns a fresh, empty store of your backend; pytest then runs every contract test on it::

    import pytest
    import nbflow.testing


    class TestMyStore(nbflow.testing.StoreConformance):
        @pytest.fixture
        def store(self, tmp_path):
            return MyStore(tmp_path / "store.db")

The class defines no ``store`` fixture itself, so one from a ``conftest.py`` (for example
parametrized over several backends) is picked up as well. The helpers below build the
records and event sequences the tests use; they are public so that backend-specific tests
can reuse them.
"""

from __future__ import annotations

from nbflow.testing import builders
from nbflow.testing.builders import *  # noqa: F403 - re-exported, as before the split
from nbflow.testing.conformance_check import CheckConformance
from nbflow.testing.conformance_executions import ExecutionConformance
from nbflow.testing.conformance_files import FilesConformance
from nbflow.testing.conformance_gates import GateConformance
from nbflow.testing.conformance_leases import LeaseConformance
from nbflow.testing.conformance_queued import QueuedConformance
from nbflow.testing.conformance_records import RecordConformance
from nbflow.testing.conformance_sql import SqlConformance
from nbflow.testing.conformance_tenants import TenantConformance
from nbflow.testing.conformance_trust import TrustConformance
from nbflow.testing.conformance_values import ValueConformance

__all__ = ["StoreConformance", *builders.__all__]


class StoreConformance(
    RecordConformance,
    ExecutionConformance,
    FilesConformance,
    QueuedConformance,
    ValueConformance,
    LeaseConformance,
    CheckConformance,
    TrustConformance,
    SqlConformance,
    GateConformance,
    TenantConformance,
):
    """The contract of :class:`nbflow.store.base.Store`, as pytest tests.

    Subclass it and provide a ``store`` fixture returning a fresh, empty store.
    """

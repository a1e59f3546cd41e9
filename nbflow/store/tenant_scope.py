"""What a store object knows of its tenant (part of :class:`~nbflow.store.core.StoreCore`):
the checks every backend's reads and writes apply, by the rules of
:mod:`nbflow.store.tenants`."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Self

from nbflow.errors import UnknownRunError
from nbflow.store.records import RunRecord, StepExecution

if TYPE_CHECKING:
    from nbflow.values.refs import ValueRef


class TenantScope:
    """A store object's tenant, and the checks built on it."""

    if TYPE_CHECKING:
        _lock: threading.RLock

        def _list_runs(
            self,
            *,
            flow: str | None = None,
            status: str | Collection[str] | None = None,
            thread_id: str | None = None,
            limit: int | None = None,
        ) -> list[RunRecord]: ...

        def executions(self, run_id: str) -> list[StepExecution]: ...  # noqa: D102

    #: The tenant this store object was opened for (see :mod:`nbflow.store.tenants`):
    #: it sees that tenant's runs and those without one, and stamps the runs it creates.
    #: None: the owner's view, which sees everything.
    tenant: str | None = None

    def with_tenant(self, tenant: str | None) -> Self:
        """Another store object over the same data, opened for ``tenant`` (None: the
        owner's view); this one is unchanged. A backend that cannot open one raises
        NotImplementedError."""
        raise NotImplementedError(f"{type(self).__name__} cannot be opened for a tenant")

    def _unknown_run(self, run_id: str) -> UnknownRunError:
        """The error for a run this store object does not find (or may not see)."""
        from nbflow.store.tenants import mismatch

        return mismatch(run_id, self) if self.tenant is not None else UnknownRunError(run_id, self)

    def _seen(self, run: RunRecord) -> RunRecord:
        """``run``, if this store object may see it; else as if there were no such run."""
        from nbflow.store.tenants import mismatch, visible

        if not visible(run.tenant, self.tenant):
            raise mismatch(run.run_id, self)
        return run

    def _stamped(self, run: RunRecord) -> RunRecord:
        """``run`` stamped with this store object's tenant (see :func:`tenants.stamp`)."""
        from nbflow.store.tenants import stamp

        return stamp(run, self.tenant)

    @contextmanager
    def _owner_view(self) -> Iterator[None]:
        """For the block, read as the owner's view (what gc must know of every tenant's
        runs to keep their values); backends whose database enforces tenants override
        the reads that need it instead."""
        with self._lock:
            saved, self.tenant = self.tenant, None
            try:
                yield
            finally:
                self.tenant = saved

    def _may_read_value(self, hash: str) -> bool:
        """Whether this store object's tenant may read the value ``hash``: a run it sees
        uses it, or no run uses it yet (it is being written). Backends answer faster."""
        runs = self._list_runs()
        for run in runs:
            if any(
                x.output is not None and x.output.hash == hash for x in self.executions(run.run_id)
            ):
                return True
        with self._owner_view():
            everyone = [r.run_id for r in self._list_runs()]
            return not any(
                x.output is not None and x.output.hash == hash
                for run_id in everyone
                for x in self.executions(run_id)
            )

    def _check_value_seen(self, ref: ValueRef) -> None:
        """Refuse a value this store object's tenant may not read, as a missing one."""
        if self.tenant is None or ref.is_inline or self._may_read_value(ref.hash):
            return
        from nbflow.errors import StoreError

        raise StoreError(f"blob {ref.hash} is missing from {self}")

"""Retention (``store.gc``) and the integrity check (``store.check``), built on the
backend's primitives (part of :class:`~nbflow.store.base.Store`)."""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any

from nbflow.store.core import StoreCore

if TYPE_CHECKING:
    from nbflow.store.check import Problem
    from nbflow.store.gc import Age, GcReport


class Maintenance(StoreCore):
    """Deleting what a retention policy lets go, and checking (and repairing) the store."""

    def gc(
        self,
        keep_last: int | None = None,
        older_than: Age | None = None,
        flow: str | None = None,
        dry_run: bool = False,
    ) -> GcReport:
        """Delete the runs outside a retention policy and every value no remaining run
        references; give the space back.

        ``keep_last`` keeps the newest N runs of each flow; ``older_than`` ('7d', '12h',
        days, or a timedelta) keeps runs newer than that; a run either rule keeps is
        kept, and pending or running runs always are. ``flow`` limits the policy to one
        flow. Outputs that a kept run reuses from a deleted one stay loadable. While a run
        executes through this store object, no value is removed (it may be about to
        record one). With ``dry_run=True`` nothing changes and the report says what would go.
        """
        from nbflow import arguments
        from nbflow.store.gc import GcReport, runs_to_delete

        arguments.flag(dry_run, "dry_run")
        if not dry_run:
            self._refuse_writes("gc")
        with self._lock:
            tenant = self.tenant
            # A tenant's gc weighs only its own runs (not those without a tenant, which
            # it may read but not change).
            mine = [r for r in self.list_runs(flow=flow) if tenant is None or r.tenant == tenant]
            doomed = runs_to_delete(mine, keep_last=keep_last, older_than=older_than)
            doomed_ids = {r.run_id for r in doomed}
            everything = [r for r in self.list_runs() if tenant is None or r.tenant == tenant]
            total = len(everything)
            if tenant is None:
                referenced = self.referenced_hashes(exclude_runs=doomed_ids)
                blobs = [b for b in self.list_blobs() if b.hash not in referenced]
            else:
                # Only the values its deleted runs used, and of those only the ones no
                # other run (of any tenant) uses: it never removes another's value.
                from nbflow.store.gc import referenced_hashes

                theirs = referenced_hashes(self, sorted(doomed_ids))
                theirs -= self._values_in_use(theirs, doomed_ids)
                blobs = [b for b in self.list_blobs() if b.hash in theirs]
            details: dict[str, Any] = {}
            # A run executing now, here or in another process, may have written (or be
            # about to reuse) a value whose event it has not committed yet: keep every
            # value until it ends. A runner takes the run's lease before it looks up the
            # cache or writes a value (holding the store from lookup to lease), and
            # gives it back in the run's last commit; leases of dead processes expire.
            executing = self._executing | self._leased({r.run_id for r in self.list_runs()})
            if tenant is not None and not executing and self._any_run_executing():
                executing = {"of another tenant"}  # (which, it may not know)
            if executing:
                details["values_kept_for_executing_runs"] = sorted(executing)
                blobs = []
            before = self.storage_bytes()
            if not dry_run and (doomed_ids or blobs):
                self._delete(doomed_ids, [b.hash for b in blobs])
                for run_id in doomed_ids:
                    self._states.pop(run_id, None)
                skipped = self.compact()
                if skipped:
                    details["compaction_skipped"] = skipped
            after = self.storage_bytes() if not dry_run else before
            return GcReport(
                runs=tuple(sorted(doomed_ids)),
                blobs=tuple(sorted(b.hash for b in blobs)),
                bytes_freed=sum(b.size for b in blobs),
                dry_run=dry_run,
                file_bytes_before=before,
                file_bytes_after=after,
                kept_runs=total - len(doomed_ids),
                details=details,
            )

    def _leased(self, run_ids: Collection[str]) -> set[str]:
        """The runs of ``run_ids`` whose lease is alive (their runner is at work)."""
        from nbflow.store.leases import lease_alive

        return {
            run_id for run_id, lease in self._read_leases(run_ids).items() if lease_alive(lease)
        }

    def _values_in_use(self, hashes: Collection[str], exclude_runs: Collection[str]) -> set[str]:
        """Of ``hashes``, those a run other than ``exclude_runs`` uses, whoever's it is."""
        if not hashes:
            return set()
        with self._owner_view():
            return set(hashes) & self.referenced_hashes(exclude_runs=exclude_runs)

    def _any_run_executing(self) -> bool:
        """Whether a run of any tenant holds a live lease (its runner is at work)."""
        with self._owner_view():
            return bool(self._leased({r.run_id for r in self._list_runs()}))

    def referenced_hashes(self, exclude_runs: Collection[str] = ()) -> set[str]:
        """The value hashes referenced by every run except ``exclude_runs``."""
        from nbflow.store.gc import referenced_hashes

        excluded = set(exclude_runs)
        return referenced_hashes(
            self, [r.run_id for r in self.list_runs() if r.run_id not in excluded]
        )

    def check(self, repair: bool = False, verify_values: bool = True) -> list[Problem]:
        """The integrity problems of the store, one :class:`~nbflow.store.check.Problem`
        each; an empty list when it is sound.

        Checks that each run's events are gap-free, that its ``runs`` and
        ``step_executions`` rows are what its events fold to, and that every value an
        event refers to is stored with the right size and (``verify_values``) content
        hash. ``repair=True`` rebuilds damaged rows from the events (never changing an
        event) and returns the problems marked repaired; lost values cannot be repaired.
        A run left running by a process that died is not a problem.
        """
        from nbflow import arguments
        from nbflow.store.check import check_store

        arguments.flag(repair, "repair")
        arguments.flag(verify_values, "verify_values")
        if repair:
            self._refuse_writes("check --repair")
        return check_store(self, repair=repair, verify_values=verify_values)

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
            doomed = runs_to_delete(
                self.list_runs(flow=flow), keep_last=keep_last, older_than=older_than
            )
            doomed_ids = {r.run_id for r in doomed}
            everything = self.list_runs()
            total = len(everything)
            referenced = self.referenced_hashes(exclude_runs=doomed_ids)
            blobs = [b for b in self.list_blobs() if b.hash not in referenced]
            details: dict[str, Any] = {}
            # A run executing now, here or in another process, may have written (or be
            # about to reuse) a value whose event it has not committed yet: keep every
            # value until it ends. A runner takes the run's lease before it looks up the
            # cache or writes a value (holding the store from lookup to lease), and
            # gives it back in the run's last commit; leases of dead processes expire.
            executing = self._executing | self._leased({r.run_id for r in everything})
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

"""Leases: which process is executing a run, so that a run whose process died reads as
``interrupted`` and two processes never advance one run (part of
:class:`~nbflow.store.base.Store`)."""

from __future__ import annotations

from collections.abc import Sequence

from nbflow.errors import InvalidTransitionError, StaleVersionError, StoreError
from nbflow.store.core import StoreCore
from nbflow.store.records import EventType, Lease, NewEvent, RunRecord, RunStatus


class Leasing(StoreCore):
    """Claiming, renewing and releasing run leases, and reaping the runs of dead processes."""

    @property
    def lease_token(self) -> str:
        """The token naming this store object as the holder of the leases it claims."""
        return self._token

    def claim(self, run_id: str, ttl: float | None = None) -> Lease:
        """Take the lease of ``run_id`` for this process before advancing the run.

        Raises RunLockedError naming the holder when another live process has it. A lease
        held by a dead process (or expired, from another host) is taken over.
        """
        from nbflow import arguments
        from nbflow.errors import RunLockedError
        from nbflow.store.leases import lease_alive, lease_ttl, make_lease

        arguments.run_id(run_id)
        ttl = lease_ttl() if ttl is None else arguments.seconds(ttl, "ttl", positive=True)
        self._refuse_writes("running a run")
        known = self._states.get(run_id)
        # A run this object created and has not written to yet exists and most likely
        # has no lease: try the compare-and-swap from "no lease" straight away (if someone
        # claimed it meanwhile, the swap fails and the loop reads who).
        fresh = known is not None and known.run.version == 0
        if not fresh:
            self._get_run(run_id)  # UnknownRunError first
        for attempt in range(10):
            if fresh and attempt == 0:
                current = None
            else:
                current = self._read_leases([run_id]).get(run_id)
            if current is not None and current.token != self._token and lease_alive(current):
                raise RunLockedError(run_id, current.owner, current.expires_at.isoformat())
            lease = make_lease(run_id, self._token, ttl)
            if self._swap_lease(run_id, current.token if current else None, lease):
                self._leases[run_id] = ttl
                # The run is in the store, running, from now on: a gc that ran before
                # may have deleted values this object remembers as stored.
                self._forget_stored_values()
                return lease
        raise RunLockedError(run_id, "another process", "unknown")  # pragma: no cover

    def abandon(self, run_id: str) -> None:
        """Stop executing ``run_id`` without having recorded its end (the write that
        would have recorded it failed: a full disk, say). Its lease is left in the store,
        so the run reads as ``interrupted`` (resumable) from the next read on: here at
        once, elsewhere once this process is gone."""
        from nbflow import arguments

        arguments.run_id(run_id)
        self._executing.discard(run_id)
        self._leases.pop(run_id, None)

    def _forget_stored_values(self) -> None:  # for backends that remember
        """Forget what this object remembers of which values are stored."""

    def renew(self, run_id: str) -> bool:
        """Extend this object's lease on ``run_id``; False if it no longer holds it."""
        from nbflow import arguments

        arguments.run_id(run_id)
        from nbflow.store.leases import make_lease

        ttl = self._leases.get(run_id)
        if ttl is None:
            return False
        current = self._read_leases([run_id]).get(run_id)
        if current is None or current.token != self._token:
            self._leases.pop(run_id, None)
            return False
        renewed = make_lease(run_id, self._token, ttl, acquired_at=current.acquired_at)
        return self._swap_lease(run_id, self._token, renewed)

    def release(self, run_id: str) -> None:
        """Give up this object's lease on ``run_id`` (nothing happens if it has none)."""
        from nbflow import arguments

        arguments.run_id(run_id)
        if self._leases.pop(run_id, None) is not None:
            self._swap_lease(run_id, self._token, None)

    def lease(self, run_id: str) -> Lease | None:
        """The lease held on ``run_id``, if any."""
        from nbflow import arguments

        arguments.run_id(run_id)
        return self._read_leases([run_id]).get(run_id)

    def reap_interrupted(self, runs: Sequence[RunRecord] | None = None) -> list[RunRecord]:
        """Record as ``interrupted`` each running run whose holder is gone; return them.

        ``runs`` limits the check to these records (default: every running run). A run
        this store object is executing, and a running run with no lease at all (written
        by hand, or by a version of nbflow without leases), are left alone.
        """
        from nbflow.store.leases import lease_alive

        if self.read_only:
            return []  # (a run whose process died shows as running until someone can write)
        if runs is None:
            runs = self._list_runs(status=RunStatus.RUNNING.value)
        candidates = [
            r for r in runs if r.status is RunStatus.RUNNING and r.run_id not in self._executing
        ]
        if not candidates:
            return []
        leases = self._read_leases([r.run_id for r in candidates])
        reaped: list[RunRecord] = []
        for record in candidates:
            lease = leases.get(record.run_id)
            if lease is None:
                continue
            # Our own lease on a run we no longer execute: we know its runner is gone
            # (see abandon). Another holder's: gone when its process is.
            if lease.token != self._token and lease_alive(lease):
                continue
            event = NewEvent(
                EventType.RUN_INTERRUPTED,
                payload={
                    "error": f"the process running it ({lease.owner}) is gone",
                    "owner": {"pid": lease.pid, "host": lease.host},
                },
            )
            try:
                reaped.append(self.append(record.run_id, record.version, [event]))
            except (StaleVersionError, InvalidTransitionError):
                # Someone else moved it on (or reaped it) first: read what it is now.
                reaped.append(self._get_run(record.run_id))
            except StoreError:
                continue  # cannot be written now (a full disk): a later read records it
            self._swap_lease(record.run_id, lease.token, None)
        return reaped

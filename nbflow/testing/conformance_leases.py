"""The lease part of the store contract: who advances a running run, and what readers
see when that process is gone (mixed into :class:`~nbflow.testing.StoreConformance`)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import subprocess
import sys

import pytest

from nbflow.errors import RunLockedError, UnknownRunError
from nbflow.store.base import Store
from nbflow.store.leases import host_name, make_lease, new_token
from nbflow.store.records import EventType, Lease, NewEvent, RunStatus, StepStatus, utcnow
from nbflow.testing.builders import make_run, start_run


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def foreign_lease(run_id: str, **fields: object) -> Lease:
    """A lease on ``run_id`` held by another store object (a fresh token) of this process,
    with ``fields`` replaced (e.g. ``pid=dead_pid()`` or ``host="elsewhere"``)."""
    lease = make_lease(run_id, new_token(), ttl=30.0)
    return dataclasses.replace(lease, **fields)  # type: ignore[arg-type]


def running_elsewhere(store: Store, **lease_fields: object) -> str:
    """A run left ``running`` by another holder (its lease has ``lease_fields``); the store
    object itself does not count it as one of the runs it executes."""
    run = start_run(store)
    store._executing.discard(run.run_id)  # as if another process had started it
    assert store._swap_lease(run.run_id, None, foreign_lease(run.run_id, **lease_fields))
    return run.run_id


class LeaseConformance:
    """Leases: claim, renew, release; dead holders' runs read as interrupted."""

    def test_claim_renew_release(self, store: Store) -> None:
        """A claimed lease is this store's until released; renewing keeps it."""
        run = make_run()
        store.create_run(run)
        lease = store.claim(run.run_id, ttl=5)
        assert lease.token == store.lease_token
        assert store.lease(run.run_id) == lease
        assert lease.expires_at - lease.acquired_at == dt.timedelta(seconds=5)
        assert store.renew(run.run_id)
        renewed = store.lease(run.run_id)
        assert renewed is not None and renewed.expires_at >= lease.expires_at
        assert renewed.acquired_at == lease.acquired_at
        store.release(run.run_id)
        assert store.lease(run.run_id) is None
        assert not store.renew(run.run_id)

    def test_claiming_twice_from_one_store_is_fine(self, store: Store) -> None:
        """The holder may claim again (a resume in the same session)."""
        run = make_run()
        store.create_run(run)
        store.claim(run.run_id)
        assert store.claim(run.run_id).token == store.lease_token

    def test_claim_of_an_unknown_run_is_refused(self, store: Store) -> None:
        """No lease for a run that does not exist."""
        with pytest.raises(UnknownRunError):
            store.claim("no-such-run")

    def test_a_live_holder_keeps_its_lease(self, store: Store) -> None:
        """Another live holder (this very process, other token) makes claim fail,
        naming the holder; its lease is unchanged."""
        run = make_run()
        store.create_run(run)
        theirs = foreign_lease(run.run_id)
        assert store._swap_lease(run.run_id, None, theirs)
        with pytest.raises(RunLockedError) as info:
            store.claim(run.run_id)
        assert f"pid {theirs.pid} on {host_name()}" in str(info.value)
        assert run.run_id in str(info.value)
        assert store.lease(run.run_id) == theirs

    def test_a_dead_holders_lease_is_taken_over(self, store: Store) -> None:
        """A lease whose process is gone is claimed by the next one."""
        run = make_run()
        store.create_run(run)
        assert store._swap_lease(run.run_id, None, foreign_lease(run.run_id, pid=dead_pid()))
        assert store.claim(run.run_id).token == store.lease_token

    def test_an_expired_lease_from_another_host_is_taken_over(self, store: Store) -> None:
        """Across hosts only the expiry tells: expired means gone."""
        run = make_run()
        store.create_run(run)
        stale = foreign_lease(
            run.run_id, host="another-host", expires_at=utcnow() - dt.timedelta(seconds=1)
        )
        assert store._swap_lease(run.run_id, None, stale)
        assert store.claim(run.run_id).token == store.lease_token

    def test_a_fresh_lease_from_another_host_is_respected(self, store: Store) -> None:
        """An unexpired lease of another host is alive, whatever its pid says here."""
        run = make_run()
        store.create_run(run)
        assert store._swap_lease(
            run.run_id, None, foreign_lease(run.run_id, host="another-host", pid=dead_pid())
        )
        with pytest.raises(RunLockedError, match="another-host"):
            store.claim(run.run_id)

    def test_swap_is_compare_and_swap(self, store: Store) -> None:
        """A swap from the wrong expected token changes nothing."""
        run = make_run()
        store.create_run(run)
        first = foreign_lease(run.run_id)
        assert not store._swap_lease(run.run_id, "not-there", first)
        assert store.lease(run.run_id) is None
        assert store._swap_lease(run.run_id, None, first)
        assert not store._swap_lease(run.run_id, None, foreign_lease(run.run_id))
        assert not store._swap_lease(run.run_id, "wrong", None)
        assert store.lease(run.run_id) == first
        assert store._swap_lease(run.run_id, first.token, None)
        assert store.lease(run.run_id) is None

    def test_a_run_whose_holder_died_reads_as_interrupted(self, store: Store) -> None:
        """get_run, list_runs and the runs frame all show it interrupted, once, with an
        event naming the lost process; its lease is gone."""
        pid = dead_pid()
        run_id = running_elsewhere(store, pid=pid)
        record = store.get_run(run_id)
        assert record.status is RunStatus.INTERRUPTED
        assert f"pid {pid}" in (record.error or "")
        last = store.read_events(run_id)[-1]
        assert last.type is EventType.RUN_INTERRUPTED
        assert last.payload["owner"] == {"pid": pid, "host": host_name()}
        assert store.lease(run_id) is None
        # Reading again records nothing more.
        assert store.get_run(run_id).version == record.version
        assert [r.status for r in store.list_runs()] == [RunStatus.INTERRUPTED]

    def test_list_runs_and_frames_reap_too(self, store: Store) -> None:
        """The first reader may be a list or a frame, filtered or not."""
        gone = running_elsewhere(store, pid=dead_pid())
        assert store.list_runs(status="running") == []
        assert [r.run_id for r in store.list_runs(status="interrupted")] == [gone]
        other = running_elsewhere(store, pid=dead_pid())
        frame = store.runs_frame()
        assert set(frame["status"]) == {"interrupted"}
        assert other in set(frame["run_id"])

    def test_live_and_unleased_running_runs_stay_running(self, store: Store) -> None:
        """A live holder's run, one without any lease, and one this store executes are
        all left running."""
        live = running_elsewhere(store)
        unleased = start_run(store).run_id
        store._executing.discard(unleased)
        mine = start_run(store).run_id
        assert {r.run_id for r in store.list_runs(status="running")} == {live, unleased, mine}
        assert store.get_run(live).status is RunStatus.RUNNING

    def test_an_interrupted_run_can_be_claimed_and_resumed(self, store: Store) -> None:
        """Once reaped, a run is resumable: claim, then run_started moves it on."""
        run_id = running_elsewhere(store, pid=dead_pid())
        record = store.get_run(run_id)
        store.claim(run_id)
        resumed = store.append(run_id, record.version, [NewEvent(EventType.RUN_STARTED)])
        assert resumed.status is RunStatus.RUNNING
        assert store.get_run(run_id).status is RunStatus.RUNNING  # our lease: alive

    def test_gc_removes_the_leases_of_deleted_runs(self, store: Store) -> None:
        """A deleted run leaves no lease behind."""
        run = make_run()
        store.create_run(run)
        store.claim(run.run_id)
        report = store.gc(keep_last=0)
        assert run.run_id not in report.runs  # pending runs are kept
        store.append(run.run_id, 0, [NewEvent(EventType.RUN_STARTED)])
        store.append(run.run_id, 1, [NewEvent(EventType.RUN_COMPLETED)])
        assert store.gc(keep_last=0).runs == (run.run_id,)
        assert store.lease(run.run_id) is None

    def test_a_run_that_ends_closes_its_running_steps(self, store: Store) -> None:
        """A step still running when its run is interrupted is recorded as failed (its
        process never reported back), so a resume can schedule and retry it."""
        run_id = running_elsewhere(store, pid=dead_pid())
        version = store._get_run(run_id).version
        store._executing.add(run_id)  # as the dead runner would have
        version = store.append(
            run_id,
            version,
            [
                NewEvent(EventType.STEP_SCHEDULED, "load"),
                NewEvent(EventType.STEP_STARTED, "load", 1),
            ],
        ).version
        store._executing.discard(run_id)
        record = store.get_run(run_id)
        assert record.status is RunStatus.INTERRUPTED
        (row,) = [x for x in store.executions(run_id) if x.step == "load"]
        assert row.status is StepStatus.FAILED
        assert row.attempt == 1
        assert "while this step was running" in (row.error or "")
        assert row.finished_at is not None and row.seq == record.version
        resumed = store.append(
            run_id,
            record.version,
            [
                NewEvent(EventType.RUN_STARTED),
                NewEvent(EventType.STEP_SCHEDULED, "load"),
                NewEvent(EventType.STEP_STARTED, "load", 2),
            ],
        )
        assert resumed.status is RunStatus.RUNNING

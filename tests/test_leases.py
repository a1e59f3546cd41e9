"""The lease heartbeat and its settings (the lease contract itself is in
nbflow.testing.conformance_leases, run on every backend)."""

from __future__ import annotations

import threading

import pytest
from waiting import wait_for

from nbflow.errors import ParameterError
from nbflow.store.base import Store
from nbflow.store.leases import Heartbeat, lease_ttl
from nbflow.store.records import Lease
from nbflow.testing import make_run


def test_the_heartbeat_keeps_extending_the_lease(store: Store) -> None:
    run = make_run()
    store.create_run(run)
    first = store.claim(run.run_id, ttl=0.3)
    beat = Heartbeat(lambda: store.renew(run.run_id), 0.3, run.run_id).start()

    def renewed() -> Lease | None:
        lease = store.lease(run.run_id)
        return lease if lease is not None and lease.expires_at > first.expires_at else None

    try:
        assert wait_for(renewed, "the lease renewed").acquired_at == first.acquired_at
    finally:
        beat.stop()


def test_the_heartbeat_stops_once_the_lease_is_gone(store: Store) -> None:
    run = make_run()
    store.create_run(run)
    store.claim(run.run_id, ttl=0.15)
    store.release(run.run_id)
    calls: list[bool] = []

    def renew() -> bool:
        calls.append(store.renew(run.run_id))
        return calls[-1]

    beat = Heartbeat(renew, 0.15, run.run_id).start()
    try:
        # The heartbeat's thread ends by itself, after one failed renewal.
        wait_for(
            lambda: not any(t.name == f"nbflow-lease-{run.run_id}" for t in threading.enumerate()),
            "the heartbeat's thread ending",
        )
    finally:
        beat.stop()
    assert calls == [False]


@pytest.mark.parametrize("raw", ["soon", "0", "-3"])
def test_a_bad_lease_ttl_is_named(raw: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBFLOW_LEASE_TTL", raw)
    with pytest.raises(ParameterError, match="NBFLOW_LEASE_TTL"):
        lease_ttl()


def test_the_lease_ttl_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NBFLOW_LEASE_TTL", "12.5")
    assert lease_ttl() == 12.5
    monkeypatch.delenv("NBFLOW_LEASE_TTL")
    assert lease_ttl() == 30.0

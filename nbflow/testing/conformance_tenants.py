"""The store contract for tenants (see :mod:`nbflow.store.tenants`): a store object opened
for a tenant (``store.with_tenant(name)``) stamps its runs, sees its own runs and those
without a tenant, changes only its own, reports any other run exactly as an unknown one,
never takes another tenant's outputs as cache hits nor loads its values, and its gc
never removes what another tenant uses. The owner's view (no tenant) sees everything."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from nbflow.errors import (
    InvalidTenantError,
    StoreError,
    TenantMismatchError,
    TenantReadOnlyError,
    UnknownRunError,
)
from nbflow.store.base import Store
from nbflow.store.records import EventType, NewEvent, ValueRef
from nbflow.testing.builders import Clock, make_flow, make_run, start_run, typical_events


@contextmanager
def tenants(store: Store, *names: str) -> Iterator[list[Store]]:
    """Store objects over ``store``'s data, one per tenant name, closed afterwards."""
    opened = [store.with_tenant(name) for name in names]
    try:
        yield opened
    finally:
        for other in opened:
            if other is not store:
                other.close()


def _blob(store: Store, content: bytes) -> ValueRef:
    from nbflow.values import encode

    encoded = encode(content, step="s")
    assert not encoded.ref.is_inline
    return store.put_value(encoded)


def _run_with_output(store: Store, run_id: str, ref: ValueRef, *, step: str = "load") -> None:
    """A completed run of ``store``'s tenant whose ``step`` output is ``ref``."""
    clock = Clock()
    store.create_run(make_run(run_id, steps=(step,)))
    events = [
        NewEvent(EventType.RUN_STARTED, ts=clock()),
        NewEvent(EventType.STEP_SCHEDULED, step, ts=clock()),
        NewEvent(EventType.STEP_STARTED, step, 1, {"cache_key": f"ck-{run_id}"}, clock()),
        NewEvent(EventType.STEP_OUTPUT_RECORDED, step, 1, {"output": ref.to_json()}, clock()),
        NewEvent(EventType.STEP_COMPLETED, step, 1, {}, clock()),
        NewEvent(EventType.RUN_COMPLETED, ts=clock()),
    ]
    store.append(run_id, 0, events)


class TenantConformance:
    """Tenants on one store: what each sees, changes, reuses, loads and deletes."""

    def test_a_tenant_sees_its_runs_and_those_without_a_tenant(self, store: Store) -> None:
        """Runs are stamped with the tenant that created them; each tenant lists its own
        and the legacy ones; the owner's view lists them all, with their tenant."""
        store.put_flow(make_flow())
        start_run(store, make_run("legacy"))
        with tenants(store, "team-a", "team-b") as (a, b):
            assert a.tenant == "team-a" and b.tenant == "team-b"
            start_run(a, make_run("ra"))
            start_run(b, make_run("rb"))
            assert a.get_run("ra").tenant == "team-a"
            assert {r.run_id for r in a.list_runs()} == {"ra", "legacy"}
            assert {r.run_id for r in b.list_runs()} == {"rb", "legacy"}
            assert a.get_run("legacy").tenant is None
            frame = a.runs_frame()
            assert set(frame["run_id"]) == {"ra", "legacy"}
            assert dict(zip(frame["run_id"], frame["tenant"], strict=True))["ra"] == "team-a"
        owner = {r.run_id: r.tenant for r in store.list_runs()}
        assert owner == {"legacy": None, "ra": "team-a", "rb": "team-b"}

    def test_another_tenants_run_is_reported_as_an_unknown_one(self, store: Store) -> None:
        """Reading another tenant's run (its row, events, executions, a past version)
        raises TenantMismatchError, an UnknownRunError whose message is word for word
        that of a run id that does not exist: nothing tells that the run exists."""
        with tenants(store, "team-a", "team-b") as (a, b):
            start_run(b, make_run("rb"))
            reads = (a.get_run, a.read_events, a.executions, a.state_at, a.load_state)
            for read in (*reads, a.events_frame, a.steps_frame):
                with pytest.raises(TenantMismatchError) as theirs:
                    read("rb")
                with pytest.raises(TenantMismatchError) as nobodys:
                    read("no-such-run")
                assert isinstance(theirs.value, UnknownRunError)
                assert str(theirs.value) == str(UnknownRunError("rb", a))
                assert str(nobodys.value) == str(theirs.value).replace("rb", "no-such-run")
            assert {e.run_id for e in a.read_events()} == set()
            assert set(a.events_frame()["run_id"]) == set()
            assert {e.run_id for e in b.read_events()} == {"rb"}

    def test_a_tenant_changes_only_its_own_runs(self, store: Store) -> None:
        """Appending to another tenant's run is refused as to an unknown run, to a run
        without a tenant with TenantReadOnlyError; creating a run stamped with another
        tenant with InvalidTenantError; none of them writes anything."""
        start_run(store, make_run("legacy"))
        with tenants(store, "team-a", "team-b") as (a, b):
            start_run(b, make_run("rb"))
            end = [NewEvent(EventType.RUN_COMPLETED)]
            with pytest.raises(TenantMismatchError):
                a.append("rb", 1, end)
            with pytest.raises(TenantReadOnlyError, match="no tenant"):
                a.append("legacy", 1, end)
            with pytest.raises(InvalidTenantError, match="team-b"):
                a.create_run(make_run("forged", tenant="team-b"))
            with pytest.raises(InvalidTenantError, match="team-b"):
                a.record_run(make_run("forged2", tenant="team-b"), typical_events(("load",)))
            mine = start_run(a)
            assert a.append(mine.run_id, 1, end).status.value == "completed"
        assert store.get_run("rb").version == 1 and store.get_run("legacy").version == 1
        assert {r.run_id for r in store.list_runs()} >= {"rb", "legacy"}
        assert "forged" not in {r.run_id for r in store.list_runs()}

    def test_no_cache_hit_crosses_tenants(self, store: Store) -> None:
        """A tenant's completed steps are cache hits for that tenant only; steps of runs
        without a tenant are hits for everyone; the owner's view reuses only those."""
        with tenants(store, "team-a", "team-b") as (a, b):
            b.create_run(make_run("rb"))
            b.append("rb", 0, typical_events(("load",)))
            assert b.cache_candidates("flow", ["load-fp"]).keys() == {"ck-load"}
            for other in (a, store):
                assert other.cache_candidates("flow", ["load-fp"]) == {}
                assert dict(other.cache_hits("flow", ["load-fp"])) == {}
            store.create_run(make_run("legacy"))
            store.append("legacy", 0, typical_events(("clean",)))
            for anyone in (a, b, store):
                assert anyone.cache_candidates("flow", ["clean-fp"]).keys() == {"ck-clean"}
                assert anyone.cache_hits("flow", ["clean-fp"])["ck-clean"].run_id == "legacy"

    def test_a_tenant_loads_only_values_its_runs_use(self, store: Store) -> None:
        """Another tenant's value is refused as if it were missing (StoreError); a value
        both tenants produced is stored once and loads for both; the owner loads any."""
        with tenants(store, "team-a", "team-b") as (a, b):
            theirs = _blob(b, b"team b's secret " * 400)
            _run_with_output(b, "rb", theirs)
            with pytest.raises(StoreError, match="missing"):
                a.load_value(theirs)
            with pytest.raises(StoreError, match="missing"):
                a.read_encoded(theirs)
            assert store.load_value(theirs) == b"team b's secret " * 400
            shared = _blob(b, b"the same bytes " * 400)
            _run_with_output(b, "rb2", shared)
            assert _blob(a, b"the same bytes " * 400).hash == shared.hash
            _run_with_output(a, "ra", shared)
            assert a.load_value(shared) == b.load_value(shared) == b"the same bytes " * 400
            assert len([x for x in store.list_blobs() if x.hash == shared.hash]) == 1

    def test_a_tenants_gc_never_removes_another_tenants_runs_or_values(self, store: Store) -> None:
        """gc for a tenant deletes only its runs outside the policy, and of their values
        only those no other run (of any tenant) uses; runs without a tenant stay."""
        start_run(store, make_run("legacy"))
        with tenants(store, "team-a", "team-b") as (a, b):
            shared = _blob(a, b"both made this " * 400)
            only_a = _blob(a, b"only a made this " * 400)
            only_b = _blob(b, b"only b made this " * 400)
            _run_with_output(a, "ra-shared", shared)
            _run_with_output(a, "ra-own", only_a)
            _run_with_output(b, "rb-shared", shared)
            _run_with_output(b, "rb-own", only_b)
            report = a.gc(keep_last=0)
            assert set(report.runs) == {"ra-shared", "ra-own"}
            assert set(report.blobs) == {only_a.hash}
            assert {r.run_id for r in store.list_runs()} == {"legacy", "rb-shared", "rb-own"}
            assert b.load_value(shared) == b"both made this " * 400
            assert b.load_value(only_b) == b"only b made this " * 400
            assert not store.has_blob(only_a.hash)
            assert b.gc(keep_last=0).blobs == tuple(sorted([shared.hash, only_b.hash]))
        assert {r.run_id for r in store.list_runs()} == {"legacy"}

    @pytest.mark.parametrize(
        "bad", ["", "   ", "a\nb", "tab\there", "nul\x00", "x" * 129, " padded", 7, b"team"]
    )
    def test_a_bad_tenant_name_is_refused(self, store: Store, bad: object) -> None:
        """Empty, blank, too long, with control characters or padding, or not text:
        InvalidTenantError, and no store object is made."""
        with pytest.raises(InvalidTenantError):
            store.with_tenant(bad)  # type: ignore[arg-type]

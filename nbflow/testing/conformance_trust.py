"""The store contract: runs marked untrusted are kept, cleared, deleted with their run,
and their executions are never cache hits (see :mod:`nbflow.store.untrusted`)."""

from __future__ import annotations

from nbflow.store.base import Store
from nbflow.store.records import EventType, NewEvent
from nbflow.store.untrusted import UntrustedRun
from nbflow.testing.builders import (
    T0,
    attempt_events,
    cached_event,
    make_flow,
    make_run,
    start_run,
    typical_events,
)


def mark(
    run_id: str, source: str = "imported from /exports/theirs", **fields: object
) -> UntrustedRun:
    """A mark for ``run_id`` (at a fixed time, so marks compare equal)."""
    return UntrustedRun(run_id, source, T0, **fields)  # type: ignore[arg-type]


class TrustConformance:
    """Run marks, and the cache lookups that honour them."""

    def test_executions_of_an_untrusted_run_are_no_cache_hits(self, store: Store) -> None:
        """A run marked untrusted offers no cache hit for any key, completed or cached
        rows alike, until its mark is cleared; other runs' rows for the same keys do."""
        store.mark_untrusted([mark("theirs")])  # marked before it exists, as imports do
        store.create_run(make_run("theirs"))
        store.append("theirs", 0, typical_events(("load",)))
        theirs = start_run(store, make_run("theirs-cached"))
        store.mark_untrusted([mark("theirs-cached")])
        store.append(theirs.run_id, 1, [cached_event("clean", source_run_id="someone")])
        for lookup in (store.cache_candidates, store.cache_hits):
            assert lookup("flow", ["load-fp", "clean-fp"]) == {}
        mine = start_run(store, make_run("mine"))
        store.append(mine.run_id, 1, attempt_events("load", output=7))
        (row,) = store.cache_candidates("flow", ["load-fp", "clean-fp"]).values()
        assert (row.run_id, row.cache_key) == ("mine", "ck-load")
        (hit,) = store.cache_hits("flow", ["load-fp", "clean-fp"]).values()
        assert (hit.run_id, hit.output.inline) == ("mine", 7)
        assert store.clear_untrusted(["theirs", "theirs-cached"]) == ["theirs", "theirs-cached"]
        hits = store.cache_hits("flow", ["load-fp", "clean-fp"])
        assert set(hits) == {"ck-load", "ck-clean"}
        assert hits["ck-clean"].run_id == "theirs-cached"
        assert hits["ck-load"].run_id in {"theirs", "mine"}

    def test_marks_are_kept_and_cleared(self, store: Store) -> None:
        """untrusted_runs reads the marks back (all, or of given runs); a run marked
        already keeps its first mark; clear_untrusted says which runs had one."""
        assert store.untrusted_runs() == {}
        first = mark("r1")
        fork = mark("r2", "fork of run r1", derived_from="r1")
        store.mark_untrusted([first, fork])
        store.mark_untrusted([mark("r1", "imported again"), mark("r3", "copied from x")])
        assert store.untrusted_runs() == {
            "r1": first,
            "r2": fork,
            "r3": mark("r3", "copied from x"),
        }
        assert store.untrusted_runs(["r2", "nope"]) == {"r2": fork}
        assert store.untrusted_runs([]) == {}
        assert store.clear_untrusted(["r3", "r1", "nope"]) == ["r1", "r3"]
        assert store.clear_untrusted(["r1"]) == []
        assert store.clear_untrusted([]) == []
        assert store.untrusted_runs() == {"r2": fork}
        assert list(store.sql("SELECT run_id FROM untrusted_runs")["run_id"]) == ["r2"]

    def test_a_deleted_run_takes_its_mark_along(self, store: Store) -> None:
        """gc deletes the marks of the runs it deletes, and only those."""
        for run_id in ("old", "new"):
            store.create_run(make_run(run_id))
            store.append(run_id, 0, typical_events(("load",)))
        store.mark_untrusted([mark("old"), mark("new")])
        assert store.gc(keep_last=1).runs == ("old",)
        assert set(store.untrusted_runs()) == {"new"}

    def test_marks_leave_the_check_clean(self, store: Store) -> None:
        """A marked run, and a mark whose run is not (or no longer) there, are no
        integrity problems."""
        store.put_flow(make_flow())
        store.mark_untrusted([mark("theirs"), mark("never-written")])
        store.create_run(make_run("theirs"))
        store.append("theirs", 0, [NewEvent(EventType.RUN_STARTED), *attempt_events("load")])
        assert store.check() == []

"""Conformance: the files an execution declared or read are kept with it and offered by
``cache_hits`` (see :class:`nbflow.store.records.FilesRead`)."""

from __future__ import annotations

import dataclasses

from nbflow.store.base import Store
from nbflow.store.records import EventType, FilesRead, NewEvent, StepStatus
from nbflow.testing.builders import attempt_events, cached_event, make_flow, make_run

__all__ = ["FilesConformance"]

READ = {"/data/raw.csv": "hash-raw", "/data/gone.csv": None}
DECLARED = {"data/*.parquet": None}


def _with_files(step: str, files: FilesRead, key: str) -> list[NewEvent]:
    """One attempt of ``step`` whose output event records ``files`` under ``key``."""
    events = attempt_events(step)
    out = next(i for i, e in enumerate(events) if e.type is EventType.STEP_OUTPUT_RECORDED)
    payload = {**events[out].payload, "files": files.to_json(), "cache_key": key}
    events[out] = dataclasses.replace(events[out], payload=payload)
    return events


class FilesConformance:
    """Every backend keeps an execution's files and offers them with its cache hit."""

    def test_an_execution_keeps_the_files_it_read(self, store: Store) -> None:
        """The files of step_output_recorded are the row's, under the key it names."""
        files = FilesRead("ck-load", READ, DECLARED)
        store.put_flow(make_flow())
        store.create_run(make_run("r"))
        store.append("r", 0, [NewEvent(EventType.RUN_STARTED), *_with_files("load", files, "k2")])
        (row,) = store.executions("r")
        assert row.status is StepStatus.COMPLETED
        assert (row.cache_key, row.files) == ("k2", files)
        assert store.check() == []

    def test_cache_hits_say_which_files_each_key_read(self, store: Store) -> None:
        """A hit carries its files; ``reads(key)`` lists the files read under that key."""
        files = FilesRead("ck-load", READ, DECLARED)
        store.create_run(make_run("r"))
        store.append("r", 0, [NewEvent(EventType.RUN_STARTED), *_with_files("load", files, "k2")])
        hits = store.cache_hits("flow", ["load-fp"])
        assert set(hits) == {"k2"} and hits["k2"].files == files
        assert list(hits.reads("ck-load")) == [tuple(sorted(READ))]
        assert list(hits.reads("k2")) == [] and list(hits.reads("no-such-key")) == []

    def test_a_cached_row_keeps_the_files_of_the_execution_it_reuses(self, store: Store) -> None:
        """step_cached carries the files too: the cached row offers them in turn."""
        files = FilesRead("ck-load", {"/data/raw.csv": "hash-raw"})
        cached = cached_event("load", cache_key="k2")
        cached = dataclasses.replace(cached, payload={**cached.payload, "files": files.to_json()})
        store.create_run(make_run("r"))
        store.append("r", 0, [NewEvent(EventType.RUN_STARTED), cached])
        (row,) = store.executions("r")
        assert (row.status, row.files) == (StepStatus.CACHED, files)
        assert list(store.cache_hits("flow", ["load-fp"]).reads("ck-load")) == [("/data/raw.csv",)]

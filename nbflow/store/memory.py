"""The in-memory store: the reference backend, for tests and throwaway work."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from nbflow.errors import DuplicateRunError, StaleVersionError, UnknownRunError
from nbflow.store.base import Store, status_set
from nbflow.store.fold import RunState
from nbflow.store.records import (
    BlobRecord,
    Event,
    FlowRecord,
    RunRecord,
    StepExecution,
    ValueRef,
    utcnow,
)

if TYPE_CHECKING:
    import pandas as pd

    from nbflow.values import EncodedValue


class MemoryStore(Store):
    """Keeps everything in Python objects; gone when the process ends.

    It follows the same contract as the DuckDB store (the conformance suite runs on
    both), so tests of the engine can use it without touching disk.
    """

    def __init__(self, *, trust: bool = True) -> None:
        super().__init__()
        self.uri = ":memory:"
        self.trust = trust
        self._flows: dict[tuple[str, str], FlowRecord] = {}
        self._runs: dict[str, RunRecord] = {}
        self._events: dict[str, list[Event]] = {}
        self._executions: dict[str, dict[tuple[str, int], StepExecution]] = {}
        # hash -> (record, table, data, meta)
        self._blobs: dict[str, tuple[BlobRecord, Any, bytes | None, dict[str, Any]]] = {}

    # -- flows --------------------------------------------------------------------------

    def put_flow(self, flow: FlowRecord) -> None:
        """Record a flow definition unless it is already stored."""
        with self._lock:
            self._flows.setdefault((flow.name, flow.fingerprint), flow)

    def get_flow(self, name: str, fingerprint: str) -> FlowRecord | None:
        """The stored definition, or None."""
        return self._flows.get((name, fingerprint))

    # -- runs ---------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        """Add a new run (pending, version 0)."""
        from nbflow.store.fold import initial_state

        with self._lock:
            if run.run_id in self._runs:
                raise DuplicateRunError(run.run_id)
            state = initial_state(run)
            self._runs[run.run_id] = state.run
            self._events[run.run_id] = []
            self._executions[run.run_id] = {}
            self._states[run.run_id] = state

    def get_run(self, run_id: str) -> RunRecord:
        """The run's record; UnknownRunError if absent."""
        try:
            return self._runs[run_id]
        except KeyError:
            raise UnknownRunError(run_id, self) from None

    def list_runs(
        self,
        *,
        flow: str | None = None,
        status: str | Collection[str] | None = None,
        thread_id: str | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        """Runs matching the filters, newest first."""
        statuses = status_set(status)
        with self._lock:
            runs = [
                r
                for r in self._runs.values()
                if (flow is None or r.flow == flow)
                and (statuses is None or r.status.value in statuses)
                and (thread_id is None or r.thread_id == thread_id)
            ]
        runs.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return runs[:limit] if limit is not None else runs

    # -- events -------------------------------------------------------------------------

    def _write_events(
        self,
        run: RunRecord,
        events: Sequence[Event],
        changed: Sequence[StepExecution],
        expected_version: int,
        *,
        previous: RunState,
    ) -> None:
        stored = self._runs[run.run_id]
        if stored.version != expected_version:
            raise StaleVersionError(run.run_id, expected_version, stored.version)
        # Copies, as a database would keep: the caller may reuse or change its payloads.
        self._events[run.run_id].extend(
            dataclasses.replace(e, payload=copy.deepcopy(dict(e.payload))) for e in events
        )
        rows = self._executions[run.run_id]
        for row in changed:
            rows[(row.step, row.attempt)] = row
        self._runs[run.run_id] = run

    def read_events(self, run_id: str | None = None, *, upto: int | None = None) -> list[Event]:
        """Events of one run (or all), in order."""
        with self._lock:
            if run_id is None:
                logs = [self._events[r] for r in sorted(self._runs)]  # as DuckDB: by run id
            else:
                self.get_run(run_id)
                logs = [self._events[run_id]]
            return [e for log in logs for e in log if upto is None or e.seq <= upto]

    def executions(self, run_id: str) -> list[StepExecution]:
        """The run's execution rows in the order they last changed."""
        with self._lock:
            self.get_run(run_id)
            return sorted(self._executions[run_id].values(), key=lambda x: x.seq)

    def cache_candidates(
        self, flow: str, fingerprints: Collection[str]
    ) -> dict[str, StepExecution]:
        """Executions with an output in ``flow``'s runs, by cache key, for these fingerprints."""
        wanted = set(fingerprints)
        found: dict[str, StepExecution] = {}
        with self._lock:
            for run_id, rows in self._executions.items():
                if self._runs[run_id].flow != flow:
                    continue
                for row in sorted(rows.values(), key=lambda x: x.seq):
                    if (
                        row.cache_key is not None
                        and row.fingerprint in wanted
                        and row.status.has_output
                        and row.output is not None
                    ):
                        found.setdefault(row.cache_key, row)
        return found

    # -- values -------------------------------------------------------------------------

    def put_value(self, encoded: EncodedValue) -> ValueRef:
        """Keep the value's table or bytes under its hash (once)."""
        from nbflow.values import copy_table

        ref = encoded.ref
        if ref.is_inline:
            return ref
        with self._lock:
            if ref.hash not in self._blobs:
                record = BlobRecord(ref.hash, ref.codec, ref.size, utcnow())
                # The encoded table shares memory with the step's DataFrame: a copy keeps
                # the stored value safe from later in-place edits of that frame.
                table = copy_table(encoded.table) if encoded.table is not None else None
                self._blobs[ref.hash] = (record, table, encoded.data, dict(encoded.meta))
        return ref

    def load_value(self, ref: ValueRef) -> Any:
        """Decode the value a ref points at."""
        from nbflow.values import decode

        if ref.is_inline:
            return decode(ref, trust=self.trust)
        try:
            _, table, data, meta = self._blobs[ref.hash]
        except KeyError:
            from nbflow.errors import StoreError

            raise StoreError(f"blob {ref.hash} is missing from {self}") from None
        return decode(ref, table=table, data=data, meta=meta, trust=self.trust)

    def has_blob(self, hash: str) -> bool:
        """Whether a blob with this hash is kept."""
        return hash in self._blobs

    def list_blobs(self) -> list[BlobRecord]:
        """Every blob record."""
        return [b[0] for b in self._blobs.values()]

    # -- retention ----------------------------------------------------------------------

    def _delete(self, run_ids: Collection[str], blob_hashes: Collection[str]) -> None:
        with self._lock:
            for run_id in run_ids:
                self._runs.pop(run_id, None)
                self._events.pop(run_id, None)
                self._executions.pop(run_id, None)
            for hash in blob_hashes:
                self._blobs.pop(hash, None)

    # -- SQL ----------------------------------------------------------------------------

    def sql(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """Run ``query`` with DuckDB over frames of this store's runs, events, steps, blobs."""
        from nbflow.store.memory_sql import query_frames

        return query_frames(self, query, params)

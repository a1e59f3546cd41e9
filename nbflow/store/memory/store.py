"""The in-memory store: the reference backend, for tests and throwaway work."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from nbflow import arguments
from nbflow.errors import DuplicateRunError, StaleVersionError
from nbflow.store.base import Store
from nbflow.store.filters import run_filters
from nbflow.store.fold import RunState
from nbflow.store.records import (
    BlobRecord,
    Event,
    FlowRecord,
    Lease,
    RunRecord,
    StepExecution,
    ValueRef,
    utcnow,
)
from nbflow.store.tenants import cache_source, visible
from nbflow.store.untrusted import UntrustedRun

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

    from nbflow.store.check import StoredBlob
    from nbflow.values import EncodedValue


class MemoryStore(Store):
    """Keeps everything in Python objects; gone when the process ends.

    It follows the same contract as the DuckDB store (the conformance suite runs on
    both), so tests of the engine can use it without touching disk.
    """

    def __init__(self, *, trust: bool = True, tenant: str | None = None) -> None:
        from nbflow.store.tenants import optional_tenant

        super().__init__()
        self.uri = ":memory:"
        self.trust = trust
        self.tenant = optional_tenant(tenant)
        self._flows: dict[tuple[str, str], FlowRecord] = {}
        self._runs: dict[str, RunRecord] = {}
        self._events: dict[str, list[Event]] = {}
        self._executions: dict[str, dict[tuple[str, int], StepExecution]] = {}
        self._lease_rows: dict[str, Lease] = {}
        self._untrusted: dict[str, UntrustedRun] = {}
        # hash -> (record, table, data, meta)
        self._blobs: dict[str, tuple[BlobRecord, Any, bytes | None, dict[str, Any]]] = {}
        self._writes = 0  # runs created, events written, runs deleted: the change token

    def with_tenant(self, tenant: str | None) -> MemoryStore:
        """Another store object over this one's data (and lock), opened for ``tenant``."""
        from nbflow.store.tenants import optional_tenant

        other = MemoryStore(trust=self.trust, tenant=optional_tenant(tenant))
        other._lock = self._lock
        for name in ("_flows", "_runs", "_events", "_executions", "_lease_rows", "_untrusted"):
            setattr(other, name, getattr(self, name))
        other._blobs = self._blobs
        return other

    # -- flows --------------------------------------------------------------------------

    def put_flow(self, flow: FlowRecord) -> None:
        """Record a flow definition unless it is already stored."""
        with self._lock:
            self._flows.setdefault((flow.name, flow.fingerprint), flow)

    def get_flow(self, name: str, fingerprint: str) -> FlowRecord | None:
        """The stored definition, or None."""
        arguments.flow_key(name, fingerprint)
        return self._flows.get((name, fingerprint))

    # -- runs ---------------------------------------------------------------------------

    def create_run(self, run: RunRecord) -> None:
        """Add a new run (pending, version 0)."""
        from nbflow.store.fold import initial_state

        run = self._stamped(run)
        with self._lock:
            if run.run_id in self._runs:
                raise DuplicateRunError(run.run_id)
            state = initial_state(run)
            self._runs[run.run_id] = state.run
            self._events[run.run_id] = []
            self._executions[run.run_id] = {}
            self._states[run.run_id] = state
            self._writes += 1

    def _get_run(self, run_id: str) -> RunRecord:
        """The run's record; UnknownRunError if absent."""
        arguments.run_id(run_id)
        try:
            return self._seen(self._runs[run_id])
        except KeyError:
            raise self._unknown_run(run_id) from None

    def _list_runs(
        self,
        *,
        flow: str | None = None,
        status: str | Collection[str] | None = None,
        thread_id: str | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        """Runs matching the filters, newest first."""
        flow, statuses, thread_id, limit = run_filters(flow, status, thread_id, limit)
        with self._lock:
            runs = [
                r
                for r in self._runs.values()
                if (flow is None or r.flow == flow)
                and visible(r.tenant, self.tenant)
                and (statuses is None or r.status.value in statuses)
                and (thread_id is None or r.thread_id == thread_id)
            ]
        runs.sort(key=lambda r: (r.created_at, r.run_id), reverse=True)
        return runs[:limit] if limit is not None else runs

    # -- leases -------------------------------------------------------------------------

    def _read_leases(self, run_ids: Collection[str]) -> dict[str, Lease]:
        with self._lock:
            return {r: self._lease_rows[r] for r in run_ids if r in self._lease_rows}

    def _swap_lease(self, run_id: str, expected_token: str | None, new: Lease | None) -> bool:
        with self._lock:
            current = self._lease_rows.get(run_id)
            if (current.token if current else None) != expected_token:
                return False
            if new is None:
                self._lease_rows.pop(run_id, None)
            else:
                self._lease_rows[run_id] = new
            return True

    # -- events -------------------------------------------------------------------------

    def _write_events(
        self,
        run: RunRecord,
        events: Sequence[Event],
        changed: Sequence[StepExecution],
        expected_version: int,
        *,
        previous: RunState,
        create: bool = False,
    ) -> None:
        if create:
            if run.run_id in self._runs:
                raise DuplicateRunError(run.run_id)
        else:
            stored = self._runs[run.run_id]
            if stored.version != expected_version:
                raise StaleVersionError(run.run_id, expected_version, stored.version)
        # Copies, as a database would keep: the caller may reuse or change its payloads.
        copies = [dataclasses.replace(e, payload=copy.deepcopy(dict(e.payload))) for e in events]
        if create:
            self._events[run.run_id] = []
            self._executions[run.run_id] = {}
        self._events[run.run_id].extend(copies)
        rows = self._executions[run.run_id]
        for row in changed:
            rows[(row.step, row.attempt)] = row
        self._runs[run.run_id] = run
        self._writes += 1

    def change_token(self) -> object:
        """The count of writes to runs: it changes with every one."""
        return self._writes

    def read_events(self, run_id: str | None = None, *, upto: int | None = None) -> list[Event]:
        """Events of one run (or all), in order."""
        with self._lock:
            if run_id is None:
                logs = [  # as DuckDB: by run id
                    self._events[r]
                    for r in sorted(self._runs)
                    if visible(self._runs[r].tenant, self.tenant)
                ]
            else:
                self._get_run(run_id)
                logs = [self._events[run_id]]
            arguments.optional_count(upto, "upto (a version)")
            return [e for log in logs for e in log if upto is None or e.seq <= upto]

    def executions(self, run_id: str) -> list[StepExecution]:
        """The run's execution rows in the order they last changed."""
        with self._lock:
            self._get_run(run_id)
            return sorted(
                self._executions[run_id].values(), key=lambda x: (x.seq, x.attempt, x.step)
            )

    def cache_candidates(
        self, flow: str, fingerprints: Collection[str]
    ) -> dict[str, StepExecution]:
        """Executions with an output in ``flow``'s runs, by cache key, for these fingerprints."""
        wanted = set(fingerprints)
        found: dict[str, StepExecution] = {}
        with self._lock:
            for run_id, rows in self._executions.items():
                run = self._runs[run_id]
                if run.flow != flow or run_id in self._untrusted:
                    continue
                if not cache_source(run.tenant, self.tenant):
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

    # -- run marks ----------------------------------------------------------------------

    def untrusted_runs(self, run_ids: Collection[str] | None = None) -> dict[str, UntrustedRun]:
        """The marks of these runs (default: all), by run id."""
        if run_ids is not None:
            run_ids = arguments.run_ids(run_ids, "untrusted_runs' run_ids")
        with self._lock:
            wanted = sorted(self._untrusted if run_ids is None else set(run_ids))
            return {r: self._untrusted[r] for r in wanted if r in self._untrusted}

    def mark_untrusted(self, marks: Iterable[UntrustedRun]) -> None:
        """Mark runs untrusted; a run marked already keeps its mark."""
        with self._lock:
            for mark in marks:
                self._untrusted.setdefault(mark.run_id, mark)

    def clear_untrusted(self, run_ids: Collection[str]) -> list[str]:
        """Remove these runs' marks; return those that had one."""
        run_ids = arguments.run_ids(run_ids, "clear_untrusted's run_ids")
        with self._lock:
            return sorted(r for r in set(run_ids) if self._untrusted.pop(r, None) is not None)

    # -- values -------------------------------------------------------------------------

    def put_value(self, encoded: EncodedValue) -> ValueRef:
        """Keep the value's table or bytes under its hash (once)."""
        from nbflow.values import copy_table

        ref = encoded.ref
        if ref.is_inline:
            return ref
        with self._lock:
            if ref.hash in self._blobs:
                # Equal content may be laid out differently: the stored size is the size.
                stored = self._blobs[ref.hash][0].size
                return ref.with_size(stored)
            if ref.hash not in self._blobs:
                record = BlobRecord(ref.hash, ref.codec, ref.size, utcnow())
                # The encoded table shares memory with the step's DataFrame: a copy keeps
                # the stored value safe from later in-place edits of that frame.
                table = copy_table(encoded.table) if encoded.table is not None else None
                # Bytes of its own too (chunks may point into the value; a bytearray would
                # be taken over by the array decoded from it).
                data = b"".join(encoded.chunks) if encoded.has_bytes else None
                self._blobs[ref.hash] = (record, table, data, dict(encoded.meta))
        return ref

    def read_encoded(self, ref: ValueRef) -> EncodedValue:
        """The value's kept table or bytes and meta, not decoded."""
        from nbflow.values import EncodedValue

        if ref.is_inline:
            return EncodedValue(ref=ref)
        self._check_value_seen(ref)
        try:
            record, table, data, meta = self._blobs[ref.hash]
        except KeyError:
            from nbflow.errors import StoreError

            raise StoreError(f"blob {ref.hash} is missing from {self}") from None
        stored = dataclasses.replace(ref, codec=record.codec, size=record.size, inline=None)
        return EncodedValue(ref=stored, table=table, data=data, meta=copy.deepcopy(meta))

    def has_blob(self, hash: str) -> bool:
        """Whether a blob with this hash is kept."""
        arguments.text(hash, "a content hash")
        return hash in self._blobs

    def _replace_blob_meta(self, hash: str, meta: Any) -> None:
        """Replace the meta kept with the blob ``hash`` (marking a value trusted)."""
        with self._lock:
            if hash not in self._blobs:
                from nbflow.errors import StoreError

                raise StoreError(f"blob {hash} is missing from {self}")
            record, table, data, _ = self._blobs[hash]
            self._blobs[hash] = (record, table, data, copy.deepcopy(dict(meta)))

    def list_blobs(self) -> list[BlobRecord]:
        """Every blob record."""
        return [b[0] for b in self._blobs.values()]

    def _may_read_value(self, hash: str) -> bool:
        with self._lock:
            used = [
                run_id
                for run_id, rows in self._executions.items()
                if any(x.output is not None and x.output.hash == hash for x in rows.values())
            ]
            return not used or any(visible(self._runs[r].tenant, self.tenant) for r in used)

    # -- retention ----------------------------------------------------------------------

    def referenced_hashes(self, exclude_runs: Collection[str] = ()) -> set[str]:
        """The value hashes referenced by every run (every tenant's) except ``exclude_runs``."""
        from nbflow.store.gc import referenced_hashes

        excluded = set(exclude_runs)
        with self._owner_view():
            return referenced_hashes(self, [r for r in self._runs if r not in excluded])

    def _delete(self, run_ids: Collection[str], blob_hashes: Collection[str]) -> None:
        with self._lock:
            for run_id in run_ids:
                self._runs.pop(run_id, None)
                self._events.pop(run_id, None)
                self._executions.pop(run_id, None)
                self._lease_rows.pop(run_id, None)
                self._untrusted.pop(run_id, None)
            for hash in blob_hashes:
                self._blobs.pop(hash, None)
            self._writes += 1

    # -- integrity ----------------------------------------------------------------------

    def _execution_rows(self) -> dict[str, list[StepExecution]]:
        with self._lock:
            return {
                run_id: sorted(rows.values(), key=lambda x: (x.seq, x.attempt, x.step))
                for run_id, rows in self._executions.items()
            }

    def _stored_blobs(self) -> list[StoredBlob]:
        from nbflow.store.check import StoredBlob

        with self._lock:
            return [
                StoredBlob(
                    record.hash,
                    record.codec,
                    record.size,
                    meta,
                    None if data is None else len(data),
                    table is not None,
                )
                for record, table, data, meta in self._blobs.values()
            ]

    def _blob_content(self, blob: StoredBlob) -> tuple[pa.Table | None, bytes | None]:
        with self._lock:
            entry = self._blobs.get(blob.hash)
        if entry is None:
            return None, None
        return entry[1], entry[2]

    def _rebuild_views(self, state: RunState) -> None:
        run_id = state.run.run_id
        with self._lock:
            log = self._events.get(run_id, [])
            last = log[-1].seq if log else 0
            if last != state.run.version:
                raise StaleVersionError(run_id, state.run.version, last)
            self._runs[run_id] = state.run
            self._executions[run_id] = dict(state.executions)

    # -- SQL ----------------------------------------------------------------------------

    def sql(
        self, query: str, params: Sequence[Any] | Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """Run ``query`` with DuckDB over frames of this store's runs, events, steps, blobs."""
        from nbflow.store.memory.sql import query_frames

        return query_frames(self, query, params)

"""The core of the store interface: the primitives each backend implements, and the
logic every backend shares for runs, events and values (folding, optimistic versions,
decoding). :class:`~nbflow.store.base.Store` adds leases, retention and the integrity
check on top (:mod:`nbflow.store.leasing`, :mod:`nbflow.store.maintenance`); the helpers
of those (:mod:`nbflow.store.gc`, :mod:`nbflow.store.check`) see a store as this class.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, Self

from nbflow.errors import InvalidTransitionError, StaleVersionError
from nbflow.store.fold import RunState, applied, fold
from nbflow.store.records import (
    BlobRecord,
    CacheHit,
    CacheHits,
    Event,
    FlowRecord,
    Lease,
    NewEvent,
    RunRecord,
    RunStatus,
    StepExecution,
    ValueRef,
)
from nbflow.store.tenant_scope import TenantScope
from nbflow.store.untrusted import RunMarks
from nbflow.values.refs import value_ref_argument

if TYPE_CHECKING:
    import pyarrow as pa

    from nbflow.store.problems import StoredBlob
    from nbflow.values import EncodedValue


# What loading a value may raise that says nothing about the stored value: a bug (an
# assertion), or this process running out of memory or stack.
_NOT_DAMAGE = (AssertionError, MemoryError, RecursionError)


class StoreCore(TenantScope, RunMarks, ABC):
    """What every part of a :class:`~nbflow.store.base.Store` builds on: its state, the
    backend's primitives (abstract), and runs, events and values."""

    #: A string that reopens this store with :func:`nbflow.open_store`.
    uri: str = ""

    #: Whether pickled values may be loaded (unpickling runs code).
    trust: bool = True

    #: Why the store can only be read (its file cannot be written), or None.
    read_only_reason: str | None = None

    @property
    def read_only(self) -> bool:
        """Whether the store could only be opened for reading: writes raise
        :class:`~nbflow.errors.ReadOnlyStoreError`, reads work as usual."""
        return self.read_only_reason is not None

    def _refuse_writes(self, action: str) -> None:
        """ReadOnlyStoreError (saying ``action`` needs to write) for a read-only store."""
        if self.read_only_reason is not None:
            from nbflow.errors import ReadOnlyStoreError

            raise ReadOnlyStoreError(self.uri or repr(self), action, self.read_only_reason)

    def __init__(self) -> None:
        # The last folded state of each run this object wrote, keyed by run id. A write
        # whose expected version matches it needs no read; one that doesn't reloads.
        self._states: dict[str, RunState] = {}
        self._lock = threading.RLock()
        self._known_flows: set[tuple[str, str]] = set()  # (name, fingerprint) recorded
        # Runs this object has moved to running and not yet out of it: their runners may
        # hold output refs not yet committed (buffered events), which gc must not orphan.
        self._executing: set[str] = set()
        from nbflow.store.leases import new_token

        self._token = new_token()
        self._leases: dict[str, float] = {}  # run id -> TTL, for the leases this object holds

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:  # optional: for backends with nothing to release
        """Release the backend's resources; the object must not be used afterwards."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        tenant = "" if self.tenant is None else f", tenant={self.tenant!r}"
        return f"{type(self).__name__}({self.uri!r}{tenant})"

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Keep the store to the calling thread for the block: other threads of this
        process wait, and a file-backed store does not give its file to another process
        meanwhile (so what was read in the block is still true at its end)."""
        with self._lock:
            yield

    # -- flows ------------------------------------------------------------------------

    @abstractmethod
    def put_flow(self, flow: FlowRecord) -> None:
        """Record a flow definition; a definition already stored (same name and
        fingerprint) is left as it is, since definitions are immutable."""

    def ensure_flow(self, flow: FlowRecord) -> None:
        """Record a flow definition once per store object: every run records its flow,
        and an unchanged definition needs no statement after the first."""
        key = (flow.name, flow.fingerprint)
        self._refuse_writes("running a flow")
        if key not in self._known_flows:
            self.put_flow(flow)
            self._known_flows.add(key)

    @abstractmethod
    def get_flow(self, name: str, fingerprint: str) -> FlowRecord | None:
        """The stored definition of flow ``name`` with ``fingerprint``, or None."""

    # -- runs -------------------------------------------------------------------------

    @abstractmethod
    def create_run(self, run: RunRecord) -> None:
        """Add a new run, pending at version 0, with no events yet."""

    def get_run(self, run_id: str) -> RunRecord:
        """The current record of a run; UnknownRunError if there is none.

        A run left ``running`` by a process that is gone comes back ``interrupted``
        (see :meth:`reap_interrupted`).
        """
        record = self._get_run(run_id)
        if record.status is RunStatus.RUNNING:
            reaped = self.reap_interrupted([record])
            if reaped:
                return reaped[0]
        return record

    def list_runs(
        self,
        *,
        flow: str | None = None,
        status: str | Collection[str] | None = None,
        thread_id: str | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        """Runs matching every filter given, newest first (by creation time).

        Runs whose process died are reported (and recorded) as ``interrupted``.
        """
        self.reap_interrupted()
        return self._list_runs(flow=flow, status=status, thread_id=thread_id, limit=limit)

    @abstractmethod
    def _get_run(self, run_id: str) -> RunRecord:
        """The run's row as stored; UnknownRunError if there is none."""

    @abstractmethod
    def _list_runs(
        self,
        *,
        flow: str | None = None,
        status: str | Collection[str] | None = None,
        thread_id: str | None = None,
        limit: int | None = None,
    ) -> list[RunRecord]:
        """The stored run rows matching every filter given, newest first."""

    def change_token(self) -> object:
        """A cheap value that differs whenever the store's runs may have changed (a run
        created, an event appended, runs deleted), here or in another process.

        Displays compare it to decide whether to read the store again (see
        :mod:`nbflow.widgets.watch`). Backends answer without a query where they can (a
        DuckDB file's size and modification time, the memory store's write counter); this
        fallback counts the runs and sums their versions.
        """
        runs = self._list_runs()
        return (len(runs), sum(r.version for r in runs))

    if TYPE_CHECKING:  # provided by nbflow.store.leasing.Leasing

        def reap_interrupted(  # noqa: D102
            self, runs: Sequence[RunRecord] | None = None
        ) -> list[RunRecord]: ...

    # -- leases: what a backend stores ------------------------------------------------

    @abstractmethod
    def _read_leases(self, run_ids: Collection[str]) -> dict[str, Lease]:
        """The leases held on these runs, by run id (runs without one are absent)."""

    @abstractmethod
    def _swap_lease(self, run_id: str, expected_token: str | None, new: Lease | None) -> bool:
        """Atomically replace the lease of ``run_id`` by ``new`` (None: remove it) if the
        token of the lease held now is ``expected_token`` (None: no lease); return whether
        it was replaced."""

    # -- events -----------------------------------------------------------------------

    def append(self, run_id: str, expected_version: int, events: Sequence[NewEvent]) -> RunRecord:
        """Append ``events`` to the log of ``run_id`` and update its views, atomically.

        ``expected_version`` is the version the caller last saw; if the run has moved on,
        StaleVersionError is raised and nothing is written. Returns the updated run.
        """
        with self._lock:
            state = self._state_for(run_id, expected_version)
            if self.tenant is not None:
                from nbflow.store.tenants import check_writable

                check_writable(state.run, self.tenant, self)
            if not events:
                # Nothing to write; but a writer that read an older version must hear so.
                stored = self._get_run(run_id).version
                if stored != expected_version:
                    self._states.pop(run_id, None)
                    raise StaleVersionError(run_id, expected_version, stored)
                return state.run
            return self._append_to(state, events, create=False)

    def record_run(self, run: RunRecord, events: Sequence[NewEvent]) -> RunRecord:
        """Add the new run ``run`` together with its first ``events``, in one transaction.

        What :meth:`create_run` then :meth:`append` at version 0 would do, but a run that
        starts and ends in ``events`` (a fully cached re-run) is never seen half-written,
        and costs one commit. DuplicateRunError if the id is taken, InvalidTransitionError
        if the events do not follow; either way nothing is written. Returns the run.
        """
        from nbflow.store.fold import initial_state

        run = self._stamped(run)
        if not events:
            self.create_run(run)
            return initial_state(run).run
        with self._lock:
            return self._append_to(initial_state(run), events, create=True)

    def _append_to(self, state: RunState, events: Sequence[NewEvent], *, create: bool) -> RunRecord:
        """Stamp ``events`` after ``state``, fold them, write them; keep the new state."""
        self._refuse_writes("recording events")
        run_id, expected_version = state.run.run_id, state.run.version
        stamped = [
            Event(run_id, expected_version + i + 1, e.ts, e.type, e.step, e.attempt, e.payload)
            for i, e in enumerate(events)
        ]
        try:
            new_state, changed = applied(state, stamped)
        except InvalidTransitionError:
            if create:
                raise
            # Our cached state may be behind another writer's: a stale version must
            # be reported as such, not as an invalid transition.
            self._states.pop(run_id, None)
            stored = self._get_run(run_id).version
            if stored != expected_version:
                raise StaleVersionError(run_id, expected_version, stored) from None
            raise
        try:
            self._write_events(
                new_state.run, stamped, changed, expected_version, previous=state, create=create
            )
        except BaseException:
            self._states.pop(run_id, None)
            raise
        self._states[run_id] = new_state
        if new_state.run.status is RunStatus.RUNNING:
            self._executing.add(run_id)
        else:
            self._executing.discard(run_id)
        return new_state.run

    def _state_for(self, run_id: str, expected_version: int) -> RunState:
        """The folded state the append builds on; reloaded when ours is not current."""
        state = self._states.get(run_id)
        if state is not None and state.run.version == expected_version:
            return state
        state = self.load_state(run_id)
        if state.run.version != expected_version:
            from nbflow.errors import StaleVersionError

            raise StaleVersionError(run_id, expected_version, state.run.version)
        return state

    def load_state(self, run_id: str) -> RunState:
        """The run's current state, from its views."""
        run = self._get_run(run_id)
        state = RunState(run, {(e.step, e.attempt): e for e in self.executions(run_id)})
        return state

    @abstractmethod
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
        """Persist ``events`` (never empty), the changed execution rows and the run row in one
        transaction; raise StaleVersionError (writing nothing) if the run's stored
        version is not ``expected_version``. ``previous`` is the state the events were
        folded onto (it tells which rows are new). With ``create``, the run is new
        (``previous`` is its pending state at version 0): its row is inserted, as it
        stands after the events, in the same transaction; DuplicateRunError (writing
        nothing) if a run with its id exists."""

    @abstractmethod
    def read_events(self, run_id: str | None = None, *, upto: int | None = None) -> list[Event]:
        """Events of one run (or all runs) in order; ``upto`` stops at that version."""

    @abstractmethod
    def executions(self, run_id: str) -> list[StepExecution]:
        """The step execution rows of a run, in the order they last changed."""

    @abstractmethod
    def cache_candidates(
        self, flow: str, fingerprints: Collection[str]
    ) -> dict[str, StepExecution]:
        """Executions with a usable output (completed or cached) anywhere in ``flow``'s
        runs whose code fingerprint is one of ``fingerprints``, one per cache key; never
        one of a run marked untrusted (see :mod:`nbflow.store.untrusted`).

        The engine fetches these once per run and decides cache hits in memory, so a fully
        cached re-run touches the database a constant number of times."""

    def cache_hits(self, flow: str, fingerprints: Collection[str]) -> CacheHits:
        """:meth:`cache_candidates` in the lean form the engine uses, by cache key, with
        the files that executions read (``CacheHits.reads``).

        Backends may override it to read only these columns (a re-run of a large flow
        fetches one per step).
        """
        rows = self.cache_candidates(flow, fingerprints)
        return CacheHits({key: CacheHit.of(row) for key, row in rows.items()})

    def state_at(self, run_id: str, version: int | None = None) -> RunState:
        """The run as it stood at ``version`` (default: now), by folding its events."""
        from nbflow import arguments

        arguments.optional_count(version, "version")
        run = self._get_run(run_id)
        return fold(run, self.read_events(run_id, upto=version))

    # -- values -----------------------------------------------------------------------

    @abstractmethod
    def put_value(self, encoded: EncodedValue) -> ValueRef:
        """Store an encoded value (no bytes written when its hash is already stored)."""

    def load_value(self, ref: ValueRef) -> Any:
        """Load the value a ref points at (pickles only when the store is trusted, and
        never a pickle marked as someone else's, see :mod:`nbflow.store.untrusted`): its
        stored form (:meth:`read_encoded`), decoded. A value that cannot be read is a
        CorruptStoreError naming it (see :mod:`nbflow.store.damage`)."""

        value_ref_argument(ref)
        return self._load(ref)

    def _load(self, ref: ValueRef, step: str | None = None, run_id: str | None = None) -> Any:
        from nbflow.store.damage import unreadable_value

        self._check_value_seen(ref)
        try:
            return self._decoded(ref, step, run_id)
        except _NOT_DAMAGE:
            raise
        except Exception as exc:
            raise unreadable_value(ref, exc, self, step=step, run_id=run_id) from exc

    def _decoded(self, ref: ValueRef, step: str | None, run_id: str | None) -> Any:
        from nbflow.store.records import Codec
        from nbflow.values import decode

        if ref.is_inline:
            return decode(ref, trust=self.trust)
        stored = self.read_encoded(ref)
        if ref.codec is Codec.PICKLE and self.trust:
            from nbflow.store.untrusted import origin

            came = origin(stored.meta)
            if came is not None:
                from nbflow.errors import UntrustedImportError

                raise UntrustedImportError(
                    ref.type_name,
                    origin=came,
                    # (an in-memory store cannot be named on a command line)
                    store="" if self.uri in ("", ":memory:", "memory://") else self.uri,
                    step=step,
                    run_id=run_id,
                    value_hash=ref.hash,
                )
        return decode(ref, table=stored.table, data=stored.data, meta=stored.meta, trust=self.trust)

    def _replace_blob_meta(self, hash: str, meta: Mapping[str, Any]) -> None:
        """Replace the meta stored with the blob ``hash`` by ``meta`` (how a pickle marked
        untrusted is marked trusted); StoreError if there is no such blob. A backend that
        cannot do it raises NotImplementedError."""
        raise NotImplementedError(f"{type(self).__name__} cannot change a stored value's meta")

    def load_output(self, ref: ValueRef, *, step: str, run_id: str) -> Any:
        """Load ``ref``, the output of ``step`` in run ``run_id``.

        Every reader of a step's output goes through here, so a store opened with
        ``trust=False`` refuses a pickled output, before reading it, with an
        UntrustedStoreError that names the step and the run; and an output that cannot be
        read is a CorruptStoreError that names them too.
        """
        from nbflow import arguments
        from nbflow.errors import UntrustedStoreError
        from nbflow.store.records import Codec

        value_ref_argument(ref)
        arguments.text(step, "a step's name")
        arguments.run_id(run_id)
        if ref.codec is Codec.PICKLE and not self.trust:
            raise UntrustedStoreError(ref.type_name, step=step, run_id=run_id)
        return self._load(ref, step, run_id)

    @abstractmethod
    def read_encoded(self, ref: ValueRef) -> EncodedValue:
        """The value ``ref`` points at in its stored form, not decoded: the blob's codec
        and size, its bytes or Arrow table, and its meta, such that :meth:`put_value` of
        the result (on any backend) stores the same value under the same hash. Never
        unpickles; copying runs between stores moves values this way. A JSON ref comes
        back as is. StoreError if the blob is missing."""

    @abstractmethod
    def has_blob(self, hash: str) -> bool:
        """Whether a blob with this content hash is stored."""

    @abstractmethod
    def list_blobs(self) -> list[BlobRecord]:
        """Every blob row."""

    def table_name(self, ref: ValueRef) -> str | None:
        """The SQL table holding a DataFrame value, for :meth:`sql`; None if it has none."""

        value_ref_argument(ref)
        return None

    # -- retention and integrity: what a backend provides -----------------------------

    @abstractmethod
    def _delete(self, run_ids: Collection[str], blob_hashes: Collection[str]) -> None:
        """Delete these runs (rows, events, executions) and blobs, in one transaction."""

    def compact(self) -> str | None:
        """Give freed space back to the file system, where the backend can; None when
        done (or nothing to do), else why it was not done (reported by gc)."""
        return None

    def storage_bytes(self) -> int | None:
        """The size of the store on disk, when it has one."""
        return None

    #: Whether the step_executions view holds running attempts too; False for a backend
    #: that writes an attempt's row only when the attempt ends.
    _rows_hold_running_attempts: ClassVar[bool] = True

    @contextmanager
    def _read_snapshot(self) -> Iterator[None]:
        """Keep what the check reads consistent while it reads (here: hold the lock)."""
        with self._lock:
            yield

    @abstractmethod
    def _execution_rows(self) -> dict[str, list[StepExecution]]:
        """Every step_executions row as stored, by run id (rows of missing runs too)."""

    @abstractmethod
    def _stored_blobs(self) -> list[StoredBlob]:
        """What is stored for every value (hash, codec, size, meta, bytes' length, whether
        a DataFrame value's table exists), without the content."""

    @abstractmethod
    def _blob_content(self, blob: StoredBlob) -> tuple[pa.Table | None, bytes | None]:
        """A value's stored table (as stored, not restored) and bytes, either None."""

    @abstractmethod
    def _rebuild_views(self, state: RunState) -> None:
        """Replace the run's ``runs`` row and all its step_executions rows by those of
        ``state`` (its events' fold), in one transaction, leaving the events alone;
        StaleVersionError, writing nothing, unless the run's last event is
        ``state.run.version``."""
